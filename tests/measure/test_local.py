"""Isolated measurement: a real conv builds, runs and passes the check; broken, crashing and hanging candidates come
back as results with the right status, within their timeouts, and the next measurement still works."""

from __future__ import annotations

import time

import numpy as np
import pytest

from raydgp import testing
from raydgp.measure.local import LocalMeasurer
from raydgp.measure.protocol import MeasureSettings, TaskPayload


def _payload(mod, target, key):
    import tvm

    return TaskPayload(key, tvm.ir.save_json(mod), target)


def test_real_conv_configuration_is_ok_and_correct(measurer, small_space, small_payload):
    rng = np.random.default_rng(0)
    oks = []
    for c in small_space.sample_many(4, rng):
        out = measurer.measure(small_payload, small_space.trace_json(c))
        assert out.result.status in ("ok", "invalid"), out.result.message
        if out.result.ok:
            oks.append(out)
    assert oks
    r = oks[0].result
    n = measurer.settings.flush_repeat if measurer.settings.flush_cache else measurer.settings.repeat
    assert len(r.latencies_ms) == n and all(x > 0 for x in r.latencies_ms)
    assert r.median_ms == pytest.approx(np.median(r.latencies_ms))
    assert r.build_s > 0 and r.run_s > 0
    assert oks[0].applied is not None


def test_untuned_task_is_measured(measurer, small_payload):
    out = measurer.measure(small_payload, None)
    assert out.result.ok and out.result.median_ms > 0


def test_the_untuned_task_first_is_its_own_reference_and_later_candidates_are_still_checked(
        tmp_path, cpu_target, small_space, small_payload):
    """A fresh worker whose first request is the untuned task keeps that output as the reference (no separate
    reference run): a wrong candidate after it is still caught, a right one passes, and a real conv's configurations
    after its untuned run still get MetaSchedule's postprocessors (they build, run and pass the check)."""
    import tvm

    task = _payload(testing.copy_task_module(), cpu_target, "copy-task-untuned-first")
    settings = MeasureSettings(num_threads=2, repeat=2, min_repeat_ms=1, timing_lock=str(tmp_path / "timing.lock"))
    with LocalMeasurer(settings) as m:
        first = m.measure(task, None)
        assert first.result.ok, first.result.message
        wrong = m.measure(task, None, tvm.ir.save_json(testing.wrong_result_module()))
        assert wrong.result.status == "wrong_result", wrong.result.message
        right = m.measure(task, None, tvm.ir.save_json(testing.copy_task_module()))
        assert right.result.ok, right.result.message
        assert m.measure(small_payload, None).result.ok
        outs = [m.measure(small_payload, small_space.trace_json(c))
                for c in small_space.sample_many(4, np.random.default_rng(1))]
        assert all(o.result.status in ("ok", "invalid") for o in outs), [o.result.message for o in outs]
        assert any(o.result.ok and o.applied is not None for o in outs)


def test_invalid_configuration_is_a_result(measurer, small_space, small_payload):
    c = small_space.sample(np.random.default_rng(0))
    trace = small_space.trace_json(c)
    tile = next(i for i, (_, d) in enumerate(trace[1]) if isinstance(d, list) and len(d) == 4)
    trace[1][tile][1] = [3, 1, 1, 5]  # product != extent: TVM would silently "repair" it
    out = measurer.measure(small_payload, trace)
    assert out.result.status == "invalid" and "changed decision" in out.result.message


@pytest.fixture(scope="module")
def copy_task(cpu_target):
    return _payload(testing.copy_task_module(), cpu_target, "copy-task")


@pytest.mark.parametrize("make, status, needle", [
    (testing.wrong_result_module, "wrong_result", "differs from the reference"),
    (testing.build_error_module, "build_error", ""),
    (testing.segfault_module, "run_error", "SIGSEGV"),
])
def test_broken_candidates_get_their_status_and_the_tuner_continues(measurer, copy_task, make, status, needle):
    import tvm

    out = measurer.measure(copy_task, None, tvm.ir.save_json(make()))
    assert out.result.status == status, out.result.message
    assert needle in out.result.message
    assert not out.result.latencies_ms
    again = measurer.measure(copy_task, None, tvm.ir.save_json(testing.copy_task_module()))
    assert again.result.ok, again.result.message


def test_hanging_candidate_times_out(tmp_path, copy_task):
    import tvm

    settings = MeasureSettings(num_threads=1, run_timeout_s=2, repeat=2, min_repeat_ms=1,
                               timing_lock=str(tmp_path / "lock"))
    with LocalMeasurer(settings) as m:
        assert m.measure(copy_task, None).result.ok  # warm: worker started, reference ready
        t0 = time.monotonic()
        out = m.measure(copy_task, None, tvm.ir.save_json(testing.hanging_module()))
        took = time.monotonic() - t0
        assert out.result.status == "timeout" and "2 s" in out.result.message
        assert took < 2 + 10
        assert m.measure(copy_task, None).result.ok  # a fresh worker took over


def test_timing_is_exclusive_on_a_node(tmp_path, copy_task):
    """While another process holds the node's timing lock, a measurement builds but does not time."""
    import fcntl
    import os

    lock = str(tmp_path / "lock")
    settings = MeasureSettings(num_threads=1, lock_timeout_s=3, repeat=2, min_repeat_ms=1, timing_lock=lock)
    with LocalMeasurer(settings) as m:
        assert m.measure(copy_task, None).result.ok
        fd = os.open(lock, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            out = m.measure(copy_task, None)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        assert out.result.status == "timeout" and "timing lock" in out.result.message
        assert m.measure(copy_task, None).result.ok


def test_settings_are_validated():
    from raydgp.errors import ConfigError

    with pytest.raises(ConfigError):
        MeasureSettings(run_timeout_s=0)
    with pytest.raises(ConfigError):
        MeasureSettings(device="tpu")


def test_workers_share_the_reference_through_reference_dir_and_ignore_a_damaged_file(tmp_path, cpu_target):
    """The first worker that has a task's reference (here: the untuned task's own output) writes it to
    ``reference_dir``; a fresh worker then checks against that file instead of computing its own (shown by planting a
    wrong reference of the right shape: a correct candidate then fails the check); a file of another shape or no array
    at all is ignored and the reference computed again."""
    import tvm

    from raydgp.measure.references import load_reference, reference_path

    task = _payload(testing.copy_task_module(), cpu_target, "copy-task-shared-reference")
    refs = tmp_path / "refs"
    settings = MeasureSettings(num_threads=2, repeat=2, min_repeat_ms=1, timing_lock=str(tmp_path / "timing.lock"),
                               reference_dir=str(refs))
    right = tvm.ir.save_json(testing.copy_task_module())
    with LocalMeasurer(settings) as m:
        assert m.measure(task, None).result.ok
    files = list(refs.glob("*.npy"))
    assert len(files) == 1 and files[0] == reference_path(refs, task.key, task.target, tvm.__version__)
    kept = np.load(files[0], allow_pickle=False)
    assert kept.size and load_reference(files[0], kept.shape, str(kept.dtype)) is not None
    with LocalMeasurer(settings) as m:  # a fresh worker reads the kept reference: the right candidate passes
        assert m.measure(task, None, right).result.ok
    np.save(files[0], kept + 1.0)  # planted: the fresh worker below must be checking against this file
    with LocalMeasurer(settings) as m:
        assert m.measure(task, None, right).result.status == "wrong_result"
    for damaged in (np.zeros((3,), dtype=kept.dtype), None):
        if damaged is None:
            files[0].write_bytes(b"not an array")
        else:
            np.save(files[0], damaged)
        with LocalMeasurer(settings) as m:
            out = m.measure(task, None, right)
            assert out.result.ok, out.result.message
        np.testing.assert_array_equal(np.load(files[0], allow_pickle=False), kept)  # computed again and rewritten


def test_a_worker_keeps_built_kernels_to_measure_them_again(tmp_path, small_space, small_payload):
    """With ``keep_built`` a worker measures a configuration it built before without building it again (checked and
    timed again all the same), keeps at most that many per task, and without it builds every time."""
    lock = str(tmp_path / "timing.lock")
    common = dict(num_threads=2, run_timeout_s=5, repeat=3, min_repeat_ms=5, flush_repeat=3, timing_lock=lock)
    oks = []
    with LocalMeasurer(MeasureSettings(**common, keep_built=2)) as m:
        for c in small_space.sample_many(12, np.random.default_rng(5)):
            out = m.measure(small_payload, small_space.trace_json(c))
            if out.result.ok:
                oks.append((c, out))
            if len(oks) == 3:
                break
        assert len(oks) == 3 and all(o.result.build_s > 0 for _, o in oks)
        (a, first_a), (b, _), (c, _) = oks
        again = m.measure(small_payload, small_space.trace_json(c))  # kept: no build, still checked and timed
        assert again.result.ok and again.result.build_s == 0.0 and again.result.run_s > 0
        assert len(again.result.latencies_ms) == 3 and again.applied == oks[2][1].applied
        evicted = m.measure(small_payload, small_space.trace_json(a))  # two kept per task: a was the oldest
        assert evicted.result.ok and evicted.result.build_s > 0 and evicted.applied == first_a.applied
    with LocalMeasurer(MeasureSettings(**common)) as m:
        t = small_space.trace_json(a)
        assert all(m.measure(small_payload, t).result.build_s > 0 for _ in range(2))
