"""A trial's measurement as Ray reports it (``measure_config``) and the record the driver writes of it."""

from __future__ import annotations

import math

import numpy as np


def _moved_outside(small_task, small_space, n: int = 60):
    """Sampled configurations whose compute location TVM moves to a position the space does not list."""
    from raydgp.records import Config
    from raydgp.space.metaschedule import apply_config, tune_context

    ctx = tune_context(small_task.mod, small_task.target, small_task.name)
    out = []
    for c in small_space.sample_many(n, np.random.default_rng(0)):
        _sch, applied = apply_config(small_task.mod, small_space.trace_json(c), ctx.space_generator.postprocs)
        dec = tuple(tuple(d) if isinstance(d, list) else d for _i, d in applied)
        if dec != c.decisions and not small_space.is_valid(Config(c.sketch, dec)):
            out.append((c, applied))
    return out


def test_a_kernel_whose_compute_location_tvm_moved_outside_the_space_is_measured_and_kept(
        small_task, small_space, small_payload, measurer):
    """The real thing: TVM moves a compute location that does not exist under the sampled tiles; the kernel it builds
    is timed and checked, and the measurement counts for the proposed configuration (it used to be recorded as
    invalid, its latency dropped). Replaying the configuration moves the location the same way."""
    from raydgp.measure.protocol import MeasureSettings
    from raydgp.raytune.callbacks import record_from_result
    from raydgp.raytune.trainable import measure_config

    moved = _moved_outside(small_task, small_space)
    assert moved, "no sampled configuration of the small conv has its compute location moved (the probe found 5/60)"
    cfg, applied = moved[0]
    again = _moved_outside(small_task, small_space)
    assert [a for c, a in again if c == cfg] == [applied]  # deterministic: the same move on every replay
    out = measure_config(small_space.to_params(cfg), small_payload, small_space, MeasureSettings(), measurer)
    assert out["status"] == "ok", out["message"]
    assert math.isfinite(out["latency_ms"]) and out["latencies_ms"]
    rec = record_from_result(small_space, small_space.to_params(cfg), out)
    assert rec.config == cfg and rec.result.ok
