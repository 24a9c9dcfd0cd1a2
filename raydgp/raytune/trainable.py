"""The Ray Tune function trainable: measure one configuration of a TVM task and report it.

Each Ray actor keeps one warm :class:`~raydgp.measure.measurer.Measurer` (a worker process with TVM imported) in a module
global; with ``reuse_actors=True`` the next trial on that actor reuses it, so a trial costs a build and a timing, not a
fresh ``import tvm``. Failures come back as reported results with a ``status``, never as a crashed trial.
"""

from __future__ import annotations

import json
import math
import socket
import statistics
import time
from typing import Any, Mapping

from raydgp.errors import InvalidConfigurationError
from raydgp.measure.measurer import Measurer
from raydgp.measure.protocol import MeasureSettings, TaskPayload, default_timing_lock
from raydgp.records import Config
from raydgp.space.design_space import DesignSpace, config_from_applied

METRIC = "latency_ms"
MODE = "min"

_measurers: dict[str, Measurer] = {}
_spaces: dict[str, DesignSpace] = {}


def _measurer(settings: MeasureSettings) -> Measurer:
    key = repr(settings)
    m = _measurers.get(key)
    if m is None:
        m = _measurers[key] = Measurer(settings)
    return m


def _node_settings(settings: Mapping) -> MeasureSettings:
    """Settings for this trial: on a GPU trial, time on the GPU Ray assigned, under that GPU's lock."""
    s = MeasureSettings.from_json(settings)
    if s.device == "cuda" and s.timing_lock is None:
        try:
            import ray

            ids = ray.get_gpu_ids()
        except Exception:  # noqa: BLE001 - outside Ray: the first visible GPU
            ids = []
        physical = int(ids[0]) if ids else 0
        s = MeasureSettings.from_json({**s.to_json(), "device_id": 0,
                                       "timing_lock": default_timing_lock("cuda", physical)})
    return s


_service = None


def _measure(settings: Mapping, task: Mapping, trace: list):
    """Measure through this node's warm measurement service when the job started one (CPU trials only), else with
    this actor's own Measurer."""
    global _service
    s = _node_settings(settings)
    if s.device == "cpu":
        if _service is None:
            from raydgp.raytune.measure_service import find_service

            _service = find_service() or False
        if _service:
            try:
                import ray

                return ray.get(_service.measure.remote(s.to_json(), dict(task), trace))
            except Exception:  # noqa: BLE001 - the service died: measure here from now on
                _service = False
    return _measurer(s).measure(TaskPayload(task["key"], task["mod_json"], task["target"]), trace)


def measure_config(config: Mapping[str, Any], task: Mapping, space: Mapping, settings: Mapping) -> dict:
    """Measure one configuration; return the result dict a trial reports.

    Args:
        config: ``{"sketch": int, "decisions": [...]}`` as proposed by a searcher.
        task: :class:`TaskPayload` fields (``key``, ``mod_json``, ``target``).
        space: the task's :class:`DesignSpace` as JSON.
        settings: :class:`MeasureSettings` as JSON.

    Returns:
        ``latency_ms`` (median, NaN unless ok), ``status``, ``message``, ``latencies_ms`` (every repeat), ``build_s``,
        ``run_s``, ``applied`` (the configuration TVM applied, as a JSON string), ``host`` and ``trial_s``.
    """
    t0 = time.perf_counter()
    sp = _spaces.get(task["key"])
    if sp is None:
        sp = _spaces[task["key"]] = DesignSpace.from_json(space)
    # "applied" travels as a JSON string: Ray's loggers choke on nested lists.
    out: dict[str, Any] = {"host": socket.gethostname(), "applied": json.dumps(dict(config))}
    try:
        cfg = Config.from_json(config)
        trace = sp.trace_json(cfg)
    except (InvalidConfigurationError, KeyError, TypeError, ValueError) as e:
        out.update(status="invalid", message=f"not a configuration of this space: {e}", latencies_ms=[],
                   build_s=0.0, run_s=0.0)
    else:
        o = _measure(settings, task, trace)
        r = o.result
        out.update(status=r.status, message=r.message, latencies_ms=list(r.latencies_ms), build_s=r.build_s,
                   run_s=r.run_s)
        if o.applied is not None:
            try:
                out["applied"] = json.dumps(config_from_applied(sp, cfg.sketch, o.applied).to_json())
            except InvalidConfigurationError as e:
                out.update(status="invalid", message=f"TVM applied decisions outside the space: {e}", latencies_ms=[])
    lat = out["latencies_ms"]
    out[METRIC] = float(statistics.median(lat)) if out["status"] == "ok" and lat else math.nan
    out["trial_s"] = time.perf_counter() - t0
    return out


def measure_trainable(config: Mapping[str, Any], task: Mapping, space: Mapping, settings: Mapping) -> None:
    """Ray Tune function trainable (use with ``tune.with_parameters``): measure and ``tune.report`` once."""
    from ray import tune

    tune.report(measure_config(config, task, space, settings))
