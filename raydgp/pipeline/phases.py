"""Wall seconds of each step of a job, in order: a job summary's ``phases_s``."""

from __future__ import annotations

import time


class PhaseClock:
    """Call with a step's name when the step ends; :attr:`phases` holds each step's wall seconds, in order.

    Args:
        start: ``time.monotonic()`` at the job's start (None: now).

    Example:
        >>> phase = PhaseClock()
        >>> phase("load")
        >>> phase.phases  # {"load": 0.0}
    """

    def __init__(self, start: float | None = None):
        self.start = time.monotonic() if start is None else float(start)
        self._mark = self.start
        self.phases: dict[str, float] = {}

    def __call__(self, name: str) -> None:
        now = time.monotonic()
        self.phases[name] = round(now - self._mark, 2)
        self._mark = now
