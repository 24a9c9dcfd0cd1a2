"""Proposals that search: an evolutionary search over the surrogate, and a model of which configurations fail.

:func:`evolve` is the search MetaSchedule's ``EvolutionarySearch`` runs with its cost model, here with the DGP's
acquisition as the score: start from the best measured and the best predicted configurations, then for a few
generations breed children by crossover (each knob from one of two parents of the same sketch) and mutation (one knob
moved, :meth:`~raydgp.space.base.SearchSpace.mutate`), score them, and keep the best as the next parents. It returns
distinct, valid configurations that are neither measured nor pending, best first.

:class:`FailureModel` learns from the target's own failures (invalid, build error, run error, timeout, wrong result)
which configurations are likely to fail, as BaCO does for unknown constraints: a distance-weighted nearest-neighbour
estimate of the failure probability on the model's inputs, shrunk towards the observed failure rate. Its
``log(1 - p_fail)`` is added to the log-acquisition, so a region that keeps failing stops being proposed.
"""

from __future__ import annotations

from typing import Callable, Hashable, Sequence

import numpy as np
import torch

from raydgp.space.base import SearchSpace


def evolve(space: SearchSpace, score: Callable[[list], np.ndarray], parents: Sequence[Hashable], exclude: set,
           rng: np.random.Generator, generations: int = 3, population: int = 64, p_crossover: float = 0.5,
           keep: int | None = None) -> tuple[list, np.ndarray]:
    """Evolve configurations under a score (larger is better).

    Args:
        space: the space (its ``mutate``, ``crossover`` and ``is_valid``).
        score: ``score(configs) -> (len(configs),)`` array; called once per generation on the new children.
        parents: the first generation (measured best and predicted best; measured ones breed but are never returned).
        exclude: measured, pending and invalid configurations: never returned.
        rng: the search's generator.
        generations: breeding rounds.
        population: children bred per generation.
        p_crossover: probability that a child is a crossover of two parents (then also mutated half of the time);
            otherwise it is a mutation of one parent.
        keep: how many of the best children are returned (None: ``population``).

    Returns:
        ``(configs, scores)``: distinct, valid, unexcluded children, best first.
    """
    parents = list(dict.fromkeys(parents))
    if not parents or generations <= 0:
        return [], np.zeros(0)
    keep = int(keep or population)
    found: dict[Hashable, float] = {}
    par_scores = np.zeros(len(parents))  # measured parents: neutral rank; they are replaced as children beat them
    for _ in range(int(generations)):
        children: list = []
        seen_gen: set = set()
        tries = 0
        while len(children) < population and tries < 8 * population:
            tries += 1
            a = parents[_tournament(par_scores, rng)]
            if len(parents) > 1 and rng.random() < p_crossover:
                b = parents[_tournament(par_scores, rng)]
                c = space.crossover(a, b, rng)
                if c is None:
                    c = space.mutate(a, rng)
                elif rng.random() < 0.5:
                    c = space.mutate(c, rng)
            else:
                c = space.mutate(a, rng)
            if c in exclude or c in found or c in seen_gen or not space.is_valid(c):
                continue
            seen_gen.add(c)
            children.append(c)
        if not children:
            break
        sc = np.asarray(score(children), dtype=np.float64)
        for c, v in zip(children, sc):
            found[c] = float(v)
        # next parents: the best of everything found so far (the measured parents drop out once beaten)
        ranked = sorted(found.items(), key=lambda t: -t[1])[: max(8, population // 4)]
        parents = [c for c, _ in ranked]
        par_scores = np.array([v for _, v in ranked])
    ranked = sorted(found.items(), key=lambda t: -t[1])[:keep]
    return [c for c, _ in ranked], np.array([v for _, v in ranked])


def _tournament(scores: np.ndarray, rng: np.random.Generator, k: int = 2) -> int:
    idx = rng.integers(len(scores), size=min(k, len(scores)))
    return int(idx[np.argmax(scores[idx])])


class FailureModel:
    """``P(fail | x)`` from the target's own outcomes (a distance-weighted k-NN, shrunk to the base rate).

    Args:
        k: neighbours consulted.
        min_failures: below this many observed failures the model is inactive (``log_ok`` is 0).
        prior_weight: pseudo-observations at the base failure rate mixed into every estimate.
    """

    def __init__(self, k: int = 7, min_failures: int = 3, prior_weight: float = 2.0):
        self.k = int(k)
        self.min_failures = int(min_failures)
        self.prior_weight = float(prior_weight)
        self._X: torch.Tensor | None = None
        self._f: torch.Tensor | None = None

    def fit(self, X: torch.Tensor, failed: np.ndarray) -> "FailureModel":
        """``X``: ``n x d`` model inputs of every measured configuration; ``failed``: ``(n,)`` booleans."""
        failed = np.asarray(failed, dtype=bool)
        if len(failed) == 0 or failed.sum() < self.min_failures or failed.all():
            self._X = self._f = None
            return self
        self._X = X.detach().to(torch.float32)
        self._f = torch.as_tensor(failed, dtype=torch.float32)
        return self

    @property
    def active(self) -> bool:
        return self._X is not None

    def p_fail(self, X: torch.Tensor) -> torch.Tensor:
        """Failure probabilities ``(n,)`` of model inputs ``X`` (``n x d``); zeros while inactive."""
        if self._X is None:
            return torch.zeros(len(X))
        d = torch.cdist(X.to(torch.float32), self._X)
        k = min(self.k, len(self._X))
        dist, idx = torch.topk(d, k, largest=False)
        w = 1.0 / (dist + 1e-3)
        base = float(self._f.mean())
        num = (w * self._f[idx]).sum(1) + self.prior_weight * base * w.mean(1)
        den = w.sum(1) + self.prior_weight * w.mean(1)
        return (num / den).clamp(0.0, 0.999)

    def log_ok(self, X: torch.Tensor) -> torch.Tensor:
        """``log(1 - p_fail)``, shape ``(n,)``: added to a log-acquisition."""
        return torch.log1p(-self.p_fail(X))
