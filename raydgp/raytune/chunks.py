"""Layer chunks as Ray work: each chunk of one layer's trials is its own Ray Tune experiment, run inside a Ray remote
task pinned to the driver's node (``Tuner.fit`` in threads races in Tune's registry), several at once.

A chunk whose every trial is a given configuration (a follower's sync: its group leader's best configurations; what
is left of a tiny space) has nothing to search: it is *direct* (:func:`run_direct_chunk`). Its configurations are
measured one after another as plain Ray tasks holding a trial's resources (placed by Ray as a trial would be, in pooled
worker processes), with a trial's own measurement code, and each record is written as it comes back, as the trials'
:class:`~raydgp.raytune.callbacks.RecordWriter` writes theirs. An experiment would start a Tune controller and a
fresh trial-actor process (``import ray.tune``: about 2 s of a core on a 2-core node) to measure two known
configurations.

:class:`ChunkRunner` is everything the model job needs from Ray: start or join Ray, the node's warm measurement
service, submitting chunks and waiting for the next finished one. A failed chunk comes back as data (its error), and
its finished measurements are in the record store either way.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from raydgp.measure.base import Measurer
from raydgp.measure.protocol import MeasureSettings, TaskPayload
from raydgp.records import RecordStore
from raydgp.space.base import SearchSpace

log = logging.getLogger("raydgp.raytune")


@dataclass(frozen=True)
class ChunkSpec:
    """Everything a remote layer experiment needs (it crosses process boundaries through Ray's object store).

    ``prior`` holds what earlier chunks and runs measured for this layer, as ``(trial params, status, ms or None)``;
    ``seeds`` the trial parameters to try first (the best of sibling layers and history workloads).
    """

    name: str
    experiment: str
    task: TaskPayload
    space: SearchSpace
    searcher: str
    seed: int
    trials: int
    store_path: str
    storage_path: str
    settings: MeasureSettings
    cpus_per_trial: float
    gpus_per_trial: int
    prior: tuple = ()
    cache_dir: str | None = None
    pretrain_seed: int = 0
    trackers: tuple = ()
    model: str = ""
    seeds: tuple = ()
    measurer: Measurer | None = None
    search_options: tuple = ()
    max_concurrent: int | None = None
    submitted_at: float | None = None  # time.time() when the driver submitted it
    direct: bool = False  # every trial is one of ``seeds``: measured as plain Ray tasks, no Tune experiment

    def __post_init__(self):
        if self.direct and len(self.seeds) < self.trials:
            raise ValueError(f"a direct chunk measures given configurations only: {self.trials} trials, "
                             f"{len(self.seeds)} seeds")


@dataclass(frozen=True)
class ChunkResult:
    """What a chunk measured: latencies (ms, NaN = failed) in completion order, and its searcher's proposal stats.
    ``error`` is set (one line) when the experiment itself failed; ``wall_s`` is the chunk's wall time in its Ray task,
    all in, ``first_result_s`` the time until its first trial's result reached the record writer (Tune's start, the
    searcher's first fit and one measurement), ``start_delay_s`` the time from its submission to its Ray task's start
    (a worker process started or freed), seconds; ``direct``: measured by :func:`run_direct_chunk`."""

    latencies_ms: list = field(default_factory=list)
    proposals: dict = field(default_factory=dict)
    error: str | None = None
    wall_s: float | None = None
    first_result_s: float | None = None
    start_delay_s: float | None = None
    direct: bool = False  # measured without an experiment (run_direct_chunk)


def measure_given(params: dict, task: TaskPayload, space: SearchSpace, settings: MeasureSettings,
                  measurer: Measurer | None) -> dict:
    """One given configuration, measured as a trial would (a Ray task body: :func:`run_direct_chunk`)."""
    from raydgp.raytune.trainable import measure_config

    return measure_config(params, task, space, settings, measurer)


def run_direct_chunk(spec: ChunkSpec, measure) -> ChunkResult:
    """A direct chunk (runs inside a Ray task on the driver's node, like an experiment): measure
    ``spec.seeds[:spec.trials]`` one after another, each through ``measure`` (the Ray remote function of
    :func:`measure_given` with a trial's resources), and append each record as it comes back: a kill loses no
    finished measurement."""
    import time

    import ray

    from raydgp.raytune.callbacks import record_from_result

    t0, wall0 = time.monotonic(), time.time()
    store = RecordStore(spec.store_path)
    lats, first = [], None
    for params in spec.seeds[:spec.trials]:
        result = ray.get(measure.remote(params, spec.task, spec.space, spec.settings, spec.measurer))
        rec = record_from_result(spec.space, params, result, tag=spec.name)
        store.append(rec)
        first = first if first is not None else rec.time
        lats.append(rec.result.median_ms if rec.result.ok else math.nan)
    n = len(lats)
    return ChunkResult(lats, {"model": 0, "tuning_set": 0, "random": 0, "refit_failures": 0, "evolved": 0,
                              "seeded": n, "fallback": 0, "total": n},
                       wall_s=time.monotonic() - t0, first_result_s=first - wall0 if first is not None else None,
                       start_delay_s=wall0 - spec.submitted_at if spec.submitted_at else None, direct=True)


def run_chunk(spec: ChunkSpec, history=None, callbacks=None) -> ChunkResult:
    """One layer chunk as its own Ray Tune experiment (runs inside a Ray task)."""
    import time

    from raydgp.raytune.experiment import tune_layer
    from raydgp.raytune.searchers import make_searcher
    from raydgp.raytune.trackers import tracker_callbacks

    t0, wall0 = time.monotonic(), time.time()
    searcher = make_searcher(spec.searcher, spec.space, spec.seed, history, pretrain_seed=spec.pretrain_seed,
                             cache_dir=spec.cache_dir, points_to_evaluate=list(spec.seeds), settings=spec.settings,
                             search_options=spec.search_options)
    for params, status, value in spec.prior:
        searcher.add_evaluated_record(params, status, value)
    res = tune_layer(spec.task, spec.space, searcher, trials=spec.trials, store=RecordStore(spec.store_path),
                     settings=spec.settings, storage_path=spec.storage_path, name=spec.experiment,
                     cpus_per_trial=spec.cpus_per_trial, gpus_per_trial=spec.gpus_per_trial, show_progress=False,
                     max_concurrent=spec.max_concurrent,
                     tag=spec.name, measurer=spec.measurer,
                     callbacks=list(callbacks or []) + tracker_callbacks(
                         spec.trackers, f"raydgp-{spec.model}", {"layer": spec.name, "chunk": spec.experiment}))
    # Tune drives this very searcher object (it pickles it only into its experiment state): its stats are the run's.
    stats = searcher.stats
    if hasattr(searcher, "close"):
        searcher.close()  # its background proposer (a thread) ends with the chunk
    first = min((r.time for r in res.records), default=None)
    return ChunkResult([r.result.median_ms if r.result.ok else math.nan for r in res.records], stats,
                       wall_s=time.monotonic() - t0,
                       first_result_s=first - wall0 if first is not None else None,
                       start_delay_s=wall0 - spec.submitted_at if spec.submitted_at else None)


class ChunkRunner:
    """Runs layer chunks on Ray, at most ``width`` at once.

    Args:
        address: cluster to join (None: ``RAY_ADDRESS`` or an embedded local Ray).
        gpu: trials time on GPUs (no node measurement service then).
        cpus_per_trial: Ray CPUs a trial requests (sets the default width on CPU clusters).
        max_concurrent: chunks at once (None: cluster GPUs, or CPUs / cpus_per_trial).
        env: environment variables for the chunk tasks (trackers).
        callbacks: extra Ray Tune callbacks for every experiment (must pickle).
        service: start the node's warm measurement service (CPU trials measured with TVM).
    """

    def __init__(self, address: str | None, gpu: bool, cpus_per_trial: float, max_concurrent: int | None,
                 env: dict | None = None, callbacks=None, service: bool = True):
        from raydgp.raytune.cluster import init_ray

        ray = self._ray = init_ray(address=address)
        res = ray.cluster_resources()
        nodes = len([n for n in ray.nodes() if n.get("Alive")])
        self.describe = (f"ray: {ray.get_runtime_context().gcs_address}, {res.get('CPU', 0):g} CPUs, "
                         f"{res.get('GPU', 0):g} GPUs, {nodes} nodes")
        if max_concurrent is None:
            slots = res.get("GPU", 0) if gpu else res.get("CPU", 1) / max(cpus_per_trial, 1e-9)
            max_concurrent = max(1, int(slots))
        self.width = int(max_concurrent)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        node = ray.get_runtime_context().get_node_id()
        opts: dict[str, Any] = {"scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=False)}
        if env:
            opts["runtime_env"] = {"env_vars": env}
        self._remote = ray.remote(num_cpus=0)(run_chunk).options(**opts)
        self._direct = ray.remote(num_cpus=0)(run_direct_chunk).options(**opts)
        # a direct chunk's measurements hold what a trial would (the CPUs it builds on, the GPU it times on), wherever
        # Ray places them, as a trial actor is placed
        self._measure = ray.remote(measure_given).options(num_cpus=cpus_per_trial, num_gpus=1 if gpu else 0,
                                                          **({"runtime_env": opts["runtime_env"]} if env else {}))
        self._service = None
        if service and not gpu:
            from raydgp.raytune.measure_service import start_service

            self._service = start_service()
        self._hist_ref = None
        self._callbacks = callbacks
        self._inflight: dict[Any, tuple[str, int]] = {}

    def measurer_factory(self, fallback: Callable[[MeasureSettings], Measurer]
                         ) -> Callable[[MeasureSettings], Measurer]:
        """Measurers for the driver's own measurements (untuned baselines, re-timing): through the node's warm
        service while it runs (:class:`~raydgp.raytune.measure_service.ServiceMeasurer`: its workers have imported
        TVM and prepared the layers already), else ``fallback`` (GPU trials, a toolchain that measures itself)."""
        from raydgp.raytune.measure_service import ServiceMeasurer

        def make(settings: MeasureSettings) -> Measurer:
            return ServiceMeasurer(self._service, settings) if self._service is not None else fallback(settings)

        return make

    def share_history(self, history) -> None:
        """Stage-1 data every later chunk's DGP pre-trains on (put in the object store once; None: none)."""
        self._hist_ref = self._ray.put(history) if history is not None else None

    @property
    def observed(self) -> bool:
        """Whether extra Ray Tune callbacks watch the experiments (they see Tune trials only: no direct chunks)."""
        return bool(self._callbacks)

    @property
    def running(self) -> list[tuple[str, int]]:
        """``(layer, trials)`` of every chunk in flight."""
        return list(self._inflight.values())

    def has_room(self) -> bool:
        return len(self._inflight) < self.width

    def submit(self, spec: ChunkSpec) -> None:
        ref = (self._direct.remote(spec, self._measure) if spec.direct
               else self._remote.remote(spec, self._hist_ref, self._callbacks))
        self._inflight[ref] = (spec.name, spec.trials)

    def wait(self, timeout_s: float = 2.0) -> list[tuple[str, int, ChunkResult]]:
        """Finished chunks as ``(layer, trials handed out, result)``; empty after ``timeout_s`` without one."""
        if not self._inflight:
            return []
        ready, _ = self._ray.wait(list(self._inflight), num_returns=1, timeout=timeout_s)
        out = []
        for ref in ready:
            name, n = self._inflight.pop(ref)
            try:
                out.append((name, n, self._ray.get(ref)))
            except Exception as e:  # noqa: BLE001 - one layer's failure must not end the model's tuning
                cause = getattr(e, "cause", None) or e
                msg = (str(cause).strip().splitlines() or [""])[-1][:300]
                out.append((name, n, ChunkResult(error=f"{type(cause).__name__}: {msg}")))
        return out

    def close(self) -> None:
        """Stop the measurement service (its workers end with it)."""
        from raydgp.raytune.measure_service import stop_service

        stop_service(self._service)
        self._service = None
