"""A simulated Ray cluster for tests and benchmarks of running wide, on one machine.

:func:`simulated_cluster` starts Ray's own :class:`ray.cluster_utils.Cluster` with many small nodes that advertise
fake resources (``{"GPU": g, "CPU": c}`` each): Ray's real scheduler, Tune's real controller, the real searcher and all
of Ray's overheads, without real GPUs. :func:`replay_trainable` is a trial that looks its configuration's recorded
measurement up instead of compiling and timing it, and sleeps for the recorded build + run time times ``time_scale``
(stated by the caller), so a search over a recorded layer (:class:`~raydgp.space.recorded.RecordedSpace`) behaves as on
a cluster of GPUs whose trials take that long.

Each trial reports ``t_start`` / ``t_end`` (wall-clock seconds of its simulated work), from which
:func:`busy_fraction` computes how busy the slots were.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from typing import Iterator, Mapping, Sequence

from raydgp.errors import ConfigError


@contextlib.contextmanager
def simulated_cluster(nodes: int, gpus_per_node: int = 1, cpus_per_node: int = 1, head_cpus: int = 0,
                      object_store_mb: int = 80) -> Iterator[str]:
    """Start a simulated Ray cluster of ``nodes`` worker nodes and connect this process to it.

    Every node is a real raylet (a few processes each) advertising ``gpus_per_node`` GPUs and ``cpus_per_node`` CPUs
    it does not have; the head advertises ``head_cpus`` CPUs (0: trials never land on the head).

    Yields:
        The cluster's address. On exit Ray is shut down and every node stopped.

    Raises:
        ConfigError: a bad size, or Ray already initialised in this process (the simulation needs its own cluster).
    """
    import ray
    from ray.cluster_utils import Cluster

    if nodes < 1 or gpus_per_node < 0 or cpus_per_node < 1:
        raise ConfigError(f"simulated cluster: nodes={nodes}, gpus_per_node={gpus_per_node}, "
                          f"cpus_per_node={cpus_per_node}: need nodes >= 1, gpus >= 0, cpus >= 1")
    if ray.is_initialized():
        raise ConfigError("simulated cluster: Ray is already initialised in this process; call ray.shutdown() first")
    store = object_store_mb * 1024 * 1024
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": head_cpus, "num_gpus": 0,
                                                             "object_store_memory": store})
    try:
        for _ in range(nodes):
            cluster.add_node(num_cpus=cpus_per_node, num_gpus=gpus_per_node, object_store_memory=store)
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        yield cluster.address
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        cluster.shutdown()


def replay_table(space, records) -> dict:
    """``{index: (status, median_ms, build_s, run_s)}`` of a :class:`~raydgp.space.recorded.RecordedSpace`'s
    configurations, from the records they came from (one record per configuration: the first)."""
    by_cfg = {}
    for r in records:
        by_cfg.setdefault(r.config, r)
    out = {}
    for i, c in enumerate(space.configs):
        r = by_cfg[c]
        out[i] = (r.result.status, r.result.median_ms if r.result.ok else None, r.result.build_s, r.result.run_s)
    return out


def replay_trainable(config: Mapping, table: Mapping, time_scale: float, metric: str = "latency_ms") -> None:
    """A Ray Tune function trainable: report the recorded measurement of ``config["recorded"]`` after sleeping for its
    recorded build + run time times ``time_scale`` (never less than 1 ms). Use with ``tune.with_parameters``."""
    from ray import tune

    t0 = time.time()
    status, ms, build_s, run_s = table[int(config["recorded"])]
    time.sleep(max(1e-3, (float(build_s) + float(run_s)) * time_scale))
    t1 = time.time()
    tune.report({metric: ms if ms is not None else math.inf, "status": status, "t_start": t0, "t_end": t1,
                 "pid": os.getpid()})


def sleep_trainable(config: Mapping, problem: str, seconds: float) -> None:
    """A Ray Tune function trainable: a synthetic problem (:mod:`raydgp.raytune.synthetic`) after ``seconds`` of
    sleep, with ``t_start`` / ``t_end`` for :func:`busy_fraction`."""
    from ray import tune

    from raydgp.raytune.synthetic import PROBLEMS

    fn, opt = PROBLEMS[problem]
    t0 = time.time()
    time.sleep(seconds)
    loss = fn(config)
    tune.report({"loss": loss, "regret": loss - opt, "t_start": t0, "t_end": time.time(), "pid": os.getpid()})


def busy_fraction(intervals: Sequence[tuple[float, float]], slots: int) -> float:
    """The fraction of ``slots`` x (first start .. last end) that trials spent working, from ``(t_start, t_end)``."""
    if not intervals or slots < 1:
        return 0.0
    t0 = min(a for a, _ in intervals)
    t1 = max(b for _, b in intervals)
    if t1 <= t0:
        return 0.0
    return sum(b - a for a, b in intervals) / (slots * (t1 - t0))


__all__ = ["simulated_cluster", "replay_table", "replay_trainable", "sleep_trainable", "busy_fraction"]
