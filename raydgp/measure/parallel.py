"""Measure groups of configurations with a few measurers at once, so that one builds while another times.

Each measurer is its own worker process (:class:`~raydgp.measure.local.LocalMeasurer` on a CPU node); their workers
take the node's build and timing locks, so builds overlap and timings stay exclusive. A group (one task's
configurations) goes to one measurer whole: its worker prepares the task (the reference output) once.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Sequence

from raydgp.measure.base import Measurer, Outcome
from raydgp.measure.protocol import MeasureSettings, TaskPayload


def measure_groups(groups: Sequence[tuple[TaskPayload, Sequence]], make_measurer: Callable[[MeasureSettings], Measurer],
                   settings: MeasureSettings, on_result: Callable[[int, int, Outcome], None],
                   workers: int = 2) -> int:
    """Measure every ``(task, [trace or None, ...])`` group, ``workers`` measurers at once, groups in order.

    Args:
        groups: each task with the configurations (MetaSchedule JSON traces; None = the untuned task) to measure.
        make_measurer: builds one measurer (called once per worker thread).
        settings: their measurement settings.
        on_result: called as ``on_result(group index, trace index, outcome)`` as each measurement finishes, one call
            at a time (under a lock): where the caller saves it, so nothing measured is lost to a later failure.
        workers: measurers at once (at most one per group).

    Returns:
        The number of measurers used.

    Raises:
        The first exception a measurer or ``on_result`` raised (after every thread stopped).
    """
    jobs: queue.Queue = queue.Queue()
    for i, (task, traces) in enumerate(groups):
        if traces:
            jobs.put((i, task, list(traces)))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with make_measurer(settings) as m:
                while not errors:
                    try:
                        i, task, traces = jobs.get_nowait()
                    except queue.Empty:
                        return
                    for j, trace in enumerate(traces):
                        res = m.measure(task, trace)
                        with lock:
                            on_result(i, j, res)
        except BaseException as e:  # noqa: BLE001 - raised on the calling thread below
            errors.append(e)

    n = max(1, min(int(workers), jobs.qsize()))
    threads = [threading.Thread(target=work, name=f"raydgp-measure-{k}", daemon=True) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return n
