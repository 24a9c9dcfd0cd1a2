"""Tune one layer end to end: task -> design space -> untuned baseline -> Ray Tune search -> records -> MetaSchedule DB.

Output directory layout (``out``)::

    records/         the record store (records.jsonl, workloads.jsonl)
    ms_database/     MetaSchedule JSONDatabase of the best records (compile_tir / compile_relax read it)
    ray/             Ray Tune experiment state (storage_path)
    summary.json     best vs untuned latency, timings per trial
"""

from __future__ import annotations

import logging
import statistics
import time

from raydgp.atomic import write_json_atomic
from raydgp.logs import console
from raydgp.measure.local import LocalMeasurer
from raydgp.measure.protocol import TaskPayload
from raydgp.pipeline import history as hist_mod
from raydgp.pipeline.history import HISTORY_POINTS, check_history_paths, load_history, tuning_set_options
from raydgp.pipeline.phases import PhaseClock
from raydgp.pipeline.settings import LayerRun
from raydgp.records import RecordStore

log = logging.getLogger("raydgp.pipeline")


def tune_one_layer(workload: str, *, out, **settings) -> dict:
    """Tune one layer; keyword arguments are the fields of :class:`~raydgp.pipeline.settings.LayerRun`."""
    return run_layer(LayerRun(workload=workload, out=out, **settings))


def run_layer(run: LayerRun) -> dict:
    """Tune one layer given as a workload spec (see :mod:`raydgp.space.workloads`) and write ``run.out``.

    Returns:
        The summary dict (also written to ``out/summary.json``).
    """
    from raydgp.raytune.cluster import check_address, init_ray
    from raydgp.raytune.experiment import tune_layer
    from raydgp.raytune.searchers import make_searcher
    from raydgp.space.metaschedule import host_target
    from raydgp.space.ms_database import export_to_metaschedule
    from raydgp.space.space_cache import cached_space
    from raydgp.space.workloads import make_task

    check_history_paths(run.history)
    check_address(run.address)
    t_start = time.monotonic()
    phase = PhaseClock(t_start)  # wall seconds of each step, in order (summary ``phases_s``)

    out = run.out
    out.mkdir(parents=True, exist_ok=True)
    workload, trials, searcher, seed = run.workload, run.trials, run.searcher, run.seed
    cores = run.cores
    gpu = run.target_kind == "cuda"
    target = host_target(run.target_kind, cores)
    settings = run.measure_settings
    task = make_task(workload, target)
    space = cached_space(task)
    phase("space")
    hist = load_history(run.history, space, max_points=HISTORY_POINTS, seed=run.seed) if searcher == "dgp" else None
    phase("history")
    options, seeds = run.search_options, []
    if hist is not None:
        donors, info = hist_mod.history_donors(run.history)
        options = tuning_set_options(options, task.workload, info)
        if options != run.search_options:
            console("history: no workload of this loop-nest shape; the tuning set is random and the history enters "
                    "through the trust mixture only (--search-option init=dgp: the history picks it)")
        # The first trials: the history's best schedules of this shape and of the nearest other shapes of this op
        # (on hardware of this vector width), carried over to this space (as the model job seeds its layers).
        seeds = hist_mod.history_seeds(space, donors, info, k=min(run.seed_trials, trials // 2))
    searcher_obj = make_searcher(searcher, space, seed, hist, settings=settings, search_options=options,
                                 points_to_evaluate=seeds)
    if hist is not None:
        # with --search-option prefetch=on: stage 1 trains while Ray starts, the untuned baseline is timed (it
        # pauses for the timing) and the first trials run (off by default: slower on 2 cores, SearchSettings.prefetch)
        searcher_obj.prefetch()
    store = RecordStore(out / "records")
    store.add_workload(task.workload.key, task.mod_json, space.to_json())
    payload = TaskPayload(task.workload.key, task.mod_json, target)
    console(f"layer {task.name}: {len(space.sketches)} sketches, {sum(len(s.knobs) for s in space.sketches)} knobs, "
        f"{space.size:.3g} configurations; target {target}")

    # Ray first, then the node's warm measurement service (CPU): the untuned baseline is measured by its first
    # worker, which then serves the trials with TVM imported, the task parsed and its reference kept, instead of a
    # worker of its own that ends before the trials start theirs (as the model job does).
    init_ray(address=run.address)
    from raydgp.raytune.measure_service import start_service, stop_service

    service = None if gpu else start_service()
    phase("ray")
    try:
        untuned = _measure_untuned(service, settings, payload)
        phase("untuned")
        untuned_ms = untuned.median_ms
        console(f"untuned schedule: {untuned_ms:.3f} ms" if untuned.ok
                else f"untuned schedule failed: {untuned.message}")
        width = run.width
        # On a CPU the trials in flight share the cores Ray-wise (each still times on all of them, alone: the node's
        # timing lock), so that the next one builds while one is timed; on a GPU each trial has its own GPU.
        cpus = cores if gpu or not width else cores / width
        res = tune_layer(payload, space, searcher_obj, trials=trials, store=store, settings=settings,
                         storage_path=out / "ray", name=task.name, cpus_per_trial=cpus,
                         gpus_per_trial=1 if gpu else 0, max_concurrent=width,
                         baseline_ms=untuned_ms if untuned.ok else None, tag=searcher)
        phase("search")
    finally:
        stop_service(service)
    n_exported = export_to_metaschedule(store, out / "ms_database")
    best = res.best
    trial_s = [r.result.build_s + r.result.run_s for r in res.records]
    # Cost per trial, all in: the interval between trial completions on the driver (first trial excluded: it starts
    # the warm worker), against the time spent inside the trainable.
    times = sorted(r.time for r in res.records)
    intervals = [b - a for a, b in zip(times, times[1:])]
    inside = [float(r.metrics["trial_s"]) for r in (res.results or []) if r.metrics and "trial_s" in r.metrics]
    summary = {
        "workload": workload, "workload_key": task.workload.key, "target": target, "searcher": searcher,
        "in_flight": width, "trials": len(res.records), "ok": len(res.ok), "seeded": len(seeds),
        "status_counts": {s: sum(r.result.status == s for r in res.records) for s in
                          sorted({r.result.status for r in res.records})},
        "best_ms": best.result.median_ms if best else None, "best_config": best.config.to_json() if best else None,
        "untuned_ms": untuned_ms if untuned.ok else None,
        "speedup_vs_untuned": (untuned_ms / best.result.median_ms) if (best and untuned.ok) else None,
        "median_build_s": statistics.median([r.result.build_s for r in res.records]) if res.records else None,
        "median_run_s": statistics.median([r.result.run_s for r in res.records]) if res.records else None,
        "median_measure_s": statistics.median(trial_s) if trial_s else None,
        "median_trainable_s": statistics.median(inside) if inside else None,
        "median_trial_interval_s": statistics.median(intervals) if intervals else None,
        "ray_overhead_per_trial_s": (statistics.median(intervals) - statistics.median(inside))
        if (intervals and inside) else None,
        "search_wall_s": res.wall_s, "wall_per_trial_s": res.wall_s / max(1, len(res.records)),
        "exported_records": n_exported, "wall_s": time.monotonic() - t_start,
    }
    phase("export")
    summary["phases_s"] = phase.phases
    summary["proposals"] = searcher_obj.stats
    write_json_atomic(out / "summary.json", summary, indent=2)
    if best:
        sp = summary["speedup_vs_untuned"]
        console(f"best {best.result.median_ms:.3f} ms after {len(res.records)} trials"
            + (f", {sp:.1f}x faster than the untuned {untuned_ms:.3f} ms" if sp else "")
            + f"; records in {out / 'records'}, MetaSchedule database in {out / 'ms_database'}")
    else:
        console(f"no configuration measured ok in {len(res.records)} trials; see {out / 'records'}")
    return summary


def _measure_untuned(service, settings, payload):
    """The task as is, measured through the node's service (its worker stays warm for the trials) or, without one,
    a worker of its own."""
    if service is not None:
        from raydgp.raytune.measure_service import ServiceMeasurer

        return ServiceMeasurer(service, settings).measure(payload, None).result
    with LocalMeasurer(settings) as m:
        return m.measure(payload, None).result

