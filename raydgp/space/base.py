"""The search-space interface every searcher works through (no TVM, no Ray here).

Two implementations: :class:`~raydgp.space.design_space.DesignSpace` (a TVM task's MetaSchedule sketches; its
configurations are :class:`~raydgp.records.Config`) and :class:`~raydgp.space.param_space.ParamSpace` (an ordinary Ray
Tune param space; its configurations are tuples). Searchers never ask which one they hold.
"""

from __future__ import annotations

import abc
from typing import Any, Hashable, Sequence

import numpy as np


class SearchSpace(abc.ABC):
    """A finite or infinite set of hashable configurations that can be sampled, mutated and encoded.

    Configurations cross three boundaries, each with one pair of methods: the trial (``to_params`` / ``from_params``,
    what a Ray trial receives and reports back as ``applied``), the searcher checkpoint (``config_to_json`` /
    ``config_from_json``, plain JSON) and the model (``encode_many``, ``n x dim`` floats).
    """

    @property
    @abc.abstractmethod
    def size(self) -> float:
        """Number of distinct configurations (``math.inf`` for continuous spaces)."""

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Width of one encoding."""

    @abc.abstractmethod
    def sample_many(self, n: int, rng: np.random.Generator, exclude: set | None = None,
                    max_tries: int | None = None) -> list:
        """Up to ``n`` distinct configurations not in ``exclude``, drawn from ``rng``."""

    @abc.abstractmethod
    def neighbours(self, config: Hashable) -> list:
        """Configurations one small step away from ``config`` (one knob or dimension changed)."""

    @abc.abstractmethod
    def is_valid(self, config: Hashable) -> bool:
        """True if ``config`` is a point of this space."""

    @abc.abstractmethod
    def encode_many(self, configs: Sequence[Hashable]) -> np.ndarray:
        """``len(configs) x dim`` float64 encodings (``0 x dim`` for an empty list)."""

    @abc.abstractmethod
    def to_params(self, config: Hashable) -> dict:
        """The parameter dict a trial receives."""

    @abc.abstractmethod
    def from_params(self, params: dict) -> Hashable:
        """The configuration of a parameter dict (raises :class:`~raydgp.errors.RayDGPError` if it is none)."""

    def mutate(self, config: Hashable, rng: np.random.Generator) -> Hashable:
        """A random small change of ``config`` (default: one of its :meth:`neighbours`, uniformly)."""
        nb = self.neighbours(config)
        return nb[int(rng.integers(len(nb)))] if nb else config

    def crossover(self, a: Hashable, b: Hashable, rng: np.random.Generator) -> Hashable | None:
        """A child taking each knob from one parent or the other; None where the two cannot be combined
        (default: never)."""
        return None

    @property
    def structures(self) -> tuple:
        """The top-level structural choices configurations fall into (a design space's MetaSchedule sketches), or
        ``()`` where the space has none (default)."""
        return ()

    def structure_of(self, config: Hashable) -> Hashable | None:
        """Which of :attr:`structures` ``config`` belongs to (None: the space has none)."""
        return None

    def config_to_json(self, config: Hashable) -> Any:
        """A JSON value for checkpoints (default: the trial parameters)."""
        return self.to_params(config)

    def config_from_json(self, value: Any) -> Hashable:
        return self.from_params(value)
