#!/usr/bin/env python
"""Replay search on the recorded dataset, issue 3 (b)-(e): the target layer's recorded configurations are the only
candidates (looked up, not measured); every other layer of the dataset is the history (leave-one-task-out), or only
ResNet-18's layers (``--source-models resnet18``: leave-one-model-out). Methods, same pool, same budget:

* ``random``: random order (many seeds);
* ``cold``: DGP Bayesian optimisation without history (cold start);
* ``dgp``: DGP transfer (pre-trained on the history, MAP fine-tuned), tuning set chosen by the pre-trained DGP;
* ``dgp_rand``: the same with a random tuning set (issue 3 (c));
* ``exact_gp``: the simple transfer baseline: BoTorch ``SingleTaskGP`` on a history subsample (600) + the target's
  measurements, with the workload features, LogEI over the remaining pool.

Reports per target and method (median over seeds): best latency after 10, 20, 40 trials relative to the pool's best,
and trials to come within 5% of the pool's best (budget+1 if never).

    python scripts/bench_search_replay.py --targets conv2d:1,64,56,56,64,3,1,1 --seeds 3 --budget 40 \\
        --out bench/bench_search_loto.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--history", default="data/dataset")
    ap.add_argument("--targets", default="conv2d:1,64,56,56,64,3,1,1;conv2d:1,128,28,28,256,3,2,1;"
                                          "conv2d:1,128,56,56,128,1,1,0;depthwise:1,256,28,28,3,1,1;dense:1,512,1000")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--random-seeds", type=int, default=50)
    ap.add_argument("--budget", type=int, default=40)
    ap.add_argument("--methods", default="dgp,dgp_rand,cold,exact_gp")
    ap.add_argument("--source-models", default=None)
    ap.add_argument("--pool", type=int, default=300, help="pool size per proposal (the target's records are the pool)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from raydgp.records import RecordStore
    from raydgp.search import DGPSearch, SearchSettings, history_from_records
    from raydgp.space.design_space import DesignSpace
    from raydgp.space.zoo import MODELS

    store = RecordStore(args.history)
    recs = [r for r in store.records() if r.config.sketch >= 0]
    spaces = {k: DesignSpace.from_json(e["space"]) for k, e in store.workload_entries().items() if e.get("space")}
    spec_of = {r.workload.key: r.tag.split("dataset:", 1)[-1] for r in recs}
    allowed = None
    if args.source_models:
        allowed = {s for m in args.source_models.split(",") for s in MODELS[m]}
    results = {"budget": args.budget, "seeds": args.seeds, "source_models": args.source_models, "targets": {}}
    for spec in args.targets.split(";"):
        tkey = next(k for k, s in spec_of.items() if s == spec)
        src = [r for r in recs if r.workload.key != tkey and (allowed is None or spec_of[r.workload.key] in allowed)]
        hist = history_from_records(src, spaces, exclude_workload=tkey)
        lat = {r.config: r.result.median_ms for r in recs if r.workload.key == tkey and r.result.ok}
        sp = spaces[tkey]
        best = min(lat.values())

        class Replay:
            size = len(lat)
            dim = sp.dim

            def sample_many(self, n, rng, exclude=None, max_tries=None):
                c = [x for x in lat if x not in (exclude or ())]
                rng.shuffle(c)
                return c[:n]

            def neighbours(self, c):
                return []

            def encode_many(self, cs):
                return sp.encode_many(cs)

        def curve(order):
            return np.minimum.accumulate([lat[c] for c in order])

        def summary(curves):
            curves = np.array([c[: args.budget] for c in curves])
            rel = curves / best
            within = [int(np.argmax(c <= 1.05 * best)) + 1 if (c <= 1.05 * best).any() else args.budget + 1
                      for c in curves]
            return {f"best_rel@{n}": float(np.median(rel[:, n - 1])) for n in (10, 20, 40) if n <= args.budget} | {
                "trials_to_5pct": float(np.median(within)), "runs": len(curves)}

        out = {"pool_size": len(lat), "pool_best_ms": best, "history_points": len(hist)}
        rs = []
        for seed in range(args.random_seeds):
            order = list(lat)
            np.random.default_rng(seed).shuffle(order)
            rs.append(curve(order[: args.budget]))
        out["random"] = summary(rs)
        cache = None
        for method in args.methods.split(","):
            t0 = time.time()
            curves = []
            for seed in range(args.seeds):
                if method == "exact_gp":
                    curves.append(curve(_exact_gp_search(Replay(), sp, hist, lat, seed, args.budget)))
                    continue
                st = SearchSettings(seed=seed, init="random" if method == "dgp_rand" else "dgp", pool_size=args.pool,
                                    pretrain_seed=0)
                s = DGPSearch(Replay(), st, history=None if method == "cold" else hist, cache_dir=cache)
                if method != "cold" and cache is None:
                    import tempfile

                    cache = tempfile.mkdtemp(prefix="raydgp-replay-")
                    s.cache_dir = cache
                order = []
                for _ in range(args.budget):
                    c = s.suggest()
                    if c is None:
                        break
                    s.observe(c, lat[c])
                    order.append(c)
                curves.append(curve(order))
            out[method] = summary(curves) | {"wall_s": round(time.time() - t0, 1)}
        results["targets"][spec] = out
        print(spec, json.dumps(out), flush=True)
    meth = ["random"] + args.methods.split(",")
    results["median_over_targets"] = {
        m: {k: float(np.median([t[m][k] for t in results["targets"].values()]))
            for k in next(iter(results["targets"].values()))[m] if k not in ("runs", "wall_s")} for m in meth}
    print(json.dumps(results["median_over_targets"], indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


def _exact_gp_search(space, sp, hist, lat, seed: int, budget: int, n_hist: int = 600, n_init: int = 8):
    """BO with an exact GP on history (subsample) + target points, workload features in the inputs, LogEI over the
    remaining pool. The first ``n_init`` picks are the GP's own best predictions from history alone."""
    import torch
    from botorch.acquisition import LogExpectedImprovement
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from gpytorch.mlls import ExactMarginalLogLikelihood

    from raydgp.dgp.data import InputScaler, standardised_targets

    rng = np.random.default_rng(seed)
    idx = rng.choice(len(hist), min(n_hist, len(hist)), replace=False)
    Xh, yh = hist.X[idx], hist.y[idx]
    pool = list(lat)
    Xp_all = sp.encode_many(pool)
    scaler = InputScaler.fit(np.concatenate([hist.X, Xp_all]))
    chosen: list = []
    for i in range(budget):
        yt, keep = standardised_targets(["t"] * len(chosen), ["ok"] * len(chosen), [lat[c] for c in chosen]) \
            if chosen else (np.zeros(0), np.zeros(0, bool))
        Xt = sp.encode_many(chosen) if chosen else np.zeros((0, Xh.shape[1]))
        X = torch.as_tensor(scaler.transform(np.concatenate([Xh, Xt])), dtype=torch.float64)
        y = torch.as_tensor(np.concatenate([yh, yt]), dtype=torch.float64).unsqueeze(-1)
        gp = SingleTaskGP(X, y)
        try:
            fit_gpytorch_mll(ExactMarginalLogLikelihood(gp.likelihood, gp))
        except Exception:  # noqa: BLE001 - keep the unfitted hyper-parameters
            pass
        rest = [j for j, c in enumerate(pool) if c not in set(chosen)]
        Xp = torch.as_tensor(scaler.transform(Xp_all[rest]), dtype=torch.float64).unsqueeze(1)
        with torch.no_grad():
            if len(chosen) < n_init:
                score = gp.posterior(Xp.squeeze(1)).mean.squeeze(-1)
            else:
                score = LogExpectedImprovement(gp, best_f=float(yt.max()))(Xp)
        chosen.append(pool[rest[int(torch.argmax(score))]])
    return chosen


if __name__ == "__main__":
    sys.exit(main())
