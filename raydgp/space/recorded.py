"""A finite space of recorded configurations: replay searches look a measurement up instead of taking it.

:class:`RecordedSpace` wraps a layer's :class:`~raydgp.space.design_space.DesignSpace` and keeps only the
configurations a record store holds for it, so a searcher (serial or through Ray) can be benchmarked on the recorded
dataset: every proposal has a recorded latency. A trial receives ``{"recorded": index}``.
"""

from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np

from raydgp.errors import InvalidConfigurationError
from raydgp.space.base import SearchSpace


class RecordedSpace(SearchSpace):
    """The recorded configurations of one layer as a finite search space.

    Args:
        space: the layer's design space (encodes the configurations).
        configs: the recorded configurations (duplicates dropped, order kept).
    """

    def __init__(self, space: SearchSpace, configs: Sequence[Hashable]):
        self.space = space
        self.configs = list(dict.fromkeys(configs))
        if not self.configs:
            raise InvalidConfigurationError("RecordedSpace needs at least one recorded configuration")
        self._index = {c: i for i, c in enumerate(self.configs)}

    @property
    def size(self) -> float:
        return len(self.configs)

    @property
    def dim(self) -> int:
        return self.space.dim

    def sample_many(self, n: int, rng: np.random.Generator, exclude: set | None = None,
                    max_tries: int | None = None) -> list:
        free = [c for c in self.configs if not exclude or c not in exclude]
        if not free or n <= 0:
            return []
        idx = rng.permutation(len(free))[:n]
        return [free[int(i)] for i in idx]

    def neighbours(self, config: Hashable) -> list:
        return []  # the recorded set has no notion of a step; the pool is the whole set

    def is_valid(self, config: Hashable) -> bool:
        return config in self._index

    def encode_many(self, configs: Sequence[Hashable]) -> np.ndarray:
        return self.space.encode_many(configs)

    def to_params(self, config: Hashable) -> dict:
        return {"recorded": self._index[config]}

    def from_params(self, params: dict) -> Hashable:
        try:
            return self.configs[int(params["recorded"])]
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise InvalidConfigurationError(f"not a recorded configuration: {params!r}") from e

    def config_to_json(self, config: Hashable) -> int:
        return self._index[config]

    def config_from_json(self, value) -> Hashable:
        return self.configs[int(value)]


__all__ = ["RecordedSpace"]
