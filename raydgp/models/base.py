"""The toolchain interface (no TVM here): what the pipeline needs from a compiler, a model in as layers with design spaces, a
measurer for untuned baselines, trial measurement, and the tuned library out (built, verified, timed).

:class:`raydgp.models.toolchain.TVMToolchain` is the real one (TVM); :class:`raydgp.testing.FakeToolchain` runs the
whole pipeline in seconds without TVM.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from raydgp.measure.base import Measurer
from raydgp.measure.protocol import MeasureSettings, TaskPayload
from raydgp.records import RecordStore
from raydgp.space.base import SearchSpace


@dataclass(frozen=True)
class ModelLayer:
    """One distinct layer (task) of a model.

    Attributes:
        name: unique within the model (MetaSchedule's task name).
        task: what a measurer needs (key, module JSON, target).
        space: its design space.
        weight: calls per inference.
        op: operator kind (``conv2d``, ``dense``, ...).
        flops: floating-point operations of one call (NaN if unknown).
        group: sibling group: layers with the same anchor loop nest (the same conv with another epilogue) share a
            group, and their schedules carry over; "" = a group of its own.
    """

    name: str
    task: TaskPayload
    space: SearchSpace
    weight: int = 1
    op: str = ""
    flops: float = math.nan
    group: str = ""

    @property
    def key(self) -> str:
        return self.task.key


@dataclass
class LoadedModel:
    """A model split into layers; ``handle`` is the toolchain's own state (e.g. the prepared Relax module)."""

    name: str
    source: str
    reference_name: str
    target: dict
    layers: list[ModelLayer]
    handle: Any = None


@dataclass(frozen=True)
class Deployment:
    """The tuned library, built, run in a fresh process, checked against the framework and timed (ms).

    ``verified`` is False when the outputs differ beyond tolerance or the library failed to load or run
    (``verify_message`` says which); ``end_to_end_ms`` is then None.
    """

    library: str
    verified: bool
    verify_message: str
    end_to_end_latencies_ms: list = field(default_factory=list)
    unverified_ms: float | None = None
    max_abs_err: float | None = None
    untuned_ms: float | None = None
    reference_ms: dict = field(default_factory=dict)  # {"pytorch": ms, "onnxruntime": ms}
    schedules: int = 0
    build_s: float = 0.0
    ms_database: str = ""
    timing: str = ""  # how the end-to-end and reference latencies were taken

    @property
    def end_to_end_ms(self) -> float | None:
        if not self.verified or not self.end_to_end_latencies_ms:
            return None
        v = sorted(self.end_to_end_latencies_ms)
        n = len(v)
        return float(v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2)


class Toolchain(abc.ABC):
    """Model in, library out; everything between is the pipeline's."""

    @abc.abstractmethod
    def load(self, model: str, input_shape, seed: int, target_kind: str, threads: int,
             layout: str = "auto") -> LoadedModel:
        """Import a model and extract its distinct layers (raises :class:`~raydgp.errors.ModelError`); ``layout`` is
        the activation layout its convolutions are tuned in (:func:`raydgp.models.tasks.resolve_layout`)."""

    @abc.abstractmethod
    def measurer(self, settings: MeasureSettings) -> Measurer:
        """A measurer on this machine (untuned baselines)."""

    def trial_measurer(self) -> Measurer | None:
        """The measurer trials use, shipped to them (None: the node's warm TVM workers)."""
        return None

    def peak_gflops(self, target_kind: str, threads: int, settings: MeasureSettings) -> float | None:
        """This node's practical peak (GFLOP/s) for the budget's headroom term; None: unknown (no headroom term)."""
        return None

    @abc.abstractmethod
    def deploy(self, model: LoadedModel, store: RecordStore, tuned_keys: set, out, threads: int,
               compare_reference: bool, log: Callable[[str], Any]) -> Deployment:
        """Build the library from the best record of each layer in ``tuned_keys``, verify it and time it."""
