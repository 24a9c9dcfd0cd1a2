"""Tune a whole network: import -> layers -> per-layer Ray Tune experiments under one budget -> verified library.

Output directory layout (``out``)::

    records/            every measurement of every layer (append-only; the resume point)
    untuned.json        each layer's untuned latency (measured once)
    ms_database/        MetaSchedule JSONDatabase with the best record of every layer
    <model>.so          the tuned library (tvm.runtime.load_module + relax.VirtualMachine)
    ray/                Ray Tune experiment state, one experiment per layer chunk (``<layer>.t<trials-before>.<run>``)
    tuning_curves.png   best latency vs trials, per layer
    summary.json        see :func:`tune_model`

Layers run as separate Ray Tune experiments, each inside a Ray remote task pinned to the driver's node (``Tuner.fit`` in
threads races in Tune's registry), several at once as far as the cluster's CPUs/GPUs allow. The
:class:`~raydgp.network.scheduler.TaskScheduler` hands out chunks of trials. Re-running the same command after a kill
continues from ``records/``: finished measurements count toward the budget and are never proposed again.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from raydgp.errors import ConfigError, RayDGPError
from raydgp.measure.protocol import MeasureSettings
from raydgp.records import Record, RecordStore

SEARCHERS = ("dgp", "random")


def user_store() -> Path:
    """The user-level record store every run also appends to (``$RAYDGP_HOME/records``, default ``~/.raydgp``)."""
    return Path(os.environ.get("RAYDGP_HOME", Path.home() / ".raydgp")) / "records"


def shipped_dataset() -> Path | None:
    """The recorded dataset shipped with the source tree (``data/dataset``), if present."""
    p = Path(__file__).resolve().parents[2] / "data" / "dataset"
    return p if (p / "records.jsonl.gz").exists() or (p / "records.jsonl").exists() else None


@dataclass(frozen=True)
class ChunkSpec:
    """Everything a remote layer experiment needs (plain data: it crosses process boundaries)."""

    name: str
    experiment: str
    payload: dict
    space_json: dict
    searcher: str
    seed: int
    trials: int
    store_path: str
    storage_path: str
    settings_json: dict
    cpus_per_trial: float
    gpus_per_trial: int
    prior: list  # [(config json, latency ms or None)] measured earlier for this layer
    cache_dir: str | None
    pretrain_seed: int = 0
    trackers: tuple = ()
    model: str = ""
    seeds: tuple = ()  # configurations (JSON) to try first: the best of sibling layers / history workloads


def run_chunk(spec: ChunkSpec, history=None, callbacks=None) -> list[float]:
    """One layer chunk as its own Ray Tune experiment; returns the latencies (NaN = failed) in completion order."""
    from raydgp.raytune.callbacks import tracker_callbacks
    from raydgp.raytune.experiment import tune_layer
    from raydgp.raytune.layer_job import make_searcher
    from raydgp.space.design_space import DesignSpace

    space = DesignSpace.from_json(spec.space_json)
    searcher = make_searcher(spec.searcher, space, spec.seed, history, pretrain_seed=spec.pretrain_seed,
                             cache_dir=spec.cache_dir, points_to_evaluate=list(spec.seeds))
    for cfg, value in spec.prior:
        searcher.add_evaluated_point(cfg, value if value is not None else math.nan, error=value is None)
    res = tune_layer(spec.payload, space, searcher, trials=spec.trials, store=RecordStore(spec.store_path),
                     settings=MeasureSettings.from_json(spec.settings_json), storage_path=spec.storage_path,
                     name=spec.experiment, cpus_per_trial=spec.cpus_per_trial, gpus_per_trial=spec.gpus_per_trial,
                     show_progress=False, tag=spec.name,
                     callbacks=list(callbacks or []) + tracker_callbacks(
                         spec.trackers, f"raydgp-{spec.model}", {"layer": spec.name, "chunk": spec.experiment}))
    return [r.result.median_ms if r.result.ok else math.nan for r in res.records]


def top_configs(records, per_workload: int = 3) -> list[tuple[float, str, object]]:
    """The ``per_workload`` fastest ok configurations of every workload in ``records``, as
    ``(latency / that workload's best, workload key, config)``."""
    by: dict[str, list] = {}
    for r in records:
        if r.result.ok and r.config.sketch >= 0:
            by.setdefault(r.workload.key, []).append((r.result.median_ms, r.config))
    out = []
    for key, rows in by.items():
        rows.sort(key=lambda t: t[0])
        best = rows[0][0]
        seen = set()
        for ms, cfg in rows:
            if cfg in seen:
                continue
            seen.add(cfg)
            out.append((ms / best, key, cfg))
            if len(seen) >= per_workload:
                break
    return sorted(out, key=lambda t: t[0])


def seed_configs(space, own: set, donors, k: int) -> list[dict]:
    """Configurations to try first on a layer: the best ones of other layers (siblings with the same loop nest in this
    model, history workloads, the same layer in an earlier run) that are valid points of this layer's space and not
    measured here yet."""
    out, seen = [], set(own)
    for _, key, cfg in donors:
        if len(out) >= k:
            break
        if cfg in seen or not space.is_valid(cfg):  # the same layer measured in an earlier run is a donor too
            continue
        seen.add(cfg)
        out.append(cfg.to_json())
    return out


def _remote_chunk():
    import ray

    return ray.remote(num_cpus=0)(run_chunk)


def _measure_untuned(layers, settings: MeasureSettings, cache: Path, log) -> dict[str, float]:
    """Each layer's untuned latency (ms), measured once and cached in ``untuned.json`` (NaN if it failed)."""
    from raydgp.measure.measurer import Measurer
    from raydgp.measure.protocol import TaskPayload

    known = json.loads(cache.read_text()) if cache.exists() else {}
    todo = [l for l in layers if l.task.workload.key not in known]
    if todo:
        quick = MeasureSettings.from_json({**settings.to_json(), "repeat": 3, "min_repeat_ms": 5.0, "warmup": 0})
        t0 = time.monotonic()
        with Measurer(quick) as m:
            for l in todo:
                r = m.measure(TaskPayload(l.task.workload.key, l.task.mod_json, l.task.target), None).result
                known[l.task.workload.key] = r.median_ms if r.ok else None
                cache.write_text(json.dumps(known, indent=1))
        log(f"untuned layers measured in {time.monotonic() - t0:.0f} s")
    return {l.name: (known.get(l.task.workload.key) if known.get(l.task.workload.key) is not None else math.nan)
            for l in layers}


def time_reference(model: str, input_shape, seed: int, threads: int, repeat: int = 10,
                   min_repeat_ms: float = 50.0, timeout_s: float = 600.0) -> dict | None:
    """The framework references' latencies, timed in a fresh process on ``threads`` threads like the tuned library:
    ``{"pytorch": ms, "onnxruntime": ms}`` (PyTorch models: eager, and ONNX Runtime on the model exported to ONNX;
    .onnx models: ONNX Runtime only), or None if it could not run."""
    import subprocess

    shape = ",".join(str(v) for v in input_shape) if input_shape else "-"
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "raydgp.network.run_reference", model, shape, str(seed), str(threads), str(repeat),
           str(min_repeat_ms)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
        info = json.loads(p.stdout.strip().splitlines()[-1])
        got = {info["framework"]: float(np.median(info["latencies_ms"]))}
        if info.get("onnxruntime_latencies_ms"):
            got["onnxruntime"] = float(np.median(info["onnxruntime_latencies_ms"]))
        return got
    except (subprocess.TimeoutExpired, IndexError, ValueError, KeyError):
        return None


def _plot_curves(path: Path, states, untuned: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    for s in states:
        ys = [v for v in s.curve]
        if not ys or not any(math.isfinite(v) for v in ys):
            continue
        ax.plot(range(1, len(ys) + 1), [v if math.isfinite(v) else np.nan for v in ys], label=s.name[:40])
    ax.set_xlabel("trials of the layer")
    ax.set_ylabel("best latency so far (ms)")
    ax.set_yscale("log")
    ax.set_title("raydgp: best latency vs trials, per layer")
    if len(states) <= 24:
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class _Progress:
    """Live console progress: layers done, trials, model estimate, a bar (rewritten in place on a terminal)."""

    def __init__(self, total: int, n_layers: int, stream=None):
        self.total, self.n_layers = total, n_layers
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.monotonic()
        self._last = 0.0

    def show(self, used: int, layers_done: int, est_ms: float, running: list[str], final: bool = False):
        now = time.monotonic()
        if not final and not self.tty and now - self._last < 10:
            return
        self._last = now
        w = 24
        fill = int(w * min(used, self.total) / max(1, self.total))
        est = f"{est_ms:.2f} ms" if math.isfinite(est_ms) else "-"
        run = ", ".join(r[:28] for r in running[:2]) + (" ..." if len(running) > 2 else "")
        line = (f"[{'#' * fill}{'-' * (w - fill)}] {used}/{self.total} trials, {layers_done}/{self.n_layers} layers "
                f"done, est. {est} (sum of layer bests), {now - self.t0:.0f} s" + (f"; tuning {run}" if run else ""))
        if self.tty:
            self.stream.write("\r" + line[:160].ljust(160) + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def tune_model(model: str, *, trials: int = 300, out: str | os.PathLike, searcher: str = "dgp",
               time_budget_s: float | None = None, seed: int = 0, target_kind: str = "llvm",
               input_shape: tuple[int, ...] | None = None, history: list | None = None, default_history: bool = True,
               cpus_per_trial: float | None = None, threads: int | None = None, address: str | None = None,
               max_concurrent_layers: int | None = None, settings: MeasureSettings | None = None,
               chunk: int = 16, warmup: int = 8, storage: str | None = None, callbacks: list | None = None,
               trackers: list[str] | None = None,
               compare_pytorch: bool = True, log: Callable[[str], Any] = print) -> dict:
    """Tune every layer of a network and build, verify and time the tuned library.

    Args:
        model: built-in name, ``.onnx`` path or ``package.module:factory`` (see :mod:`raydgp.network.importer`).
        trials: total trials for the whole model (including any an interrupted run already measured).
        out: output directory (see the module docstring); re-running with the same ``out`` resumes.
        searcher: ``dgp`` (deep-GP BO with transfer from the history) or ``random``.
        time_budget_s: stop handing out new chunks after this many seconds (running chunks finish).
        seed: seed of the searchers (each layer chunk gets its own, derived from it).
        target_kind: ``llvm`` (this CPU) or ``cuda`` (one GPU per trial).
        input_shape: input shape, for PyTorch factories and dynamic ONNX inputs.
        history: record stores that pre-train the DGP (stage 1) in addition to the defaults.
        default_history: also pre-train on the shipped dataset and the user store (:func:`user_store`). Every run
            appends its records to the user store either way.
        cpus_per_trial: Ray CPUs one trial requests (default 1: builds overlap, timings take the node's lock).
        threads: threads a timing and the final model use (default: all cores of this machine).
        address: Ray cluster address (None: ``RAY_ADDRESS`` or an embedded local Ray).
        max_concurrent_layers: layer experiments running at once (default: CPUs of the cluster / cpus_per_trial).
        settings: measurement settings (timeouts, repeats).
        chunk, warmup: trials per scheduler chunk, and every layer's first chunk.
        storage: Ray Tune ``storage_path`` (local path or bucket URI; default ``out/ray``).
        callbacks: extra Ray Tune callbacks for every layer experiment (they must pickle: they run in Ray tasks).
        trackers: ``mlflow``, ``wandb``, ``tensorboard``: Ray's own logger callbacks in every layer experiment
            (MLflow file store under ``out/mlruns`` and W&B offline under ``out/wandb`` unless configured by env).
        compare_pytorch: also time the framework reference (PyTorch eager / ONNX Runtime) on the same threads.

    Returns:
        The summary (also ``out/summary.json``): ``model``, ``target``, ``searcher``, ``trials_total``, ``wall_s``,
        ``layers`` (``name``, ``workload_key``, ``weight``, ``flops``, ``trials``, ``best_ms``, ``untuned_ms``),
        ``end_to_end_ms``, ``untuned_end_to_end_ms``, ``pytorch_ms``, ``max_abs_err``, ``verified`` and more.
    """
    from raydgp.network.importer import load_model
    from raydgp.network.scheduler import LayerState, TaskScheduler
    from raydgp.network.tasks import extract_layers, prepare
    from raydgp.raytune.experiment import experiment_name, init_ray
    from raydgp.space.metaschedule import build_space, host_target

    from raydgp.raytune.callbacks import check_trackers, tracker_env

    if searcher not in SEARCHERS:
        raise ConfigError(f"unknown searcher {searcher!r}; choose one of {', '.join(SEARCHERS)}")
    trackers = check_trackers(trackers)
    if trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}")
    if time_budget_s is not None and time_budget_s <= 0:
        raise ConfigError(f"--time-budget must be > 0 seconds, got {time_budget_s}")
    t_start = time.monotonic()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    threads = int(threads or os.cpu_count() or 1)
    gpu = target_kind == "cuda"
    target = host_target(target_kind, threads)
    settings = settings or MeasureSettings(num_threads=threads, device="cuda" if gpu else "cpu")

    # -- model in, layers out ----------------------------------------------------------------------------------------
    m = load_model(model, input_shape, seed=seed)
    prepared = prepare(m.mod, target)
    layers = extract_layers(prepared, target)
    if not layers:
        raise RayDGPError(f"model {m.name!r}: no tunable layers found")
    store = RecordStore(out / "records")
    spaces = {}
    for l in layers:
        sp = spaces[l.name] = build_space(l.task)
        store.add_workload(l.task.workload.key, l.task.mod_json, sp.to_json())
    log(f"model {m.name} ({m.source}): {len(layers)} distinct layers, "
        f"{sum(l.weight for l in layers)} calls; target {target}")

    # -- what earlier runs measured (resume) and untuned baselines --------------------------------------------------
    key_to_layer = {l.task.workload.key: l.name for l in layers}
    prior: dict[str, list[Record]] = {l.name: [] for l in layers}
    for r in store.records():
        if r.workload.key in key_to_layer:
            prior[key_to_layer[r.workload.key]].append(r)
    n_prior = sum(len(v) for v in prior.values())
    if n_prior:
        log(f"resuming: {n_prior} measurements already in {out / 'records'} count toward the budget")
    untuned = _measure_untuned(layers, settings, out / "untuned.json", log)
    states = []
    for l in layers:
        st = LayerState(l.name, l.weight, spaces[l.name].size, untuned_ms=untuned[l.name])
        st.add([r.result.median_ms if r.result.ok else math.nan for r in sorted(prior[l.name], key=lambda r: r.time)])
        states.append(st)
    sched = TaskScheduler(states, trials, chunk=chunk, warmup=warmup)

    # -- stage 1 once, on the driver: every layer chunk then loads it from the cache ---------------------------------
    hist = None
    cache_dir = None
    hist_donors: list = []
    if searcher == "dgp":
        from raydgp.dgp.train import default_cache_dir
        from raydgp.raytune.layer_job import load_history
        from raydgp.search import DGPSearch, SearchSettings

        paths = [Path(p) for p in (history or [])]
        if default_history:
            ds = shipped_dataset()
            paths += ([ds] if ds else []) + ([user_store()] if (user_store() / "records.jsonl").exists() else [])
        paths.append(out / "records")
        first = spaces[layers[0].name]
        hist = load_history(paths, first, log=log, exclude_target=False, max_points=4000, seed=seed)
        hist_donors = top_configs([r for p in paths if p != out / "records" and Path(p).exists()
                                   for r in RecordStore(p).records()])
        cache_dir = str(default_cache_dir())
        if hist is not None:
            t0 = time.monotonic()
            DGPSearch(first, SearchSettings(seed=seed, pretrain_seed=seed), history=hist,
                      cache_dir=cache_dir).pretrained()
            log(f"stage 1: deep GP pre-trained on {len(hist)} measurements in {time.monotonic() - t0:.1f} s")
        else:
            log("stage 1: no history; the DGP starts cold")

    # -- per-layer experiments under one budget ----------------------------------------------------------------------
    ray = init_ray(address=address)
    res = ray.cluster_resources()
    log(f"ray: {ray.get_runtime_context().gcs_address}, {res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs, "
        f"{len([n for n in ray.nodes() if n.get('Alive')])} nodes")
    cpt = float(cpus_per_trial if cpus_per_trial is not None else 1)
    if max_concurrent_layers is None:
        slots = res.get("GPU", 0) if gpu else res.get("CPU", 1) / max(cpt, 1e-9)
        max_concurrent_layers = max(1, int(slots))
    node = ray.get_runtime_context().get_node_id()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    opts = {"scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=False)}
    tenv = tracker_env(trackers, str(out.resolve()))
    if tenv:
        opts["runtime_env"] = {"env_vars": tenv}
    remote = _remote_chunk().options(**opts)
    service = None
    if not gpu:
        from raydgp.raytune.measure_service import start_service

        service = start_service()  # warm TVM workers on this node, shared by every layer experiment
    hist_ref = ray.put(hist) if hist is not None else None
    storage_path = storage or str((out / "ray").resolve())
    space_json = {n: sp.to_json() for n, sp in spaces.items()}
    by_name = {l.name: l for l in layers}
    inflight: dict[Any, tuple[str, int]] = {}
    progress = _Progress(trials, len(layers))
    n_chunks = 0
    run_id = time.strftime("%Y%m%d-%H%M%S")  # a resumed run never reuses an experiment directory
    stopped_by_time = False
    while True:
        out_of_time = time_budget_s is not None and time.monotonic() - t_start > time_budget_s
        stopped_by_time = stopped_by_time or out_of_time
        while not out_of_time and len(inflight) < max_concurrent_layers:
            nxt = sched.next_chunk()
            if nxt is None:
                break
            name, n = nxt
            l, st = by_name[name], sched.layers[name]
            all_recs = store.records()
            recs = [r for r in all_recs if r.workload.key == l.task.workload.key]
            donors = sorted(top_configs(all_recs) + hist_donors, key=lambda t: t[0])
            seeds = seed_configs(spaces[name], {r.config for r in recs}, donors, k=min(4, max(1, n // 2)))
            spec = ChunkSpec(
                name=name, experiment=experiment_name(f"{name}.t{st.trials}.{run_id}"),
                payload={"key": l.task.workload.key, "mod_json": l.task.mod_json, "target": target},
                space_json=space_json[name], searcher=searcher, seed=seed * 100003 + n_chunks, trials=n,
                store_path=str(out / "records"), storage_path=storage_path, settings_json=settings.to_json(),
                cpus_per_trial=cpt, gpus_per_trial=1 if gpu else 0,
                prior=[(r.config.to_json(), r.result.median_ms if r.result.ok else None) for r in recs
                       if r.config.sketch >= 0],
                cache_dir=cache_dir, pretrain_seed=seed, trackers=tuple(trackers), model=m.name, seeds=tuple(seeds))
            inflight[remote.remote(spec, hist_ref, callbacks)] = (name, n)
            n_chunks += 1
        if not inflight:
            break
        ready, _ = ray.wait(list(inflight), num_returns=1, timeout=2.0)
        for ref in ready:
            name, n = inflight.pop(ref)
            try:
                lats = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - one layer's failure must not end the model's tuning
                cause = getattr(e, "cause", None) or e
                msg = (str(cause).strip().splitlines() or [""])[-1][:300]
                log(f"layer {name}: its experiment failed ({type(cause).__name__}: {msg}); "
                    "its finished measurements are in the records")
                lats = [r.result.median_ms if r.result.ok else math.nan for r in store.records()
                        if r.workload.key == by_name[name].task.workload.key][len(sched.layers[name].curve):]
            sched.finish(name, lats, n)
        done_layers = sum(1 for s in states if s.running == 0 and (sched.converged(s) or sched.cheap(s)
                                                                    or sched._cap(s) == 0))
        progress.show(sched.used, done_layers, sched.model_estimate_ms(), [v[0] for v in inflight.values()])
    progress.show(sched.used, len(layers), sched.model_estimate_ms(), [], final=True)
    if service is not None:
        try:
            ray.get(service.close.remote(), timeout=60)
            ray.kill(service)
        except Exception:  # noqa: BLE001 - it ends with the job anyway
            pass
    if stopped_by_time:
        log(f"time budget of {time_budget_s:.0f} s reached: no new chunks were started after it")
    tune_wall = time.monotonic() - t_start

    # -- user-level store: the next model starts from what this one taught --------------------------------------------
    _append_to_user_store(store, set(key_to_layer))

    # -- model out: tuned library, verified and timed -----------------------------------------------------------------
    summary = _build_and_report(m, prepared, target, layers, states, untuned, store, out, threads, gpu, trials,
                                searcher, compare_pytorch, log, model, input_shape, seed)
    summary["tuning_wall_s"] = round(tune_wall, 2)
    summary["wall_s"] = round(time.monotonic() - t_start, 2)
    summary["stopped_by_time_budget"] = stopped_by_time
    (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False))
    _print_table(summary, log)
    return summary


def _append_to_user_store(store: RecordStore, keys: set) -> None:
    try:
        us = RecordStore(user_store())
        have = {(r.workload.key, r.config, r.time) for r in us.records()}
        entries = store.workload_entries()
        for k in keys:
            if k in entries:
                us.add_workload(k, entries[k]["mod"], entries[k].get("space"))
        new = [r for r in store.records() if r.workload.key in keys and (r.workload.key, r.config, r.time) not in have]
        if new:
            us.append(new)
    except (OSError, RayDGPError) as e:
        print(f"raydgp: warning: could not update the user record store {user_store()}: {e}", file=sys.stderr)


def _finite(v):
    return None if v is None or not math.isfinite(v) else round(float(v), 6)


def _build_and_report(m, prepared, target, layers, states, untuned, store, out, threads, gpu, trials, searcher,
                      compare_pytorch, log, model_arg, input_shape, seed) -> dict:
    from raydgp.network.build import compare, compile_tuned, compile_untuned, export, run_library
    from raydgp.space.ms_database import export_to_metaschedule

    import shutil

    dbdir = out / "ms_database"
    shutil.rmtree(dbdir, ignore_errors=True)
    # A layer keeps TVM's default code where that measured faster than every tuned schedule (tiny layers).
    st_by = {s.name: s for s in states}
    use_tuned = {l.name: not (math.isfinite(untuned[l.name]) and untuned[l.name] <= st_by[l.name].best_ms)
                 for l in layers}
    keys = {l.task.workload.key for l in layers if use_tuned[l.name]}
    n_db = export_to_metaschedule(store, dbdir, top_k=1, keys=keys)
    device = "cuda" if gpu else "cpu"
    load_1min = os.getloadavg()[0]
    reference = m.reference(list(m.inputs.values()))
    t0 = time.monotonic()
    lib = export(compile_tuned(prepared, target, dbdir), out / f"{m.name}.so")
    build_s = time.monotonic() - t0
    tuned = run_library(lib, m.inputs, threads=threads, device=device)
    ok, err, msg = compare(tuned.outputs, reference)
    log(f"tuned library {lib} ({n_db} layer schedules, built in {build_s:.1f} s): "
        + (f"verified against {m.reference_name} (max abs err {err:.2e}), {tuned.median_ms:.3f} ms" if ok
           else f"VERIFICATION FAILED against {m.reference_name}: {msg}"))
    un_lib = export(compile_untuned(prepared, target), out / ".untuned" / f"{m.name}.so")
    untuned_run = run_library(un_lib, m.inputs, threads=threads, repeat=3, min_repeat_ms=1, device=device)
    ref_ms = ort_ms = None
    if compare_pytorch:
        got = time_reference(m.extra.get("path") or model_arg, input_shape, seed, threads)
        if got is None:
            log(f"warning: could not time the {m.reference_name} reference")
        else:
            ref_ms, ort_ms = got.get("pytorch"), got.get("onnxruntime")
    layer_rows = []
    for l in layers:
        s = st_by[l.name]
        layer_rows.append({"name": l.name, "workload_key": l.task.workload.key, "op": l.task.workload.op,
                           "weight": l.weight, "flops": _finite(l.flops), "trials": s.trials,
                           "best_ms": _finite(s.best_ms), "untuned_ms": _finite(untuned[l.name]),
                           "schedule": "tuned" if use_tuned[l.name] else "default",
                           "space_size": _finite(float(min(s.space_size, 1e300)))})
    try:
        _plot_curves(out / "tuning_curves.png", states, untuned)
    except Exception as e:  # noqa: BLE001 - a plot must never cost the results
        log(f"warning: tuning_curves.png not written ({type(e).__name__}: {e})")
    return {
        "model": m.name, "source": m.source, "target": target, "searcher": searcher, "trials_budget": trials,
        "trials_total": sum(s.trials for s in states), "layers": layer_rows,
        "verified": ok, "verify_message": msg, "reference": m.reference_name,
        "end_to_end_ms": _finite(tuned.median_ms) if ok else None,
        "end_to_end_latencies_ms": [round(v, 6) for v in tuned.latencies_ms] if ok else [],
        "unverified_end_to_end_ms": None if ok else _finite(tuned.median_ms),
        "untuned_end_to_end_ms": _finite(untuned_run.median_ms),
        "pytorch_ms": _finite(ref_ms) if ref_ms is not None else None,
        "onnxruntime_ms": _finite(ort_ms) if ort_ms is not None else None,
        "max_abs_err": _finite(err) if math.isfinite(err) else None,
        "tolerance": {"rtol": 1e-3, "atol": "1e-4 * max|reference|"},
        "threads": threads, "load_avg_1min_before_timing": round(load_1min, 2), "library": str(lib), "ms_database": str(dbdir), "library_build_s": round(build_s, 2),
    }


def _print_table(summary: dict, log) -> None:
    rows = summary["layers"]
    w = max([len(r["name"]) for r in rows] + [5])
    log(f"{'layer':<{w}} {'weight':>6} {'trials':>6} {'untuned ms':>11} {'best ms':>9} {'speedup':>8}")
    for r in rows:
        un, be = r["untuned_ms"], r["best_ms"]
        sp = f"{un / be:.1f}x" if (un and be) else "-"
        log(f"{r['name']:<{w}} {r['weight']:>6} {r['trials']:>6} {un if un is not None else float('nan'):>11.3f} "
            f"{be if be is not None else float('nan'):>9.3f} {sp:>8}")
    e2e = summary["end_to_end_ms"]
    parts = [f"end to end: tuned {e2e:.3f} ms" if e2e is not None else "end to end: tuned build NOT verified",
             f"untuned {summary['untuned_end_to_end_ms']:.3f} ms" if summary["untuned_end_to_end_ms"] else "",
             f"PyTorch eager {summary['pytorch_ms']:.3f} ms" if summary["pytorch_ms"] else "",
             f"ONNX Runtime {summary['onnxruntime_ms']:.3f} ms" if summary["onnxruntime_ms"] else ""]
    log(", ".join(p for p in parts if p) + f"; {summary['trials_total']} trials, {summary['wall_s']:.0f} s")
