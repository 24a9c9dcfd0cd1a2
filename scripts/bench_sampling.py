#!/usr/bin/env python
"""Random configurations of one layer from raydgp's sampler and from TVM's own sampling instructions, built and
timed interleaved by raydgp's measurer: does the design space and its sampler cover what MetaSchedule would draw?

``raydgp`` draws with :meth:`raydgp.space.design_space.DesignSpace.sample`; ``tvm`` replays a uniformly chosen sketch
with no decisions, so TVM's ``SamplePerfectTile``, ``SampleCategorical`` and ``SampleComputeLocation`` pick them (the
decisions read back; a configuration outside raydgp's space is still measured, and counted); ``ms_evolutionary`` takes
MetaSchedule's evolutionary search's first batch under a random cost model (``RandomModel``), which is what
``tune_tir``'s first 64 trials are: its XGBoost model answers random scores until it holds 100 measurements (built as
MetaSchedule compiles them, so its schedules are measured as modules, not as raydgp configurations). Reported per sampler:
ok count, best, 10th percentile and median latency, how many draws lie inside raydgp's space, and the compute
locations drawn.

    python scripts/bench_sampling.py --workload conv2d_nhwc:1,160,14,14,320,3,1,1 --configs 48 --out bench/bench_sampling.json

``--ms-dir DIR`` (a MetaSchedule ``tune_tir`` work dir of the same workload, e.g. one of ``scripts/bench.py``'s layers
part) instead re-times that run's records, by its own runner's rank (the ``--ms-top`` fastest and three at the median),
each twice: MetaSchedule's schedule as its database compiles it, and the same decisions as a raydgp configuration
(every sketch of raydgp's space whose knobs take them), to tell a difference of space or build from one of timing.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", default="conv2d_nhwc:1,160,14,14,320,3,1,1")
    ap.add_argument("--configs", type=int, default=48, help="configurations per sampler")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON file (appended to a list of runs)")
    ap.add_argument("--ms-dir", default=None, help="re-time this MetaSchedule work dir's records instead")
    ap.add_argument("--ms-top", type=int, default=6)
    args = ap.parse_args(argv)
    if args.ms_dir:
        return _ms_records(args)

    import numpy as np
    import tvm
    from tvm import s_tir

    from raydgp.measure.local import LocalMeasurer
    from raydgp.measure.protocol import MeasureSettings, TaskPayload
    from raydgp.records import Config
    from raydgp.space.metaschedule import _readback, build_space, host_target
    from raydgp.space.workloads import make_task

    target = host_target("llvm", 2)
    task = make_task(args.workload, target)
    space = build_space(task)
    payload = TaskPayload(task.workload.key, task.mod_json, target)
    mod = tvm.ir.load_json(task.mod_json)
    rng = random.Random(args.seed)

    def tvm_draw() -> Config:
        s = rng.randrange(len(space.sketches))
        sk = space.sketches[s]
        sch = s_tir.Schedule(mod, seed=rng.randrange(1, 2**31 - 1))
        s_tir.Trace.apply_json_to_schedule([sk.insts, []], sch)
        got = dict(_readback(sch))
        return Config(s, tuple(tuple(got[k.inst]) if isinstance(got[k.inst], list) else got[k.inst] for k in sk.knobs))

    def trace(c: Config) -> list:
        sk = space.sketches[c.sketch]
        return [sk.insts, [[k.inst, list(d) if isinstance(d, tuple) else d] for k, d in zip(sk.knobs, c.decisions)]]

    ours = [space.sample(random.Random(args.seed * 7919 + i)) for i in range(args.configs)]
    theirs = [tvm_draw() for _ in range(args.configs)]
    evolved = _ms_evolutionary(task, target, args.configs, args.seed)
    rows = []
    t0 = time.time()
    with LocalMeasurer(MeasureSettings()) as m:
        m.measure(payload, None)
        for a, b, e in zip(ours, theirs, evolved):  # interleaved: the host's drift falls on all alike
            for name, c in (("raydgp", a), ("tvm", b)):
                res = m.measure(payload, trace(c)).result
                rows.append({"sampler": name, "sketch": c.sketch, "in_space": space.is_valid(c), "status": res.status,
                             "ms": res.median_ms if res.ok else None,
                             "locations": [d for k, d in zip(space.sketches[c.sketch].knobs, c.decisions)
                                           if k.kind == "compute_location"]})
            res = m.measure(payload, None, e).result
            rows.append({"sampler": "ms_evolutionary", "sketch": None, "in_space": False, "status": res.status,
                         "ms": res.median_ms if res.ok else None, "locations": []})
    summary = {}
    for name in ("raydgp", "tvm", "ms_evolutionary"):
        mine = [r for r in rows if r["sampler"] == name]
        ms = sorted(r["ms"] for r in mine if r["ms"] is not None)
        summary[name] = {"ok": len(ms), "best_ms": ms[0] if ms else None,
                         "p10_ms": ms[len(ms) // 10] if ms else None, "median_ms": float(np.median(ms)) if ms else None,
                         "in_space": sum(r["in_space"] for r in mine),
                         "locations": dict(sorted(collections.Counter(l for r in mine for l in r["locations"]).items()))}
        print(name, json.dumps(summary[name]))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    run = {"workload": args.workload, "configs": args.configs, "seed": args.seed, "target": target, "commit": commit,
           "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime(t0)), "wall_s": round(time.time() - t0, 1),
           "space_locations": sorted({v for sk in space.sketches for k in sk.knobs if k.kind == "compute_location"
                                      for v in k.values}),
           "summary": summary, "rows": rows}
    if args.out:
        out = Path(args.out)
        runs = json.loads(out.read_text()) if out.exists() else []
        out.write_text(json.dumps(runs + [run], indent=1))
    return 0


def _ms_evolutionary(task, target, n: int, seed: int) -> list:
    """``n`` schedules (module JSON) of MetaSchedule's evolutionary search's first batch under a random cost model."""
    import tvm

    from raydgp.space.metaschedule import make_target
    from raydgp.tvm_loader import import_tvm, load_intrinsics

    import_tvm()
    load_intrinsics("llvm")
    from tvm.s_tir import meta_schedule as ms

    ctx = ms.TuneContext(mod=task.mod, target=make_target(target), space_generator="post-order-apply",
                         search_strategy="evolutionary", task_name="main", rand_state=seed + 1, num_threads=2)
    ctx.pre_tuning(max_trials=max(64, n), num_trials_per_iter=max(64, n), design_spaces=ctx.generate_design_space(),
                   database=ms.database.MemoryDatabase(), cost_model=ms.cost_model.RandomModel())
    return [tvm.ir.save_json(c.sch.mod) for c in ctx.generate_measure_candidates()[:n]]


def _ms_records(args) -> int:
    import os
    import statistics

    import tvm

    from raydgp.measure.local import LocalMeasurer
    from raydgp.measure.protocol import MeasureSettings, TaskPayload
    from raydgp.records import Config
    from raydgp.space.metaschedule import build_space, host_target
    from raydgp.space.workloads import make_task
    from raydgp.tvm_loader import import_tvm, load_intrinsics

    import_tvm()
    load_intrinsics("llvm")
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench import _ms_schedule

    f = next(Path(args.ms_dir).glob("**/database_tuning_record.json"))
    recs = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    recs = [r for r in recs if r[1][1] and all(x < 1e9 for x in r[1][1])]
    recs.sort(key=lambda r: statistics.median(r[1][1]))
    mid = len(recs) // 2
    picked = [(i, recs[i]) for i in list(range(min(args.ms_top, len(recs)))) + [mid - 1, mid, mid + 1]
              if 0 <= i < len(recs)]
    target = host_target("llvm", os.cpu_count())
    task = make_task(args.workload, target)
    space = build_space(task)
    payload = TaskPayload(task.workload.key, task.mod_json, target)
    rows = []
    t0 = time.time()
    with LocalMeasurer(MeasureSettings(num_threads=os.cpu_count())) as m:
        m.measure(payload, None)
        for rank, r in picked:
            insts, decs = r[1][0]
            vals = tuple(tuple(d) if isinstance(d, list) else d for _, d in decs)
            row = {"rank": rank, "ms_runner_ms": round(statistics.median(r[1][1]) * 1e3, 4),
                   "decisions": [list(v) if isinstance(v, tuple) else v for v in vals]}
            res = m.measure(payload, None, tvm.ir.save_json(_ms_schedule(task, r, target).mod)).result
            row["metaschedule_build_ms"] = res.median_ms if res.ok else res.status
            row["as_raydgp"] = {}
            for s in range(len(space.sketches)):
                c = Config(s, vals)
                if len(vals) != len(space.sketches[s].knobs):
                    continue
                if not space.is_valid(c):
                    bad = [k.kind for k, v in zip(space.sketches[s].knobs, vals) if not k.valid(v)]
                    row["as_raydgp"][s] = "outside the space: " + ", ".join(bad)
                    continue
                res = m.measure(payload, space.trace_json(c)).result
                row["as_raydgp"][s] = res.median_ms if res.ok else res.status
            print(json.dumps(row), flush=True)
            rows.append(row)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    run = {"workload": args.workload, "ms_dir": str(args.ms_dir), "target": target, "commit": commit,
           "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime(t0)), "records": len(recs), "rows": rows}
    if args.out:
        out = Path(args.out)
        runs = json.loads(out.read_text()) if out.exists() else []
        out.write_text(json.dumps(runs + [run], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
