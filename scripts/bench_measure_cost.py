#!/usr/bin/env python
"""Where a measurement's time goes: build_s (schedule applied, compiled) and run_s (inside the node's exclusive timing
lock: correctness run, warm-up, timed cold runs) of random configurations of one layer, timed with ``flush_repeat``
15 (the default) and 5, one measurer each, each configuration on both in turn; and how well the two rank them
(Spearman). Run it at two commits to see what a change moved between build and run.

    python scripts/bench_measure_cost.py --workload conv2d_nhwc:1,256,14,14,256,3,1,1 --configs 14
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", default="conv2d_nhwc:1,256,14,14,256,3,1,1")
    ap.add_argument("--configs", type=int, default=14)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    from scipy.stats import spearmanr

    from raydgp.measure.local import LocalMeasurer
    from raydgp.measure.protocol import MeasureSettings, TaskPayload
    from raydgp.space.metaschedule import build_space, host_target
    from raydgp.space.workloads import make_task

    target = host_target("llvm", 2)
    task = make_task(args.workload, target)
    space = build_space(task)
    payload = TaskPayload(task.workload.key, task.mod_json, target)
    configs = space.sample_many(args.configs, np.random.default_rng(args.seed))
    rows: dict[int, list] = {15: [], 5: []}
    measurers = {r: LocalMeasurer(MeasureSettings(flush_repeat=r)) for r in rows}
    try:
        for m in measurers.values():
            m.measure(payload, None)  # each worker's task state and reference first
        for c in configs:
            trace = space.trace_json(c)
            for r, m in measurers.items():
                res = m.measure(payload, trace).result
                rows[r].append({"status": res.status, "ms": res.median_ms if res.ok else None,
                                "build_s": round(res.build_s, 4), "run_s": round(res.run_s, 4)})
    finally:
        for m in measurers.values():
            m.close()
    out = {"workload": args.workload, "target": target, "configs": args.configs, "seed": args.seed, "by_repeat": {}}
    for r, rs in rows.items():
        ok = [x for x in rs if x["status"] == "ok"]
        out["by_repeat"][r] = {"ok": len(ok), "median_build_s": float(np.median([x["build_s"] for x in ok])),
                               "median_run_s": float(np.median([x["run_s"] for x in ok])), "rows": rs}
        print(f"flush_repeat {r}: {len(ok)} ok, median build_s {out['by_repeat'][r]['median_build_s']:.3f}, "
              f"median run_s {out['by_repeat'][r]['median_run_s']:.3f}")
    both = [(a["ms"], b["ms"]) for a, b in zip(rows[15], rows[5]) if a["ms"] and b["ms"]]
    if len(both) >= 3:
        out["spearman_15_vs_5"] = float(spearmanr([a for a, _ in both], [b for _, b in both]).statistic)
        print(f"Spearman of the two timings over {len(both)} configurations: {out['spearman_15_vs_5']:.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
