"""The node locks: no build runs while a kernel is timed, a timing waits for the builds in flight, and a stream of
overlapping builds cannot starve a waiting timing."""

from __future__ import annotations

import threading
import time

from raydgp.measure.node_locks import TimingLock, building


def test_builds_wait_for_a_timing_and_timings_wait_for_builds(tmp_path):
    path = str(tmp_path / "t.lock")
    events: list[tuple[str, float]] = []

    def build(name, hold):
        with building(path):
            events.append((name + "+", time.monotonic()))
            time.sleep(hold)
            events.append((name + "-", time.monotonic()))

    b1 = threading.Thread(target=build, args=("b1", 0.4))
    b1.start()
    time.sleep(0.1)
    with TimingLock(path):  # must wait for b1
        events.append(("t+", time.monotonic()))
        b2 = threading.Thread(target=build, args=("b2", 0.05))
        b2.start()
        time.sleep(0.3)  # b2 must not start meanwhile
        events.append(("t-", time.monotonic()))
    b1.join()
    b2.join()
    order = [e for e, _ in events]
    assert order.index("b1-") < order.index("t+") < order.index("t-") < order.index("b2+"), order


def test_overlapping_builds_do_not_starve_a_timing(tmp_path):
    path = str(tmp_path / "t.lock")
    stop = threading.Event()

    def builder():
        while not stop.is_set():
            with building(path):
                time.sleep(0.05)

    threads = [threading.Thread(target=builder) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    with TimingLock(path):
        waited = time.monotonic() - t0
    stop.set()
    for t in threads:
        t.join()
    assert waited < 1.0, f"the timing waited {waited:.2f} s behind a stream of builds"


def test_without_exclusivity_builds_run_beside_a_timing(tmp_path):
    path = str(tmp_path / "t.lock")
    with TimingLock(path, exclusive=False):
        done = threading.Event()
        def build():
            with building(path):
                done.set()

        t = threading.Thread(target=build)
        t.start()
        assert done.wait(2.0)
        t.join()


def test_a_holder_waiting_for_another_thread_of_its_process_does_not_deadlock_a_timing(tmp_path):
    """suggest() holds the build lock and joins its background refit, which wants the build lock, while a timing waits
    (it holds the gate): the refit joins its process's hold, so all three finish, the timing last."""
    path = str(tmp_path / "t.lock")
    order: list[str] = []
    timing_waiting = threading.Event()

    def timing():
        timing_waiting.set()
        with TimingLock(path):
            order.append("timing")

    def refit():
        with building(path):
            order.append("refit")

    with building(path):
        t = threading.Thread(target=timing, daemon=True)
        t.start()
        timing_waiting.wait()
        time.sleep(0.2)  # the timing now holds the gate and waits for this hold
        r = threading.Thread(target=refit, daemon=True)
        r.start()
        r.join(10.0)
        assert not r.is_alive(), "deadlock: the second thread never got the build lock"
        order.append("holder")
    t.join(10.0)
    assert not t.is_alive(), "the timing never got the node"
    assert order == ["refit", "holder", "timing"], order


def _fit_then_time(path, guard_cm, fit_s: float = 1.5):
    """A 'fit' of 10 ms steps with a pause point between them holds ``guard_cm`` for ``fit_s``; a timing arrives
    0.2 s in. Returns how long the timing waited and whether the fit ran every step."""
    from raydgp.pause import pause_point

    steps = []

    def fit():
        with guard_cm():
            end = time.monotonic() + fit_s
            while time.monotonic() < end:
                pause_point()
                time.sleep(0.01)
                steps.append(1)

    t = threading.Thread(target=fit)
    t.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    with TimingLock(path):
        waited = time.monotonic() - t0
        time.sleep(0.1)  # the timing
    t.join()
    return waited, len(steps)


def test_a_fit_under_the_compute_guard_steps_aside_for_a_timing_at_its_next_pause_point(tmp_path):
    """A surrogate refit holds the node's compute guard for seconds; with pause points a timing that arrives waits for
    one step, not for the whole fit (without them, the whole fit: the control)."""
    from raydgp.measure.node_locks import NodeComputeGuard, _HOLDS

    path = str(tmp_path / "t.lock")
    waited, steps = _fit_then_time(path, NodeComputeGuard(path))
    assert waited < 0.3 and steps > 50, (waited, steps)
    assert _HOLDS[path].yields >= 1 and _HOLDS[path].count == 0
    waited_plain, _ = _fit_then_time(path, lambda: building(path))  # the guard without pause callbacks
    assert waited_plain > 1.0, waited_plain
