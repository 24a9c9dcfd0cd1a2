"""Tune one layer end to end: task -> design space -> untuned baseline -> Ray Tune search -> records -> MetaSchedule DB.

Output directory layout (``out``)::

    records/         the record store (records.jsonl, workloads.jsonl)
    ms_database/     MetaSchedule JSONDatabase of the best records (compile_tir / compile_relax read it)
    ray/             Ray Tune experiment state (storage_path)
    summary.json     best vs untuned latency, timings per trial
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

from raydgp.errors import ConfigError
from raydgp.measure.measurer import Measurer
from raydgp.measure.protocol import MeasureSettings, TaskPayload
from raydgp.records import RecordStore

SEARCHERS = ("dgp", "random")


def load_history(paths, target_space, log=print, exclude_target: bool = True, max_points: int | None = None,
                 seed: int = 0):
    """Stage-1 source data from record stores, each workload encoded with its own space.

    Args:
        paths: record-store directories (missing ones are an error; an empty list gives None).
        target_space: the space being tuned: only workloads with encodings of its width are used.
        exclude_target: leave the target workload's own records out (True for a layer run: those enter as target data).
        max_points: subsample to at most this many points (seeded), bounding stage-1 cost.
    """
    from raydgp.records import RecordStore
    from raydgp.search import History, history_from_records
    from raydgp.space.design_space import DesignSpace

    records, spaces = [], {}
    for p in paths or ():
        if not Path(p).exists():
            raise ConfigError(f"--history {p}: no such record store (a directory holding records.jsonl)")
        store = RecordStore(p)
        records.extend(store.records())
        for key, entry in store.workload_entries().items():
            if entry.get("space") and key not in spaces:
                sp = DesignSpace.from_json(entry["space"])
                if sp.dim == target_space.dim:
                    spaces[key] = sp
    if not records:
        return None
    exclude = target_space.workload.key if exclude_target else None
    hist = history_from_records(records, spaces, exclude_workload=exclude)
    if max_points is not None and len(hist) > max_points:
        import numpy as np

        idx = np.sort(np.random.default_rng(seed).choice(len(hist), max_points, replace=False))
        hist = History(hist.X[idx], hist.y[idx])
    n_work = len(spaces) - (exclude in spaces)
    log(f"history: {len(hist)} measurements of {n_work} workloads")
    return hist if len(hist) else None


def make_searcher(name: str, space, seed: int, history=None, pretrain_seed: int | None = None,
                  cache_dir: str | None = None, points_to_evaluate: list | None = None):
    """A Ray Tune searcher over ``space`` by name."""
    if name == "random":
        from raydgp.raytune.random_searcher import RandomSearcher

        return RandomSearcher(space, metric="latency_ms", mode="min", seed=seed, points_to_evaluate=points_to_evaluate)
    if name == "dgp":
        from raydgp.dgp.train import default_cache_dir
        from raydgp.raytune.dgp_searcher import DGPSearcher
        from raydgp.search import SearchSettings

        return DGPSearcher(space, metric="latency_ms", mode="min", seed=seed, history=history,
                           points_to_evaluate=points_to_evaluate,
                           settings=SearchSettings(seed=seed, pretrain_seed=pretrain_seed, async_refit=True),
                           cache_dir=cache_dir or str(default_cache_dir()))
    raise ConfigError(f"unknown searcher {name!r}; choose one of {', '.join(SEARCHERS)}")


def tune_one_layer(workload: str, *, trials: int, out: str | os.PathLike, searcher: str = "random", seed: int = 0,
                   target_kind: str = "llvm", cpus_per_trial: int | None = None, address: str | None = None,
                   settings: MeasureSettings | None = None, history: list | None = None, log=print) -> dict:
    """Tune one layer given as a workload spec (see :mod:`raydgp.space.workloads`) and write ``out``.

    Args:
        workload: e.g. ``conv2d:1,64,56,56,64,3,1,1``.
        trials: configurations to measure.
        out: output directory.
        searcher: ``dgp`` (deep-GP Bayesian optimisation with transfer from ``history``) or ``random``.
        seed: searcher seed.
        target_kind: ``llvm`` (this CPU) or ``cuda``.
        cpus_per_trial: CPU cores a trial owns and times with (default: all cores of this machine, so timings match a
            deployment that uses the whole CPU; one timing runs at a time on a node in any case).
        address: Ray cluster address; None starts an embedded local Ray.
        history: record stores whose other workloads pre-train the DGP (stage 1).

    Returns:
        The summary dict (also written to ``out/summary.json``).
    """
    from raydgp.raytune.experiment import init_ray, tune_layer
    from raydgp.space.metaschedule import build_space, host_target
    from raydgp.space.ms_database import export_to_metaschedule
    from raydgp.space.workloads import make_task

    if trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}")
    t_start = time.monotonic()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cores = int(cpus_per_trial or os.cpu_count() or 1)
    gpu = target_kind == "cuda"
    target = host_target(target_kind, cores)
    settings = settings or MeasureSettings(num_threads=cores, device="cuda" if gpu else "cpu")
    task = make_task(workload, target)
    space = build_space(task)
    if searcher not in SEARCHERS:
        raise ConfigError(f"unknown searcher {searcher!r}; choose one of {', '.join(SEARCHERS)}")
    hist = load_history(history, space, log) if searcher == "dgp" else None
    searcher_obj = make_searcher(searcher, space, seed, hist)
    store = RecordStore(out / "records")
    store.add_workload(task.workload.key, task.mod_json, space.to_json())
    payload = {"key": task.workload.key, "mod_json": task.mod_json, "target": target}
    log(f"layer {task.name}: {len(space.sketches)} sketches, {sum(len(s.knobs) for s in space.sketches)} knobs, "
        f"{space.size:.3g} configurations; target {target}")

    with Measurer(settings) as m:
        untuned = m.measure(TaskPayload(**payload), None).result
    untuned_ms = untuned.median_ms
    log(f"untuned schedule: {untuned_ms:.3f} ms" if untuned.ok else f"untuned schedule failed: {untuned.message}")

    init_ray(address=address)
    res = tune_layer(payload, space, searcher_obj, trials=trials, store=store, settings=settings,
                     storage_path=out / "ray", name=task.name, cpus_per_trial=cores,
                     gpus_per_trial=1 if gpu else 0, baseline_ms=untuned_ms if untuned.ok else None, tag=searcher)
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
        "trials": len(res.records), "ok": len(res.ok),
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
    (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False))
    if best:
        sp = summary["speedup_vs_untuned"]
        log(f"best {best.result.median_ms:.3f} ms after {len(res.records)} trials"
            + (f", {sp:.1f}x faster than the untuned {untuned_ms:.3f} ms" if sp else "")
            + f"; records in {out / 'records'}, MetaSchedule database in {out / 'ms_database'}")
    else:
        log(f"no configuration measured ok in {len(res.records)} trials; see {out / 'records'}")
    return summary
