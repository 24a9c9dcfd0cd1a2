"""Candidate generation: a rolling pool of random configurations plus one-knob neighbours of the best so far.

The pool is kept encoded between proposals, so one proposal samples and encodes only ``pool_refresh * pool_size`` new
configurations (the oldest leave first; measured and pending ones leave at once).
"""

from __future__ import annotations

from typing import Callable, Hashable, Sequence

import numpy as np
import torch

from raydgp.space.base import SearchSpace


class CandidatePool:
    """Candidates of one space, encoded for the model.

    Args:
        space: the space the candidates come from.
        pool_size: random candidates kept.
        pool_refresh: fraction of the pool replaced by fresh samples at each call, in (0, 1].
        transform: raw encodings ``n x d`` -> model inputs ``n x d'`` (float32 tensor).
        rng: the generator every sample is drawn from (shared with the caller: one seeded stream).
    """

    def __init__(self, space: SearchSpace, pool_size: int, pool_refresh: float,
                 transform: Callable[[np.ndarray], torch.Tensor], rng: np.random.Generator):
        self.space = space
        self.pool_size = int(pool_size)
        self.pool_refresh = float(pool_refresh)
        self.transform = transform
        self.rng = rng
        self._configs: list = []  # oldest first
        self._X: torch.Tensor | None = None
        self._enc: dict[Hashable, np.ndarray] = {}  # encodings of measured / pending / neighbour configurations
        self._nbr: dict[Hashable, list] = {}

    def encode(self, configs: Sequence[Hashable]) -> np.ndarray:
        """Raw encodings ``len(configs) x d`` of configurations outside the pool (cached)."""
        missing = [c for c in configs if c not in self._enc]
        if missing:
            if len(self._enc) > 50_000:
                self._enc.clear()
            for c, row in zip(missing, self.space.encode_many(missing)):
                self._enc[c] = row
        if not configs:
            return self.space.encode_many([])
        return np.stack([self._enc[c] for c in configs])

    def neighbours(self, config: Hashable) -> list:
        if config not in self._nbr:
            self._nbr[config] = self.space.neighbours(config)
        return self._nbr[config]

    def random(self, exclude: set) -> tuple[list, torch.Tensor]:
        """The rolling pool minus ``exclude``, topped up with fresh samples: ``(configs, n x d' inputs)``."""
        n_fresh = self.pool_size if self._X is None else max(1, int(round(self.pool_size * self.pool_refresh)))
        keep = [i for i, c in enumerate(self._configs) if c not in exclude]
        keep = keep[max(0, len(keep) + n_fresh - self.pool_size):]  # the oldest make room
        n_fresh = self.pool_size - len(keep)
        kept = [self._configs[i] for i in keep]
        fresh = self.space.sample_many(n_fresh, self.rng, exclude=exclude | set(kept)) if n_fresh else []
        Xf = self.transform(self.space.encode_many(fresh)) if fresh else None
        parts = [t for t in (self._X[keep] if keep else None, Xf) if t is not None]
        self._configs = kept + fresh
        if parts:
            self._X = torch.cat(parts)
        else:
            self._X = self.transform(self.space.encode_many([])) if self._X is None else self._X[:0]
        return self._configs, self._X

    def with_neighbours(self, exclude: set, best: Sequence[Hashable]) -> tuple[list, torch.Tensor]:
        """The random pool plus the unmeasured neighbours of ``best`` (the best configurations so far)."""
        pool, X = self.random(exclude)
        seen = set(pool)
        extra = []
        for c in best:
            for n in self.neighbours(c):
                if n not in exclude and n not in seen:
                    seen.add(n)
                    extra.append(n)
        if extra:
            return pool + extra, torch.cat([X, self.transform(self.encode(extra))])
        return list(pool), X
