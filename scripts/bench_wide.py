#!/usr/bin/env python
"""Running wide (issue 11): DGPSearcher on a simulated Ray cluster at 8, 32 and 64 concurrent trials.

The cluster is Ray's own ``ray.cluster_utils.Cluster`` on this machine (:mod:`raydgp.raytune.simulate`): nodes of 8
fake GPUs each (one node per 8 trials of width), every trial asks for one GPU and no CPU, so the width is what the
GPUs allow. Trials sleep for ``--trial-s`` seconds and report a known function (Hartmann-6, optimum -3.32237), or
(``--problem replay:SPEC``) look a recorded layer's measurement up and sleep for its recorded build + run time times
``--time-scale``. Tune's ``max_concurrent_trials`` is the width plus ``--headroom`` (trials waiting for a GPU, so Ray
Tune can hand a finished trial's actor to the next one instead of starting a process per trial).

Methods, one after another on the same cluster for each seed:

* ``dgp``: DGPSearcher with the proposal queue (``queue="on"``: a background thread refits on every result and keeps
  a batch of proposals beside every running trial (``SearchSettings.batch_rule``); ``suggest()`` pops from it);
* ``dgp_inline``: DGPSearcher computing each proposal inside ``suggest()`` (``queue="off"``, background refit: the
  previous design);
* ``dgp_believer``, ``dgp_thompson``: ``dgp`` with that ``SearchSettings.batch_rule`` (the default is ``auto``);
* ``random``: raydgp's RandomSearcher (no model: the host's own ceiling for a custom searcher);
* ``serial`` (``--serial``): the same DGP search without Ray, one trial at a time, refitting on every result: the
  quality reference.

Reported per run: the width got (most trials running at once), workers' busy fraction over the run and in the steady
window (from the width-th trial start to the last start), proposals per second, ``suggest()`` median and p99 (of the
calls that proposed; "not ready" answers counted), the queue's batch time, and the best value after 32/64/128/256
trials (completion order). Part ``suggest`` measures one proposal's cost with 10,000 history records and a 5,000
candidate pool (inline ``suggest()`` and the queue's batch per proposal).

    python scripts/bench_wide.py --out bench/bench_wide.json              # widths 8,32,64, 256 trials of 2 s
    python scripts/bench_wide.py --parts suggest --out bench/bench_wide.json
    python scripts/bench_wide.py render                                   # BENCHMARKS.md section 8 from the JSON
    python scripts/bench_wide.py --section znver3-2c --parts emulated --serial --seeds 3 --widths 32,64 \
        --batch-rules believer,thompson                                   # batch rules side by side, this machine
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
BEGIN, END = "<!-- wide:begin -->", "<!-- wide:end -->"
CHECKPOINTS = (32, 64, 128, 256)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", nargs="?", default="run", choices=("run", "render"))
    ap.add_argument("--parts", default="wide,suggest")
    ap.add_argument("--widths", default="8,32,64")
    ap.add_argument("--trials", type=int, default=256)
    ap.add_argument("--trial-s", type=float, default=2.0)
    ap.add_argument("--problem", default="hartmann6", help="hartmann6 | mixed6 | replay:<dataset spec>")
    ap.add_argument("--time-scale", type=float, default=None, help="replay: sleep = recorded (build+run) x this "
                                                                   "(default: the median trial takes --trial-s)")
    ap.add_argument("--methods", default="dgp,dgp_inline,random")
    ap.add_argument("--serial", action="store_true", help="also run the serial reference (no Ray)")
    ap.add_argument("--serial-seeds", type=int, default=None, help="the serial reference for the first N seeds only "
                                                                   "(default: every seed; it refits per trial)")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--batch-rules", default="",
                    help="emulated part: comma-separated SearchSettings.batch_rule values, each run as its own method "
                         "(dgp_emulated_<rule>; default: one run with the default settings, dgp_emulated)")
    ap.add_argument("--headroom", type=int, default=8)
    ap.add_argument("--gpus-per-node", type=int, default=8)
    ap.add_argument("--cpus-per-node", type=int, default=None,
                    help="CPUs each simulated node advertises (default: as many as its GPUs; trials ask for none, "
                         "but Ray prestarts one idle worker process per advertised CPU)")
    ap.add_argument("--section", default="", help="a machine kind's own section (e.g. znver3-2c): results in "
                                                   "bench/bench_wide_<section>.json, rendered as section 8 "
                                                   "(`<section>`) beside the main one")
    ap.add_argument("--out", default=None, help="results file (default: bench/bench_wide.json, or the section's)")
    ap.add_argument("--md", default=None, help="the markdown file whose section 8 is rewritten (default: "
                                               "BENCHMARKS.md, only when --out is the default results file)")
    ap.add_argument("--append", action="store_true", help="add this run's wide runs to those already in --out "
                                                          "(more seeds or methods) instead of replacing them")
    args = ap.parse_args(argv)
    default_out = (ROOT / "bench" / (f"bench_wide_{args.section}.json" if args.section else "bench_wide.json")).resolve()
    out = Path(args.out) if args.out else default_out
    if args.md is None and (args.command == "render" or out.resolve() == default_out):
        args.md = str(ROOT / "BENCHMARKS.md")
    results = json.loads(out.read_text()) if out.exists() else {}
    if args.command == "render":
        print(render(results, Path(args.md), args.section))
        return 0
    from bench import machine

    results["machine"] = machine()
    results["commit"] = _commit()
    parts = args.parts.split(",")
    if "wide" in parts:
        old = results.get("wide") if args.append else None
        for r in (old or {}).get("runs", []):
            if not r.get("commit"):
                r["commit"] = old.get("commit") or "?"

        def merged(partial):
            return partial | {"runs": (old["runs"] if old else []) + partial["runs"]} if old else partial
        new = run_wide(args, lambda partial: _save(out, results | {"wide": merged(partial)}))
        results["wide"] = merged(new)
        results["wide"]["commit"] = results["commit"]
        _save(out, results)
    if "emulated" in parts:
        results["emulated"] = run_emulated(args, lambda partial: _save(out, results | {"emulated": partial}))
        results["emulated"]["commit"] = results["commit"]
        _save(out, results)
    if "suggest" in parts:
        results["suggest"] = run_suggest_cost()
        results["suggest"]["commit"] = results["commit"]
        _save(out, results)
    if args.md is None:  # results elsewhere: the committed section is not rewritten from a partial run
        print(f"results in {out}; BENCHMARKS.md left as it is (--md FILE writes a section from them)")
        return 0
    print(render(results, Path(args.md), args.section))
    return 0


def _save(out: Path, results: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, out)


def _commit() -> str:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


# -- the wide runs ---------------------------------------------------------------------------------------------------
def _workers_started() -> int | None:
    """Worker processes Ray's raylets have started in this cluster so far (their "Started worker process" log lines):
    each trial actor needs one, and one started for an actor that Tune then drops is a process paid for nothing."""
    try:
        import ray

        logs = Path(ray._private.worker._global_node.get_logs_dir_path())  # noqa: SLF001 - Ray has no public call
    except Exception:  # noqa: BLE001 - a figure for the table only
        return None
    n = 0
    for f in logs.glob("raylet*.out"):
        with open(f, errors="replace") as fh:
            n += sum(1 for line in fh if "Started worker process" in line)
    return n


def _problem(args):
    """(param space or SearchSpace, trainable, metric, optimum or None, time scale or None)."""
    from ray import tune

    from raydgp.raytune.simulate import replay_table, replay_trainable, sleep_trainable
    from raydgp.raytune.synthetic import PROBLEMS, problem_space

    if args.problem.startswith("replay:"):
        from raydgp.records import RecordStore
        from raydgp.space.design_space import DesignSpace
        from raydgp.space.recorded import RecordedSpace

        spec = args.problem.split(":", 1)[1]
        store = RecordStore(ROOT / "raydgp" / "datasets" / "shipped")
        recs = [r for r in store.records() if r.tag == f"dataset:{spec}" and r.config.sketch >= 0]
        if not recs:
            raise SystemExit(f"no recorded layer {spec!r} in the shipped dataset")
        key = max({r.workload.key for r in recs}, key=lambda k: sum(r.workload.key == k for r in recs))
        recs = [r for r in recs if r.workload.key == key]
        entry = store.workload_entries()[key]
        space = RecordedSpace(DesignSpace.from_json(entry["space"]), [r.config for r in recs])
        table = replay_table(space, recs)
        med = statistics.median(b + r for _, _, b, r in table.values())
        scale = args.time_scale or args.trial_s / max(med, 1e-6)
        def fn():  # tune.with_parameters puts the table in the object store: once per cluster
            return tune.with_parameters(replay_trainable, table=table, time_scale=scale)
        best = min(v[1] for v in table.values() if v[1] is not None)
        return space, fn, "latency_ms", best, scale, recs
    def fn():
        return tune.with_parameters(sleep_trainable, problem=args.problem, seconds=args.trial_s)
    return problem_space(args.problem), fn, "loss", PROBLEMS[args.problem][1], None, None


def _searcher(method, space, metric, seed, width):
    from raydgp import DGPSearcher
    from raydgp.raytune.dgp_searcher import convert_search_space
    from raydgp.raytune.random_searcher import RandomSearcher
    from raydgp.search import SearchSettings

    if method == "random":
        sp = convert_search_space(space) if isinstance(space, dict) else space
        return RandomSearcher(sp, metric=metric, mode="min", seed=seed), sp
    rule = method.partition("_")[2]  # dgp_believer / dgp_thompson: the queue with that batch rule
    if rule in ("believer", "thompson", "auto"):
        method, extra = "dgp", {"batch_rule": rule}
    else:
        extra = {}
    queue = {"dgp": "on", "dgp_inline": "off"}[method]
    st = SearchSettings(seed=seed, async_refit=True, queue=queue, **extra,
                        **({"evolve_generations": 0, "pool_refresh": 1.0} if not isinstance(space, dict) else {}))
    sp = convert_search_space(space) if isinstance(space, dict) else space
    return DGPSearcher(sp, metric=metric, mode="min", settings=st, seed=seed), sp


def _one_run(method, args, width, seed, problem):
    from ray import tune

    space, fn, metric, opt = problem[:4]
    searcher, _ = _searcher(method, space, metric, seed, width)
    trainable = tune.with_resources(fn(), {"cpu": 0, "gpu": 1})
    storage = tempfile.mkdtemp(prefix="raydgp-wide-")
    started0 = _workers_started()
    t0 = time.time()
    grid = tune.Tuner(trainable, tune_config=tune.TuneConfig(
        search_alg=searcher, num_samples=args.trials, metric=metric, mode="min", reuse_actors=True,
        max_concurrent_trials=width + args.headroom),
        run_config=tune.RunConfig(storage_path=storage, verbose=0, log_to_file=False)).fit()
    wall = time.time() - t0
    done = [r.metrics for r in grid if r.metrics and "t_end" in r.metrics]
    rows = sorted(((m["t_start"], m["t_end"], m[metric]) for m in done), key=lambda t: t[1])
    processes = len({m.get("pid") for m in done})
    iv = [(a, b) for a, b, _ in rows]
    from raydgp.raytune.simulate import busy_fraction

    events = sorted([(a, 1) for a, _ in iv] + [(b, -1) for _, b in iv])
    run, got = 0, 0
    for _, d in events:
        run += d
        got = max(got, run)
    starts = sorted(a for a, _ in iv)
    steady = None
    if len(starts) > width:
        w0, w1 = starts[width - 1], starts[-1]
        inwin = [(max(a, w0), min(b, w1)) for a, b in iv if b > w0 and a < w1]
        steady = sum(b - a for a, b in inwin) / (width * (w1 - w0)) if w1 > w0 else None
    vals = [v for _, _, v in rows]
    best = [min(vals[:n]) for n in CHECKPOINTS if n <= len(vals)]
    log = getattr(searcher, "suggest_log", [])
    lat = sorted(t for t, ok in log if ok)
    out = {"method": method, "width": width, "seed": seed, "commit": _commit(), "trials": len(rows),
           "wall_s": round(wall, 2),
           "width_got": got, "busy": round(busy_fraction(iv, width), 4), "steady_busy": steady and round(steady, 4),
           "proposals_per_s": round(len(rows) / wall, 3), "trial_processes": processes,
           "workers_started": (lambda a, b: b - a if a is not None and b is not None else None)(
               started0, _workers_started()),
           "best": {str(n): b for n, b in zip(CHECKPOINTS, best)},
           "regret": {str(n): b - opt for n, b in zip(CHECKPOINTS, best)} if opt is not None else None}
    if lat:
        out["suggest_ms"] = {"median": round(1e3 * statistics.median(lat), 3),
                             "p99": round(1e3 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 3),
                             "not_ready": sum(1 for _, ok in log if not ok)}
    if hasattr(searcher, "stats"):
        st = searcher.stats
        out["stats"] = {k: v for k, v in st.items() if not isinstance(v, dict)}
        if "queue" in st:
            out["queue"] = st["queue"]
            bt = searcher._queue.timings["batch"] if searcher._queue is not None else []
            if bt:
                out["batch_s"] = {"median": round(statistics.median(bt), 4), "max": round(max(bt), 4), "n": len(bt)}
    if hasattr(searcher, "close"):
        searcher.close()
    print(json.dumps({k: v for k, v in out.items() if k not in ("stats", "queue")}), flush=True)
    return out


def _serial(args, seed, problem):
    """The DGP search without Ray, one trial at a time, refitting on every result (the quality reference)."""
    from raydgp.raytune.dgp_searcher import convert_search_space
    from raydgp.raytune.synthetic import PROBLEMS
    from raydgp.search import DGPSearch, SearchSettings

    space, _, metric, opt = problem[:4]
    if isinstance(space, dict):
        sp = convert_search_space(space)
        fn = PROBLEMS[args.problem][0]

        def f(c):
            return fn(sp.to_params(c))
        st = SearchSettings(seed=seed)
    else:
        from raydgp.raytune.simulate import replay_table

        sp = space
        table = replay_table(sp, problem[5])

        def f(c):
            v = table[sp.to_params(c)["recorded"]][1]
            return math.inf if v is None else v
        st = SearchSettings(seed=seed, evolve_generations=0, pool_refresh=1.0)
    s = DGPSearch(sp, st)
    t0 = time.time()
    vals = []
    for _ in range(args.trials):
        c = s.suggest()
        if c is None:
            break
        v = f(c)
        s.observe(c, v)
        vals.append(v)
    best = [min(vals[:n]) for n in CHECKPOINTS if n <= len(vals)]
    out = {"method": "serial", "seed": seed, "trials": len(vals), "wall_s": round(time.time() - t0, 2),
           "best": {str(n): b for n, b in zip(CHECKPOINTS, best)},
           "regret": {str(n): b - opt for n, b in zip(CHECKPOINTS, best)},
           "suggest_ms": {"median": round(1e3 * statistics.median(s.timings["suggest"]), 3)}}
    print(json.dumps(out), flush=True)
    return out


def _emulated(args, width, seed, problem, rule: str | None = None):
    """The same DGP search and believer batches without Ray: ``width`` trials always running, the oldest quarter
    completing at once and refilled from a batch that believes the rest (a fresh model every width/4 results): how
    good the batch proposals are when the host keeps up."""
    from raydgp.raytune.dgp_searcher import convert_search_space
    from raydgp.raytune.synthetic import PROBLEMS
    from raydgp.search import DGPSearch, SearchSettings

    space, _, metric, opt = problem[:4]
    sp = convert_search_space(space)
    fn = PROBLEMS[args.problem][0]
    s = DGPSearch(sp, SearchSettings(seed=seed, **({"batch_rule": rule} if rule else {})))
    t0 = time.time()
    vals = []
    k = max(1, width // 4)
    pend = s.suggest_batch(min(width, args.trials))
    while len(vals) < args.trials and pend:
        done, pend = pend[:k], pend[k:]
        for c in done:
            v = fn(sp.to_params(c))
            s.observe(c, v)
            vals.append(v)
        room = args.trials - len(vals) - len(pend)
        if room > 0:
            pend += s.suggest_batch(min(k, room), pending=pend)
    best = [min(vals[:n]) for n in CHECKPOINTS if n <= len(vals)]
    out = {"method": f"dgp_emulated_{rule}" if rule else "dgp_emulated", "width": width, "seed": seed,
           "batch_rule": s.settings.batch_rule, "trials": len(vals),
           "wall_s": round(time.time() - t0, 2), "best": {str(n): b for n, b in zip(CHECKPOINTS, best)},
           "regret": {str(n): b - opt for n, b in zip(CHECKPOINTS, best)},
           "batch_s": {"median": round(statistics.median(s.timings["batch"]), 4), "n": len(s.timings["batch"])}}
    print(json.dumps(out), flush=True)
    return out


def run_emulated(args, save=lambda partial: None) -> dict:
    import torch

    torch.set_num_threads(1)
    problem = _problem(args)
    res = {"problem": args.problem, "trials": args.trials, "seeds": args.seeds, "runs": []}
    for seed in range(args.seeds):
        if args.serial and seed < (args.seeds if args.serial_seeds is None else args.serial_seeds):
            res["runs"].append(_serial(args, seed, problem))
            save(res)
        for width in [int(w) for w in args.widths.split(",")]:
            for rule in [r for r in args.batch_rules.split(",") if r] or [None]:  # rules interleaved per seed
                res["runs"].append(_emulated(args, width, seed, problem, rule))
                save(res)
    return res


def run_wide(args, save=lambda partial: None) -> dict:
    import torch

    from raydgp.raytune.simulate import simulated_cluster

    torch.set_num_threads(1)
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no per-trial CSV/JSON files: 64 trials at once
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    problem = _problem(args)
    methods = [m for m in args.methods.split(",") if m]
    res = {"problem": args.problem, "trials": args.trials, "trial_s": args.trial_s, "time_scale": problem[4],
           "headroom": args.headroom, "gpus_per_node": args.gpus_per_node,
           "cpus_per_node": args.cpus_per_node or args.gpus_per_node, "seeds": args.seeds, "runs": []}
    if args.serial:
        for seed in range(args.seeds):
            res["runs"].append(_serial(args, seed, problem))
            save(res)
    for width in [int(w) for w in args.widths.split(",")]:
        nodes = max(1, math.ceil(width / args.gpus_per_node))
        t0 = time.time()
        with simulated_cluster(nodes, gpus_per_node=min(width, args.gpus_per_node),
                               cpus_per_node=args.cpus_per_node or min(width, args.gpus_per_node)):
            up = time.time() - t0
            for seed in range(args.seeds):
                order = methods if seed % 2 == 0 else methods[::-1]  # interleaved across seeds
                for m in order:
                    r = _one_run(m, args, width, seed, problem)
                    r["nodes"], r["cluster_up_s"] = nodes, round(up, 1)
                    res["runs"].append(r)
                    save(res)  # partial results survive an interrupted run
    return res


# -- suggest() cost at scale -----------------------------------------------------------------------------------------
def run_suggest_cost(n_hist: int = 10000, pool: int = 5000, calls: int = 12) -> dict:
    """One proposal's cost with ``n_hist`` history records and a ``pool``-candidate pool, on a held-out layer of
    the shipped dataset (looked up, so the DGP sees real latencies): inline ``suggest()`` (the search's own
    proposal: fit + pool scoring + evolution + joint rescoring with 8 pending), and the queue's believer batch of 8
    and of 64 per proposal."""
    from bench_suggest_ab import suggest_setup

    cache = tempfile.mkdtemp(prefix="raydgp-sugg-")
    s, order, target, n_hist, spec = suggest_setup(ROOT, cache, n_hist, pool)
    out = {"history_points": n_hist, "pool": pool, "layer": spec, "calls": calls}
    t0 = time.perf_counter()
    s.pretrained()
    out["pretrain_s"] = round(time.perf_counter() - t0, 2)
    for c in order[:16]:  # a tuning set's worth of target data
        s.observe(c, target[c])
    s.suggest()  # the first fit
    pend = order[16:24]
    inline, fit_only = [], []
    for i in range(calls):
        c = order[24 + i]
        s.observe(c, target[c])
        t0 = time.perf_counter()
        s.fit()
        fit_only.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        s.suggest(pending=pend)
        inline.append(time.perf_counter() - t0)
    out["inline_suggest_ms"] = {"median": round(1e3 * statistics.median(inline), 1),
                                "fit_ms_median": round(1e3 * statistics.median(fit_only), 1)}
    for q in (8, 64):
        per = []
        for i in range(4):
            c = order[24 + calls + 4 * (q == 64) + i]
            s.observe(c, target[c])
            t0 = time.perf_counter()
            got = s.suggest_batch(q, pending=pend)
            per.append((time.perf_counter() - t0) / max(1, len(got)))
        out[f"batch{q}_ms_per_proposal"] = round(1e3 * statistics.median(per), 1)
    print(json.dumps(out), flush=True)
    return out


# -- rendering -------------------------------------------------------------------------------------------------------
def render(results: dict, md: Path, section: str = "") -> str:
    begin, end = (f"<!-- wide_{section}:begin -->", f"<!-- wide_{section}:end -->") if section else (BEGIN, END)
    raw = f"bench/bench_wide_{section}.json" if section else "bench/bench_wide.json"
    title = (f"## 8 (`{section}`). Running wide on another machine kind: a simulated Ray cluster (issue 11)" if section
             else "## 8. Running wide: a simulated Ray cluster (issue 11)")
    lines = [begin, title, ""]
    mach = results.get("machine", {})
    lines.append(f"Machine: {mach.get('cpu')} (LLVM mcpu `{mach.get('mcpu')}`), {mach.get('cores')} cores, "
                 f"{mach.get('platform')}. Produced by `python scripts/bench_wide.py"
                 + (f" --section {section}" if section else "") + f"` (raw: `{raw}`); "
                 "commit per part: " + ", ".join(f"{k} `{results[k].get('commit', results.get('commit'))}`"
                                                 for k in ("emulated", "suggest") if results.get(k))
                 + "; the wide runs' commits are in the table.")
    lines.append("")
    w = results.get("wide")
    if w:
        lines.append(f"Problem `{w['problem']}`, {w['trials']} trials of {w['trial_s']} s (sleep) each, "
                     f"{w['gpus_per_node']} fake GPUs and {w.get('cpus_per_node', w['gpus_per_node'])} CPUs per node, Tune "
                     f"`max_concurrent_trials` = width + "
                     f"{w['headroom']}; seeds as listed. Busy = trial work / (width x first start..last end); "
                     "steady = the same from the width-th start to the last start. suggest() is the driver's time "
                     "per proposing call; regret = best loss - optimum after n trials (completion order).")
        lines.append("")
        lines.append("| width | method | seed | commit | nodes | width got | worker processes started / trial actors "
                     "used | wall s | busy | steady busy | proposals/s | suggest "
                     "median ms | suggest p99 ms | not ready | batch median s | regret@32 | regret@64 | regret@128 | "
                     "regret@256 |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        runs = sorted(w["runs"], key=lambda r: (r.get("width", 0), r["method"], r.get("seed", 0)))
        for r in runs:
            sg = r.get("suggest_ms", {})
            rg = r.get("regret") or {}
            lines.append("| " + " | ".join(str(x) for x in (
                r.get("width", "-"), r["method"], r.get("seed", "-"), r.get("commit", "-"), r.get("nodes", "-"),
                r.get("width_got", "-"),
                f"{r['workers_started']} / {r.get('trial_processes', '-')}" if r.get("workers_started") is not None
                else f"- / {r.get('trial_processes', '-')}",
                r["wall_s"],
                r.get("busy", "-"), r.get("steady_busy", "-"), r.get("proposals_per_s", "-"), sg.get("median", "-"),
                sg.get("p99", "-"), sg.get("not_ready", "-"), (r.get("batch_s") or {}).get("median", "-"),
                *[_f(rg.get(str(n))) for n in CHECKPOINTS])) + " |")
        lines.append("")
    e = results.get("emulated")
    if e:
        import numpy as np

        lines.append(f"**Without Ray** (part `emulated`, {e['seeds']} seeds, `{e['problem']}`, {e['trials']} trials): "
                     "the same search and batch proposals with the host out of the way: `width` trials always "
                     "running, the oldest quarter completing at once and refilled by a batch proposed beside the rest "
                     "(`dgp_emulated`: the default `batch_rule`; `dgp_emulated_<rule>`: that rule, `believer` "
                     "believing the rest at their means, `thompson` Thompson picks); `serial` refits on every result. "
                     "Median regret over seeds (and each seed):")
        lines.append("")
        lines.append("| method | width | regret@32 | regret@64 | regret@128 | regret@256 | per seed @256 | batch median s |")
        lines.append("|---|---|---|---|---|---|---|---|")
        keys = sorted({(r["method"], r.get("width", 1)) for r in e["runs"]},
                      key=lambda t: (t[0] != "serial", t[1], t[0]))
        for m, wd in keys:
            rs = [r for r in e["runs"] if r["method"] == m and r.get("width", 1) == wd]
            med = [_f(float(np.median([r["regret"][str(n)] for r in rs]))) if all(str(n) in r["regret"] for r in rs)
                   else "-" for n in CHECKPOINTS]
            per = ", ".join(_f(r["regret"].get("256")) for r in rs)
            bt = round(statistics.median(r["batch_s"]["median"] for r in rs), 3) if all("batch_s" in r for r in rs) \
                else "-"
            lines.append(f"| {m} | {wd if m != 'serial' else 1} | " + " | ".join(med) + f" | {per} | {bt} |")
        lines.append("")
    s = results.get("suggest")
    if s:
        lines.append(f"**One proposal's cost** ({s['history_points']} history records, {s['pool']}-candidate pool, "
                     f"target `{s['layer']}` held out, 8 pending, one torch thread): inline `suggest()` median "
                     f"{s['inline_suggest_ms']['median']} ms (its refit alone "
                     f"{s['inline_suggest_ms']['fit_ms_median']} ms); the queue's believer batch "
                     f"{s['batch8_ms_per_proposal']} ms per proposal at 8, {s['batch64_ms_per_proposal']} ms at 64; "
                     f"stage 1 (pre-training, once) {s['pretrain_s']} s.")
        lines.append("")
    lines.append(end)
    text = "\n".join(lines)
    from bench import write_section

    write_section(md, begin, end, text)
    return text


def _f(x):
    return "-" if x is None else f"{x:.3f}"


if __name__ == "__main__":
    raise SystemExit(main())
