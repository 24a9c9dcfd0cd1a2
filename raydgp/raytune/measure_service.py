"""A per-node measurement service: warm TVM worker processes that outlive one Ray Tune experiment.

Each layer chunk of a whole-model run is its own experiment, and each experiment's trial actors are new processes: a
:class:`~raydgp.measure.local.LocalMeasurer` created inside a trial pays ``import tvm`` and the task's preparation
again (about 5 s here, measured). The job driver therefore starts one ``MeasureService`` actor on its own node (owned
by the driver, so it ends with the job); trials that land on that node and time on the CPU measure through it with a
:class:`ServiceMeasurer`. It keeps a pool of warm measurers (one per concurrent caller), so builds still overlap while
the node's timing lock keeps timings exclusive. Trials elsewhere, GPU trials (which must time on the GPU Ray gave them)
and trials run outside such a job keep their own measurer.
"""

from __future__ import annotations

import logging
import threading

from raydgp.measure.base import Measurer, Outcome
from raydgp.measure.local import LocalMeasurer
from raydgp.measure.protocol import MeasureSettings, TaskPayload

NAMESPACE = "raydgp"
log = logging.getLogger("raydgp.raytune")


def service_name(job_id: str, node_id: str) -> str:
    return f"measure-{job_id}-{node_id}"


class MeasureService:
    """Ray actor body (threaded): ``measure`` with a warm measurer taken from a pool per settings."""

    def __init__(self):
        self._lock = threading.Lock()
        self._idle: dict[str, list[LocalMeasurer]] = {}
        self._holds: dict[int, set] = {}  # id(measurer) -> task keys whose built kernels its worker keeps
        self.calls = 0

    def measure(self, settings: MeasureSettings, task: TaskPayload, trace: list | None) -> Outcome:
        # A worker process fixes only its thread count (TVM_NUM_THREADS at its start); every other setting travels
        # with each request. So one pool serves the job's trials, its untuned baselines (one quick timing) and its
        # re-timing alike, and each layer is parsed and its reference computed once per worker.
        # With ``keep_built`` (the re-timing), a task goes to an idle worker that keeps its built kernels where there
        # is one: measuring a configuration again then times the kernel built the first time.
        key = repr(settings.num_threads)
        with self._lock:
            pool = self._idle.setdefault(key, [])
            at = next((i for i in range(len(pool) - 1, -1, -1) if task.key in self._holds.get(id(pool[i]), ())),
                      len(pool) - 1) if settings.keep_built and pool else len(pool) - 1
            m = pool.pop(at) if pool else None
            self.calls += 1
        if m is None:
            m = LocalMeasurer(settings)
        m.settings = settings
        try:
            return m.measure(task, trace)
        finally:
            with self._lock:
                if settings.keep_built:
                    self._holds.setdefault(id(m), set()).add(task.key)
                self._idle[key].append(m)

    def stats(self) -> dict:
        with self._lock:
            return {"calls": self.calls, "workers": sum(len(v) for v in self._idle.values())}

    def close(self) -> None:
        with self._lock:
            for pool in self._idle.values():
                for m in pool:
                    m.close()
            self._idle.clear()
            self._holds.clear()


class ServiceMeasurer(Measurer):
    """Measure through this job's service on this node; falls back to a local measurer if the service dies
    (logged), so a trial still measures."""

    _handle = None  # per process: the service actor, or False when there is none

    def __init__(self, handle, settings: MeasureSettings):
        self.handle = handle
        self.settings = settings
        self._local: LocalMeasurer | None = None

    @classmethod
    def on_this_node(cls, settings: MeasureSettings) -> "ServiceMeasurer | None":
        if cls._handle is None:
            cls._handle = find_service() or False
        return cls(cls._handle, settings) if cls._handle else None

    def measure(self, task: TaskPayload, trace: list | None) -> Outcome:
        if self.handle:
            try:
                import ray

                return ray.get(self.handle.measure.remote(self.settings, task, trace))
            except Exception as e:  # noqa: BLE001 - the service died: measure here from now on
                log.warning("the node's measurement service failed (%s); measuring in this trial", e)
                ServiceMeasurer._handle = False
                self.handle = None
        if self._local is None:
            self._local = LocalMeasurer(self.settings)
        return self._local.measure(task, trace)

    def close(self) -> None:
        if self._local is not None:
            self._local.close()


def start_service(max_concurrency: int = 16):
    """Start (or find) this job's service on the caller's node; returns the actor handle."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ctx = ray.get_runtime_context()
    node = ctx.get_node_id()
    actor = ray.remote(num_cpus=0, max_concurrency=max_concurrency)(MeasureService)
    return actor.options(name=service_name(ctx.get_job_id(), node), namespace=NAMESPACE, get_if_exists=True,
                         scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote()


def stop_service(handle) -> None:
    """Stop a service and its workers (they end with the job anyway; a failure to stop is only logged)."""
    if handle is None:
        return
    try:
        import ray

        ray.get(handle.close.remote(), timeout=60)
        ray.kill(handle)
    except Exception as e:  # noqa: BLE001 - it ends with the job anyway
        log.debug("measurement service did not close cleanly: %s", e)


def find_service():
    """This job's service on the caller's node, or None."""
    try:
        import ray

        ctx = ray.get_runtime_context()
        return ray.get_actor(service_name(ctx.get_job_id(), ctx.get_node_id()), namespace=NAMESPACE)
    except Exception:  # noqa: BLE001 - no Ray, no service: the caller measures itself
        return None
