#!/usr/bin/env python
"""The evidence benchmark (issue 12): raydgp against the tuners a user would otherwise pick, every figure measured in
this run, on this machine; raw results in JSON, tables and plots (PNG) in a ``BENCHMARKS.md`` section.

    python scripts/bench.py --quick                 # CI-sized: every part at toy size (a few minutes)
    python scripts/bench.py                         # the full run (about 4 h on a 2-core machine)
    python scripts/bench.py --parts layers --only hebo   # (re)run some methods of a part, keep the others' results
    python scripts/bench.py --parts searchers       # one part (searchers, replay, layers), merged into the results
    python scripts/bench.py render                  # (re)write the BENCHMARKS.md section from the JSON

Parts:

* ``searchers``: DGPSearcher as a plain Ray Tune searcher (no history) against Ray's random search, Optuna TPE and
  HEBO (where installed; if not, the JSON says why), on mixed spaces with known optima
  (:mod:`raydgp.raytune.synthetic`), several seeds, best regret after 20/40/80 trials, with fast trials and with trials
  slower than a refit. The methods run one after another within each seed (interleaved), 2 trials at a time.
  ``dgp_sync`` is the same searcher refitting synchronously on every result (``async_refit=False``): the background
  refit must not cost quality.
* ``replay``: the recorded dataset as a lookup table (``scripts/bench_search_replay.py``: no measurement noise, many
  seeds): DGP transfer with and without the trust in history (:mod:`raydgp.search.trust`), the cold DGP, zero-shot,
  the one-layer sparse GP (``hidden_dims=()``: what depth buys), and the transfer peers of
  ``scripts/transfer_peers.py`` on the same history (BoTorch ``MultiTaskGP``, RGPE, FSBO); leave-one-task-out and
  leave-one-model-out.
* ``layers`` (full mode only): real TVM builds and timings per layer through ``raydgp layer`` (DGP with transfer from
  the shipped history, which holds none of these shapes; the cold DGP; random search; Optuna TPE and HEBO through Ray
  Tune) and MetaSchedule's own ``tune_tir`` at the same trial count, each with every seed; every method's best
  schedule re-timed by one measurer, interleaved, per seed.
* ``e2e`` (full mode only): whole models (ResNet-18, MobileNet-v1, VGG-16, AlexNet; batch 1, fp32, all cores) through
  ``raydgp tune --trials N`` (``scripts/bench_fast.py models``: the tuned library verified against the framework,
  PyTorch eager, ONNX Runtime and untuned TVM timed in fresh processes after tuning, same threads), and MetaSchedule's
  ``tune_relax`` at the same trial count on the same prepared module (``bench_fast.py ms-model``), verified and timed
  the same way; tuning wall time of each. ``--only raydgp`` / ``--only metaschedule`` (re)runs one side.

Machine kinds: figures from two machine kinds (LLVM ``mcpu`` and core count) are never merged or compared. The first
kind's results live in ``bench/bench.json`` and BENCHMARKS.md section 7; a run on another kind writes
``bench/bench_<mcpu>-<N>c.json``, its own section (``7 (<kind>)``), plots and work folders; ``render`` rewrites every
kind's section.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
PARTS = ("depth", "searchers", "replay", "layers", "e2e")

#: What each mode runs. Full: about 4 h on 2 cores (replay about 75 min, its two runs side by side; layers about
#: 75 min; e2e about 60 min; searchers about 15).
MODES = {
    "quick": {
        "searchers": {"problems": ["mixed6"], "speeds": {"fast": 0.0}, "seeds": 2, "trials": 8,
                      "methods": ["dgp", "random", "tpe"], "budgets": [4, 8]},
        "depth": {"targets": ["conv2d:1,64,56,56,64,3,1,1"], "max_history": 600, "steps": 30,
                  "variants": {"dgp": {}}},
        "replay": {"runs": [{"name": "loto", "targets": ["conv2d:1,64,56,56,64,3,1,1", "dense:1,512,1000"],
                             "seeds": 1, "budget": 8, "random_seeds": 5, "max_history": 600,
                             "methods": "cold,dgp,sgp,rgpe", "split": 2}]},
        "layers": None,
        "e2e": None,
    },
    "full": {
        "depth": {"targets": ["conv2d:1,64,56,56,64,3,1,1", "depthwise:1,256,28,28,3,1,1", "dense:1,512,1000"],
                  "max_history": 4000, "steps": None,
                  "variants": {"dgp (hidden scale 0.01)": {"hidden_noise": 0.01}, "dgp (0.1)": {"hidden_noise": 0.1},
                               "dgp (0.3)": {"hidden_noise": 0.3}, "sgp": {"hidden_dims": []}}},
        "searchers": {"problems": ["mixed6", "hartmann6"], "speeds": {"fast": 0.0}, "seeds": 5,
                      "trials": 40, "methods": ["dgp", "dgp_sync", "random", "tpe", "hebo"],
                      "budgets": [10, 20, 40],
                      "slow": {"problems": ["mixed6"], "sleep_s": 1.0, "trials": 40, "budgets": [20, 40]}},
        "replay": {"runs": [
            {"name": "loto", "targets": None, "every": 4, "seeds": 2, "budget": 40, "random_seeds": 50,
             "max_history": 4000, "methods": "cold,dgp,dgp_zs,dgp_notrust,sgp,rgpe,fsbo,mtgp"},
            {"name": "lomo", "lomo": True, "targets": None, "every": 2, "seeds": 2, "budget": 40, "random_seeds": 50,
             "max_history": 4000, "methods": "cold,dgp,dgp_zs,dgp_notrust,sgp,rgpe,fsbo,mtgp"}]},
        "layers": {"workloads": ["conv2d:1,160,14,14,320,3,1,1", "conv2d:1,96,28,28,192,5,1,2"], "trials": 64,
                   "seeds": [0, 1], "methods": ["dgp", "cold", "dgp_nocs", "random", "dgp_ri", "tpe", "hebo",
                                                  "metaschedule"]},
        "e2e": {"models": ["resnet18", "mobilenet_v1", "vgg16", "alexnet"], "trials": 300,
                "metaschedule": ["resnet18"]},
    },
}


# -- bookkeeping ---------------------------------------------------------------------------------------------------------
def commit() -> str:
    p = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return p.stdout.strip() + (" (uncommitted changes)" if dirty else "")


def machine() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    from raydgp.measure.peak import cpu_name

    try:
        from raydgp.space.metaschedule import host_target

        mcpu = host_target("llvm", os.cpu_count())["mcpu"]
    except Exception:  # noqa: BLE001 - a machine without a working TVM still reports the rest
        mcpu = "?"
    try:  # puts the bootstrap's separate HEBO directory on sys.path, so its version is found
        from raydgp.raytune.flat_searcher import hebo_search_class

        hebo_search_class()
    except Exception:  # noqa: BLE001 - reported as not installed
        pass
    vers = {}
    for pkg in ("apache-tvm", "torch", "ray", "botorch", "gpytorch", "optuna", "hebo", "numpy"):
        try:
            vers[pkg] = version(pkg)
        except PackageNotFoundError:
            vers[pkg] = None
    return {"cpu": cpu_name(), "mcpu": mcpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "versions": vers}


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def machine_key(mach: dict) -> str:
    """The hardware kind a result belongs to: LLVM ``mcpu`` and core count, e.g. ``znver3-2c``."""
    return f"{mach.get('mcpu', '?')}-{mach.get('cores', '?')}c"


def results_file(out_dir: Path, quick: bool, key: str) -> Path:
    """The JSON of this machine kind's results (figures from two machine kinds are never merged or compared).

    ``bench.json`` holds the first machine kind's results (and any kind's, until one is recorded there); another
    kind's go to ``bench_<key>.json`` and its own BENCHMARKS.md section, plots and work folders.
    """
    if quick:
        return out_dir / "bench_quick.json"
    first = out_dir / "bench.json"
    if not first.exists() or machine_key(_load(first).get("machine", {})) in (key, "?-?c"):
        return first
    return out_dir / f"bench_{key}.json"


def nhwc_spec(spec: str) -> str:
    """A layer spec in its NHWC spelling (``conv2d:`` -> ``conv2d_nhwc:``, ``depthwise:`` -> ``depthwise_nhwc:``;
    other ops as they are)."""
    for op in ("conv2d", "depthwise"):
        if spec.startswith(op + ":"):
            return f"{op}_nhwc:" + spec.split(":", 1)[1]
    return spec


def file_suffix(path: Path) -> str:
    """``""`` for ``bench.json`` / ``bench_quick.json``, ``"_<key>"`` for a further machine kind's file."""
    return "" if path.stem in ("bench", "bench_quick") else path.stem[len("bench"):]


def _save(path: Path, data: dict) -> None:
    from raydgp.atomic import write_json_atomic

    write_json_atomic(path, data, indent=1)


def _median(v):
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None


# -- part 0: what the depth does -----------------------------------------------------------------------------------------
def run_depth(cfg: dict, out: Path, results: dict) -> None:
    """Stage 1 on the shipped history minus one target (as ``raydgp tune`` subsamples it), per model variant: the
    hidden layer's scales and warping, the mixture's spread, and the zero-shot ranking of the target's records."""
    import numpy as np
    import torch
    from scipy.stats import spearmanr

    from raydgp.dgp.data import InputScaler
    from raydgp.dgp.model import DGPSettings, depth_diagnostics
    from raydgp.dgp.train import pretrain
    from raydgp.records import RecordStore
    from raydgp.search import History, history_from_records
    from raydgp.space.design_space import DesignSpace

    store = RecordStore(ROOT / "raydgp" / "datasets" / "shipped")
    recs = [r for r in store.records() if r.config.sketch >= 0]
    spaces = {k: DesignSpace.from_json(e["space"]) for k, e in store.workload_entries().items() if e.get("space")}
    from raydgp.datasets import layers_of, target_task

    layers = layers_of(recs)
    rows = []
    for spec in cfg["targets"]:
        # the layer's task (key and machine) with the most records, one key holding two machines' recordings; the
        # history leaves out every key of the layer
        tkey, _thw, tgt = target_task(recs, layers[spec])
        hist = history_from_records([r for r in recs if r.workload.key not in layers[spec]], spaces)
        if len(hist) > cfg["max_history"]:
            idx = np.sort(np.random.default_rng(0).choice(len(hist), cfg["max_history"], replace=False))
            hist = History(hist.X[idx], hist.y[idx])
        sc = InputScaler.fit(hist.X)
        X, y = sc.transform(hist.X), torch.as_tensor(hist.y, dtype=torch.float32)
        tspace = spaces[tkey].on_target(tgt[0].target)  # encoded on the machine it was measured on
        Xt = sc.transform(np.stack([tspace.encode(r.config) for r in tgt]))
        yt = -np.log([r.result.median_ms for r in tgt])
        for name, kw in cfg["variants"].items():
            kw = dict(kw)
            if "hidden_dims" in kw:
                kw["hidden_dims"] = tuple(kw["hidden_dims"])
            if cfg.get("steps"):
                kw["pretrain_steps"] = cfg["steps"]
            t0 = time.monotonic()
            model = pretrain(X, y, DGPSettings(**kw), seed=0).model
            fit_s = time.monotonic() - t0
            diag = depth_diagnostics(model, X[:1000])
            rho = float(spearmanr(model.predict(Xt, seed=0)[0].mean(0).numpy(), yt)[0])
            rows.append({"target": spec, "variant": name, "settings": kw, "history_points": len(hist),
                         "pretrain_s": round(fit_s, 1), "zero_shot_spearman": round(rho, 4)} | diag)
            print(f"depth {spec} {name}: {json.dumps(rows[-1])}", flush=True)
    results["depth"] = {"config": cfg, "rows": rows}
    _save(out, results)


# -- part 1: Ray Tune searchers ------------------------------------------------------------------------------------------
def _searcher(method: str, seed: int):
    """A Ray Tune searcher by name, or ``(None, reason)`` when it cannot be built here."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if method in ("dgp", "dgp_sync", "dgp_mb8"):
        from raydgp.raytune.dgp_searcher import DGPSearcher
        from raydgp.search import SearchSettings

        # dgp: as a user gets it (2 trials at a time: proposals from the background queue); dgp_sync: every
        # proposal computed inside suggest() on a model refitted on every result (the quality reference);
        # dgp_mb8: dgp whose queue batches grow up to 8 when the model is slower than the trials (queue_max_batch=8,
        # the default for every searcher between 2026-12-05 and 2026-12-07, now only in raydgp's own jobs)
        return DGPSearcher(metric="loss", mode="min", settings=SearchSettings(
            seed=seed, async_refit=method != "dgp_sync", queue="off" if method == "dgp_sync" else "auto",
            **({"queue_max_batch": 8} if method == "dgp_mb8" else {}))), None
    if method == "random":
        return BasicVariantGenerator(random_state=seed), None
    if method == "tpe":
        try:
            from ray.tune.search.optuna import OptunaSearch
            import optuna

            return OptunaSearch(metric="loss", mode="min", sampler=optuna.samplers.TPESampler(seed=seed)), None
        except ImportError as e:
            return None, f"Optuna not installed ({e}); pip install optuna"
    if method == "hebo":
        from raydgp.errors import ConfigError
        from raydgp.raytune.flat_searcher import hebo_search_class

        try:
            return hebo_search_class()(metric="loss", mode="min", random_state_seed=seed), None
        except ConfigError as e:
            return None, str(e)
    raise ValueError(f"unknown searcher {method!r}")


def _one_search(problem: str, method: str, seed: int, trials: int, sleep_s: float, storage: str) -> dict:
    from ray import tune

    from raydgp.raytune.synthetic import problem_space, problem_trainable

    searcher, why = _searcher(method, seed)
    if searcher is None:
        return {"skipped": why}
    space = dict(problem_space(problem), problem=problem, sleep_s=sleep_s)
    t0 = time.monotonic()
    tuner = tune.Tuner(
        tune.with_resources(problem_trainable, {"cpu": 1}), param_space=space,
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=trials, max_concurrent_trials=2,
                                    metric="loss", mode="min", reuse_actors=True),
        run_config=tune.RunConfig(storage_path=storage, name=f"{problem}-{method}-{seed}-{int(sleep_s * 1000)}",
                                  verbose=0))
    grid = tuner.fit()
    wall = time.monotonic() - t0
    rows = sorted(((r.metrics.get("trial_id", ""), r.metrics.get("regret")) for r in grid if r.metrics),
                  key=lambda t: int(t[0].rsplit("_", 1)[-1]) if "_" in t[0] else 0)
    regrets = [float(v) for _, v in rows if v is not None]
    best = []
    for v in regrets:
        best.append(min(v, best[-1]) if best else v)
    out = {"best_regret": best, "trials": len(regrets), "wall_s": round(wall, 2)}
    log = getattr(searcher, "suggest_log", None)
    sg = sorted(t for t, proposed in (log or []) if proposed)  # the driver's time per proposing suggest() call
    if sg:
        out["suggest_ms_median"] = round(1000 * statistics.median(sg), 2)
        out["suggest_ms_p99"] = round(1000 * sg[min(len(sg) - 1, int(0.99 * len(sg)))], 2)
        out["stats"] = {k: v for k, v in searcher.stats.items()}
    return out


def run_searchers(cfg: dict, out: Path, results: dict) -> None:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    storage = tempfile.mkdtemp(prefix="raydgp-bench-")
    part = results.setdefault("searchers", {})
    only = cfg.get("only")
    # --only: (re)run these methods, keep the other methods' runs of the same problems and seeds
    kept = [r for r in part.get("runs", []) if only and r["method"] not in only]
    methods = list(dict.fromkeys((part.get("config") or {}).get("methods", []) + list(only))) if only and kept \
        else (list(only) if only else cfg["methods"])
    cfg = {k: v for k, v in cfg.items() if k != "only"} | {"methods": methods}
    part["config"] = cfg
    runs = part["runs"] = kept
    plans = [(p, "fast", sp, cfg["trials"]) for p in cfg["problems"] for _, sp in cfg["speeds"].items()]
    if cfg.get("slow"):
        plans += [(p, "slow", cfg["slow"]["sleep_s"], cfg["slow"]["trials"]) for p in cfg["slow"]["problems"]]
    try:
        for problem, speed, sleep_s, trials in plans:
            for seed in range(cfg["seeds"]):
                for method in only or cfg["methods"]:  # interleaved: every method within each seed
                    r = _one_search(problem, method, seed, trials, sleep_s, storage)
                    runs.append({"problem": problem, "speed": speed, "sleep_s": sleep_s, "seed": seed,
                                 "method": method, "commit": results.get("commit")} | r)
                    print(f"searchers {problem} {speed} seed {seed} {method}: "
                          f"{r.get('skipped') or r['best_regret'][-1]:.4g}" if "best_regret" in r and r["best_regret"]
                          else f"searchers {problem} {speed} seed {seed} {method}: {r.get('skipped')}", flush=True)
                    _save(out, results)
    finally:
        ray.shutdown()
    part["summary"] = summarise_searchers(runs, cfg)
    _save(out, results)


def _commits_by_method(runs: list) -> str:
    """" Methods run at different commits: ..." when the runs of a part come from more than one commit."""
    by: dict = {}
    for r in runs:
        by.setdefault(r.get("commit") or "?", set()).add(r["method"])
    if len(by) < 2:
        return ""
    return " Methods run at different commits: " + "; ".join(
        f"{', '.join(f'`{m}`' for m in sorted(ms))} at {c}" for c, ms in by.items()) + "."


def summarise_searchers(runs: list, cfg: dict) -> list:
    """Median best regret per (problem, speed, method) at each budget, and the ratio to TPE and to random."""
    rows = []
    keys = sorted({(r["problem"], r["speed"]) for r in runs})
    for problem, speed in keys:
        budgets = cfg["budgets"] if speed == "fast" else cfg["slow"]["budgets"]
        per = {}
        for m in cfg["methods"]:
            rs = [r for r in runs if r["problem"] == problem and r["speed"] == speed and r["method"] == m]
            if not rs or any("skipped" in r for r in rs):
                per[m] = {"skipped": next((r["skipped"] for r in rs if "skipped" in r), "not run")}
                continue
            per[m] = {f"regret@{b}": _median([r["best_regret"][b - 1] if len(r["best_regret"]) >= b else None
                                              for r in rs]) for b in budgets}
            per[m]["seeds"] = len(rs)
            per[m]["wall_s"] = _median([r["wall_s"] for r in rs])
            if any("suggest_ms_median" in r for r in rs):
                per[m]["suggest_ms_median"] = _median([r.get("suggest_ms_median") for r in rs])
                per[m]["suggest_ms_p99"] = max(r.get("suggest_ms_p99", 0) for r in rs)
        rows.append({"problem": problem, "speed": speed, "budgets": budgets, "methods": per})
    return rows


# -- part 2: replay ablations --------------------------------------------------------------------------------------------
def run_replay(cfg: dict, out: Path, results: dict) -> None:
    """The replay runs as subprocesses of ``scripts/bench_search_replay.py``, side by side (one core each: replays look
    measurements up, nothing is timed), then their JSON is summarised here."""
    part = results.setdefault("replay", {})
    procs = []
    for run in cfg["runs"]:
        name = run["name"]
        sfx = file_suffix(out)
        js, png = out.parent / f"bench_replay_{name}{sfx}.json", out.parent / f"replay_{name}{sfx}.png"
        methods = ",".join(cfg["only"]) if cfg.get("only") else run["methods"]
        argv = ["--seeds", str(run["seeds"]), "--budget", str(run["budget"]), "--random-seeds",
                str(run["random_seeds"]), "--max-history", str(run["max_history"]), "--methods", methods,
                "--out", str(js), "--plot", str(png)]
        if cfg.get("only"):  # add these methods to the earlier run's results (same targets and settings)
            argv += ["--add-to", str(js)]
        if run.get("lomo"):
            argv.append("--lomo")
        if run.get("targets"):
            argv += ["--targets", ";".join(run["targets"])]
        elif run.get("every"):
            argv += ["--shard", f"0/{run['every']}"]
        log = out.parent / f"bench_replay_{name}.log"
        script = str(ROOT / "scripts" / "bench_search_replay.py")
        env = dict(os.environ, OMP_NUM_THREADS="1")
        split = int(run.get("split", 1))
        if split > 1 and run.get("targets") and not cfg.get("only"):
            # its targets in `split` processes side by side (one core each), merged into one result when all end
            shards = [run["targets"][i::split] for i in range(split)]
            parts = [js.with_name(f"{js.stem}.part{i}.json") for i in range(len(shards))]
            drop = {"--out", "--plot", "--targets"}  # each shard's own
            base = [a for i, a in enumerate(argv) if a not in drop and (i == 0 or argv[i - 1] not in drop)]
            children = [subprocess.Popen([sys.executable, script, *base, "--targets", ";".join(t), "--out", str(pj)],
                                         cwd=ROOT, stdout=open(log.with_suffix(f".part{i}.log"), "w"),
                                         stderr=subprocess.STDOUT, env=env)
                        for i, (t, pj) in enumerate(zip(shards, parts))]
            proc = _Merged(children, [sys.executable, script, "--merge", *map(str, parts), "--out", str(js),
                                      "--plot", str(png)], log, env)
        else:
            proc = subprocess.Popen([sys.executable, script, *argv], cwd=ROOT, stdout=open(log, "w"),
                                    stderr=subprocess.STDOUT, env=env)
        procs.append((run, js, png, argv, time.monotonic(), proc))
        if len(procs) >= int(cfg.get("parallel", 2)):
            _finish_replay(procs.pop(0), part)
            _save(out, results)
    while procs:
        _finish_replay(procs.pop(0), part)
        _save(out, results)


class _Merged:
    """A replay run split into processes (``wait()`` like a Popen): waits for every shard, then merges them."""

    def __init__(self, children: list, merge_cmd: list, log: Path, env: dict):
        self.children, self.merge_cmd, self.log, self.env = children, merge_cmd, log, env

    def wait(self) -> int:
        codes = [c.wait() for c in self.children]
        if any(codes):
            return next(c for c in codes if c)
        with open(self.log, "w") as f:
            rc = subprocess.run(self.merge_cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=self.env).returncode
        if rc == 0:  # merged: the shards' JSON is in the run's own (their logs stay)
            for a, b in zip(self.merge_cmd, self.merge_cmd[1:]):
                if a != "--out" and b.endswith(".json") and ".part" in b:
                    Path(b).unlink(missing_ok=True)
        return rc


def _finish_replay(item, part: dict) -> None:
    run, js, png, argv, t0, proc = item
    rc = proc.wait()
    if rc != 0:
        raise RuntimeError(f"replay {run['name']} failed (exit {rc}); see {js.with_suffix('.log')}")
    res = json.loads(js.read_text())
    earlier = part.get(run["name"], {})
    wall = round(time.monotonic() - t0, 1) + (earlier.get("wall_s", 0) if "--add-to" in argv else 0)
    part[run["name"]] = {"argv": argv, "wall_s": wall, "json": js.name, "plot": png.name, "added": res.get("added"),
                         "targets": len(res["targets"]), "budget": res["budget"], "seeds": res["seeds"],
                         "median_over_targets": res["median_over_targets"],
                         "mean_over_targets": res["mean_over_targets"], "wins": _replay_wins(res)}
    print(f"replay {run['name']}: {len(res['targets'])} targets, {part[run['name']]['wall_s']} s", flush=True)


def _replay_wins(res: dict) -> dict:
    """Per method: on how many targets it needed fewer / more trials to 5% than the cold DGP (ties not counted)."""
    ts = res["targets"].values()
    methods = [m for m in next(iter(ts)) if isinstance(next(iter(ts))[m], dict) and "trials_to_5pct" in
               next(iter(ts))[m]]
    out = {}
    for m in methods:
        if m == "cold" or not all("cold" in t for t in ts):
            continue
        better = sum(t[m]["trials_to_5pct"] < t["cold"]["trials_to_5pct"] for t in ts)
        worse = sum(t[m]["trials_to_5pct"] > t["cold"]["trials_to_5pct"] for t in ts)
        out[m] = {"fewer_trials_than_cold": better, "more_trials_than_cold": worse}
    return out


# -- part 3: live layers -------------------------------------------------------------------------------------------------
def run_layers(cfg: dict, out: Path, results: dict) -> None:
    part = results.setdefault("layers", {"config": cfg, "runs": []})
    have = {r.get("seed", 0) for r in part.get("runs", [])}
    # the stored config names every seed the runs hold (a --seeds run adds seeds to the earlier ones)
    # ... and every workload they hold (a --workloads run adds layers to the earlier ones)
    done = [r["workload"] for r in part.get("runs", [])]
    workloads = list(dict.fromkeys(done + list(cfg["workloads"])))
    part["config"] = dict(cfg, seeds=sorted(have | set(cfg.get("seeds", [0]))), workloads=workloads,
                          shipped_kinds=_shipped_kinds())
    work = out.parent / f"bench_layers{file_suffix(out)}"
    work.mkdir(parents=True, exist_ok=True)
    for seed in cfg.get("seeds", [0]):
        for spec in cfg["workloads"]:
            _run_layer(spec, seed, cfg, part, work, out, results)


#: The layers part's methods besides MetaSchedule: (``raydgp layer --searcher``, with the shipped history?,
#: ``--search-option`` values).
LAYER_METHODS = {"dgp": ("dgp", True, ()), "cold": ("dgp", False, ()), "random": ("random", False, ()),
                 "tpe": ("tpe", False, ()), "hebo": ("hebo", False, ()),
                 "dgp_ri": ("dgp", True, ("random_interleave=0.2",)),
                 "dgp_nocs": ("dgp", True, ("cold_start=off",)),
                 "dgp_sm": ("dgp", True, ("sketch_min=4",)),
                 "dgp_nosm": ("dgp", True, ("sketch_min=0",)),
                 "dgp_sm6": ("dgp", True, ("sketch_min=6",)),
                 "dgp_rinit": ("dgp", True, ("init=random",)),
                 "dgp_hinit": ("dgp", True, ("init=dgp",)),
                 "dgp_sma": ("dgp", True, ("sketch_min_when=always",)),
                 "dgp_mp": ("dgp", True, ("member_pick=sample",)),
                 "dgp_cf": ("dgp", True, ("cold_refresh=0",)),
                 "dgp_all": ("dgp", True, ("finetune_scope=all",)),
                 "dgp_st": ("dgp", True, ("stacked_member=on",)),
                 "dgp_shtop": ("dgp", True, ("member_mix=share", "trust_pairs=top")),
                 "dgp_nopf": ("dgp", True, ("prefetch=off",)),
                 "dgp_pf": ("dgp", True, ("prefetch=on",)),
                 "dgp_pt1": ("dgp", True, ("pretrain_threads=1",)),
                 "dgp_dcs": ("dgp", True, ("distrust_cold_steps=on",))}


def _run_layer(spec: str, seed: int, cfg: dict, part: dict, work: Path, out: Path, results: dict) -> None:
    """Every method on one layer with one seed, then their bests re-timed together."""
    fast = ROOT / "scripts" / "bench_fast.py"
    shipped = str(ROOT / "raydgp" / "datasets" / "shipped")
    tag = spec.replace(":", "_").replace(",", "_")
    same = lambda r: r["workload"] == spec and r.get("seed", 0) == seed  # noqa: E731
    row = next((r for r in part["runs"] if same(r)), None)
    if row is None or not cfg.get("only"):
        row = {"workload": spec, "seed": seed, "trials": cfg["trials"], "date": time.strftime("%Y-%m-%d %H:%M"),
               "methods": {}}
        part["runs"] = [r for r in part["runs"] if not same(r)] + [row]
    for method in cfg.get("only") or cfg["methods"]:  # --only: (re)run these methods, keep the others'
        row.setdefault("commits", {})[method] = commit()
        d = work / f"{method}-{tag}-s{seed}-{time.strftime('%H%M%S')}"
        if method == "metaschedule":
            cmd = [sys.executable, str(fast), "_ms", spec, str(cfg["trials"]), str(d), str(seed)]
        else:
            searcher, history, options = LAYER_METHODS[method]
            cmd = [sys.executable, "-m", "raydgp", "layer", "--workload", spec, "--trials", str(cfg["trials"]),
                   "--out", str(d), "--seed", str(seed), "--searcher", searcher]
            cmd += ["--history", shipped] if history else []
            for o in options:
                cmd += ["--search-option", o]
        t0 = time.monotonic()
        p = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True,
                           env=dict(os.environ, RAYDGP_HOME=str(work / "home"),
                                    # --fresh-stage1: an empty stage-1 cache per run, as a user's first run of a layer
                                    **({"RAYDGP_CACHE": str(work / "cache" / d.name)} if cfg.get("fresh_stage1")
                                       else {})))
        wall = time.monotonic() - t0
        (work / f"{d.name}.log").write_text(p.stdout + "\n--- stderr ---\n" + p.stderr)
        entry = {"wall_s": round(wall, 1), "exit": p.returncode, "dir": d.name}
        if method == "metaschedule":
            entry["curve_ms"] = _ms_curve(d)
            entry["best_record"] = _ms_best_record(d)  # kept in the JSON: a later --only rerun re-times it again
        else:
            entry["curve_ms"], entry["best"], entry["times_s"] = _layer_curve(d / "records")
        row["methods"][method] = entry
        print(f"layers {spec} seed {seed} {method}: exit {p.returncode}, {wall:.0f} s", flush=True)
        _save(out, results)
    row["retimed"] = _retime(spec, row, work)
    _save(out, results)


def _layer_curve(store_dir: Path):
    """Best latency after each trial (ms, in measurement order) and the best record's trace."""
    from raydgp.records import RecordStore
    from raydgp.space.design_space import DesignSpace

    if not store_dir.exists():
        return [], None, []
    store = RecordStore(store_dir)
    recs = [r for r in store.records() if r.config.sketch >= 0 and r.tag != "retime"]
    curve, best, best_r = [], float("inf"), None
    for r in recs:
        if r.result.ok and r.result.median_ms < best:
            best, best_r = r.result.median_ms, r
        curve.append(best if best < float("inf") else None)
    times = [round(r.time - recs[0].time, 2) for r in recs]  # seconds after the first record was written
    if best_r is None:
        return curve, None, times
    space = DesignSpace.from_json(store.workload_entries()[best_r.workload.key]["space"])
    return curve, {"trace": space.trace_json(best_r.config), "ms": best}, times


def _ms_curve(work_dir: Path) -> list:
    """MetaSchedule's best latency after each trial (ms), from its JSON database (run seconds x 1000)."""
    f = next(work_dir.glob("**/database_tuning_record.json"), None)
    if f is None:
        return []
    curve, best = [], float("inf")
    for line in f.read_text().splitlines():
        try:
            secs = json.loads(line)[1][1]
        except (ValueError, IndexError, TypeError):
            continue
        v = 1000 * statistics.median(secs) if secs and all(s < 1e9 for s in secs) else None
        if v is not None and v < best:
            best = v
        curve.append(best if best < float("inf") else None)
    return curve


def _ms_best_record(work_dir: Path) -> list | None:
    """MetaSchedule's fastest tuning record (the JSON database's ``[workload_index, record]`` line, parsed), or None."""
    f = next(work_dir.glob("**/database_tuning_record.json"), None)
    best, best_s = None, float("inf")
    for line in (f.read_text().splitlines() if f else []):
        try:
            rec = json.loads(line)
            secs = rec[1][1]
        except (ValueError, IndexError, TypeError):
            continue
        if secs and all(x < 1e9 for x in secs) and statistics.median(secs) < best_s:
            best, best_s = rec, statistics.median(secs)
    return best


def _shipped_kinds() -> str:
    """The machine kinds of the shipped dataset's recordings, as a phrase (read from the dataset, not assumed)."""
    import collections
    import gzip

    path = ROOT / "raydgp" / "datasets" / "shipped" / "records.jsonl.gz"
    try:
        with gzip.open(path, "rt") as f:
            kinds = collections.Counter(f"`{t.get('mcpu', '?')}` ({t.get('num-cores', '?')} cores)"
                                        for t in (json.loads(line).get("target", {}) for line in f if line.strip()))
    except (OSError, ValueError) as err:
        return f"recordings whose machine kinds could not be read ({type(err).__name__})"
    return "recordings of " + ", ".join(f"{k}: {n}" for k, n in kinds.most_common())


def _ms_schedule(task, record: list, target: dict):
    """MetaSchedule's best schedule of ``task`` rebuilt from its stored tuning record (no database folder needed)."""
    from tvm.s_tir import meta_schedule as ms

    from raydgp.space.metaschedule import make_target

    db = ms.database.MemoryDatabase()
    wl = db.commit_workload(task.mod)
    db.commit_tuning_record(ms.database.TuningRecord.from_json(record[1], wl))
    return ms.tir_integration.compile_tir(db, task.mod, make_target(target))


def _retime(spec: str, row: dict, work: Path, rounds: int = 5) -> dict:
    """Every method's best schedule re-timed by raydgp's measurer, interleaved (one measurement method for all)."""
    import tvm

    from raydgp.measure.local import LocalMeasurer
    from raydgp.measure.protocol import MeasureSettings, TaskPayload
    from raydgp.space.metaschedule import host_target
    from raydgp.space.workloads import make_task

    target = host_target("llvm", os.cpu_count())
    task = make_task(spec, target)
    payload = TaskPayload(task.workload.key, task.mod_json, target)
    cands = {}
    for m, e in row["methods"].items():
        if m == "metaschedule":
            try:
                if e.get("best_record") is None and (work / e["dir"]).is_dir():  # a run from before best_record
                    e["best_record"] = _ms_best_record(work / e["dir"])
                if e.get("best_record") is None:
                    raise RuntimeError(f"no MetaSchedule tuning record kept for this run ({e['dir']})")
                sch = _ms_schedule(task, e["best_record"], target)
                if sch is not None:
                    cands[m] = (None, tvm.ir.save_json(sch.mod))
            except Exception as err:  # noqa: BLE001 - said in the results
                row["methods"][m]["retime_error"] = f"{type(err).__name__}: {err}"[:200]
        elif e.get("best"):
            cands[m] = (e["best"]["trace"], None)
    times = {m: [] for m in cands}
    with LocalMeasurer(MeasureSettings(num_threads=os.cpu_count())) as meas:
        for _ in range(rounds):
            for m, (trace, mod) in cands.items():
                r = meas.measure(payload, trace, mod).result if mod else meas.measure(payload, trace).result
                times[m].append(r.median_ms if r.ok else None)
    return {m: {"ms": v, "median_ms": _median(v)} for m, v in times.items()}


# -- part 5: whole models ----------------------------------------------------------------------------------------------
E2E_KEYS = ("trials_total", "tuning_wall_s", "wall_s", "tuned_ms", "verified", "max_abs_err", "pytorch_ms",
            "onnxruntime_ms", "untuned_ms", "layer_best_sum_ms", "exit", "commit", "date", "history")


def run_e2e(cfg: dict, out: Path, results: dict) -> None:
    """Each model through ``raydgp tune`` and (for ``cfg["metaschedule"]``) MetaSchedule ``tune_relax`` at the same
    trial count, one after another, by ``scripts/bench_fast.py`` (its raw rows in ``bench/bench_e2e/``); a run is
    replaced only when it is rerun, so an interrupted part keeps what it finished."""
    part = results.setdefault("e2e", {})
    part["config"] = {k: v for k, v in cfg.items() if k not in ("only", "run_models")}
    runs = part.setdefault("runs", [])
    work = out.parent / f"bench_e2e{file_suffix(out)}"
    only = set(cfg.get("only") or ("raydgp", "metaschedule"))
    script = str(ROOT / "scripts" / "bench_fast.py")

    def keep(row: dict) -> None:
        runs[:] = [r for r in runs if (r["model"], r["method"]) != (row["model"], row["method"])] + [row]
        _save(out, results)

    for model in cfg.get("run_models") or cfg["models"]:
        for method in ("raydgp", "metaschedule"):
            if method not in only or (method == "metaschedule" and model not in cfg.get("metaschedule", ())):
                continue
            before = len(_load(work / "bench_fast.json").get("models", [])) if (work / "bench_fast.json").exists() else 0
            sub = (["models", "--model", model, "--trials", str(cfg["trials"])] if method == "raydgp"
                   else ["ms-model", "--model", model, "--trials", str(cfg["trials"])])
            p = subprocess.run([sys.executable, script, *sub, "--out", str(work)], cwd=ROOT, text=True,
                               capture_output=True)
            rows = _load(work / "bench_fast.json").get("models", []) if (work / "bench_fast.json").exists() else []
            raw = rows[before] if len(rows) > before else {"exit": p.returncode}
            row = {"model": model, "method": method, "trials": cfg["trials"],
                   **{k: raw.get(k) for k in E2E_KEYS}, "stderr_tail": p.stderr[-400:] if p.returncode else ""}
            keep(row)
            print(f"e2e {model} {method}: tuned {row['tuned_ms']} ms (verified {row['verified']}), PyTorch "
                  f"{row['pytorch_ms']} ms, ORT {row['onnxruntime_ms']} ms, tuning {row['tuning_wall_s']} s", flush=True)


def _render_e2e(e2e: dict) -> list[str]:
    cfg = e2e.get("config", {})
    lines = ["### 7.4 End to end: whole models (batch 1, fp32, all cores)", "",
             f"`raydgp tune --trials {cfg.get('trials')}` per model (history: the shipped dataset; each model's "
             "library verified against the framework), MetaSchedule `tune_relax` at the same trial count on the same "
             "prepared module (weights layout-free, the same build pipeline), one after another. PyTorch eager, ONNX "
             "Runtime and untuned TVM timed in fresh processes after each tuning run (same threads), so each row's "
             "ratios come from one run. Tuning wall: the search itself (raydgp: its Ray experiments; MetaSchedule: "
             "`tune_relax`); all in: the whole command (set-up, tuning, build, verification, references).", "",
             "| model | tuner | trials | tuning wall | all in | tuned (verified) | PyTorch eager | ONNX Runtime | "
             "untuned TVM | tuned / PyTorch | tuned / ORT | commit, date |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in e2e.get("runs", []):
        t, pt, ort = r.get("tuned_ms"), r.get("pytorch_ms"), r.get("onnxruntime_ms")
        ver = "yes" if r.get("verified") else ("NO" if r.get("verified") is False else f"failed (exit {r.get('exit')})")
        lines.append(f"| {r['model']} | {r['method']} | {r.get('trials_total') or r.get('trials')} | "
                     f"{_f(r.get('tuning_wall_s'), 4)} s | {_f(r.get('wall_s'), 4)} s | {_f(t)} ms ({ver}) | "
                     f"{_f(pt)} ms | {_f(ort)} ms | {_f(r.get('untuned_ms'), 4)} ms | "
                     f"{_f(t / pt) if t and pt else '-'} | {_f(t / ort) if t and ort else '-'} | "
                     f"{(r.get('commit') or '-')[:7]}, {r.get('date') or '-'} |")
    hist = [f"{r['model']}: {r['history']}" for r in e2e.get("runs", []) if r["method"] == "raydgp" and r.get("history")]
    if hist:
        lines += ["", "History each raydgp run transferred from (the shipped dataset plus the user store, which holds "
                  "the earlier runs' records of this machine, so later models see the earlier ones; each layer's own "
                  "workload is left out of its history, but the shipped dataset holds ResNet-18's and MobileNet-v1's "
                  "other layers, so for those two models the history knows the model, for AlexNet and VGG-16 it "
                  "does not): "
                  + "; ".join(hist) + "."]
    missing = [m for m in cfg.get("models", []) if m not in {r["model"] for r in e2e.get("runs", [])}]
    if missing:
        lines += ["", f"Not run (the part was stopped before them): {', '.join(missing)}."]
    by = {(r["model"], r["method"]): r for r in e2e.get("runs", [])}
    t1 = []
    for (model, method), ms in by.items():
        ours = by.get((model, "raydgp"))
        if method != "metaschedule" or not ours or not ours.get("tuned_ms") or not ms.get("tuned_ms"):
            continue
        red = 1 - ours["tuning_wall_s"] / ms["tuning_wall_s"] if ours.get("tuning_wall_s") and ms.get(
            "tuning_wall_s") else None
        imp = 1 - ours["tuned_ms"] / ms["tuned_ms"]
        hv = (1 + (red or 0)) * (1 + imp) - 1
        t1.append(f"| {model} | {_pct(red)} | {_pct(imp)} | {_pct(hv)} |")
    if t1:
        lines += ["", "Table 1 (the seed's metrics) end to end at equal trials: search-time reduction = 1 - raydgp's "
                  "tuning wall / MetaSchedule's; latency improvement = 1 - raydgp's tuned latency / MetaSchedule's; "
                  "HV = (1 + reduction) x (1 + improvement) - 1.", "",
                  "| model | search-time reduction | latency improvement | HV |", "|---|---|---|---|", *t1]
    return lines + [""]


# -- render --------------------------------------------------------------------------------------------------------------
def _f(v, nd=3):
    return "-" if v is None else f"{v:.{nd}g}"


def render(results: dict, bench_md: Path, out_dir: Path, suffix: str = "") -> str:
    """The BENCHMARKS.md section (returned, and written between the markers) and the plots (PNG, next to the JSON).

    ``suffix`` (``file_suffix`` of the results file): a further machine kind's results get their own section, markers
    and plot files, so no table ever mixes two machine kinds.
    """
    mach = results.get("machine", {})
    v = mach.get("versions", {})
    begin, end = (BEGIN, END) if not suffix else (f"<!-- bench{suffix}:begin -->", f"<!-- bench{suffix}:end -->")
    title = ("## 7. Evidence: `scripts/bench.py` (issue 12)" if not suffix else
             f"## 7 (`{suffix[1:]}`). Evidence in NHWC (`--layout NHWC`, the layers `raydgp tune` builds on CPU): "
             "`scripts/bench.py` (issue 12)" if suffix.endswith("-nhwc") else
             f"## 7 (`{suffix[1:]}`). Evidence on another machine kind: `scripts/bench.py` (issue 12)")
    lines = [begin, title, "",
             f"Command: `python scripts/bench.py{' --quick' if results.get('mode') == 'quick' else ''}"
             f"{' --parts layers --layout NHWC' if suffix.endswith('-nhwc') else ''}` "
             f"({results.get('mode')} mode; raw results `{out_dir.name}/{results.get('file', 'bench.json')}`), "
             f"latest run at commit {results.get('commit')}, {results.get('date')}. Machine: {mach.get('cpu')} "
             f"(LLVM mcpu `{mach.get('mcpu')}`), {mach.get('cores')} cores, {mach.get('platform')}; Python "
             f"{mach.get('python')}, TVM {v.get('apache-tvm')}, torch {v.get('torch')}, Ray {v.get('ray')}, BoTorch "
             f"{v.get('botorch')}, GPyTorch {v.get('gpytorch')}, Optuna {v.get('optuna')}, HEBO {v.get('hebo')}.", ""]
    if results.get("part_commit"):
        done = [p for p in PARTS if p in results]
        lines[-2] += (" Parts ran one after another on this machine (the replay's runs side by side, one core each: "
                      "replays time nothing): ") + "; ".join(
            f"{p} at {results['part_commit'][p]}, {results.get('part_date', {}).get(p, '?')}, "
            f"{results.get('part_wall_s', {}).get(p, '?')} s" if p in results["part_commit"]
            else f"{p} (commit not recorded: run before this script recorded it)" for p in done) + "."
    dp = results.get("depth")
    if dp and dp.get("rows"):
        lines += ["### 7.0 What the hidden layer does (stage 1 on the shipped history, one target held out)", "",
                  "`warp`: RMS of the hidden GPs' mean minus their linear mean, relative to the linear mean's spread "
                  "(0: the hidden layer is a fixed linear projection); `mixture`: variance of the output mean across "
                  "the mixture components over the mean within-component variance (0: one Gaussian); zero-shot: "
                  "Spearman of the pre-trained model's prediction with the held-out target's measured latencies.", "",
                  "| held-out target | model | history | hidden output scale (min / median / max) | warp | mixture | "
                  "zero-shot Spearman | pre-train |", "|---|---|---|---|---|---|---|---|"]
        for r in dp["rows"]:
            hs = "; ".join("/".join(f"{v:.3g}" for v in layer) for layer in r["hidden_outputscale"]) or "(none)"
            wp = "; ".join(f"{v:.3g}" for v in r["warp"]) or "-"
            lines.append(f"| {r['target']} | {r['variant']} | {r['history_points']} | {hs} | {wp} | "
                         f"{r['mixture_between_within']:.3g} | {r['zero_shot_spearman']:.3f} | {r['pretrain_s']} s |")
        lines.append("")
    s = results.get("searchers")
    if s and s.get("summary"):
        cfg = s["config"]
        lines += ["### 7.1 As a plain Ray Tune searcher (no history)", "",
                  f"Median best regret (best loss found minus the known optimum; lower is better) over "
                  f"{cfg['seeds']} seeds, 2 trials at a time, methods interleaved within each seed. `fast`: the "
                  "trial returns at once (faster than a refit); "
                  + (f"`slow`: each trial sleeps {cfg['slow']['sleep_s']} s. " if cfg.get("slow") else "")
                  + "`dgp`: DGPSearcher's default (background refits, at most one result behind); `dgp_sync`: "
                    "refit on every result before proposing"
                  + ("; `dgp_mb8`: `dgp` whose queue batches grow up to 8 proposals when the model is slower than "
                     "the trials (`queue_max_batch=8`: every searcher's default from 2026-12-05 to 2026-12-07, now "
                     "raydgp's own jobs' only)" if "dgp_mb8" in cfg["methods"] else "") + "."
                  + _commits_by_method(s.get("runs", [])), ""]
        for row in s["summary"]:
            bs = row["budgets"]
            lines += [f"**{row['problem']}, {row['speed']} trials**", "",
                      "| method | " + " | ".join(f"regret @{b}" for b in bs) + " | wall per run | suggest() median / "
                      "p99 |", "|---" * (len(bs) + 3) + "|"]
            for m, r in row["methods"].items():
                if "skipped" in r:
                    lines.append(f"| {m} | " + " | ".join("-" for _ in bs) + f" | not run: {r['skipped']} | |")
                    continue
                sug = (f"{_f(r.get('suggest_ms_median'))} / {_f(r.get('suggest_ms_p99'))} ms"
                       if r.get("suggest_ms_median") is not None else "")
                lines.append(f"| {m} | " + " | ".join(_f(r.get(f"regret@{b}")) for b in bs)
                             + f" | {_f(r.get('wall_s'))} s | {sug} |")
            lines.append("")
        _plot_searchers(s, out_dir / f"searchers{suffix}.png")
        lines += [f"![searchers]({out_dir.name}/searchers{suffix}.png)", ""]
    rp = results.get("replay")
    if rp:
        lines += ["### 7.2 Replay ablations (recorded dataset, looked up: no measurement noise)", "",
                  "Each target layer's recorded configurations are the candidates; the other layers are the history "
                  "(loto: every other layer; lomo: ResNet-18's layers only, MobileNet-v1's as targets). "
                  "`dgp`: transfer with the trust in history (the default: the fine-tuned, the zero-shot and the cold "
                  "model as members); `dgp_nozs`: the trust without the zero-shot member; `dgp_notrust`: no trust "
                  "(the fine-tuned model alone); `dgp_ri`: `dgp` with one proposal in five random; `dgp_nocs`: `dgp` "
                  "without the cold start (`cold_start=False`; the entries copied from the earlier `dgp` run, which "
                  "predates the setting); `dgp_sm`: `dgp` with every sketch given at least 4 configurations "
                  "(`sketch_min=4`); `dgp_mp`: `dgp` with one member drawn per proposal by the trust weights "
                  "(`member_pick=sample`) instead of the weighted mixture's EI; `cold`: no "
                  "history; `dgp_zs`: the pre-trained model zero-shot throughout; `sgp`: the same pipeline with no hidden layer "
                  "(a one-layer sparse GP: what depth buys); `exact_gp`: BoTorch SingleTaskGP on history + target. "
                  "The transfer peers (`scripts/transfer_peers.py`, same history, candidates and budget; the first 3 "
                  "picks zero-shot, the best predicted on average over the history tasks): `mtgp`: BoTorch "
                  "`MultiTaskGP` on 12 points per history task + the target's results, refitted every 10; `rgpe`: "
                  "the ranking-weighted ensemble of per-task GPs (200 points each) and a target GP, weights from "
                  "ranking-loss samples with weight dilution prevention (BoTorch's RGPE tutorial, Feurer et al. "
                  "2018); `fsbo`: a deep-kernel GP (MLP 64-64-16 under Matern-5/2) meta-trained on single-task "
                  "batches of the history (1500 steps), fine-tuned on the target's results before every pick "
                  "(Wistuba & Grabocka 2021). "
                  "Medians over targets of the per-target medians over seeds; best found relative to the best "
                  "candidate; trials to come within 5% (budget+1 if never).", ""]
        for name, r in rp.items():
            med = r["median_over_targets"]
            keys = list(next(iter(med.values())))
            added = "; ".join(f"{', '.join(a['methods'])} added {a['date']}" for a in r.get("added") or [])
            lines += [f"**{name}: {r['targets']} targets, {r['seeds']} seeds, budget {r['budget']}** "
                      f"(`{r['json']}`, {r['wall_s']:.0f} s{'; ' + added if added else ''})", "",
                      "| method | " + " | ".join(f"median {k}" for k in keys) + " | mean trials_to_5pct | "
                      "targets faster / slower to 5% than cold |", "|---" * (len(keys) + 3) + "|"]
            for m, vals in med.items():
                w = r["wins"].get(m)
                wl = f"{w['fewer_trials_than_cold']} / {w['more_trials_than_cold']}" if w else ""
                lines.append(f"| {m} | " + " | ".join(_f(vals[k]) for k in keys)
                             + f" | {_f(r['mean_over_targets'][m]['trials_to_5pct'])} | {wl} |")
            lines += ["", f"![replay {name}]({out_dir.name}/{r['plot']})", ""]
    ly = results.get("layers")
    if ly and ly.get("runs"):
        ms_ratio = [e["curve_ms"][-1] / row["retimed"]["metaschedule"]["median_ms"] for row in ly["runs"]
                    for m, e in row["methods"].items() if m == "metaschedule" and e.get("curve_ms")
                    and e["curve_ms"][-1] and (row.get("retimed", {}).get("metaschedule") or {}).get("median_ms")]
        ms_note = (f"{min(ms_ratio):.2f}-{max(ms_ratio):.2f}x its own best re-timed here" if ms_ratio
                   else "not re-timed in these runs")
        by_commit: dict = {}
        for row in ly["runs"]:
            for m, c in row.get("commits", {}).items():
                by_commit.setdefault(c.split()[0], set()).add(m)
        lines += ["### 7.3 Live, per layer (real TVM builds and timings)", "",
                  ("Searches by commit: " + "; ".join(f"{', '.join(sorted(ms))} at {c}"
                                                     for c, ms in sorted(by_commit.items()))
                   + ". Methods at an older commit were not rerun (`--only`) and may come from an earlier session; "
                   "every method's best schedule was re-timed together after the latest rerun, so the re-timed "
                   "column compares them on this machine, the during-search columns only within one commit."
                   if len(by_commit) > 1 else ""),
                  "",
                  f"{ly['config']['trials']} trials per method, one after another, seeds {ly['config'].get('seeds', [0])} "
                  "(each method's own seed; MetaSchedule's `tune_tir(seed=...)`); `dgp` transfers from the shipped "
                  "history (none of these shapes is in it; it holds "
                  + ly["config"].get("shipped_kinds", "recordings of two machine kinds, `znver3` and `rocketlake`, "
                                                      "2 cores each")  # runs before the kinds were recorded
                  + "), `cold` has no "
                  "history; `dgp_nocs` is `dgp` without the cold start (`--search-option cold_start=off`: no random "
                  "points owed to a leading cold member), `dgp_ri` is `dgp` with one proposal in five random "
                  "(`random_interleave=0.2`), `dgp_sm` gives every sketch at least 4 configurations, each the best-"
                  "scored of its sketch (`sketch_min=4`; before 2026-12-04 in every search, since then only while the cold "
                  "member outweighs the history: `sketch_min_when=distrust`), `dgp_sm6` the same with 6 (the default "
                  "at commit 03aac66 only; those runs were named `dgp` then, and that commit's `dgp_nosm` runs, "
                  "`sketch_min=0`, are the `dgp` rows), `dgp_sma` applies it in every search "
                  "(`sketch_min_when=always`), `dgp_rinit` is `dgp` with a random tuning set (`init=random`: the "
                  "history enters through the trust mixture only; since commit 5eda186 what `dgp` does by default on a "
                  "layer whose loop-nest shape no history workload has, so the `dgp` rows before it had the "
                  "history's, which `dgp_hinit` (`init=dgp`) keeps; the NHWC `dgp` rows on emeraldrapids (0273774 to "
                  "8c42b16) had the history's as well: a near shape measured on the machine's kind let the history "
                  "pick then, withdrawn after those runs), `dgp_mp` draws one member per proposal by the trust weights and "
                  "follows its EI (`member_pick=sample`) instead of the mixture's EI, `dgp_cf` fits the cold member afresh on "
                  "every refit as the search without history does (`cold_refresh=0`, the default since 2026-12-02 15:15; "
                  "the `dgp` rows before it used 0.25: afresh once the data grew by a quarter), `dgp_all` fine-tunes every "
                  "parameter of the transferred model (`finetune_scope=all`) instead of its head and output q(u), `dgp_st` adds "
                  "the stacked member (`stacked_member=on`: a cold DGP on the residuals of the zero-shot mean, scaled "
                  "by a slope fitted on the target), `dgp_shtop` weighs the members by how well they order the fast "
                  "configurations (`trust_pairs=top`: only pairs whose better point is among the best quarter) and "
                  "lets those weights decide who leads (`member_mix=share`: each member's EI divided by its own "
                  "largest over the pool before the weighted sum), `dgp_pf` trains stage 1 in the background from the job's start (`prefetch=on`; the default between commits 7e665b6 and the next, when those runs' `dgp` did it and `dgp_nopf` (`prefetch=off`) was today's `dgp`), `dgp_pt1` trains stage 1 on one torch thread (`pretrain_threads=1`; a layer run's default, so today's `dgp` does the same: in the A/B file of 2026-12-07 `dgp`, at 7945985, trained it on the node's cores), `dgp_dcs` fits the cold member with 50 Adam steps instead of 20 while the history's members together hold under 0.2 of the weight (`distrust_cold_steps=on`; the default at commit 51ed046 only, whose `znver3-2c-nhwc` runs were named `dgp` then). Best during the search, then every method's best re-timed by the same measurer "
                  "(5 rounds, interleaved; median). MetaSchedule's during-search columns are its own runner's "
                  f"figures, {ms_note} (its runner times the function it tunes, which for a layout-free weight "
                  "likely still holds the weight-packing block; not verified): only the re-timed column compares "
                  "methods.", "",
                  "| layer | seed | method | best @16 | @32 | @64 | re-timed | trials to 5% of the seed's best | wall |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for row in ly["runs"]:
            rt_all = {m: v.get("median_ms") for m, v in row.get("retimed", {}).items() if v.get("median_ms")}
            ref = min(rt_all.values()) if rt_all else None
            for m, e in row["methods"].items():
                c = e.get("curve_ms") or []
                at = [c[n - 1] if len(c) >= n else None for n in (16, 32, 64)]
                rt = rt_all.get(m)
                hit = next((i + 1 for i, v in enumerate(c) if v and ref and v <= 1.05 * ref), None)
                to5 = "(its own runner)" if m == "metaschedule" else (str(hit) if hit else f"> {len(c)}")
                if e.get("exit") not in (0, None):  # a failed or killed run is shown as such, not as a blank
                    to5 = f"failed (exit {e['exit']})"
                lines.append(f"| {row['workload']} | {row.get('seed', 0)} | {m} | "
                             + " | ".join(_f(x) + " ms" if x else "-" for x in at)
                             + f" | {_f(rt)} ms | {to5} | {e['wall_s']:.0f} s |")
        lines += ["", "Over seeds (re-timed bests): median, the seeds' values, and in how many seeds the method had "
                  "the best re-timed latency of all methods.", "",
                  "| layer | method | median re-timed | per seed | best in seeds | median wall |", "|---|---|---|---|---|---|"]
        for spec, per in _layers_over_seeds(ly).items():
            for m, v in per.items():
                lines.append(f"| {spec} | {m} | {_f(_median(v['ms']))} ms | "
                             + ", ".join(_f(x) for x in v["ms"]) + f" | {v['wins']} of {len(v['ms'])} | "
                             f"{_f(_median(v['wall']))} s |")
        lines.append("")
        lines += _targets_table(ly)
        lines += _table1(ly)
        _plot_layers(ly, out_dir / f"layers{suffix}.png")
        lines += [f"![layers]({out_dir.name}/layers{suffix}.png)", ""]
    if results.get("e2e", {}).get("runs"):
        lines += _render_e2e(results["e2e"])
    lines.append(end)
    section = "\n".join(lines)
    write_section(bench_md, begin, end, section)
    return section


def write_section(md: Path, begin: str, end: str, section: str) -> None:
    """Replace the text between ``begin`` and ``end`` in ``md`` with ``section`` (which carries both markers), or
    append it; the rest of the file is kept."""
    text = md.read_text() if md.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        text = text[: text.index(begin)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    md.write_text(text)


def _layers_over_seeds(ly: dict) -> dict:
    """Per layer and method: the re-timed best of every seed, the walls, and the seeds in which it was the best."""
    out: dict = {}
    for row in ly["runs"]:
        rt = {m: v.get("median_ms") for m, v in row.get("retimed", {}).items() if v.get("median_ms")}
        winner = min(rt, key=rt.get) if rt else None
        for m, e in row["methods"].items():
            d = out.setdefault(row["workload"], {}).setdefault(m, {"ms": [], "wall": [], "wins": 0})
            if rt.get(m):
                d["ms"].append(rt[m])
            d["wall"].append(e["wall_s"])
            d["wins"] += m == winner
    return out


#: Issue 12's live targets, read off the layers part: `dgp` reaches MetaSchedule's 64-trial best within this many
#: trials, beats these peers at this many trials, and is never worse than the cold DGP beyond this ratio (noise).
TARGET_TRIALS_TO_MS, TARGET_AT, TARGET_PEERS, TARGET_NOISE = 16, 32, ("random", "tpe", "hebo"), 1.05


def _targets_table(ly: dict) -> list[str]:
    """Issue 12's live targets per layer, counted over the seeds that ran the methods each target compares."""
    rows: dict = {}
    for row in ly["runs"]:
        d = rows.setdefault(row["workload"], {"ms": [], "at": {p: [] for p in TARGET_PEERS}, "cold": []})
        dgp, rt = row["methods"].get("dgp"), row.get("retimed", {})
        if not dgp or dgp.get("exit") not in (0, None):
            continue
        curve = dgp.get("curve_ms") or []
        ms_best = (rt.get("metaschedule") or {}).get("median_ms")
        if ms_best:
            hit = next((i + 1 for i, v in enumerate(curve) if v and v <= 1.05 * ms_best), None)
            d["ms"].append(hit)
        mine = curve[TARGET_AT - 1] if len(curve) >= TARGET_AT else None
        for peer in TARGET_PEERS:
            e = row["methods"].get(peer)
            c = (e or {}).get("curve_ms") or []
            if mine and len(c) >= TARGET_AT and c[TARGET_AT - 1]:
                d["at"][peer].append(mine < c[TARGET_AT - 1])
        a, b = (rt.get("dgp") or {}).get("median_ms"), (rt.get("cold") or {}).get("median_ms")
        if a and b:
            d["cold"].append(a / b)
    out = ["", f"Issue 12's live targets per layer, counted over seeds: `dgp` (as the commits above ran it) came within 5% of "
           f"MetaSchedule's 64-trial best (re-timed) within {TARGET_TRIALS_TO_MS} trials; `dgp`'s best after "
           f"{TARGET_AT} trials (during its search, raydgp's measurer for all three) below random search's, TPE's and "
           f"HEBO's; `dgp` re-timed against the cold DGP re-timed (never worse beyond noise: ratio at most "
           f"{TARGET_NOISE}). \"n/m\": in n of the m seeds that ran both.", "",
           f"| layer | dgp reached MS within {TARGET_TRIALS_TO_MS} trials (trials per seed) | "
           + " | ".join(f"beat {p} @{TARGET_AT}" for p in TARGET_PEERS)
           + f" | dgp / cold re-timed (per seed) | never worse than cold (<= {TARGET_NOISE}) |",
           "|---|---|" + "---|" * len(TARGET_PEERS) + "---|---|"]
    for spec, d in rows.items():
        hits = d["ms"]
        reach = (f"{sum(1 for h in hits if h and h <= TARGET_TRIALS_TO_MS)}/{len(hits)} ("
                 + ", ".join(str(h) if h else "never" for h in hits) + ")") if hits else "-"
        peers = [f"{sum(v)}/{len(v)}" if v else "-" for v in d["at"].values()]
        cold = ", ".join(f"{x:.2f}" for x in d["cold"]) or "-"
        ok = f"{sum(x <= TARGET_NOISE for x in d['cold'])}/{len(d['cold'])}" if d["cold"] else "-"
        out.append(f"| {spec} | {reach} | " + " | ".join(peers) + f" | {cold} | {ok} |")
    return out + [""]


def _table1(ly: dict) -> list[str]:
    """The seed paper's Table 1 for these runs: search-time reduction (time for raydgp's DGP to come within 5% of
    MetaSchedule's best, against MetaSchedule's whole search), latency improvement (re-timed bests) and their product."""
    out = ["", "Table 1 (the seed's metrics) for these runs, `dgp` against MetaSchedule `tune_tir`: search-time "
           "reduction = 1 - (wall time until dgp's best during its search came within 5% of MetaSchedule's best "
           "(re-timed by raydgp's measurer), its start-up included) / (MetaSchedule's wall time); latency improvement = 1 - dgp re-timed / "
           "MetaSchedule re-timed; HV = (1 + reduction) x (1 + improvement) - 1 (both as fractions; "
           "never reached: no reduction).", "",
           "| layer | dgp reached MS's best within 5% after | search-time reduction | latency improvement | HV |",
           "|---|---|---|---|---|"]
    for row in ly["runs"]:
        ms, dgp = row["methods"].get("metaschedule"), row["methods"].get("dgp")
        rt = row.get("retimed", {})
        if not ms or not dgp or not ms.get("curve_ms") or not dgp.get("curve_ms"):
            continue
        # MetaSchedule's best as raydgp's measurer re-timed it (cold caches, like raydgp's own search timings; its
        # own runner times warm)
        ms_best = rt.get("metaschedule", {}).get("median_ms")
        if not ms_best:
            continue
        hit = next((i for i, v in enumerate(dgp["curve_ms"]) if v and v <= 1.05 * ms_best), None)
        t = dgp.get("times_s") or []
        if hit is not None and len(t) > hit:
            startup = dgp["wall_s"] - (t[-1] if t else 0.0)
            t_hit = startup + t[hit]
            red = 1 - t_hit / ms["wall_s"]
            reached = f"{hit + 1} trials, {t_hit:.0f} s (MS: {ms['wall_s']:.0f} s)"
        else:
            red, reached = None, "never (in its trials)"
        a, b = rt.get("dgp", {}).get("median_ms"), rt.get("metaschedule", {}).get("median_ms")
        imp = 1 - a / b if a and b else None
        hv = (1 + (red or 0)) * (1 + imp) - 1 if imp is not None else None
        out.append(f"| {row['workload']} (seed {row.get('seed', 0)}) | {reached} | {_pct(red)} | {_pct(imp)} | {_pct(hv)} |")
    return out + [""]


def _pct(v):
    return "-" if v is None else f"{100 * v:+.0f}%"


def _plot_searchers(s: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = s["summary"]
    fig, axes = plt.subplots(1, len(rows), figsize=(4 * len(rows), 3.4), squeeze=False)
    for ax, row in zip(axes[0], rows):
        for m in row["methods"]:
            rs = [r for r in s["runs"] if r["problem"] == row["problem"] and r["speed"] == row["speed"]
                  and r["method"] == m and r.get("best_regret")]
            if not rs:
                continue
            n = min(len(r["best_regret"]) for r in rs)
            med = np.median(np.array([r["best_regret"][:n] for r in rs]), axis=0)
            ax.plot(range(1, n + 1), np.maximum(med, 1e-6), label=m)
        _style(ax, f"{row['problem']} ({row['speed']})", 9)
    _save_fig(plt, fig, axes, "median best regret", path)


def _style(ax, title: str, fontsize: int) -> None:
    ax.set_yscale("log")
    ax.set_title(title, fontsize=fontsize)
    ax.set_xlabel("trials")
    ax.grid(True, alpha=0.3)


def _save_fig(plt, fig, axes, ylabel: str, path: Path) -> None:
    axes[0][0].set_ylabel(ylabel)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_layers(ly: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = ly["runs"]
    fig, axes = plt.subplots(1, len(runs), figsize=(4.5 * len(runs), 3.4), squeeze=False)
    for ax, row in zip(axes[0], runs):
        for m, e in row["methods"].items():
            c = [(i + 1, v) for i, v in enumerate(e.get("curve_ms") or []) if v]
            if c:
                ax.plot([a for a, _ in c], [b for _, b in c], label=m)
        _style(ax, f"{row['workload']} (seed {row.get('seed', 0)})", 8)
    _save_fig(plt, fig, axes, "best latency (ms, during search)", path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", nargs="?", default="run", choices=["run", "render"])
    ap.add_argument("--quick", action="store_true", help="CI-sized run of every part (structure, not speed)")
    ap.add_argument("--parts", default=None, help=f"comma-separated, from {PARTS} (default: all of the mode's)")
    ap.add_argument("--out", default=str(ROOT / "bench"), help="folder of the JSON and the plots (default bench/)")
    ap.add_argument("--benchmarks", default=str(ROOT / "BENCHMARKS.md"), help="the markdown file to (re)write")
    ap.add_argument("--only", default=None, help="layers, replay, e2e and searchers parts: (re)run only these comma-separated methods and "
                         "keep the others' results (layers: all are re-timed together again; replay: same targets "
                         "and settings, added to the earlier run's JSON)")
    ap.add_argument("--seeds", default=None, help="layers part: run these comma-separated seeds instead of the mode's "
                         "(with --only: add them to the seeds already in the results)")
    ap.add_argument("--workloads", default=None, help="layers part: tune these semicolon-separated layer specs (e.g. "
                         "'conv2d:1,512,14,14,512,3,1,1;dense:1,4096,1000') instead of the mode's, and keep the results "
                         "of the others")
    ap.add_argument("--fresh-stage1", action="store_true",
                    help="layers part: every run starts with an empty stage-1 cache (as a user's first run of a layer "
                         "pays stage 1); by default the runs share ~/.cache/raydgp (or $RAYDGP_CACHE), so a run whose "
                         "history cut an earlier run pre-trained on loads it")
    ap.add_argument("--models", default=None, help="e2e part: (re)run only these comma-separated models of the mode's "
                         "list and keep the others' rows")
    ap.add_argument("--layout", default="NCHW", choices=["NCHW", "NHWC"],
                    help="layers part: tune its layers in this activation layout (NHWC: the `conv2d_nhwc:` loop "
                         "nests `raydgp tune` builds on CPU, and the layout of the shipped history's parts measured "
                         "on emeraldrapids and znver3); NHWC results go to their own JSON "
                         "(bench_<machine>-nhwc.json) and section")
    args = ap.parse_args(argv)
    mode = "quick" if args.quick else "full"
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.layout == "NHWC" and (args.quick or args.command != "run" or args.parts != "layers"):
        ap.error("--layout NHWC is for `run --parts layers` (full mode); `render` renders every results file")
    mach = machine() if args.command == "run" else None
    if mach is not None and args.layout == "NHWC":
        path = out_dir / f"bench_{machine_key(mach)}-nhwc.json"
    elif mach is not None:
        path = results_file(out_dir, args.quick, machine_key(mach))
    else:  # render: every machine kind's results found in the folder
        path = out_dir / ("bench_quick.json" if args.quick else "bench.json")
    results = _load(path)
    if mach is not None and results.get("machine") and machine_key(results["machine"]) != machine_key(mach):
        print(f"{path} holds results of another machine kind ({machine_key(results['machine'])}, this is "
              f"{machine_key(mach)}): move it away or pass another --out", file=sys.stderr)
        return 2
    if args.command == "run":
        parts = [p for p in (args.parts.split(",") if args.parts else PARTS) if p]
        bad = set(parts) - set(PARTS)
        if bad:
            ap.error(f"unknown parts {sorted(bad)}; choose from {PARTS}")
        results.update(mode=mode, file=path.name, commit=commit(), date=time.strftime("%Y-%m-%d %H:%M"),
                       machine=mach)
        cfg = MODES[mode]
        if args.only:  # --only: the layers and replay parts (re)run these methods and keep the others' results
            cfg = dict(cfg, **{p: dict(cfg[p], only=args.only.split(",")) for p in ("layers", "replay", "e2e", "searchers")
                               if cfg.get(p)})
        if args.workloads and cfg.get("layers"):
            from raydgp.errors import ConfigError
            from raydgp.space.workloads import parse_spec

            specs = [w.strip() for w in args.workloads.split(";") if w.strip()]
            try:
                for w in specs:
                    parse_spec(w)
            except ConfigError as e:
                ap.error(f"--workloads: {e}")
            cfg = dict(cfg, layers=dict(cfg["layers"], workloads=specs))
        if args.fresh_stage1 and cfg.get("layers"):
            cfg = dict(cfg, layers=dict(cfg["layers"], fresh_stage1=True))
        if args.layout == "NHWC" and cfg.get("layers"):
            cfg = dict(cfg, layers=dict(cfg["layers"], workloads=[nhwc_spec(w) for w in cfg["layers"]["workloads"]]))
        if args.seeds and cfg.get("layers"):
            try:
                seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
            except ValueError:
                ap.error(f"--seeds {args.seeds!r}: comma-separated integers, e.g. 2,3")
            cfg = dict(cfg, layers=dict(cfg["layers"], seeds=seeds))
        if args.models and cfg.get("e2e"):
            unknown = set(args.models.split(",")) - set(cfg["e2e"]["models"])
            if unknown:
                ap.error(f"unknown models {sorted(unknown)} for the e2e part; choose from {cfg['e2e']['models']}")
            cfg = dict(cfg, e2e=dict(cfg["e2e"], run_models=args.models.split(",")))
        import torch

        torch.set_num_threads(1)
        for part in parts:
            if cfg.get(part) is None:
                print(f"{part}: not part of the {mode} mode", flush=True)
                continue
            t0 = time.monotonic()
            {"depth": run_depth, "searchers": run_searchers, "replay": run_replay,
             "layers": run_layers, "e2e": run_e2e}[part](cfg[part], path, results)
            results.setdefault("part_wall_s", {})[part] = round(time.monotonic() - t0, 1)
            results.setdefault("part_commit", {})[part] = results["commit"]
            results.setdefault("part_date", {})[part] = results["date"]
            _save(path, results)
    if not results:
        print(f"no results in {path}: run the benchmark first", file=sys.stderr)
        return 2
    if args.command == "run" or args.quick:
        print(render(results, Path(args.benchmarks), out_dir, file_suffix(path)))
        return 0
    for p in [path] + sorted(out_dir.glob("bench_*-*c.json")):  # render: every machine kind's file
        # the glob also matches other scripts' per-machine files (``bench_wide_<machine>.json``): only this
        # script's results (they carry a ``mode``) are rendered
        if p.exists() and (p == path or _load(p).get("mode")):
            print(render(_load(p), Path(args.benchmarks), out_dir, file_suffix(p)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
