"""Measure groups of configurations with a few measurers at once, so that one builds while another times.

Each measurer is its own worker process (:class:`~raydgp.measure.local.LocalMeasurer` on a CPU node); their workers
take the node's build and timing locks, so builds overlap and timings stay exclusive. A group (one task's
configurations) goes to one measurer whole: its worker prepares the task (the reference output) once.

:class:`MeasurerPool` keeps its measurers open across several rounds, and a round can send each group to the measurer
that measured it before (``affinity``): with ``MeasureSettings.keep_built`` its worker still holds the kernels it built
and times them again without building them again (the quiet re-timing's second round).
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Sequence

from raydgp.measure.base import Measurer, Outcome
from raydgp.measure.protocol import MeasureSettings, TaskPayload


class MeasurerPool:
    """``workers`` measurers, each opened on first use and kept until :meth:`close` (a context manager).

    Args:
        make_measurer: builds one measurer (called at most once per slot).
        settings: their measurement settings.
        workers: measurers at most.
    """

    def __init__(self, make_measurer: Callable[[MeasureSettings], Measurer], settings: MeasureSettings,
                 workers: int = 2):
        self._make = make_measurer
        self._settings = settings
        self.workers = max(1, int(workers))
        self._measurers: list[Measurer | None] = [None] * self.workers

    def __enter__(self) -> "MeasurerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close every measurer opened (idempotent)."""
        for k, m in enumerate(self._measurers):
            if m is not None:
                self._measurers[k] = None
                m.close()

    @property
    def opened(self) -> int:
        """How many measurers have been opened so far."""
        return sum(m is not None for m in self._measurers)

    def _measurer(self, k: int) -> Measurer:
        if self._measurers[k] is None:
            self._measurers[k] = self._make(self._settings)
        return self._measurers[k]

    def run(self, groups: Sequence[tuple[TaskPayload, Sequence]], on_result: Callable[[int, int, Outcome], None],
            affinity: Sequence[int | None] | None = None) -> list[int | None]:
        """Measure every ``(task, [trace or None, ...])`` group, groups in order, one thread per measurer used.

        Args:
            groups: each task with the configurations (MetaSchedule JSON traces; None = the untuned task) to measure.
            on_result: called as ``on_result(group index, trace index, outcome)`` as each measurement finishes, one
                call at a time (under a lock): where the caller saves it, so nothing measured is lost to a later
                failure.
            affinity: per group, the slot (measurer index) it should go to, e.g. the one :meth:`run` returned for it
                last round; None: any. A slot whose own groups are done takes the others' (the round's wall first).

        Returns:
            The slot that measured each group (None for a group without configurations).

        Raises:
            The first exception a measurer or ``on_result`` raised (after every thread stopped).
        """
        shared: queue.Queue = queue.Queue()
        own = [queue.Queue() for _ in range(self.workers)]
        n_jobs = 0
        for i, (task, traces) in enumerate(groups):
            if not traces:
                continue
            n_jobs += 1
            k = affinity[i] if affinity is not None and i < len(affinity) else None
            (own[k] if k is not None and 0 <= k < self.workers else shared).put((i, task, list(traces)))
        lock = threading.Lock()
        errors: list[BaseException] = []
        slot_of: list[int | None] = [None] * len(groups)

        def next_job(k: int):
            for q in [own[k], shared] + [own[j] for j in range(self.workers) if j != k]:
                try:
                    return q.get_nowait()
                except queue.Empty:
                    continue
            return None

        def work(k: int) -> None:
            try:
                while not errors:
                    job = next_job(k)
                    if job is None:
                        return
                    i, task, traces = job
                    slot_of[i] = k
                    m = self._measurer(k)
                    for j, trace in enumerate(traces):
                        res = m.measure(task, trace)
                        with lock:
                            on_result(i, j, res)
            except BaseException as e:  # noqa: BLE001 - raised on the calling thread below
                errors.append(e)

        # slots with their own groups first, then as many more as there are groups left for them
        busy = [k for k in range(self.workers) if not own[k].empty()]
        rest = [k for k in range(self.workers) if k not in busy]
        slots = busy + rest[:max(0, min(n_jobs, self.workers) - len(busy))]
        threads = [threading.Thread(target=work, args=(k,), name=f"raydgp-measure-{k}", daemon=True) for k in slots]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return slot_of


def measure_groups(groups: Sequence[tuple[TaskPayload, Sequence]], make_measurer: Callable[[MeasureSettings], Measurer],
                   settings: MeasureSettings, on_result: Callable[[int, int, Outcome], None],
                   workers: int = 2) -> int:
    """Measure every ``(task, [trace or None, ...])`` group, ``workers`` measurers at once, groups in order (one
    round of a :class:`MeasurerPool`, closed after it).

    Returns:
        The number of measurers used.

    Raises:
        The first exception a measurer or ``on_result`` raised (after every thread stopped).
    """
    with MeasurerPool(make_measurer, settings, workers) as pool:
        pool.run(groups, on_result)
        return pool.opened
