"""The node's measurement service: one warm worker serves every setting of the same thread count."""

from __future__ import annotations

import numpy as np

from raydgp.measure.protocol import MeasureSettings
from raydgp.raytune.measure_service import MeasureService


def test_one_warm_worker_serves_the_untuned_quick_timing_and_the_trials_settings(tmp_path, small_space, small_payload):
    lock = str(tmp_path / "timing.lock")
    trials = MeasureSettings(num_threads=2, flush_repeat=6, timing_lock=lock, reference_dir=str(tmp_path / "refs"))
    quick = MeasureSettings(num_threads=2, flush_repeat=1, warmup=0, timing_lock=lock,
                            reference_dir=str(tmp_path / "refs"))
    svc = MeasureService()
    try:
        untuned = svc.measure(quick, small_payload, None)
        assert untuned.result.ok and len(untuned.result.latencies_ms) == 1
        oks = [o for o in (svc.measure(trials, small_payload, small_space.trace_json(c))
                           for c in small_space.sample_many(4, np.random.default_rng(2))) if o.result.ok]
        assert oks and all(len(o.result.latencies_ms) == 6 for o in oks)  # each request keeps its own settings
        assert svc.stats() == {"calls": 5, "workers": 1}  # one worker process, started once
        other = MeasureSettings(num_threads=1, flush_repeat=2, timing_lock=lock)
        assert svc.measure(other, small_payload, None).result.ok
        assert svc.stats()["workers"] == 2  # another thread count is another process (TVM_NUM_THREADS)
    finally:
        svc.close()
