"""One proposal's cost, two code versions side by side (issue 11: ``suggest()`` with 10,000 history records and a
5,000-candidate pool).

Each round runs one fresh process per version (``--roots``: checkouts, e.g. a ``git worktree`` of an older commit and
this one), versions interleaved, rounds repeated. A process pre-trains the DGP on 10,000 records of the shipped dataset
(a ResNet-18 conv held out; the stage-1 cache per version is kept between rounds), feeds it 16 of the held-out layer's
recorded results, then times 12 inline ``suggest(pending=8 configurations)`` calls, each after one more result and a
refit (the refit itself untimed). Wall and CPU time (``time.process_time``, one torch thread) per call; CPU time is the
figure to compare on a shared host, where the wall also counts other tenants. The proposals themselves are listed so
that two versions meant to propose alike can be checked to.

    git worktree add /tmp/base <commit>
    python scripts/bench_suggest_ab.py --roots /tmp/base,. --rounds 3 --out bench/bench_suggest_ab.json
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

HERE = Path(__file__).resolve()


def suggest_setup(root: Path, cache: str, n_hist: int = 10000, pool: int = 5000):
    """The proposal-cost scene, shared with ``bench_wide.py --parts suggest``: a DGP search of a ResNet-18 conv held
    out of the shipped dataset at ``root``, pre-trained on ``n_hist`` of the other records (seeded subset), with the
    held-out layer's recorded results to feed it.

    Returns:
        ``(search, order, target, n_history, spec)``: the search, the held-out configurations in recorded order and
        their latencies (ms), the history's size, the layer.
    """
    import numpy as np
    import torch

    from raydgp.datasets import layers_of
    from raydgp.records import RecordStore
    from raydgp.search import DGPSearch, History, SearchSettings, history_from_records
    from raydgp.space.design_space import DesignSpace

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
    target = {r.config: r.result.median_ms for r in recs if r.workload.key == keys[0] and r.result.ok}
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
    ap.add_argument("--_one", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a._one:
        print(json.dumps(one(Path(a._one[0]).resolve(), a._one[1])))
        return 0
    roots = [Path(r).resolve() for r in a.roots.split(",")]
    caches = {r: tempfile.mkdtemp(prefix="raydgp-sugg-ab-") for r in roots}
    runs = []
    for k in range(a.rounds):
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
