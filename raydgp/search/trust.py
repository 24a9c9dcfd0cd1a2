"""How far to trust the history: a prequential ranking test of the transferred model against the cold one.

Transfer is a bet that the history resembles the target. When it does not (other hardware, unlike shapes), a model
pre-trained on it ranks the target's configurations worse than a model that has seen only the target, and a search that
follows it does worse than having no history at all. :class:`TrustTracker` keeps score from the target's own results:
every measured configuration is, once, a test point for each member model that has not been trained on it yet, and
the member scores the fraction of pairs (test point, any other measured point) it orders correctly. Each test point
counts as one Beta-Bernoulli observation of that fraction (pairs of one point are not independent, so they are not
counted one by one), and a member's weight is the posterior probability that it is the better ranker
(``P(acc_m = max)``, by seeded Monte Carlo draws, as RGPE's bootstrap of ranking losses does for its weights).

The search then scores candidates under the mixture of the members' posteriors: ``EI = sum_m w_m EI_m``. With a
history that ranks the target well, the transferred model keeps nearly all the weight; with one that misleads, the
weight moves to the cold model within a few results, and the search becomes the search without history.

Pure numpy: no torch, Ray or TVM here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Sequence

import numpy as np


def pair_accuracy(pred_test: float, pred_other: np.ndarray, y_test: float, y_other: np.ndarray,
                  weights: np.ndarray | None = None) -> float | None:
    """Fraction of pairs ``(test, other_j)`` whose order the predictions get right (ties in ``y`` skipped).

    Args:
        pred_test: the model's prediction at the test point; pred_other: ``k`` predictions at the other points.
        y_test: the observed value at the test point; y_other: ``k`` observed values (larger is better).
        weights: ``k`` non-negative pair weights (None: every pair counts the same).

    Returns:
        The (weighted) fraction in [0, 1] (a tied prediction counts half), or None when no pair has distinct values.
    """
    dy = np.sign(y_test - np.asarray(y_other, dtype=float))
    use = dy != 0
    if weights is not None:
        use &= np.asarray(weights, dtype=float) > 0
    if not use.any():
        return None
    dp = np.sign(pred_test - np.asarray(pred_other, dtype=float))[use]
    agree = (dp == dy[use]).astype(float) + 0.5 * (dp == 0)
    if weights is None:
        return float(agree.mean())
    w = np.asarray(weights, dtype=float)[use]
    return float((w * agree).sum() / w.sum())


#: ``pairs="top"``: the fraction of the compared points whose pairs count, and the least number of them.
TOP_FRACTION = 0.25
TOP_MIN = 3


def top_pair_weights(y: np.ndarray, i: int, fraction: float = TOP_FRACTION, least: int = TOP_MIN) -> np.ndarray:
    """Which pairs ``(i, j)``, ``j != i``, count when only the fast configurations matter: those whose better point is
    among the best ``max(least, ceil(fraction * n))`` of ``y`` (1.0; the others 0.0).

    Search needs a model that tells the fast configurations from the rest and orders them, not one that tells a poor
    configuration from a worse one. A history that knows which schedules are slow on any CPU orders most pairs of a new
    layer right, yet can lead the search to the wrong region among the fast ones (seen live on a conv no history holds:
    the transferred models ranked 74% of all pairs right, the cold model 69%, and the search with history stalled 18%
    above the one without). Weighing pairs by rank (weighted Kendall tau's hyperbolic weights) is not enough: with a
    few dozen points the many pairs of poor ones still outweigh the few among the best.

    Args:
        y: ``n`` observed values (larger is better); i: the test point's index.

    Returns:
        ``n - 1`` weights, in the order of ``y`` without ``i``.
    """
    y = np.asarray(y, dtype=float)
    n = len(y)
    rank = np.empty(n)
    rank[np.argsort(-y, kind="stable")] = np.arange(n)
    k = max(least, int(np.ceil(fraction * n)))
    others = np.arange(n) != i
    better = np.minimum(rank[i], rank[others])
    return (better < k).astype(float)


@dataclass
class TrustTracker:
    """Prequential ranking accuracy of the member models, and the weights that follow from it.

    Attributes:
        members: member names, e.g. ``("transfer", "cold")``.
        prior: Beta pseudo-counts ``(correct, wrong)`` each member starts with.
        draws: Monte Carlo draws per weight computation.
        pairs: ``all``: every pair counts the same; ``top``: only pairs whose better point is among the best quarter
            of the compared ones (:func:`top_pair_weights`).
        scores: per member, the accuracy of each point it was tested on (in order).
    """

    members: tuple[str, ...]
    prior: tuple[float, float] = (1.0, 1.0)
    draws: int = 4096
    pairs: str = "all"
    scores: dict[str, list[float]] = field(default_factory=dict)
    tested: dict[str, set] = field(default_factory=dict)

    def __post_init__(self):
        for m in self.members:
            self.scores.setdefault(m, [])
            self.tested.setdefault(m, set())

    def untested(self, member: str, configs: Sequence[Hashable]) -> list[int]:
        """Indices of ``configs`` that ``member`` has not been tested on yet."""
        done = self.tested[member]
        return [i for i, c in enumerate(configs) if c not in done]

    def record(self, member: str, configs: Sequence[Hashable], test: Sequence[int], pred: np.ndarray,
               y: np.ndarray) -> int:
        """Score ``member`` on the points ``test`` (indices into ``configs``), which it was not trained on.

        Args:
            configs: every measured configuration that is compared (``n``).
            test: the indices the member has not seen in training.
            pred: ``n`` member predictions (larger is better), y: ``n`` observed values (larger is better).

        Returns:
            How many points were scored.
        """
        pred, y = np.asarray(pred, dtype=float), np.asarray(y, dtype=float)
        k = 0
        for i in test:
            c = configs[i]
            if c in self.tested[member]:
                continue
            others = np.arange(len(y)) != i
            w = top_pair_weights(y, i) if self.pairs == "top" else None
            acc = pair_accuracy(pred[i], pred[others], y[i], y[others], w)
            if acc is None:
                continue
            self.tested[member].add(c)
            self.scores[member].append(acc)
            k += 1
        return k

    def posterior(self, member: str) -> tuple[float, float]:
        """The Beta posterior ``(a, b)`` of ``member``'s ranking accuracy."""
        s = np.asarray(self.scores[member], dtype=float)
        return self.prior[0] + float(s.sum()), self.prior[1] + float((1.0 - s).sum())

    def weights(self, seed: int = 0, group: tuple[str, ...] = ()) -> dict[str, float]:
        """``P(member is the best ranker)`` for every member (seeded; sums to 1).

        ``group``: members that are versions of one model (the transferred model fine-tuned and zero-shot). The group
        competes with the other members as one, through its member with the best mean accuracy, so that two versions
        of a misleading history do not dilute the others' weight; the group's weight is then shared among its
        members by ``P(best within the group)``.
        """
        rng = np.random.default_rng(seed)
        draws = {m: rng.beta(*self.posterior(m), size=self.draws) for m in self.members}
        group = tuple(m for m in group if m in draws)
        if len(group) < 2:
            return self._p_best(draws, self.members)
        lead = max(group, key=lambda m: self.posterior(m)[0] / sum(self.posterior(m)))
        outer = self._p_best(draws, [lead] + [m for m in self.members if m not in group])
        inner = self._p_best(draws, group)
        return {m: outer[lead] * inner[m] if m in group else outer[m] for m in self.members}

    @staticmethod
    def _p_best(draws: dict, members) -> dict[str, float]:
        best = np.argmax(np.stack([draws[m] for m in members]), axis=0)
        return {m: float(np.mean(best == i)) for i, m in enumerate(members)}

    def summary(self, seed: int = 0, group: tuple[str, ...] = ()) -> dict:
        """Weights, mean accuracies and test counts, for logs and stats (JSON-ready)."""
        w = self.weights(seed, group)
        out = {}
        for m in self.members:
            s = self.scores[m]
            out[m] = {"weight": round(w[m], 4), "accuracy": round(float(np.mean(s)), 4) if s else None,
                      "tested": len(s)}
        return out
