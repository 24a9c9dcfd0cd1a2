#!/usr/bin/env python
"""Replay search on the recorded dataset, issue 3 (b)-(e): the target layer's recorded configurations are the only
candidates (looked up, not measured); every other layer of the dataset is the history (leave-one-task-out, the
default: every task in turn is the target), or only ResNet-18's layers with MobileNet-v1's as targets
(``--lomo``: leave-one-model-out). Methods, same candidates, same budget:

* ``random``: random order (``--random-seeds`` seeds);
* ``cold``: DGP Bayesian optimisation without history (cold start);
* ``dgp``: DGP transfer (pre-trained on the history, MAP fine-tuned), tuning set chosen by the pre-trained DGP;
* ``dgp_rand``: the same with a random tuning set (issue 3 (b), (c));
* ``dgp_zs``: the pre-trained DGP used zero-shot throughout (no fine-tuning, no cold member): what stage 2 adds;
* ``dgp_notrust``: ``dgp`` without the trust in history (no cold member beside the transferred model);
* ``sgp``: ``dgp`` with no hidden layer (``hidden_dims=()``: a one-layer sparse variational GP, the same
  pre-training, transfer, trust and search): what depth buys;
* ``dgp_nozs``: ``dgp`` without the zero-shot member of the trust (the transferred model fine-tuned and the cold one
  only: the default before it);
* ``dgp_nocs``: ``dgp`` without the cold start (``cold_start=False``: no random points owed to a leading cold member);
* ``dgp_sm``: ``dgp`` with every sketch given at least 4 configurations (``sketch_min=4``);
* ``dgp_ri``: ``dgp`` with one proposal in five (after the tuning set) a random candidate (``random_interleave=0.2``);
* ``cold_add``: ``cold`` with the additive member beside it (``additive_member="on"``: one kernel per column group
  of the design space, :attr:`DesignSpace.column_groups`, weighed by the trust); ``dgp_add``: ``dgp`` with it
  (``additive_member="on"``);
* ``cold_cs20``: ``cold`` with 20 Adam steps instead of 50 after its fits' exact-GP start (``cold_steps=20``);
  ``dgp_cm50``: ``dgp`` with the cold member's fresh fits at 50 steps instead of 20 (``cold_member_steps=50``, the
  default before 2026-12-05: the fresh fit was most of a proposal's time); ``dgp_rs15``: ``dgp`` with 15 Adam steps
  per warm-started refit instead of 30 (``refit_steps=15``); ``dgp_idle0``: ``dgp`` refitting every member on every
  result (``idle_member_weight=0``, the default before 2026-12-05: a member under weight 0.2 is now refitted every
  4th result); ``dgp_cm10``: ``dgp`` with the cold member's fresh fits at 10 Adam steps (``cold_member_steps=10``);
  ``dgp_gpyt``: ``dgp`` trained through GPyTorch's ``DeepApproximateMLL`` (``DGPSettings(elbo="gpytorch")``, the
  only training path before 2026-12-05's third session) instead of the directly computed ELBO; ``dgp_cr25``:
  ``dgp`` whose cold member is fitted afresh (exact-GP start) only once the target's data grew by 25% since its last
  fresh fit, and warm-started (``refit_steps``) in between (``cold_refresh=0.25``; the fresh fit was about half of a
  proposal batch's time in a profile of 2026-12-06);
* ``dgp_prev``, ``dgp_rand_prev``: ``dgp``, ``dgp_rand`` with the trust of the defaults before 2026-12-06 15:30
  (``member_mix="ei"``, ``trust_pairs="all"``: every pair counts, the members' EIs summed as they are); the variants
  below name what they set and keep the other of the two at its old default;
* ``dgp_top``: ``dgp`` whose trust counts only the pairs of measured configurations whose better one is among the
  best quarter (``trust_pairs="top"``); ``dgp_rand_top``: ``dgp_rand`` with it
  (the live default on a layer whose shape no history holds is ``init=random``);
* ``dgp_share``: ``dgp`` whose members' EIs are each divided by their own largest over the pool before the weighted
  sum (``member_mix="share"``: the trust weights, not the EI scales, decide who leads); ``dgp_rand_share``:
  ``dgp_rand`` with it; ``dgp_share_top``, ``dgp_rand_share_top``: ``dgp``, ``dgp_rand`` with both;
* ``dgp_h03``: ``dgp`` with the hidden GPs' output scale starting at 0.3 instead of 0.01 (``hidden_noise``);
* ``mtgp``, ``rgpe``, ``fsbo``: the transfer peers of ``scripts/transfer_peers.py`` (BoTorch ``MultiTaskGP``, the
  RGPE ranking-weighted ensemble, an FSBO deep-kernel GP) on the same history, candidates and budget;
* ``exact_gp``: the simple transfer baseline: BoTorch ``SingleTaskGP`` on a history subsample (600) + the target's
  measurements, with the workload features; hyper-parameters refitted (L-BFGS, at most 100 iterations) every 16
  results and conditioned on the new data in between;
  LogEI over the remaining candidates; its tuning set is its own best predictions from history.

Reports per target and method (median over seeds): best latency after 10, 20, 40 trials relative to the candidates'
best, and trials to come within 5% of it (budget+1 if never); the median curve per method over all targets goes to
the JSON and, with ``--plot``, to a PNG.

    python scripts/bench_search_replay.py --seeds 3 --out bench/bench_search_loto.json --plot bench/search_loto.png
    python scripts/bench_search_replay.py --lomo --seeds 3 --out bench/bench_search_lomo.json \\
        --plot bench/search_lomo.png
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from transfer_peers import PEERS, peer_search

METHODS = ("random", "cold", "dgp", "dgp_rand", "dgp_zs", "exact_gp", "dgp_notrust", "sgp", "dgp_h03", "mtgp", "rgpe",
           "fsbo", "dgp_ri", "dgp_nozs", "dgp_nocs", "dgp_sm", "dgp_mp", "cold_add", "dgp_add", "cold_cs20", "dgp_cm50", "dgp_rs15",
           "dgp_idle0", "dgp_cm10", "dgp_gpyt", "dgp_cr25", "dgp_top", "dgp_rand_top", "dgp_share", "dgp_rand_share", "dgp_rand_share_top", "dgp_share_top", "dgp_prev", "dgp_rand_prev")


#: ``--methods`` when none are given.
DEFAULT_METHODS = "cold,dgp,dgp_rand,dgp_zs,exact_gp"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--history", default="raydgp/datasets/shipped")
    ap.add_argument("--shard", default=None, help="i/n: run every n-th target starting at i (parallel runs)")
    ap.add_argument("--targets", default=None, help="';'-separated dataset specs (default: every task, or with "
                                                    "--lomo every MobileNet-v1 task)")
    ap.add_argument("--lomo", action="store_true", help="history: ResNet-18 only; targets: MobileNet-v1")
    ap.add_argument("--live", nargs="+", default=None, metavar="DIR",
                    help="run directories of live per-layer searches (`raydgp layer --out`, `scripts/bench.py`'s "
                         "layers part: a summary.json naming the layer and a records/ store): their layers become "
                         "extra targets, every configuration they measured a candidate at the median of its "
                         "measurements; with --targets unset, only these layers are the targets")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--random-seeds", type=int, default=50)
    ap.add_argument("--budget", type=int, default=40)
    ap.add_argument("--methods", default=DEFAULT_METHODS)
    ap.add_argument("--max-history", type=int, default=4000, help="history subsample (as `raydgp tune` uses)")
    ap.add_argument("--drop-hardware", default=None, metavar="TAG",
                    help="leave the history's records measured on this hardware out (a hardware tag, e.g. "
                         "llvm:emeraldrapids:2): what a part of the dataset does to the transfer")
    ap.add_argument("--target-hardware", default=None, metavar="TAG",
                    help="target each layer's recording on this hardware (a hardware tag, e.g. "
                         "llvm:emeraldrapids:2: the NHWC part of the shipped history, what a live run on that machine "
                         "tunes) instead of its recording with the most records (Zen 3, NCHW); layers not recorded "
                         "there are no targets")
    ap.add_argument("--subsample", choices=("own", "random", "own_only", "near"), default="near",
                    help="how the history is cut to --max-history: `near` (default) as `raydgp tune` and `raydgp "
                         "layer` do since 2026-12-06 19:00 (this hardware kind first, within it and then among the "
                         "rest whole workloads nearest the target's loop nest: "
                         "raydgp.pipeline.history.nearest_records); `own` as they did before (the target's own kind "
                         "of hardware first, up to 3/4, the rest a random draw: "
                         "raydgp.pipeline.history.subsample_history); `random` a uniform draw (every replay before "
                         "2026-12-06 15:30); `own_only` only the records of the target's own kind of hardware (then "
                         "cut as `own`)")
    ap.add_argument("--cache", default=None, help="pre-trained weights cache (default: a temporary directory)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--plot", default=None, help="PNG of the median curves")
    ap.add_argument("--add-to", default=None, metavar="JSON",
                    help="run --methods on the targets of this earlier output and add them to it (written to --out): "
                         "the other methods' results are kept as they were")
    ap.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                    help="combine the outputs of sharded runs (--shard) into --out / --plot, then stop")
    ap.add_argument("--compare", nargs="+", default=None, metavar="JSON",
                    help="print one markdown table of earlier outputs side by side (each file's history cut, target "
                         "hardware, and per method the median / mean trials to 5%% and the targets), then stop")
    args = ap.parse_args(argv)
    if args.merge:
        return _merge(args)
    if args.compare:
        print(_compare_table(args.compare, [m for m in args.methods.split(",") if m] if args.methods != DEFAULT_METHODS
                             else None))
        return 0

    import torch

    torch.set_num_threads(1)
    from raydgp.records import RecordStore
    from raydgp.models.layer_specs import MODELS
    from raydgp.pipeline.history import subsample_history
    from raydgp.search import History, history_from_records
    from raydgp.space.design_space import DesignSpace

    if not any((Path(args.history) / f).is_file() for f in ("records.jsonl", "records.jsonl.gz")):
        ap.error(f"--history {args.history}: no record store there (a relative path is taken from the working "
                 "directory: run from the repository root, or give the path)")
    store = RecordStore(args.history)
    recs = [r for r in store.records() if r.config.sketch >= 0]
    if args.drop_hardware:
        from raydgp.space.hardware import hardware_tag

        kept = [r for r in recs if hardware_tag(r.target or {}) != args.drop_hardware]
        if len(kept) == len(recs):
            ap.error(f"--drop-hardware {args.drop_hardware}: no record of the history was measured there (tags look "
                     "like llvm:emeraldrapids:2)")
        recs = kept
    spaces = {k: DesignSpace.from_json(e["space"]) for k, e in store.workload_entries().items() if e.get("space")}
    live_specs = []
    if args.live:
        try:
            extra, extra_spaces, live_specs = _live_records(args.live, {r.workload.key for r in recs})
        except ValueError as e:
            ap.error(str(e))
        recs += extra
        spaces.update({k: DesignSpace.from_json(v) for k, v in extra_spaces.items()})
    from raydgp.datasets import layer_spec, layers_of

    spec_of = {r.workload.key: layer_spec(r.tag) for r in recs}
    # A layer has a key per layout (and per kernel signature), and one key may hold recordings of several machine
    # kinds (the NHWC parts 3 and 4 of the shipped dataset: the same kernels on emeraldrapids and znver3). A target is
    # one (key, hardware) task: by default the layer's task with the most ok records (the Zen 3 NCHW recordings),
    # with --target-hardware its task on that machine kind; the history leaves out the layer on every machine.
    from raydgp.space.hardware import hardware_tag

    ok_of: dict = {}
    for r in recs:
        task = (r.workload.key, hardware_tag(r.target or {}))
        ok_of[task] = ok_of.get(task, 0) + int(r.result.ok)
    task_of = {}
    for s, ks in layers_of(recs).items():
        tasks = [(k, hw) for (k, hw) in ok_of if k in ks
                 and (args.target_hardware is None or hw == args.target_hardware)]
        if tasks:
            task_of[s] = max(tasks, key=lambda t: (ok_of[t], -ks.index(t[0])))
    if args.target_hardware and not task_of:
        ap.error(f"--target-hardware {args.target_hardware}: no layer was recorded there (tags look like "
                 "llvm:emeraldrapids:2)")
    key_of = {s: t[0] for s, t in task_of.items()}
    allowed = set(MODELS["resnet18"]) if args.lomo else None
    if args.targets:
        targets = args.targets.split(";")
    elif live_specs:
        targets = live_specs
    elif args.lomo:
        targets = [s for s in dict.fromkeys(MODELS["mobilenet_v1"]) if s in key_of and s not in allowed]
    else:
        targets = sorted(key_of)
    missing = [t for t in targets if t not in key_of]
    if missing:
        ap.error(f"--targets: {missing} not recorded in the history" + (
            f" on {args.target_hardware}" if args.target_hardware else "") + "; the layers are like conv2d:1,64,56,56,"
            "64,3,1,1 (raydgp.datasets.layer_spec)")
    if args.shard:
        i, n = map(int, args.shard.split("/"))
        targets = targets[i::n]
    methods = [m for m in args.methods.split(",") if m]
    earlier = json.load(open(args.add_to)) if args.add_to else None
    if earlier is not None:
        targets = list(earlier["targets"])
    unknown = set(methods) - set(METHODS)
    if unknown:
        ap.error(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    cache = args.cache or tempfile.mkdtemp(prefix="raydgp-replay-")
    per_task = _task_histories(recs, spaces) if set(methods) & set(PEERS) else {}
    results = {"budget": args.budget, "seeds": args.seeds, "lomo": args.lomo, "max_history": args.max_history,
               "subsample": args.subsample, "drop_hardware": args.drop_hardware,
               "target_hardware": args.target_hardware, "targets": {}, "curves": {}}
    all_curves: dict[str, list] = {m: [] for m in ["random"] + methods}
    if earlier is not None:
        same = {k: earlier[k] for k in ("budget", "seeds", "lomo", "max_history")} | {
            "subsample": earlier.get("subsample", "random")}
        if same != {k: results[k] for k in same}:
            ap.error(f"--add-to {args.add_to} ran with {same}; run the added methods with the same settings")
        results["added"] = earlier.get("added", []) + [{"methods": methods, "date": time.strftime("%Y-%m-%d %H:%M")}]
        # every earlier target stays in the file while the added methods run (a partial write loses nothing)
        # (the methods being added leave the earlier entries, so no aggregate mixes their old and new results)
        results["targets"] = {t: {k: e for k, e in v.items() if k not in methods} for t, v in earlier["targets"].items()}
    for spec in targets:
        t_start = time.time()
        tkey, thw = task_of[spec]
        sp = _target_space(spaces[tkey], recs, tkey, thw)
        src = [r for r in recs if spec_of[r.workload.key] != spec
               and (allowed is None or spec_of[r.workload.key] in allowed)]
        if args.subsample == "near":
            from raydgp.pipeline.history import nearest_records

            src = nearest_records([r for r in src if r.workload.key in spaces], [sp], args.max_history, seed=0)
        hist = history_from_records(src, spaces, exclude_workload=tkey)
        if args.subsample in ("own", "own_only"):
            hist, same = subsample_history(hist, sp.target, args.max_history, seed=0)
            if args.subsample == "own_only":
                hist = History(hist.X[same], hist.y[same])
        elif len(hist) > args.max_history:
            idx = np.sort(np.random.default_rng(0).choice(len(hist), args.max_history, replace=False))
            hist = History(hist.X[idx], hist.y[idx])
        lat = _latencies(recs, tkey, median=spec in live_specs, hardware=thw)
        best = min(lat.values())
        out = {"candidates": len(lat), "best_ms": best, "history_points": len(hist)}
        rs = []
        for seed in range(args.random_seeds):
            order = list(lat)
            np.random.default_rng(seed).shuffle(order)
            rs.append(_curve(lat, order[: args.budget]))
        out["random"] = _summary(rs, best, args.budget)
        all_curves["random"].extend(c / best for c in rs)
        tasks = [h for (key, _), h in per_task.items() if spec_of[key] != spec
                 and (allowed is None or spec_of[key] in allowed)]
        for method in methods:
            t0 = time.time()
            if method in PEERS:
                curves = [_curve(lat, peer_search(method, tasks, sp, lat, seed, args.budget))
                          for seed in range(args.seeds)]
            else:
                curves = [_curve(lat, _run(method, sp, lat, hist, seed, args.budget, cache))
                          for seed in range(args.seeds)]
            out[method] = _summary(curves, best, args.budget) | {"wall_s": round(time.time() - t0, 1)}
            out[method]["curve"] = np.median(np.array([np.pad(c, (0, args.budget - len(c)), mode="edge")
                                                       for c in curves]) / best, axis=0).round(4).tolist()
            all_curves[method].extend(c / best for c in curves)
        out["wall_s"] = round(time.time() - t_start, 1)
        if earlier is not None:  # the earlier methods as they were, the added ones (and random) from this run
            out = {**earlier["targets"][spec], **{k: v for k, v in out.items() if k != "wall_s"},
                   "wall_s": earlier["targets"][spec].get("wall_s", 0) + out["wall_s"]}
        results["targets"][spec] = out
        print(spec, json.dumps(out), flush=True)
        if args.out:  # partial results survive an interrupted run
            _finish(results, all_curves, ["random"] + methods, args, earlier)
    _finish(results, all_curves, ["random"] + methods, args, earlier)
    print(_table(results, list(results["median_over_targets"])))
    return 0


def _latencies(recs, key, median: bool = False, hardware: str | None = None) -> dict:
    """``{config: ms}`` of the ``ok`` records of workload ``key`` measured on ``hardware`` (a
    :func:`~raydgp.space.hardware.hardware_tag`; None: any): with ``median``, the median of a configuration's
    records' medians (live runs measure a configuration several times); else its last record's (the recorded
    dataset, whose few repeats the replay has always read this way). One key can hold several machines'
    recordings of the same configurations: without ``hardware`` they would be mixed."""
    from raydgp.space.hardware import hardware_tag

    by: dict = {}
    for r in recs:
        if r.workload.key == key and r.result.ok and (hardware is None or hardware_tag(r.target or {}) == hardware):
            by.setdefault(r.config, []).append(r.result.median_ms)
    return {c: float(np.median(v)) if median else v[-1] for c, v in by.items()}


def _target_space(space, recs, key, hardware: str):
    """``space`` (the workload's design space as its store keeps it, with the target it was first recorded on)
    on the target the target task was measured on: the candidates of a target on another machine kind than the
    stored one are encoded with that machine's hardware features."""
    from raydgp.space.hardware import hardware_tag

    if hardware_tag(space.target or {}) == hardware:
        return space
    target = next(r.target for r in recs if r.workload.key == key and hardware_tag(r.target or {}) == hardware)
    return space.on_target(target)


def _live_records(dirs, history_keys) -> tuple[list, dict, list]:
    """The records of live per-layer search runs (``dirs``), retagged ``dataset:<layer>`` so that the replay holds
    their layer out of the history and can make it a target; their workloads' design spaces; the layers' specs.

    Raises:
        ValueError: a directory without ``summary.json`` or ``records/``, or a layer the history also holds.
    """
    import dataclasses

    from raydgp.records import RecordStore

    recs, spaces, specs = [], {}, []
    for d in dirs:
        d = Path(d)
        if (d / "database_tuning_record.json").is_file() and not (d / "records").is_dir():
            print(f"--live {d}: a MetaSchedule run (its own database, no raydgp records): skipped", file=sys.stderr)
            continue
        if not (d / "summary.json").is_file() or not (d / "records").is_dir():
            raise ValueError(f"--live {d}: not a live search's run directory (no summary.json or records/ there)")
        spec = json.loads((d / "summary.json").read_text())["workload"]
        store = RecordStore(d / "records")
        got = [dataclasses.replace(r, tag=f"dataset:{spec}") for r in store.records() if r.config.sketch >= 0]
        if any(r.workload.key in history_keys for r in got):
            raise ValueError(f"--live {d}: its layer {spec} is in the history already; give a history without it")
        recs += got
        spaces.update({k: e["space"] for k, e in store.workload_entries().items() if e.get("space")})
        if spec not in specs:
            specs.append(spec)
    return recs, spaces, specs


def _task_histories(recs, spaces) -> dict:
    """Every ``(workload key, hardware)`` task of the records as its own :class:`History` (the peers model tasks
    separately), tasks with fewer than 5 usable points left out."""
    from collections import defaultdict

    from raydgp.search import history_from_records
    from raydgp.space.hardware import hardware_tag

    groups = defaultdict(list)
    for r in recs:
        if r.workload.key in spaces:
            groups[(r.workload.key, hardware_tag(r.target or spaces[r.workload.key].target))].append(r)
    out = {k: history_from_records(g, spaces) for k, g in groups.items()}
    return {k: h for k, h in out.items() if len(h) >= 5}


def _run(method, sp, lat, hist, seed, budget, cache) -> list:
    from raydgp.search import DGPSearch

    if method == "exact_gp":
        return _exact_gp_search(sp, hist, lat, seed, budget)
    st = method_settings(method, seed, len(lat))
    # the additive member needs the space's column groups: only the *_add methods see them, so the other methods
    # stay what they were when recorded
    s = DGPSearch(_Replay(sp, lat, groups=method.endswith("_add")), st,
                  history=None if method in ("cold", "cold_add", "cold_cs20") else hist, cache_dir=cache)
    order = []
    for _ in range(budget):
        c = s.suggest()
        if c is None:
            break
        s.observe(c, lat[c])
        order.append(c)
    return order


def method_settings(method: str, seed: int, n_candidates: int):
    """The :class:`~raydgp.search.SearchSettings` of a replay method (every DGP method of :data:`METHODS`)."""
    from raydgp.dgp.model import DGPSettings
    from raydgp.search import SearchSettings

    kw = {}
    if method == "dgp_zs":
        kw = {"refit_steps": 0, "dgp": DGPSettings(finetune_steps=0), "trust": False}
    elif method == "dgp_notrust":
        kw = {"trust": False}
    elif method == "sgp":
        kw = {"dgp": DGPSettings(hidden_dims=())}
    elif method == "dgp_h03":
        kw = {"dgp": DGPSettings(hidden_noise=0.3)}
    elif method == "dgp_nozs":
        kw = {"zero_shot_member": False}
    elif method == "dgp_ri":
        kw = {"random_interleave": 0.2}
    elif method == "dgp_nocs":
        kw = {"cold_start": False}
    elif method == "dgp_sm":
        kw = {"sketch_min": 4}
    elif method == "dgp_mp":
        kw = {"member_pick": "sample"}
    elif method == "dgp_add":
        kw = {"additive_member": "on"}
    elif method == "cold_add":
        kw = {"additive_member": "on"}
    elif method == "cold_cs20":
        kw = {"cold_steps": 20}
    elif method == "dgp_cm50":
        kw = {"cold_member_steps": 50}
    elif method == "dgp_rs15":
        kw = {"refit_steps": 15}
    elif method == "dgp_idle0":
        kw = {"idle_member_weight": 0.0}
    elif method == "dgp_cm10":
        kw = {"cold_member_steps": 10}
    elif method == "dgp_gpyt":
        kw = {"dgp": DGPSettings(elbo="gpytorch")}
    elif method == "dgp_cr25":
        kw = {"cold_refresh": 0.25}
    elif method in ("dgp_top", "dgp_rand_top"):
        kw = {"trust_pairs": "top", "member_mix": "ei"}
    elif method in ("dgp_share", "dgp_rand_share"):
        kw = {"member_mix": "share", "trust_pairs": "all"}
    elif method in ("dgp_share_top", "dgp_rand_share_top"):
        kw = {"member_mix": "share", "trust_pairs": "top"}
    elif method in ("dgp_prev", "dgp_rand_prev"):
        kw = {"member_mix": "ei", "trust_pairs": "all"}
    # The candidates are the recorded configurations: no evolution (bred children would have no recorded latency).
    return SearchSettings(seed=seed, init="random" if method.startswith("dgp_rand") else "dgp",
                          pool_size=n_candidates, pool_refresh=1.0, pretrain_seed=0, evolve_generations=0, **kw)


class _Replay:
    """The target's recorded configurations as a finite space (look up instead of measure)."""

    def __init__(self, sp, lat, groups: bool = False):
        self.sp, self.lat = sp, lat
        self.size, self.dim = len(lat), sp.dim
        if groups:
            self.column_groups = sp.column_groups

    def sample_many(self, n, rng, exclude=None, max_tries=None):
        c = [x for x in self.lat if x not in (exclude or ())]
        rng.shuffle(c)
        return c[:n]

    def neighbours(self, c):
        return []

    @property
    def structures(self):
        return self.sp.structures

    def structure_of(self, c):
        return self.sp.structure_of(c)

    def encode_many(self, cs):
        return self.sp.encode_many(cs)


def _curve(lat, order):
    return np.minimum.accumulate([lat[c] for c in order])


def _summary(curves, best, budget):
    curves = np.array([np.pad(c, (0, budget - len(c)), mode="edge")[:budget] for c in curves])
    rel = curves / best
    within = [int(np.argmax(c <= 1.05 * best)) + 1 if (c <= 1.05 * best).any() else budget + 1 for c in curves]
    return {f"best_rel@{n}": float(np.median(rel[:, n - 1])) for n in (10, 20, 40) if n <= budget} | {
        "trials_to_5pct": float(np.median(within)), "runs": len(curves)}


def _aggregate(results, methods) -> list[str]:
    """Median and mean over targets of every per-target summary figure; returns the figures' names."""
    ts = results["targets"]
    keys = [k for k in next(iter(ts.values()))["random"] if k != "runs"]
    results["median_over_targets"] = {m: {k: float(np.median([t[m][k] for t in ts.values()])) for k in keys}
                                      for m in methods}
    results["mean_over_targets"] = {m: {k: float(np.mean([t[m][k] for t in ts.values()])) for k in keys}
                                    for m in methods}
    return keys


def _finish(results, all_curves, methods, args, earlier=None):
    ts = results["targets"]
    if earlier is not None:  # every method present on every target run so far
        methods = [m for m in next(iter(ts.values())) if isinstance(next(iter(ts.values()))[m], dict)
                   and all(m in t for t in ts.values())]
    _aggregate(results, methods)
    results["curves"] = dict(earlier["curves"]) if earlier is not None else {}
    results["curves"].update({m: np.median(np.array([np.pad(c, (0, args.budget - len(c)), mode="edge")
                                                     for c in all_curves[m]]), axis=0).tolist()
                              for m in all_curves if all_curves[m]})
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for m, c in results["curves"].items():
            ax.plot(range(1, len(c) + 1), c, label=m)
        ax.set_xlabel("trials")
        ax.set_ylabel("best latency / best of the candidates (median)")
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend()
        ax.set_title(f"replay search, {'leave-one-model-out' if args.lomo else 'leave-one-task-out'}, "
                     f"{len(ts)} targets")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)
        plt.close(fig)


def _compare_table(files, methods=None) -> str:
    """A markdown table of several outputs: one row per (file, method), trials to 5% over the file's targets."""
    rows = ["| file | history cut | target hardware | method | targets | median trials to 5% | mean trials to 5% |",
            "|---|---|---|---|---|---|---|"]
    for f in files:
        d = json.load(open(f))
        ts = d["targets"]
        ms = [m for m in (methods or [k for k in next(iter(ts.values())) if isinstance(ts[next(iter(ts))].get(k), dict)
                                      and "trials_to_5pct" in ts[next(iter(ts))][k]])]
        for m in ms:
            v = [t[m]["trials_to_5pct"] for t in ts.values() if m in t]
            if not v:
                continue
            cut = d.get("subsample", "random (before 2026-12-06)") + (
                f", without {d['drop_hardware']}" if d.get("drop_hardware") else "")
            rows.append(f"| `{Path(f).name}` | {cut} | {d.get('target_hardware') or 'most records (Zen 3)'} | {m} | "
                        f"{len(v)} | {np.median(v):.3g} | {np.mean(v):.3g} |")
    return "\n".join(rows)


def _merge(args) -> int:
    """Combine sharded runs: per-target results are exact; the plot shows the median over all targets of the best
    found after 10, 20 and 40 trials (the per-trial curves of a shard are medians and do not combine exactly)."""
    parts = [json.load(open(f)) for f in args.merge]
    results = {k: parts[0][k] for k in ("budget", "seeds", "lomo", "max_history")}
    # how the history was cut and which recording was the target: kept when the shards agree (older files lack them)
    for k in ("subsample", "drop_hardware", "target_hardware"):
        vals = {json.dumps(p.get(k)) for p in parts}
        if len(vals) > 1:
            raise SystemExit(f"--merge: the shards differ in {k} ({sorted(vals)}): merge runs of one configuration")
        if k in parts[0]:
            results[k] = parts[0][k]
    results["targets"] = {t: v for p in parts for t, v in p["targets"].items()}
    results["merged_from"] = args.merge
    methods = [m for m in ("random",) + METHODS[1:] if all(m in v for v in results["targets"].values())]
    ts = results["targets"]
    keys = _aggregate(results, methods)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ns = [int(k.split("@")[1]) for k in keys if k.startswith("best_rel@")]
        fig, ax = plt.subplots(figsize=(6, 4))
        for m in methods:
            ax.plot(ns, [results["median_over_targets"][m][f"best_rel@{n}"] for n in ns], marker="o", label=m)
        ax.set_xlabel("trials")
        ax.set_ylabel("best found / best of the candidates\n(median over targets)")
        ax.grid(True, alpha=0.3)
        ax.legend()
        ax.set_title(f"replay search, {'leave-one-model-out' if results['lomo'] else 'leave-one-task-out'}, "
                     f"{len(ts)} targets")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)
        plt.close(fig)
    print(_table(results, methods))
    return 0


def _table(results, methods) -> str:
    med, mean = results["median_over_targets"], results["mean_over_targets"]
    keys = list(next(iter(med.values())))
    lines = ["| method | " + " | ".join(f"median {k}" for k in keys) + " | mean trials_to_5pct |",
             "|---" * (len(keys) + 2) + "|"]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(f"{med[m][k]:.3g}" for k in keys)
                     + f" | {mean[m]['trials_to_5pct']:.3g} |")
    return "\n".join(lines)


def _exact_gp_search(sp, hist, lat, seed: int, budget: int, n_hist: int = 600, n_init: int = 8,
                     refit_every: int = 16):
    """BO with an exact GP on history (subsample) + target points, workload features in the inputs, LogEI over the
    remaining candidates; the first ``n_init`` picks are the GP's own best predictions from history alone.
    Hyper-parameters are refitted every ``refit_every`` results (warm-started) and the GP is conditioned on the
    new data in between."""
    import warnings

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
    scaler = InputScaler.fit(hist.X)
    chosen: list = []
    state = None
    for i in range(budget):
        yt = standardised_targets(["t"] * len(chosen), ["ok"] * len(chosen), [lat[c] for c in chosen])[0] \
            if chosen else np.zeros(0)
        Xt = sp.encode_many(chosen) if chosen else np.zeros((0, Xh.shape[1]))
        X = scaler.transform(np.concatenate([Xh, Xt])).double()
        y = torch.as_tensor(np.concatenate([yh, yt]), dtype=torch.float64).unsqueeze(-1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gp = SingleTaskGP(X, y)
            if state is not None:
                gp.load_state_dict(state, strict=False)
            if state is None or i % refit_every == 0:
                try:
                    fit_gpytorch_mll(ExactMarginalLogLikelihood(gp.likelihood, gp),
                                     optimizer_kwargs={"options": {"maxiter": 100}})
                except Exception:  # noqa: BLE001 - keep the previous hyper-parameters
                    pass
                state = {k: v for k, v in gp.state_dict().items() if "train" not in k}
        taken = set(chosen)
        rest = [j for j, c in enumerate(pool) if c not in taken]
        Xp = scaler.transform(Xp_all[rest]).double().unsqueeze(1)
        with torch.no_grad():
            if len(chosen) < n_init:
                score = gp.posterior(Xp.squeeze(1)).mean.squeeze(-1)
            else:
                score = LogExpectedImprovement(gp, best_f=float(yt.max()))(Xp)
        chosen.append(pool[rest[int(torch.argmax(score))]])
    return chosen


if __name__ == "__main__":
    sys.exit(main())
