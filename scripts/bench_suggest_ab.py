"""One proposal's cost, two code versions side by side (issue 11: ``suggest()`` with 10,000 history records and a
5,000-candidate pool).

Each round runs one fresh process per version (``--roots``: checkouts, e.g. a ``git worktree`` of an older commit and
this one), versions interleaved, rounds repeated. A process pre-trains the DGP on 10,000 records of the shipped dataset
(a ResNet-18 conv held out; the stage-1 cache per version is kept between rounds), feeds it 16 of the held-out layer's
recorded results, then times 12 inline ``suggest(pending=8 configurations)`` calls, each after one more result and a
refit (the refit itself untimed). Wall and CPU time (``time.process_time``, one torch thread) per call; CPU time is the
figure to compare on a shared host, where the wall also counts other tenants. The proposals themselves are listed so
that two versions meant to propose alike can be checked to.

``--paired`` (with ``--cache``: one stage-1 model for all) runs every version in ONE process per round instead, each
loaded under its own package name, and alternates their calls (24 each): on a shared host whose speed drifts by tens
of percent between processes, each call then has a call of the other version beside it, and the median of the
call-by-call ratios is the figure to quote.

    git worktree add /tmp/base <commit>
    python scripts/bench_suggest_ab.py --roots /tmp/base,. --rounds 3 --out bench/bench_suggest_ab.json
    python scripts/bench_suggest_ab.py --roots /tmp/base,. --paired --cache /tmp/stage1 --rounds 2
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def suggest_setup(root: Path, cache: str, n_hist: int = 10000, pool: int = 5000, pkg: str = "raydgp"):
    """The proposal-cost scene, shared with ``bench_wide.py --parts suggest``: a DGP search of a ResNet-18 conv held
    out of the shipped dataset at ``root``, pre-trained on ``n_hist`` of the other records (seeded subset), with the
    held-out layer's recorded results to feed it.

    Returns:
        ``(search, order, target, n_history, spec)``: the search, the held-out configurations in recorded order and
        their latencies (ms), the history's size, the layer. ``pkg``: the package's import name (``--paired``
        loads each version under its own).
    """
    import importlib

    import numpy as np
    import torch

    layers_of = importlib.import_module(f"{pkg}.datasets").layers_of
    RecordStore = importlib.import_module(f"{pkg}.records").RecordStore
    search = importlib.import_module(f"{pkg}.search")
    DGPSearch, History, SearchSettings = search.DGPSearch, search.History, search.SearchSettings
    history_from_records = search.history_from_records
    DesignSpace = importlib.import_module(f"{pkg}.space.design_space").DesignSpace

    torch.set_num_threads(1)
    store = RecordStore(root / "raydgp" / "datasets" / "shipped")
    recs = [r for r in store.records() if r.config.sketch >= 0]
    spaces = {k: DesignSpace.from_json(e["space"]) for k, e in store.workload_entries().items() if e.get("space")}
    spec = "conv2d:1,128,28,28,128,3,1,1"
    keys = layers_of(recs)[spec]
    hist = history_from_records([r for r in recs if r.workload.key not in keys], spaces)
    if len(hist) > n_hist:
        idx = np.sort(np.random.default_rng(0).choice(len(hist), n_hist, replace=False))
        hist = History(hist.X[idx], hist.y[idx])
    # one machine's recordings of the key (a key can hold two machines' of the same configurations): the one with
    # the most (inline, not raydgp.datasets.target_task: the roots may predate it)
    machines = collections.Counter(json.dumps(r.target, sort_keys=True) for r in recs
                                   if r.workload.key == keys[0] and r.result.ok)
    machine = machines.most_common(1)[0][0]
    target = {r.config: r.result.median_ms for r in recs if r.workload.key == keys[0] and r.result.ok
              and json.dumps(r.target, sort_keys=True) == machine}
    s = DGPSearch(spaces[keys[0]], SearchSettings(seed=0, pool_size=pool), history=hist, cache_dir=cache)
    return s, list(target), target, len(hist), spec


def one(root: Path, cache: str, calls: int = 12) -> dict:
    sys.path.insert(0, str(root))
    s, order, target, n_hist, spec = suggest_setup(root, cache)
    s.pretrained()
    for c in order[:16]:
        s.observe(c, target[c])
    s.suggest()
    pend = order[16:24]
    wall, cpu, picks = [], [], []
    for i in range(calls):
        c = order[24 + i]
        s.observe(c, target[c])
        s.fit()
        t0, c0 = time.perf_counter(), time.process_time()
        picks.append(s.suggest(pending=pend))
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"history_points": n_hist, "pool": 5000, "layer": spec, "calls": calls,
            "wall_ms": [round(1e3 * x, 1) for x in wall], "cpu_ms": [round(1e3 * x, 1) for x in cpu],
            "wall_ms_median": round(1e3 * statistics.median(wall), 1),
            "cpu_ms_median": round(1e3 * statistics.median(cpu), 1),
            "picks": [json.dumps(p.to_json()) if p is not None else None for p in picks]}


def _as_package(root: Path, name: str, into: Path) -> None:
    """A copy of ``root``'s ``raydgp`` package importable as ``name`` (every ``raydgp`` module name rewritten)."""
    import re
    import shutil

    dst = into / name
    shutil.copytree(root / "raydgp", dst, ignore=shutil.ignore_patterns("__pycache__", "shipped"))
    (dst / "datasets" / "shipped").symlink_to(root / "raydgp" / "datasets" / "shipped")
    for f in dst.rglob("*.py"):
        f.write_text(re.sub(r"\braydgp\b", name, f.read_text()))


def paired(roots: list[Path], cache: str, calls: int = 24) -> list[dict]:
    """Every version in ONE process, their calls interleaved (the order alternates call by call), so that each
    call of one version has a call of the other beside it under the same host load: a shared host's speed drifts by
    tens of percent between processes. Each version has its own search over the same scene and feeds it the same
    results; the refits are untimed."""
    tmp = Path(tempfile.mkdtemp(prefix="raydgp-paired-"))
    sys.path.insert(0, str(tmp))
    runs = []
    for k, r in enumerate(roots):
        _as_package(r, f"raydgp_v{k}", tmp)
        s, order, target, n_hist, spec = suggest_setup(r, cache, pkg=f"raydgp_v{k}")
        s.pretrained()
        for c in order[:16]:
            s.observe(c, target[c])
        s.suggest()
        # each version's own configurations (its own Config class): the same recorded order
        runs.append({"search": s, "order": order, "target": target, "wall": [], "cpu": [], "picks": [],
                     "root": str(r)})
    for i in range(calls):
        for j in (range(len(runs)) if i % 2 == 0 else reversed(range(len(runs)))):
            run = runs[j]
            s, order, target = run["search"], run["order"], run["target"]
            c = order[24 + i]
            s.observe(c, target[c])
            s.fit()
            t0, c0 = time.perf_counter(), time.process_time()
            run["picks"].append(s.suggest(pending=order[16:24]))
            run["wall"].append(time.perf_counter() - t0)
            run["cpu"].append(time.process_time() - c0)
    out = []
    for run in runs:
        out.append({"root": run["root"], "history_points": n_hist, "pool": 5000, "layer": spec, "calls": calls,
                    "cpu_ms": [round(1e3 * x, 1) for x in run["cpu"]],
                    "wall_ms": [round(1e3 * x, 1) for x in run["wall"]],
                    "cpu_ms_median": round(1e3 * statistics.median(run["cpu"]), 1),
                    "wall_ms_median": round(1e3 * statistics.median(run["wall"]), 1),
                    "picks": [json.dumps(p.to_json()) if p is not None else None for p in run["picks"]]})
    return out


def _commit(root: Path) -> str:
    p = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench"], cwd=root,
                           capture_output=True, text=True).stdout.strip()
    return p.stdout.strip() + (" (uncommitted changes)" if dirty else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--roots", required=True, help="comma-separated checkouts to compare (the first is the baseline)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None, help="JSON file to write")
    ap.add_argument("--cache", default=None,
                    help="one stage-1 cache directory for every root (only where stage 1 is the same code in all: it "
                         "is keyed by data and settings, not by code); default: a fresh one per root")
    ap.add_argument("--paired", action="store_true",
                    help="all versions in one process per round, calls interleaved (needs --cache: one stage 1)")
    ap.add_argument("--_one", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--_paired", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a._one:
        print(json.dumps(one(Path(a._one[0]).resolve(), a._one[1])))
        return 0
    if a._paired:
        print(json.dumps(paired([Path(r).resolve() for r in a.roots.split(",")], a._paired)))
        return 0
    if a.paired and not a.cache:
        ap.error("--paired needs --cache (one stage-1 cache for every version)")
    roots = [Path(r).resolve() for r in a.roots.split(",")]
    caches = {r: a.cache or tempfile.mkdtemp(prefix="raydgp-sugg-ab-") for r in roots}
    runs = []
    for k in range(a.rounds):
        if a.paired:
            p = subprocess.run([sys.executable, str(HERE), "--roots", a.roots, "--_paired", a.cache],
                               capture_output=True, text=True, cwd=roots[-1])
            if p.returncode != 0:
                print(p.stderr[-2000:], file=sys.stderr)
                return 1
            for res in json.loads(p.stdout.strip().splitlines()[-1]):
                res.update(commit=_commit(Path(res["root"])), round=k)
                runs.append(res)
                print(f"round {k} {res['root']} ({res['commit']}): suggest() cpu median {res['cpu_ms_median']} ms, "
                      f"wall {res['wall_ms_median']} ms", flush=True)
            continue
        for r in roots:
            env = dict(os.environ, PYTHONPATH=str(r))
            p = subprocess.run([sys.executable, str(HERE), "--roots", a.roots, "--_one", str(r), caches[r]],
                               capture_output=True, text=True, env=env, cwd=r)
            if p.returncode != 0:
                print(p.stderr[-2000:], file=sys.stderr)
                return 1
            res = json.loads(p.stdout.strip().splitlines()[-1])
            res.update(root=str(r), commit=_commit(r), round=k)
            runs.append(res)
            print(f"round {k} {r} ({res['commit']}): suggest() cpu median {res['cpu_ms_median']} ms, "
                  f"wall {res['wall_ms_median']} ms", flush=True)
    base = roots[0]
    summary = {}
    for r in roots:
        mine = [x for x in runs if x["root"] == str(r)]
        ratios = [x["cpu_ms_median"] / y["cpu_ms_median"] for x, y in
                  zip(mine, [z for z in runs if z["root"] == str(base)])]
        summary[str(r)] = {"commit": mine[-1]["commit"],
                           "cpu_ms_median_per_round": [x["cpu_ms_median"] for x in mine],
                           "wall_ms_median_per_round": [x["wall_ms_median"] for x in mine],
                           "cpu_ratio_to_baseline_per_round": [round(v, 3) for v in ratios],
                           "paired_call_ratio_median": round(statistics.median(
                               u / v for x, y in zip(mine, [z for z in runs if z["root"] == str(base)])
                               for u, v in zip(x["cpu_ms"], y["cpu_ms"])), 3) if a.paired else None,
                           "same_proposals_as_baseline": all(
                               x["picks"] == y["picks"] for x, y in
                               zip(mine, [z for z in runs if z["root"] == str(base)]))}
    from raydgp.measure.peak import cpu_name

    try:
        from raydgp.space.metaschedule import host_target

        mcpu = host_target("llvm", os.cpu_count())["mcpu"]
    except Exception:  # noqa: BLE001 - the figures stand without it
        mcpu = "?"
    out = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": {"cpu": cpu_name(), "mcpu": mcpu,
                                                                  "cores": os.cpu_count(),
                                                                  "platform": platform.platform()},
           "summary": summary, "runs": runs}
    print(json.dumps(summary, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
