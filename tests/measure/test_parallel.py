"""Measuring groups with a few measurers at once (fake measurers: no TVM)."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from raydgp.measure.base import Measurer, Outcome
from raydgp.measure.parallel import measure_groups
from raydgp.measure.protocol import TaskPayload
from raydgp.records import MeasureResult

_ids = itertools.count()


class _Slow(Measurer):
    """Sleeps, and says which instance measured what and when."""

    def __init__(self, log: list, fail_on=None):
        self.id, self.log, self.fail_on = next(_ids), log, fail_on
        self.closed = False

    def measure(self, task, trace):
        t0 = time.monotonic()
        time.sleep(0.05)
        if trace == self.fail_on:
            raise RuntimeError("worker died")
        self.log.append((self.id, task.key, trace, t0, time.monotonic()))
        return Outcome(MeasureResult("ok", latencies_ms=(1.0,)))

    def close(self):
        self.closed = True


def _groups(n_groups=4, per=3):
    return [(TaskPayload(f"t{i}", "{}", {"kind": "llvm"}), [f"c{i}.{j}" for j in range(per)]) for i in range(n_groups)]


def _factory(log: list):
    """A measurer factory that keeps every measurer it made (thread-safe): ``(make, made)``."""
    made: list = []
    lock = threading.Lock()

    def make(settings):
        m = _Slow(log)
        with lock:
            made.append(m)
        return m

    return make, made


def test_every_configuration_once_each_group_on_one_measurer_and_the_measurers_overlap():
    log, got = [], []
    make, made = _factory(log)
    used = measure_groups(_groups(), make, None, lambda i, j, o: got.append((i, j, o.result.ok)), workers=2)
    assert used == 2 and len(made) == 2 and all(m.closed for m in made)
    assert sorted(got) == [(i, j, True) for i in range(4) for j in range(3)]  # each once, nothing lost
    by_task = {}
    for mid, key, *_ in log:
        by_task.setdefault(key, set()).add(mid)
    assert all(len(v) == 1 for v in by_task.values())  # a group stays on one measurer (one task preparation)
    a = [(t0, t1) for mid, _, _, t0, t1 in log if mid == made[0].id]
    b = [(t0, t1) for mid, _, _, t0, t1 in log if mid == made[1].id]
    assert any(s0 < e1 and s1 < e0 for s0, e0 in a for s1, e1 in b)  # they ran at the same time


def test_one_group_uses_one_measurer_and_a_failure_is_raised_after_the_rest_stopped():
    made = []
    used = measure_groups(_groups(1), lambda s: made.append(_Slow([])) or made[-1], None, lambda *a: None, workers=4)
    assert used == 1 and len(made) == 1
    got = []
    with pytest.raises(RuntimeError, match="worker died"):
        measure_groups(_groups(2, 2), lambda s: _Slow([], fail_on="c0.1"), None, lambda i, j, o: got.append((i, j)),
                       workers=2)
    assert (0, 0) in got  # what was measured before the failure was handed over


def test_a_pool_keeps_its_measurers_and_sends_each_group_back_where_it_was_measured():
    """A :class:`MeasurerPool` opens each measurer once for all its rounds; with ``affinity`` a round sends each group
    to the measurer that measured it before (its worker keeps what it built), and a measurer whose own groups are done
    takes the others' rather than idle."""
    from raydgp.measure.parallel import MeasurerPool

    log = []
    make, made = _factory(log)
    with MeasurerPool(make, None, workers=2) as pool:
        slot = pool.run(_groups(6, 2), lambda *a: None)
        assert sorted(set(slot)) == [0, 1] and len(made) == 2
        first = {key: mid for mid, key, *_ in log}
        log.clear()
        again = pool.run(_groups(6, 1), lambda *a: None, affinity=slot)
        assert again == slot and len(made) == 2  # the same measurers, each group on its own
        assert {key: mid for mid, key, *_ in log} == first
        log.clear()
        lopsided = pool.run(_groups(6, 1), lambda *a: None, affinity=[0] * 6)
        assert set(lopsided) == {0, 1}  # the idle measurer took groups meant for the busy one
    assert all(m.closed for m in made)
