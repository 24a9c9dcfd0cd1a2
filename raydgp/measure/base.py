"""The measurer interface: build, check and time one configuration of a task; every failure comes back as data.

Implementations: :class:`~raydgp.measure.local.LocalMeasurer` (a warm worker process on this machine),
``raydgp.raytune.measure_service.ServiceMeasurer`` (the node's shared warm workers, through Ray) and
:class:`~raydgp.testing.FakeMeasurer` (no TVM: a known function of the configuration, for tests).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from raydgp.measure.protocol import TaskPayload
from raydgp.records import MeasureResult


@dataclass(frozen=True)
class Outcome:
    """A measurement result plus the decisions TVM applied (``[[inst, decision], ...]``, None if never applied)."""

    result: MeasureResult
    applied: list | None = None


class Measurer(abc.ABC):
    """Measures configurations; never raises for a bad candidate (its result has a non-``ok`` status instead)."""

    @abc.abstractmethod
    def measure(self, task: TaskPayload, trace: list | None) -> Outcome:
        """Build, check against the task's reference output and time one configuration.

        Args:
            task: the task (key, module as TVM JSON text, target).
            trace: the configuration as a MetaSchedule JSON trace, or None for the untuned task itself.

        Returns:
            An :class:`Outcome`; its result's status is ``ok``, ``invalid``, ``build_error``, ``run_error``,
            ``timeout`` or ``wrong_result``, and its latencies are in ms.
        """

    def close(self) -> None:
        """Release workers (idempotent)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
