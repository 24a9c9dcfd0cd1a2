#!/usr/bin/env python
"""Speed of the DGP search core on this machine: pre-training on N history records, MAP fine-tuning on 50 target
records, and ``suggest()`` with a candidate pool of P configurations (median of repeated calls).

The history is the shipped dataset, repeated (with a small jitter on the targets) up to ``--history-size`` rows when
it holds fewer: the timing depends on the row count, not on the values.

    python scripts/bench_speed.py --history-size 10000 --pool 5000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="raydgp/datasets/shipped")
    ap.add_argument("--history-size", type=int, default=10000)
    ap.add_argument("--pool", type=int, default=5000)
    ap.add_argument("--target", default="conv2d:1,64,56,56,64,3,1,1")
    ap.add_argument("--calls", type=int, default=7)
    args = ap.parse_args(argv)


    from raydgp.records import RecordStore
    from raydgp.search import DGPSearch, History, SearchSettings, history_from_records
    from raydgp.space.design_space import DesignSpace

    store = RecordStore(args.dataset)
    recs = store.records()
    spaces = {k: DesignSpace.from_json(e["space"]) for k, e in store.workload_entries().items() if e.get("space")}
    tkey = next(r.workload.key for r in recs if r.tag == f"dataset:{args.target}")
    space = spaces[tkey]
    hist = history_from_records(recs, spaces, exclude_workload=tkey)
    reps = int(np.ceil(args.history_size / len(hist)))
    rng = np.random.default_rng(0)
    X = np.tile(hist.X, (reps, 1))[: args.history_size]
    y = np.tile(hist.y, reps)[: args.history_size] + rng.normal(0, 0.01, size=min(args.history_size, reps * len(hist)))
    history = History(X, y)
    ok = [r for r in recs if r.workload.key == tkey and r.result.ok]
    target, more = ok[:50], ok[50:]

    s = SearchSettings(pool_size=args.pool, seed=0)
    search = DGPSearch(space, s, history=history, cache_dir=None)
    t0 = time.perf_counter()
    search.pretrained()
    pretrain_s = time.perf_counter() - t0
    for r in target:
        search.observe(r.config, r.result.median_ms, "ok")
    t0 = time.perf_counter()
    search.fit()
    finetune_s = time.perf_counter() - t0
    search.suggest()  # the pool is built once; later proposals refresh pool_refresh of it
    out = {"history_rows": len(history), "pool": args.pool, "pretrain_s": pretrain_s, "finetune_50_s": finetune_s,
           "torch_threads": s.torch_threads, "pool_refresh": s.pool_refresh}
    for mode in ("sync", "async"):
        # every call follows a new result, as in a live search (sync: suggest() refits first; async: a background
        # thread refits while suggest() scores with the latest finished model)
        search.settings = dataclasses.replace(search.settings, async_refit=mode == "async")
        times = []
        for i in range(args.calls):
            r = more[i + (args.calls if mode == "async" else 0)]
            search.observe(r.config, r.result.median_ms, "ok")
            t0 = time.perf_counter()
            search.suggest()
            times.append(time.perf_counter() - t0)
            if mode == "async":
                time.sleep(0.5)  # a trial's measurement takes longer than this; the refit runs meanwhile
        out[f"suggest_after_new_result_{mode}_median_s"] = statistics.median(times)
    search.wait_for_refit()
    score_only = []
    for _ in range(args.calls):
        t0 = time.perf_counter()
        search.suggest()
        score_only.append(time.perf_counter() - t0)
    out["suggest_scoring_only_median_s"] = statistics.median(score_only)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
