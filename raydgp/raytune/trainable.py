"""The Ray Tune function trainable: measure one configuration of a TVM task and report it.

A trial measures through the measurer it was given (a fake in tests), else through this node's warm measurement
service when the job started one (CPU trials), else through a warm :class:`~raydgp.measure.local.LocalMeasurer` kept
per actor in a module global (with ``reuse_actors=True`` the next trial on that actor reuses it, so a trial costs a
build and a timing, not a fresh ``import tvm``). Failures come back as reported results with a ``status``, never as a
crashed trial.
"""

from __future__ import annotations

import dataclasses
import math
import socket
import statistics
import time
from typing import Any, Mapping

from raydgp.errors import InvalidConfigurationError
from raydgp.measure.base import Measurer
from raydgp.measure.local import LocalMeasurer
from raydgp.measure.protocol import MeasureSettings, TaskPayload, default_timing_lock
from raydgp.raytune.codec import encode_applied
from raydgp.space.design_space import DesignSpace, config_as_applied

METRIC = "latency_ms"
MODE = "min"

_measurers: dict[str, LocalMeasurer] = {}


def _node_settings(s: MeasureSettings) -> MeasureSettings:
    """Settings for this trial: on a GPU trial, time on the GPU Ray assigned, under that GPU's lock."""
    if s.device == "cuda" and s.timing_lock is None:
        try:
            import ray

            ids = ray.get_gpu_ids()
        except Exception:  # noqa: BLE001 - outside Ray: the first visible GPU
            ids = []
        physical = int(ids[0]) if ids else 0
        s = dataclasses.replace(s, device_id=0, timing_lock=default_timing_lock("cuda", physical))
    return s


def trial_measurer(settings: MeasureSettings) -> Measurer:
    """The measurer of a trial on this node (see the module docstring)."""
    s = _node_settings(settings)
    if s.device == "cpu":
        from raydgp.raytune.measure_service import ServiceMeasurer

        svc = ServiceMeasurer.on_this_node(s)
        if svc is not None:
            return svc
    key = repr(s)
    m = _measurers.get(key)
    if m is None:
        m = _measurers[key] = LocalMeasurer(s)
    return m


def measure_config(params: Mapping[str, Any], task: TaskPayload, space: DesignSpace, settings: MeasureSettings,
                   measurer: Measurer | None = None) -> dict:
    """Measure one configuration; return the result dict a trial reports.

    Args:
        params: the trial's parameters (``{"sketch": int, "decisions": [...]}``).
        task: the task.
        space: its design space.
        settings: measurement settings.
        measurer: measure with this one (None: :func:`trial_measurer`).

    Returns:
        ``latency_ms`` (median, NaN unless ok), ``status``, ``message``, ``latencies_ms`` (every repeat), ``build_s``,
        ``run_s``, ``applied`` (:func:`~raydgp.raytune.codec.encode_applied`), ``host`` and ``trial_s``.
    """
    t0 = time.perf_counter()
    out: dict[str, Any] = {"host": socket.gethostname()}
    try:
        cfg = space.from_params(dict(params))
        out["applied"] = encode_applied(space, cfg)
        trace = space.trace_json(cfg)
    except InvalidConfigurationError as e:
        out.update(status="invalid", message=f"not a configuration of this space: {e}", latencies_ms=[],
                   build_s=0.0, run_s=0.0)
    else:
        o = (measurer or trial_measurer(settings)).measure(task, trace)
        r = o.result
        out.update(status=r.status, message=r.message, latencies_ms=list(r.latencies_ms), build_s=r.build_s,
                   run_s=r.run_s)
        if o.applied is not None:
            try:
                out["applied"] = encode_applied(space, config_as_applied(space, cfg, o.applied))
            except InvalidConfigurationError as e:
                out.update(status="invalid", message=f"TVM applied decisions outside the space: {e}", latencies_ms=[])
    lat = out["latencies_ms"]
    out[METRIC] = float(statistics.median(lat)) if out["status"] == "ok" and lat else math.nan
    out["trial_s"] = time.perf_counter() - t0
    return out


def measure_trainable(config: Mapping[str, Any], task: TaskPayload, space: DesignSpace, settings: MeasureSettings,
                      measurer: Measurer | None = None) -> None:
    """Ray Tune function trainable (use with ``tune.with_parameters``): measure and ``tune.report`` once."""
    from ray import tune

    tune.report(measure_config(config, task, space, settings, measurer))
