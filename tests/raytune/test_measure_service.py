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


def test_with_keep_built_a_task_goes_back_to_the_worker_that_keeps_its_kernels(monkeypatch):
    """The service sends a re-timing request (``keep_built``) to an idle worker that measured the task before, so the
    kernel it kept is timed again instead of built again; without ``keep_built`` any idle worker serves."""
    import threading
    import time

    import raydgp.raytune.measure_service as ms
    from raydgp.measure.base import Outcome
    from raydgp.measure.protocol import TaskPayload
    from raydgp.records import MeasureResult

    served = []

    class Fake:
        def __init__(self, settings):
            self.settings = settings

        def measure(self, task, trace):
            time.sleep(0.05)
            served.append((task.key, id(self)))
            return Outcome(MeasureResult("ok", latencies_ms=(1.0,)))

        def close(self):
            pass

    monkeypatch.setattr(ms, "LocalMeasurer", Fake)
    svc = ms.MeasureService()
    keep = MeasureSettings(keep_built=4)
    a, b = (TaskPayload(k, "{}", {"kind": "llvm"}) for k in ("task-a", "task-b"))
    threads = [threading.Thread(target=svc.measure, args=(keep, t, ["x"])) for t in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    owner = dict(served)
    assert len(set(owner.values())) == 2  # two workers, one per task
    served.clear()
    for t in (a, b, b, a, a, b):
        svc.measure(keep, t, ["x"])
    assert all(owner[k] == w for k, w in served)
    served.clear()
    for t in (a, b, a, b):
        svc.measure(MeasureSettings(), t, ["x"])  # no kept kernels asked for: the most recently idle worker
    assert len({w for _, w in served}) == 1
