"""Tune a whole network: layers in -> untuned baselines -> stage 1 once -> per-layer Ray Tune chunks under one budget
-> the verified library out. Each step is one call into the module that owns it.

Output directory layout (``out``)::

    records/            every measurement of every layer (append-only; the resume point)
    untuned.json        each layer's untuned latency (measured once; written atomically)
    ms_database/        MetaSchedule JSONDatabase with the best record of every layer (replaced atomically)
    <model>.so          the tuned library (tvm.runtime.load_module + relax.VirtualMachine)
    ray/                Ray Tune experiment state, one experiment per layer chunk (``<layer>.t<trials-before>.<run>``);
                        a direct chunk (given configurations only: a follower's sync, a one-point space) has none
    tuning_curves.png   the model's estimated latency vs trials, and the layers that weigh most
    chunks.json         each finished layer chunk's costs: wall, start delay, time to its first result (seconds),
                        whether it was direct
    summary.json        see :func:`run_model` (written atomically)

Re-running the same command after a kill (even SIGKILL, at any moment) continues from ``records/``: finished
measurements count toward the budget and are never proposed again.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np

from raydgp.atomic import write_json_atomic
from raydgp.logs import console
from raydgp.pipeline import history as hist_mod
from raydgp.pipeline.budget import Budget, LayerState
from raydgp.pipeline.phases import PhaseClock
from raydgp.pipeline.report import Progress, finite, plot_curves, table
from raydgp.pipeline.settings import ModelRun
from raydgp.models.base import LoadedModel, Toolchain
from raydgp.pipeline.untuned import measure_untuned
from raydgp.records import RETIME_TAG, Record, RecordStore

log = logging.getLogger("raydgp.pipeline")

#: Operators whose FLOP rate the budget compares with the node's peak (pools and elementwise ops are memory-bound).
COMPUTE_BOUND_OPS = ("conv2d", "dense", "depthwise_conv2d")


def _gflops(flops: float, ms: float) -> float:
    return flops / (ms * 1e-3) / 1e9 if math.isfinite(flops) and math.isfinite(ms) and ms > 0 else math.nan


def _peak(run: ModelRun, toolchain: Toolchain, settings) -> float | None:
    try:
        return toolchain.peak_gflops(run.target_kind, run.n_threads, settings)
    except Exception as e:  # noqa: BLE001 - the budget works without it, and says so
        log.warning("node peak not measured (%s); the budget runs without its headroom term", e)
        return None


def tune_model(model: str, *, out, callbacks: list | None = None, toolchain: Toolchain | None = None,
               **settings) -> dict:
    """Tune every layer of a network and build, verify and time the tuned library.

    Keyword arguments are the fields of :class:`~raydgp.pipeline.settings.ModelRun` (``trials``, ``searcher``,
    ``time_budget_s``, ``seed``, ``target_kind``, ``history``, ...); see :func:`run_model` for the rest.
    """
    return run_model(ModelRun(model=model, out=out, **settings), callbacks=callbacks, toolchain=toolchain)


def run_model(run: ModelRun, callbacks: list | None = None, toolchain: Toolchain | None = None) -> dict:
    """The model job.

    Args:
        run: the settings.
        callbacks: extra Ray Tune callbacks for every layer experiment (they must pickle: they run in Ray tasks).
        toolchain: the compiler toolchain (None: TVM).

    Returns:
        The summary (also ``out/summary.json``): ``model``, ``target``, ``searcher``, ``trials_total``, ``wall_s``,
        ``layers`` (``name``, ``workload_key``, ``weight``, ``flops``, ``trials``, ``best_ms``, ``untuned_ms``,
        ``proposals``), ``proposals`` (totals: by the model vs by the random fallback), ``end_to_end_ms``,
        ``untuned_end_to_end_ms``, ``pytorch_ms``, ``onnxruntime_ms``, ``max_abs_err``, ``verified`` and more.
    """
    from raydgp.raytune.chunks import ChunkRunner
    from raydgp.raytune.cluster import check_address
    from raydgp.raytune.trackers import check_trackers, tracker_env

    if toolchain is None:
        from raydgp.models.toolchain import TVMToolchain

        toolchain = TVMToolchain()
    t_start = time.monotonic()
    phase = PhaseClock(t_start)  # wall seconds of each step, in order (summary ``phases_s``)

    # -- inputs checked before anything expensive ---------------------------------------------------------------------
    check_trackers(run.trackers)
    history_paths = hist_mod.check_history_paths(run.history)
    check_address(run.address)
    out = run.out
    out.mkdir(parents=True, exist_ok=True)
    settings = run.measure_settings

    # -- model in, layers out -----------------------------------------------------------------------------------------
    m = toolchain.load(run.model, run.input_shape, run.seed, run.target_kind, run.n_threads, layout=run.layout)
    store = RecordStore(out / "records")
    for l in m.layers:
        store.add_workload(l.key, l.task.mod_json, l.space.to_json() if hasattr(l.space, "to_json") else None)
    log.info("model %s (%s): %d distinct layers, %d calls; target %s", m.name, m.source, len(m.layers),
             sum(l.weight for l in m.layers), m.target)
    phase("load")

    # -- Ray first (a cluster that refuses us fails here, in seconds), then stage 1 and the baselines -----------------
    runner = ChunkRunner(run.address, run.gpu, run.cpus_per_trial, run.max_concurrent_layers,
                         env=tracker_env(run.trackers, str(out.resolve())), callbacks=callbacks,
                         service=toolchain.trial_measurer() is None)
    try:
        log.info("%s; %d layer experiments at once, %s", runner.describe, runner.width,
                 f"{run.chunk_width} trials in flight each" if run.chunk_width else "a trial per GPU in flight")
        phase("ray")
        hist = _stage1(run, m, history_paths, store) if run.searcher == "dgp" else None
        runner.share_history(hist)
        phase("stage1")
        prior = _prior_records(store, m)
        n_prior = sum(len(v) for v in prior.values())
        if n_prior:
            log.info("resuming: %d measurements already in %s count toward the budget", n_prior, out / "records")
        # the baselines, and later the re-timing, measure through the node's warm service where there is one: its
        # workers then start (and parse each layer, and keep its reference) once, not once per step
        measurers = runner.measurer_factory(toolchain.measurer)
        untuned = measure_untuned(m.layers, measurers, settings, out / "untuned.json")
        phase("untuned")
        states = []
        for l in m.layers:
            st = LayerState(l.name, l.weight, l.space.size, untuned_ms=untuned[l.name], group=l.group, flops=l.flops,
                            compute_bound=l.op in COMPUTE_BOUND_OPS)
            st.add([r.result.median_ms if r.result.ok else math.nan for r in prior[l.name]])
            states.append(st)
        peak = _peak(run, toolchain, settings)
        phase("peak")
        budget = Budget(states, run.trials, chunk=run.chunk, warmup=run.warmup, peak_gflops=peak)
        groups = {l.group for l in m.layers if l.group}
        log.info("%d layers in %d sibling groups; node peak %s", len(m.layers),
                 len(groups) + sum(1 for l in m.layers if not l.group),
                 f"{peak:.0f} GFLOP/s (sgemm, {run.n_threads} threads)" if peak else "unknown (no headroom term)")

        # -- per-layer experiments under one budget -------------------------------------------------------------------
        stopped_by_time, proposals, estimate = _tune_layers(run, m, store, budget, runner, hist is not None,
                                                            toolchain, t_start)
        phase("search")
        retimed: dict[str, float] = {}
        if run.retime:
            from raydgp.pipeline.retime import retime_best

            retimed = retime_best(m.layers, store, measurers, settings, m.target)
            phase("retime")
    finally:
        runner.close()  # Ray work and the measurement service end here, whatever failed above
    tune_wall = time.monotonic() - t_start
    hist_mod.append_to_user_store(store, {l.key for l in m.layers})

    # -- model out: tuned library, verified and timed -----------------------------------------------------------------
    summary = _deploy_and_report(run, m, toolchain, store, budget, untuned, proposals, estimate, retimed)
    phase("deploy")
    summary.update(tuning_wall_s=round(tune_wall, 2), wall_s=round(time.monotonic() - t_start, 2),
                   stopped_by_time_budget=stopped_by_time, layer_experiments_at_once=runner.width,
                   phases_s=phase.phases)
    if not stopped_by_time and budget.remaining:  # ended before its trial budget: why, per layer
        summary["ended_early"] = {name: budget.stop_reason(st) for name, st in budget.layers.items()}
    write_json_atomic(out / "summary.json", summary, indent=2)
    for line in table(summary):
        console(line)
    return summary


def _stage1(run: ModelRun, m: LoadedModel, history_paths: list[Path], store: RecordStore):
    """Stage 1 once, on the driver: every layer chunk then loads the pre-trained DGP from the cache."""
    from raydgp.dgp.train import default_cache_dir
    from raydgp.search import DGPSearch, SearchSettings

    paths = list(history_paths) + (hist_mod.default_history_paths() if run.default_history else [])
    own = run.out / "records"
    first = m.layers[0].space
    hist = hist_mod.load_history(paths + ([own] if store.records() else []), first, exclude_target=False,
                                 max_points=hist_mod.HISTORY_POINTS, seed=run.seed,
                                 near=[layer.space for layer in m.layers])
    if hist is None:
        log.info("stage 1: no history; the DGP starts cold")
        return None
    t0 = time.monotonic()
    # nothing else computes on the node meanwhile: stage 1 uses its cores (2 threads: 12 s where one took 20.5 s)
    opts = {"pretrain_threads": run.n_threads, **dict(run.search_options), "seed": run.seed, "pretrain_seed": run.seed}
    DGPSearch(first, SearchSettings(**opts),
              history=hist,
              cache_dir=str(default_cache_dir())).pretrained()
    log.info("stage 1: deep GP pre-trained on %d measurements in %.1f s (%s torch threads)", len(hist),
             time.monotonic() - t0, opts["pretrain_threads"] or opts.get("torch_threads", 1))
    return hist


def _prior_records(store: RecordStore, m: LoadedModel) -> dict[str, list[Record]]:
    """Each layer's records from earlier runs into this ``out``, oldest first."""
    by_key = {l.key: l.name for l in m.layers}
    prior: dict[str, list[Record]] = {l.name: [] for l in m.layers}
    for r in sorted(store.records(), key=lambda r: r.time):
        if r.workload.key in by_key and r.tag != RETIME_TAG:  # quiet re-timings are not trials of the budget
            prior[by_key[r.workload.key]].append(r)
    return prior


def _cover_tiny_space(space, own: set, seeds: list, n: int, seed: int) -> list:
    """``seeds`` (trial parameters), completed with the rest of ``space`` when a chunk of ``n`` trials covers all of
    what is left of it (``own``: configurations measured already), e.g. a reshape's one-point space: then every trial
    of the chunk is given, and nothing is left to search."""
    if len(seeds) >= n or space.size > len(own) + n:
        return seeds
    given = set(own) | {space.from_params(p) for p in seeds}
    rest = space.sample_many(n - len(seeds), np.random.default_rng(seed), exclude=given)
    return list(seeds) + [space.to_params(c) for c in rest]


def _tune_layers(run: ModelRun, m: LoadedModel, store: RecordStore, budget: Budget, runner, has_history: bool,
                 toolchain: Toolchain, t_start: float):
    """Hand out chunks until the budget (or the time budget) is spent. Returns ``(stopped by time, proposal stats per
    layer, [(trials done, model estimate ms)])``."""
    from raydgp.dgp.train import default_cache_dir
    from raydgp.raytune.chunks import ChunkSpec
    from raydgp.raytune.experiment import experiment_name

    by_name = {l.name: l for l in m.layers}
    paths = list(run.history) + (hist_mod.default_history_paths() if run.default_history else [])
    donors_hist, donor_info = hist_mod.history_donors(paths) if run.searcher == "dgp" else ([], {})
    # a layer whose loop-nest shape no history workload has gets a random tuning set (history.tuning_set_options)
    options = {l.name: hist_mod.tuning_set_options(run.search_options, l.space.workload, donor_info)
               if has_history else run.search_options for l in m.layers}
    unseen = sorted(n for n, o in options.items() if o != run.search_options)
    if unseen:
        log.info("history: no workload of the loop-nest shape of %d layers (%s): their tuning sets are random",
                 len(unseen), ", ".join(unseen))
    cache_dir = str(default_cache_dir()) if has_history else None
    storage_path = run.storage or str((run.out / "ray").resolve())
    trial_measurer = toolchain.trial_measurer()
    progress = Progress(run.trials, len(m.layers))
    proposals: dict[str, dict] = {}
    estimate = [(budget.finished, budget.model_estimate_ms())]
    n_chunks, stopped_by_time = 0, False
    chunk_log: list[dict] = []  # each finished chunk's costs (written to out/chunks.json)
    run_id = time.strftime("%Y%m%d-%H%M%S")  # a resumed run never reuses an experiment directory
    while True:
        out_of_time = run.time_budget_s is not None and time.monotonic() - t_start > run.time_budget_s
        stopped_by_time = stopped_by_time or out_of_time
        while not out_of_time and runner.has_room():
            # near the time budget a chunk holds what its slot can measure in the time left, so that the run does not
            # end on one long chunk while the other slots idle
            left = run.time_budget_s - (time.monotonic() - t_start) if run.time_budget_s is not None else None
            # seconds per trial of the finished chunks, all in (each experiment's start included)
            rates = sorted(c["wall_s"] / c["trials"] for c in chunk_log if not c.get("direct"))
            per_trial = rates[len(rates) // 2] if rates else None
            fits = max(2, int(left / per_trial)) if left is not None and per_trial else None
            nxt = budget.next_chunk(max_trials=fits)
            if nxt is None:
                break
            name, n = nxt
            l, st = by_name[name], budget.layers[name]
            all_recs = store.records()
            recs = [r for r in all_recs if r.workload.key == l.key]
            sibling_keys = {o.key for o in m.layers if o.group and o.group == l.group and o.key != l.key}
            # the group's fastest configurations first (a follower's chunk is its leader's best, measured here)
            sib = sorted(((r.result.median_ms, r.workload.key, r.config) for r in all_recs
                          if r.workload.key in sibling_keys and r.result.ok and r.config.sketch >= 0),
                         key=lambda t: t[0])
            rest = [d for d in hist_mod.top_configs(all_recs) if d[1] not in sibling_keys]
            # siblings' best first, then the same shape on the likest hardware, then the rest
            info = {**donor_info, **hist_mod.donor_info(r for r in all_recs if r.workload.key not in donor_info)}
            donors = sib + hist_mod.rank_donors(rest + donors_hist, info, l.space)
            # A sibling's best schedules carry over: they are what a short sibling warm-up is spent on. Then the
            # best of the nearest other shapes (this run's layers, the history), carried over to this layer's space.
            k_seeds = min(4, n) if sib else min(4, max(1, n // 2))
            near = hist_mod.near_donors(rest + donors_hist, info, l.space) if run.searcher == "dgp" else []
            seeds = hist_mod.seed_configs(l.space, {r.config for r in recs}, donors, k=k_seeds, near=near,
                                          k_near=0 if sib else min(2, k_seeds))
            seeds = _cover_tiny_space(l.space, {r.config for r in recs}, seeds, n, seed=n_chunks)
            # a chunk of given configurations only (a follower's sync, a tiny space) has nothing to search: no
            # experiment; unless trackers or the user's Ray Tune callbacks watch, which see Tune trials only
            direct = len(seeds) >= n and not run.trackers and not runner.observed
            runner.submit(ChunkSpec(
                name=name, experiment=experiment_name(f"{name}.t{st.trials}.{run_id}"), task=l.task, space=l.space,
                searcher=run.searcher, seed=run.seed * 100003 + n_chunks, trials=n,
                store_path=str(run.out / "records"), storage_path=storage_path, settings=run.measure_settings,
                cpus_per_trial=run.chunk_cpus_per_trial, gpus_per_trial=1 if run.gpu else 0,
                max_concurrent=run.chunk_width, submitted_at=time.time(),
                prior=tuple((l.space.to_params(r.config), r.result.status,
                             r.result.median_ms if r.result.ok else None) for r in recs if r.config.sketch >= 0),
                cache_dir=cache_dir, pretrain_seed=run.seed, trackers=run.trackers, model=m.name,
                seeds=tuple(seeds), measurer=trial_measurer, search_options=options[name], direct=direct))
            n_chunks += 1
        if not runner.running:
            break
        for name, n, res in runner.wait(2.0):
            lats = res.latencies_ms
            if res.error:
                log.warning("layer %s: its experiment failed (%s); its finished measurements are in the records",
                            name, res.error)
                lats = [r.result.median_ms if r.result.ok else math.nan for r in store.records()
                        if r.workload.key == by_name[name].key][len(budget.layers[name].curve):]
            budget.finish(name, lats, n)
            if res.wall_s and lats:
                chunk_log.append({"layer": name, "trials": len(lats), "wall_s": round(res.wall_s, 2),
                                  "direct": res.direct,
                                  "first_result_s": round(res.first_result_s, 2) if res.first_result_s else None,
                                  "start_delay_s": round(res.start_delay_s, 2) if res.start_delay_s else None})
            agg = proposals.setdefault(name, {})
            for k, v in res.proposals.items():  # counts add up over chunks; a weight or a summary is the latest
                agg[k] = v if isinstance(v, (float, dict)) else agg.get(k, 0) + int(v)
            estimate.append((budget.finished, budget.model_estimate_ms()))
        progress.show(budget.used, budget.layers_done(), budget.model_estimate_ms(), [r[0] for r in runner.running])
    progress.show(budget.used, len(m.layers), budget.model_estimate_ms(), [], final=True)
    if chunk_log:
        write_json_atomic(run.out / "chunks.json", chunk_log, indent=1)
        med = lambda k: sorted(c[k] or 0.0 for c in chunk_log)[len(chunk_log) // 2]  # noqa: E731
        log.info("%d layer chunks: median %.1f s from submission to the Ray task's start, %.1f s in it, of which "
                 "%.1f s until the first result (Tune's start, the searcher's first fit, one measurement; each chunk: "
                 "%s)", len(chunk_log), med("start_delay_s"), med("wall_s"), med("first_result_s"),
                 run.out / "chunks.json")
    if stopped_by_time:
        log.info("time budget of %.0f s reached: no new chunks were started after it", run.time_budget_s)
    elif budget.remaining:
        why: dict[str, list[str]] = {}
        for st in budget.layers.values():
            why.setdefault(budget.stop_reason(st) or "?", []).append(st.name)
        log.info("ended early, %d of %d trials: no layer has anything left to gain by the budget's rules (%s)",
                 budget.used, budget.total, "; ".join(f"{r}: {len(n)}" for r, n in why.items()))
    return stopped_by_time, proposals, estimate


def _deploy_and_report(run: ModelRun, m: LoadedModel, toolchain: Toolchain, store: RecordStore, budget: Budget,
                       untuned: dict, proposals: dict, estimate: list, retimed: dict | None = None) -> dict:
    import os

    states = budget.layers
    retimed = retimed or {}

    def best_of(name: str) -> float:  # the quiet re-timing where there is one
        v = retimed.get(name)
        return v if v is not None and math.isfinite(v) else states[name].best_ms

    # A layer keeps TVM's default code where that measured faster than every tuned schedule (tiny layers).
    use_tuned = {l.name: not (math.isfinite(untuned[l.name]) and untuned[l.name] <= best_of(l.name))
                 for l in m.layers}
    load_1min = os.getloadavg()[0]
    dep = toolchain.deploy(m, store, {l.key for l in m.layers if use_tuned[l.name]}, run.out, run.n_threads,
                           run.compare_reference, log.info)
    rows = []
    totals: dict[str, int] = {}
    for l in m.layers:
        s = states[l.name]
        p = proposals.get(l.name, {})
        for k, v in p.items():  # counts add up; weights (floats) and summaries (dicts) are per layer
            if isinstance(v, int) and not isinstance(v, bool):
                totals[k] = totals.get(k, 0) + v
        rows.append({"name": l.name, "workload_key": l.key, "op": l.op, "weight": l.weight, "flops": finite(l.flops),
                     "trials": s.trials, "best_ms": finite(best_of(l.name)), "untuned_ms": finite(untuned[l.name]),
                     "best_ms_during_tuning": finite(s.best_ms), "retimed": l.name in retimed,
                     "schedule": "tuned" if use_tuned[l.name] else "default",
                     "space_size": finite(float(min(s.space_size, 1e300))), "proposals": p,
                     "group": l.group, "gflops": finite(_gflops(l.flops, best_of(l.name))),
                     "peak_fraction": finite(_gflops(l.flops, best_of(l.name)) / budget.peak_gflops)
                     if budget.peak_gflops else None})
    try:
        plot_curves(run.out / "tuning_curves.png", estimate, list(states.values()))
    except Exception as e:  # noqa: BLE001 - a plot must never cost the results (said on the console)
        log.warning("tuning_curves.png not written (%s: %s)", type(e).__name__, e)
    return {
        "model": m.name, "source": m.source, "target": m.target, "searcher": run.searcher,
        "layout": m.handle.get("layout") if isinstance(m.handle, dict) else None,
        "trials_budget": run.trials, "trials_total": sum(s.trials for s in states.values()), "layers": rows,
        "peak_gflops": finite(budget.peak_gflops) if budget.peak_gflops else None,
        "layer_best_sum_ms": finite(sum(l.weight * (best_of(l.name) if use_tuned[l.name] else untuned[l.name])
                                        for l in m.layers)),
        "retimed_layers": len(retimed),
        "sibling_groups": len({l.group or l.key for l in m.layers}),
        "proposals": totals,
        "verified": dep.verified, "verify_message": dep.verify_message, "reference": m.reference_name,
        "end_to_end_ms": finite(dep.end_to_end_ms) if dep.end_to_end_ms is not None else None,
        "end_to_end_latencies_ms": [round(v, 6) for v in dep.end_to_end_latencies_ms],
        "unverified_end_to_end_ms": finite(dep.unverified_ms) if dep.unverified_ms is not None else None,
        "untuned_end_to_end_ms": finite(dep.untuned_ms) if dep.untuned_ms is not None else None,
        "pytorch_ms": finite(dep.reference_ms.get("pytorch")) if dep.reference_ms.get("pytorch") else None,
        "onnxruntime_ms": finite(dep.reference_ms.get("onnxruntime")) if dep.reference_ms.get("onnxruntime") else None,
        "max_abs_err": finite(dep.max_abs_err) if dep.max_abs_err is not None else None,
        "tolerance": {"rtol": 1e-3, "atol": "1e-4 * max|reference|"},
        "threads": run.n_threads, "in_flight_per_layer": run.chunk_width,
        "load_avg_1min_before_timing": round(load_1min, 2),
        "timing": dep.timing,
        "library": dep.library,
        "ms_database": dep.ms_database, "library_build_s": round(dep.build_s, 2),
    }
