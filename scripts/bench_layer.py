#!/usr/bin/env python
"""One-layer benchmark, side by side in one run: PyTorch eager, then raydgp's random search and DGP search (with
transfer from the shipped dataset, the target layer itself excluded) through Ray Tune, N trials each.

    python scripts/bench_layer.py --trials 32 --out runs/bench_layer
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pytorch_ms(spec: str, threads: int, reps: int = 100) -> float:
    import torch

    torch.set_num_threads(threads)
    kind, vals = spec.split(":")
    n, c, h, w, k, r, stride, pad = map(int, vals.split(","))
    x, wt, b = torch.randn(n, c, h, w), torch.randn(k, c, r, r), torch.randn(k)
    with torch.no_grad():
        f = lambda: torch.relu(torch.nn.functional.conv2d(x, wt, b, stride=stride, padding=pad))  # noqa: E731
        for _ in range(20):
            f()
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workload", default="conv2d:1,64,56,56,64,3,1,1")
    ap.add_argument("--trials", type=int, default=32)
    ap.add_argument("--out", default="runs/bench_layer")
    args = ap.parse_args(argv)
    threads = os.cpu_count() or 1
    out = Path(args.out)
    rows = {"pytorch_eager_ms": pytorch_ms(args.workload, threads)}
    for searcher, extra in (("random", []), ("dgp", ["--history", str(ROOT / "raydgp" / "datasets" / "shipped")])):
        d = out / searcher
        subprocess.run([sys.executable, "-m", "raydgp", "layer", "--workload", args.workload, "--trials",
                        str(args.trials), "--out", str(d), "--searcher", searcher, *extra], check=True, cwd=ROOT)
        s = json.loads((d / "summary.json").read_text())
        from raydgp.records import RecordStore

        recs = RecordStore(d / "records").records()
        best_after = {}
        for n in (10, 20, len(recs)):
            ok = [r.result.median_ms for r in recs[:n] if r.result.ok]
            best_after[n] = min(ok) if ok else None
        rows[searcher] = {"best_ms": s["best_ms"], "untuned_ms": s["untuned_ms"], "best_after": best_after,
                          "wall_s": s["wall_s"], "median_build_s": s["median_build_s"],
                          "median_run_s": s["median_run_s"], "median_trial_interval_s": s["median_trial_interval_s"],
                          "ray_overhead_per_trial_s": s["ray_overhead_per_trial_s"]}
    print(json.dumps(rows, indent=1))
    (out / "bench_layer.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
