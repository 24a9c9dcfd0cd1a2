"""An ordinary hyper-parameter space (the kind Ray Tune users write) as a search space for the DGP search.

Pure Python, no Ray: :func:`raydgp.raytune.dgp_searcher.convert_search_space` turns ``tune.choice`` / ``randint`` /
``qrandint`` / ``uniform`` / ``loguniform`` (nested dicts too) into :class:`Dim` objects. A configuration is a tuple of
values in dimension order; :meth:`ParamSpace.to_dict` rebuilds the nested dict.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from raydgp.errors import SearchSpaceError
from raydgp.space.base import SearchSpace
from raydgp.space.design_space import sample_distinct


@dataclass(frozen=True)
class Dim:
    """One dimension.

    Attributes:
        path: keys from the top of the (nested) config dict down to this value.
        kind: ``choice``, ``int`` or ``float``.
        values: the categories (choice).
        low, high: bounds; ``int`` includes ``high`` only if ``q`` divides the range as Ray's qrandint does.
        q: quantisation step (int: 1 for randint).
        log: sample and encode in log space.
    """

    path: tuple
    kind: str
    values: tuple = ()
    low: float = 0.0
    high: float = 1.0
    q: float = 0.0
    log: bool = False

    def grid(self) -> list | None:
        """Every value (finite dims), else None."""
        if self.kind == "choice":
            return list(self.values)
        if self.kind == "int":
            step = int(self.q or 1)
            return list(range(int(self.low), int(self.high), step))
        return None

    def sample(self, rng: np.random.Generator) -> Any:
        if self.kind == "choice":
            return self.values[int(rng.integers(len(self.values)))]
        if self.kind == "int":
            g = self.grid()
            return g[int(rng.integers(len(g)))]
        if self.log:
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return float(rng.uniform(self.low, self.high))

    def encode(self, v: Any) -> list[float]:
        if self.kind == "choice":
            return [1.0 if _same(v, c) else 0.0 for c in self.values]
        lo, hi, x = float(self.low), float(self.high), float(v)
        if self.log:
            lo, hi, x = math.log(lo), math.log(hi), math.log(x)
        return [(x - lo) / (hi - lo) if hi > lo else 0.0]

    def moves(self, v: Any, rng: np.random.Generator) -> list:
        if self.kind == "choice":
            return [c for c in self.values if not _same(c, v)]
        if self.kind == "int":
            g = self.grid()
            i = g.index(v) if v in g else 0
            return [g[j] for j in (i - 1, i + 1) if 0 <= j < len(g)]
        out = []
        for _ in range(4):
            if self.log:
                x = math.exp(math.log(v) + rng.normal(0, 0.1) * (math.log(self.high) - math.log(self.low)))
            else:
                x = v + rng.normal(0, 0.1) * (self.high - self.low)
            out.append(float(min(max(x, self.low), self.high)))
        return out

    @property
    def width(self) -> int:
        return len(self.values) if self.kind == "choice" else 1


def _same(a, b) -> bool:
    return type(a) is type(b) and a == b


class ParamSpace(SearchSpace):
    """A product of :class:`Dim` objects with the search-space interface of the DGP search."""

    def __init__(self, dims: Sequence[Dim], constants: dict | None = None):
        if not dims:
            raise SearchSpaceError("the param space has no searchable dimension")
        self.dims = tuple(dims)
        self.constants = dict(constants or {})  # path -> fixed value, passed through unchanged

    @property
    def size(self) -> float:
        total = 1
        for d in self.dims:
            g = d.grid()
            if g is None:
                return math.inf
            total *= max(1, len(g))
        return total

    @property
    def dim(self) -> int:
        return sum(d.width for d in self.dims)

    @property
    def column_groups(self) -> tuple[tuple[int, ...], ...]:
        """Per dimension, its columns in :meth:`encode` (a choice's one-hot spans several; the additive member of
        the search, :mod:`raydgp.dgp.additive`, gives each group its own kernel)."""
        out, j = [], 0
        for d in self.dims:
            out.append(tuple(range(j, j + d.width)))
            j += d.width
        return tuple(out)

    def sample(self, rng: np.random.Generator) -> tuple:
        return tuple(d.sample(rng) for d in self.dims)

    def sample_many(self, n: int, rng: np.random.Generator, exclude: set | None = None,
                    max_tries: int | None = None) -> list[tuple]:
        return sample_distinct(self.sample, n, rng, exclude, max_tries)

    def neighbours(self, config: tuple, rng: np.random.Generator | None = None) -> list[tuple]:
        # seeded by the configuration itself, stably: ``hash()`` of a str differs between processes (PYTHONHASHSEED)
        rng = rng or np.random.default_rng(zlib.crc32(repr(config).encode()))
        out = []
        for i, (d, v) in enumerate(zip(self.dims, config)):
            for nv in d.moves(v, rng):
                c = list(config)
                c[i] = nv
                out.append(tuple(c))
        return out

    def mutate(self, config: tuple, rng: np.random.Generator) -> tuple:
        """One dimension moved (a neighbouring value, drawn from ``rng``)."""
        nb = self.neighbours(config, rng)
        return nb[int(rng.integers(len(nb)))] if nb else config

    def crossover(self, a: tuple, b: tuple, rng: np.random.Generator) -> tuple:
        """Each dimension's value from ``a`` or ``b``."""
        pick = rng.random(len(a)) < 0.5
        return tuple(x if p else y for x, y, p in zip(a, b, pick))

    def is_valid(self, config: tuple) -> bool:
        return isinstance(config, tuple) and len(config) == len(self.dims)

    def encode(self, config: tuple) -> np.ndarray:
        return np.array([x for d, v in zip(self.dims, config) for x in d.encode(v)], dtype=np.float64)

    def encode_many(self, configs: Sequence[tuple]) -> np.ndarray:
        if not configs:
            return np.zeros((0, self.dim))
        return np.stack([self.encode(c) for c in configs])

    def to_dict(self, config: tuple) -> dict:
        out: dict = {}
        for path, v in list(self.constants.items()) + [(d.path, v) for d, v in zip(self.dims, config)]:
            node = out
            for k in path[:-1]:
                node = node.setdefault(k, {})
            node[path[-1]] = v
        return out

    to_params = to_dict

    def config_to_json(self, config: tuple) -> list:
        return list(config)

    def config_from_json(self, value: list) -> tuple:
        return tuple(value)

    def from_dict(self, params: dict) -> tuple:
        """The configuration of a (nested or flat ``a/b``) parameter dict.

        Raises:
            SearchSpaceError: a dimension is missing.
        """
        vals = []
        for d in self.dims:
            node: Any = params
            flat = "/".join(str(k) for k in d.path)
            if flat in params:
                vals.append(params[flat])
                continue
            try:
                for k in d.path:
                    node = node[k]
            except (KeyError, TypeError):
                raise SearchSpaceError(f"parameter {flat!r} is missing from {params!r}") from None
            vals.append(node)
        return tuple(_plain(v) for v in vals)

    from_params = from_dict


def _plain(v):
    if isinstance(v, np.generic):
        return v.item()
    return v
