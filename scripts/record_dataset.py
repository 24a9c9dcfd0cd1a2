#!/usr/bin/env python
"""Record the transfer-learning dataset: N random configurations of every distinct layer of ResNet-18 and MobileNet-v1,
really built and timed on this machine. Resumable: re-running continues where it stopped (the sample list of each layer
is fixed by its seed, and configurations already recorded are skipped).

    python scripts/record_dataset.py --out data/history --per-task 300
    gzip -k data/history/records.jsonl   # the compact copy kept in the repo

Record on a quiet machine: other jobs on the cores slow timings (rankings survive, absolute values do not).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/history")
    ap.add_argument("--per-task", type=int, default=300)
    ap.add_argument("--models", default="resnet18,mobilenet_v1")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layout", default="NCHW", choices=["NCHW", "NHWC"],
                    help="record the convs in this layout (NHWC: the loop nests `raydgp tune --layout NHWC` tunes)")
    args = ap.parse_args(argv)

    from raydgp.measure.local import LocalMeasurer
    from raydgp.measure.protocol import MeasureSettings, TaskPayload
    from raydgp.records import Record, RecordStore
    from raydgp.space.design_space import config_as_applied
    from raydgp.space.metaschedule import build_space, host_target
    from raydgp.space.workloads import make_task
    from raydgp.models.layer_specs import MODELS

    target = host_target("llvm", args.threads)
    store = RecordStore(args.out)
    specs = []
    for m in args.models.split(","):
        for s in MODELS[m]:
            if args.layout == "NHWC":
                s = s.replace("conv2d:", "conv2d_nhwc:").replace("depthwise:", "depthwise_nhwc:")
            if s not in specs:
                specs.append(s)
    have: dict[str, int] = {}
    for r in store.records():
        have[r.tag] = have.get(r.tag, 0) + 1
    settings = MeasureSettings(num_threads=args.threads, repeat=3, min_repeat_ms=10, run_timeout_s=20,
                               build_timeout_s=60)
    host = socket.gethostname()
    with LocalMeasurer(settings) as meas:
        for ti, spec in enumerate(specs):
            tag = f"dataset:{spec}"
            done = have.get(tag, 0)
            if done >= args.per_task:
                continue
            task = make_task(spec, target)
            space = build_space(task)
            store.add_workload(task.workload.key, task.mod_json, space.to_json())
            rng = np.random.default_rng([args.seed, ti])
            configs = space.sample_many(args.per_task, rng)
            payload = TaskPayload(task.workload.key, task.mod_json, target)
            t0 = time.monotonic()
            for c in configs[done:]:
                out = meas.measure(payload, space.trace_json(c))
                cfg = c
                if out.applied is not None:
                    try:
                        cfg = config_as_applied(space, c, out.applied)
                    except Exception:  # noqa: BLE001 - keep the proposed one; the status says it failed
                        pass
                # one durable append per measurement: a kill loses nothing that finished
                store.append(Record.now(task.workload, target, cfg, out.result, tag=tag, host=host))
            print(f"[{ti + 1}/{len(specs)}] {spec}: {len(configs) - done} measured in {time.monotonic() - t0:.0f} s",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
