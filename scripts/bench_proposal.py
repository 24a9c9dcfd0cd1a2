#!/usr/bin/env python
"""What one proposal of a transfer search costs on this machine, and what each speed-up took off it.

One layer of the shipped dataset is the target (its TVM design space: the random pool, the evolutionary search, the
failure model, as a live search proposes); every other layer (on every machine it was recorded on) is the history
(4,000 rows, as ``raydgp tune`` subsamples it). The metric is a smooth function of the configuration's encoding
(the cost of a proposal does not depend on the values). Variants, each its own search with the same seed, advanced
one proposal each in turn so that the machine's load drifts over all alike:

* ``before``: torch's own ``broadcast_shapes``, the cold member's fresh fits at 50 Adam steps and every member
  refitted on every result (the defaults before 2026-12-05);
* ``fast_shapes``: :mod:`raydgp.dgp.fast_shapes` installed (same results: the script checks the proposals are
  identical to ``before``'s);
* ``cm20``: ``fast_shapes`` and ``cold_member_steps=20`` (the defaults at the start of 2026-12-05's second
  session);
* ``idle``: ``cm20`` and a member under trust weight ``idle_member_weight`` refitted every ``idle_member_every``
  results only (the defaults at the end of that session), trained through GPyTorch's ``DeepApproximateMLL``
  (``DGPSettings(elbo="gpytorch")``);
* ``default``: today's defaults (``idle`` with the ELBO computed directly, :mod:`raydgp.dgp.fast_elbo`).

Reports per variant the median ``suggest()`` seconds after the tuning set (each refits the members on the newest
result: the transferred model's MAP refit, the cold member's fresh fit), the seconds spent fitting models over the
whole search, and the ratio to ``before``. One torch thread, as the search uses.

    python scripts/bench_proposal.py --proposals 40 --out bench/bench_proposal.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=str(ROOT / "raydgp" / "datasets" / "shipped"))
    ap.add_argument("--target", default="conv2d:1,128,28,28,128,3,1,1")
    ap.add_argument("--proposals", type=int, default=40)
    ap.add_argument("--max-history", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default=None, help="stage-1 weights cache (default: a temporary directory)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import tempfile

    import torch

    torch.set_num_threads(1)
    from raydgp.dgp import fast_shapes
    from raydgp.records import RecordStore
    from raydgp.search import DGPSearch, History, SearchSettings, history_from_records
    from raydgp.space.design_space import DesignSpace
    from raydgp.space.metaschedule import host_target

    store = RecordStore(args.dataset)
    recs = [r for r in store.records() if r.config.sketch >= 0]
    spaces = {k: DesignSpace.from_json(e["space"]) for k, e in store.workload_entries().items() if e.get("space")}
    keys = {r.workload.key for r in recs if r.tag == f"dataset:{args.target}"} & set(spaces)
    if not keys:
        ap.error(f"no recorded layer {args.target!r} in {args.dataset}")
    tkey = sorted(keys)[0]
    hist = history_from_records([r for r in recs if r.workload.key not in keys], spaces, exclude_workload=tkey)
    if len(hist) > args.max_history:
        idx = np.sort(np.random.default_rng(0).choice(len(hist), args.max_history, replace=False))
        hist = History(hist.X[idx], hist.y[idx])
    sp = spaces[tkey]
    w = np.random.default_rng(1).normal(size=sp.dim)

    def metric(c) -> float:
        return float(np.exp(0.3 * np.tanh(sp.encode_many([c])[0] @ w / 5)))

    cache = args.cache or tempfile.mkdtemp(prefix="raydgp-proposal-")
    from raydgp.dgp.model import DGPSettings

    gpyt = {"dgp": DGPSettings(elbo="gpytorch")}
    eager = {"idle_member_weight": 0.0, **gpyt}
    variants = {"before": (False, {"cold_member_steps": 50, **eager}),
                "fast_shapes": (True, {"cold_member_steps": 50, **eager}), "cm20": (True, eager),
                "idle": (True, gpyt), "default": (True, {})}
    searches, rows = {}, {}
    for name, (fast, kw) in variants.items():
        searches[name] = DGPSearch(sp, SearchSettings(seed=args.seed, pretrain_seed=0, **kw), history=hist,
                                   cache_dir=cache)
        searches[name].pretrained()  # stage 1 (cached after the first): not part of a proposal
        rows[name] = {"suggest_s": [], "configs": []}
    t_start = time.time()
    try:
        for _ in range(args.proposals):
            for name, (fast, _kw) in variants.items():
                (fast_shapes.install if fast else fast_shapes.uninstall)()
                s = searches[name]
                t0 = time.perf_counter()
                c = s.suggest()
                rows[name]["suggest_s"].append(time.perf_counter() - t0)
                rows[name]["configs"].append(repr(c))
                s.observe(c, metric(c))
    finally:
        fast_shapes.install()
    n_init = SearchSettings().n_init
    out = {"command": "python scripts/bench_proposal.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.processor() or platform.machine(),
           "target_llvm": host_target("llvm", 2), "target_layer": args.target, "history_rows": len(hist),
           "proposals": args.proposals, "wall_s": round(time.time() - t_start, 1), "variants": {}}
    base = None
    for name in variants:
        s = searches[name]
        after = rows[name]["suggest_s"][n_init + 1:]  # the first model proposal (stage 2's 100-step fine-tune) excluded
        med = statistics.median(after)
        base = base or med
        out["variants"][name] = {"suggest_median_s": round(med, 3), "ratio_to_before": round(med / base, 3),
                                 "fit_s_total": round(sum(s.timings["fit"]), 1),
                                 "stats": {k: s.stats[k] for k in ("model", "cold_led", "transfer_weight",
                                                                    "idle_refits_skipped") if k in s.stats},
                                 "suggest_s": [round(x, 3) for x in rows[name]["suggest_s"]]}
    out["fast_shapes_same_proposals"] = rows["before"]["configs"] == rows["fast_shapes"]["configs"]
    print(json.dumps({k: v for k, v in out.items() if k != "variants"}, indent=1))
    print("| variant | suggest() median after the tuning set | vs before | model fitting, whole search |")
    print("|---|---|---|---|")
    for name, v in out["variants"].items():
        print(f"| {name} | {v['suggest_median_s']:.3f} s | {v['ratio_to_before']:.2f}x | {v['fit_s_total']:.1f} s |")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
