#!/usr/bin/env python
"""Replay benchmark (a): how well models predict held-out configurations of a target layer.

For each target task of the recorded dataset: the other tasks are the history; ``--n-target`` random target
measurements form the tuning set; the rest of the target's ``ok`` measurements are held out. Models compared:

* cold DGP: trained on the tuning set only;
* zero-shot DGP: pre-trained on the history, not shown the target;
* MAP DGP: the pre-trained DGP fine-tuned on the tuning set (ELBO + Gaussian prior around the pre-trained weights);
* exact GP: BoTorch ``SingleTaskGP`` on a history subsample + the tuning set, with the workload features.

Metrics on the held-out points: MAE of the standardised ``-log(latency)``, Spearman rank correlation, top-10 recall
(how many of the truly 10 fastest are among the predicted 10 fastest).

    python scripts/bench_transfer.py --seeds 2 --n-target 10 --out bench/bench_transfer_loto.json
    python scripts/bench_transfer.py --source-models resnet18 --seeds 2 --n-target 10 \\
        --out bench/bench_transfer_lomo.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--history", default="raydgp/datasets/shipped")
    ap.add_argument("--targets", default="all", help="comma-separated dataset specs, or all (every task; with "
                                                       "--source-models, every task outside those models)")
    ap.add_argument("--n-target", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--pretrain-steps", type=int, default=None, help="default: DGPSettings' own")
    ap.add_argument("--max-history", type=int, default=4000)
    ap.add_argument("--source-models", default=None,
                    help="restrict the history to these models' layers (e.g. resnet18 for leave-one-model-out)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--cache", default=None, help="cache directory for pre-trained weights")
    ap.add_argument("--prior", type=float, default=None, help="MAP prior strength (default: the search's)")
    ap.add_argument("--scope", default=None, help="fine-tune scope: all, output, variational, head (default: the "
                                                  "search's)")
    ap.add_argument("--extra", default=None, help="more MAP variants: 'scope,prior,kl|nokl[,norel];...'")
    args = ap.parse_args(argv)

    import torch
    from scipy.stats import spearmanr

    torch.set_num_threads(1)
    from raydgp.dgp.data import InputScaler
    from raydgp.dgp.model import DGPSettings
    from raydgp.search import History, SearchSettings, history_from_records
    from raydgp.dgp.train import fit_dgp, map_finetune, pretrain
    from raydgp.records import RecordStore
    from raydgp.space.design_space import DesignSpace
    from raydgp.models.layer_specs import MODELS
    from raydgp.datasets import layer_spec, layers_of, target_task

    store = RecordStore(args.history)
    recs = [r for r in store.records() if r.config.sketch >= 0]
    spaces = {k: DesignSpace.from_json(e["space"]) for k, e in store.workload_entries().items() if e.get("space")}
    spec_of = {r.workload.key: layer_spec(r.tag) for r in recs}
    allowed = None
    if args.source_models:
        allowed = {s for m in args.source_models.split(",") for s in MODELS[m]}
    if args.targets == "all":
        targets = sorted(set(spec_of.values()) - (allowed or set()))
    else:
        targets = _split_specs(args.targets)
    settings = DGPSettings() if args.pretrain_steps is None else DGPSettings(pretrain_steps=args.pretrain_steps)
    search = SearchSettings()  # the search's own stage-2 defaults: the "MAP DGP" row

    rows = []
    layers = layers_of(recs)
    for spec in targets:
        # the layer's task (key and machine) with the most records: one key can hold two machines' recordings
        tkey, thw, tgt = target_task(recs, layers.get(spec, []))
        if tkey is None:
            print(f"skip {spec}: not in the dataset", file=sys.stderr)
            continue
        src = [r for r in recs if spec_of[r.workload.key] != spec
               and (allowed is None or spec_of[r.workload.key] in allowed)]
        # The same stage-1 data as the search (and scripts/bench_search_replay.py, whose cached models this reuses):
        # every other workload, subsampled to --max-history points (seed 0).
        hist = history_from_records(src, spaces, exclude_workload=tkey)
        if len(hist) > args.max_history:
            sub = np.sort(np.random.default_rng(0).choice(len(hist), args.max_history, replace=False))
            hist = History(hist.X[sub], hist.y[sub])
        Xs, ys = hist.X, hist.y
        scaler = InputScaler.fit(Xs)
        t0 = time.monotonic()
        base = pretrain(scaler.transform(Xs), torch.as_tensor(ys, dtype=torch.float32), settings, seed=0,
                        cache_dir=args.cache).model
        pre_s = time.monotonic() - t0
        tspace = spaces[tkey].on_target(tgt[0].target)  # encoded on the machine it was measured on
        Xt_all = np.stack([tspace.encode(r.config) for r in tgt])
        lat = np.array([r.result.median_ms for r in tgt])
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            idx = rng.permutation(len(tgt))
            tr, te = idx[: args.n_target], idx[args.n_target:]
            raw = -np.log(lat)
            mu, sd = raw[tr].mean(), raw[tr].std() or 1.0
            y_tr = (raw[tr] - mu) / sd
            y_te = (raw[te] - mu) / sd
            Xtr, Xte = scaler.transform(Xt_all[tr]), scaler.transform(Xt_all[te])
            ytr_t = torch.tensor(y_tr, dtype=torch.float32)
            preds = {}
            cold = fit_dgp(Xtr, ytr_t, settings, steps=search.cold_steps, seed=seed)
            preds["cold DGP"] = cold.predict(Xte, seed=seed)[0].mean(0).numpy()
            preds["zero-shot DGP"] = base.predict(Xte, seed=seed)[0].mean(0).numpy()
            t1 = time.monotonic()
            tuned = copy.deepcopy(base)
            map_finetune(tuned, Xtr, ytr_t, prior_strength=search.prior_strength if args.prior is None else args.prior,
                         scope=args.scope or search.finetune_scope, seed=seed)
            ft_s = time.monotonic() - t1
            preds["MAP DGP"] = tuned.predict(Xte, seed=seed)[0].mean(0).numpy()
            for extra in filter(None, (args.extra or "").split(";")):  # e.g. "output,1,kl" "all,10,nokl"
                sc_, pr_, kl_, *rest = extra.split(",")
                alt = copy.deepcopy(base)
                map_finetune(alt, Xtr, ytr_t, prior_strength=float(pr_), scope=sc_, seed=seed,
                             kl_from_pretraining=kl_ == "kl", relocate=not rest or rest[0] != "norel")
                preds[f"MAP DGP {extra}"] = alt.predict(Xte, seed=seed)[0].mean(0).numpy()
            preds["exact GP (history+target)"] = _exact_gp(scaler, Xs, ys, Xt_all[tr], y_tr, Xt_all[te], seed)
            for name, p in preds.items():
                top_true = set(np.argsort(-y_te)[:10])
                top_pred = set(np.argsort(-p)[:10])
                rows.append({"target": spec, "target_key": tkey, "target_hardware": thw, "seed": seed, "model": name,
                             "mae": float(np.mean(np.abs(p - y_te))),
                             "spearman": float(spearmanr(p, y_te).correlation),
                             "top10_recall": len(top_true & top_pred), "pretrain_s": pre_s, "finetune_s": ft_s})
            print(json.dumps([r for r in rows if r["target"] == spec and r["seed"] == seed]), flush=True)
    summary = {}
    for name in dict.fromkeys(r["model"] for r in rows):
        sub = [r for r in rows if r["model"] == name]
        summary[name] = {k: float(np.median([r[k] for r in sub])) for k in ("mae", "spearman", "top10_recall")}
    print(json.dumps(summary, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"rows": rows, "median": summary, "args": vars(args)}, f, indent=1)
    return 0


def _split_specs(s: str) -> list[str]:
    out, cur = [], []
    for tok in s.split(","):
        if ":" in tok and cur:
            out.append(",".join(cur))
            cur = []
        cur.append(tok)
    if cur:
        out.append(",".join(cur))
    return out


def _exact_gp(scaler, Xs, ys, Xtr, ytr, Xte, seed, n_hist=600):
    import torch
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from gpytorch.mlls import ExactMarginalLogLikelihood

    rng = np.random.default_rng(seed)
    sub = rng.choice(len(ys), size=min(n_hist, len(ys)), replace=False)
    X = torch.cat([scaler.transform(Xs[sub]), scaler.transform(Xtr)]).double()
    y = torch.tensor(np.concatenate([ys[sub], ytr]), dtype=torch.float64).unsqueeze(-1)
    gp = SingleTaskGP(X, y)
    fit_gpytorch_mll(ExactMarginalLogLikelihood(gp.likelihood, gp), optimizer_kwargs={"options": {"maxiter": 100}})
    with torch.no_grad():
        return gp.posterior(scaler.transform(Xte).double()).mean.squeeze(-1).numpy()


if __name__ == "__main__":
    sys.exit(main())
