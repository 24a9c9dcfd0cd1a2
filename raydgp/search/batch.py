"""Batch proposals: a greedy *Kriging-believer* batch under the DGP's mixture posterior (no Ray, no TVM here).

To propose ``q`` configurations at once while ``p`` trials are still running, the candidates' joint posterior with the
pending points is taken once per mixture member (each DGP sample through the hidden layers is a Gaussian; see
:mod:`raydgp.dgp.botorch_model`); every pending point and every chosen candidate is then *believed*: conditioned on as
if observed at its posterior mean (the means stay, the variances near it shrink, the incumbent rises to the believed
value where that is higher). The next pick maximises the mixture's expected improvement under the conditioned
posterior, so a batch spreads over the promising region instead of piling onto one optimum, and stays away from what is
being measured already. One joint posterior (``(p + K)^2`` per mixture component) and ``q`` rank-one updates: a batch
of 64 over 256 candidates costs tens of milliseconds.

Reference: Ginsbourger, Le Riche, Carraro, "Kriging is well-suited to parallelize optimization" (2010).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from botorch.acquisition.analytic import _log_ei_helper


def _joint(model, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mean ``S x n``, covariance ``S x n x n`` (float64) of a BoTorch DGP model at ``X`` (``n x d``), and its noise."""
    post = model.posterior(X.unsqueeze(0))
    mvn = post.distribution
    mean = mvn.mean.reshape(-1, X.shape[0]).double()
    cov = mvn.covariance_matrix.reshape(-1, X.shape[0], X.shape[0]).double()
    noise = float(model.dgp.likelihood.noise.detach().mean())
    return mean, cov, noise


def believer_batch(members: Sequence[tuple[object, float]], X: torch.Tensor, best_f: float, q: int,
                   pending: torch.Tensor | None = None, log_prior: torch.Tensor | None = None) -> list[int]:
    """Greedy batch of ``q`` candidates (indices into ``X``) under the believer-conditioned mixture posterior.

    Args:
        members: ``(BoTorch DGP model, weight)`` pairs; the acquisition is the weighted mixture's EI.
        X: ``K x d`` candidate inputs (normalised), typically the top of the pool by analytic LogEI.
        best_f: the best (largest) standardised target observed.
        q: how many to pick (at most ``K``).
        pending: ``p x d`` inputs being measured now (believed before the first pick), or None.
        log_prior: ``K`` values added to every pick's log-acquisition (e.g. the failure model's ``log P(ok)``).

    Returns:
        ``min(q, K)`` distinct indices, in the order picked.
    """
    K = X.shape[0]
    q = min(int(q), K)
    if q <= 0:
        return []
    P = pending if pending is not None and len(pending) else None
    Z = torch.cat([P, X]) if P is not None else X
    p = 0 if P is None else P.shape[0]
    states = []
    for model, w in members:
        mean, cov, noise = _joint(model, Z)
        fbest = torch.full((mean.shape[0],), float(best_f), dtype=torch.float64)
        states.append([mean, cov, noise, fbest, math.log(w) - math.log(mean.shape[0])])
    for j in range(p):  # the running trials, believed
        for st in states:
            _condition(st, j)
    prior = log_prior.double() if log_prior is not None else torch.zeros(K, dtype=torch.float64)
    chosen: list[int] = []
    taken = torch.zeros(K, dtype=torch.bool)
    for _ in range(q):
        parts = []
        for mean, cov, _, fbest, logw in states:
            mu = mean[:, p:]
            sd = torch.diagonal(cov, dim1=-2, dim2=-1)[:, p:].clamp_min(1e-12).sqrt()
            u = (mu - fbest[:, None]) / sd
            parts.append(logw + _log_ei_helper(u) + sd.log())  # S x K
        score = torch.logsumexp(torch.cat(parts), dim=0) + prior
        score = torch.where(taken, torch.full_like(score, -math.inf), score)
        k = int(torch.argmax(score))
        chosen.append(k)
        taken[k] = True
        for st in states:
            _condition(st, p + k)
    return chosen


def thompson_batch(members: Sequence[tuple[object, float]], X: torch.Tensor, q: int,
                   log_prior: torch.Tensor | None = None, seed: int = 0) -> list[int]:
    """Batch of ``q`` candidates (indices into ``X``) by Thompson sampling under the DGP mixture.

    Each pick draws a member by its weight, one of its mixture components, and one joint sample of the candidates'
    values from that component's posterior, and takes the sample's best candidate; the pick is then believed at its
    mean (rank-one update, as in :func:`believer_batch`) so that the batch's later samples vary less there. The
    running trials are not believed: a Thompson sample needs no account of them to stay diverse (Kandasamy et al.,
    "Parallelised Bayesian optimisation via Thompson sampling", AISTATS 2018), and they are kept out of ``X`` by the
    caller. Run wide, believing every running trial at its mean removes the variance, hence the EI, around each of
    them, and the believer's picks are pushed away from where the posterior's mass is: on the emulated 64-wide
    benchmark (BENCHMARKS.md section 8) the believer reached a median regret of 0.378 after 256 trials over six seeds
    and these picks 0.246.

    Args:
        members: ``(BoTorch DGP model, weight)`` pairs (weights need not sum to 1).
        X: ``K x d`` candidate inputs (normalised), typically the top of the pool by analytic LogEI.
        q: how many to pick (at most ``K``).
        log_prior: ``K`` log-probabilities that a candidate is not failing (the failure model): candidates below
            ``log 0.5`` are picked only when no other is left.
        seed: the draws' seed.

    Returns:
        ``min(q, K)`` distinct indices, in the order picked.
    """
    K = X.shape[0]
    q = min(int(q), K)
    if q <= 0:
        return []
    gen = torch.Generator().manual_seed(int(seed))
    states, weights = [], []
    for model, w in members:
        mean, cov, noise = _joint(model, X)
        states.append([mean, cov, noise, torch.zeros(mean.shape[0], dtype=torch.float64), 0.0])
        weights.append(float(w))
    bad = (log_prior.double() < math.log(0.5)) if log_prior is not None else torch.zeros(K, dtype=torch.bool)
    wts = torch.tensor(weights, dtype=torch.float64)
    chosen: list[int] = []
    taken = torch.zeros(K, dtype=torch.bool)
    eye = torch.eye(K, dtype=torch.float64)
    for _ in range(q):
        m = int(torch.multinomial(wts, 1, generator=gen)) if len(states) > 1 else 0
        mean, cov = states[m][0], states[m][1]
        s = int(torch.randint(mean.shape[0], (1,), generator=gen))
        mu, C = mean[s], 0.5 * (cov[s] + cov[s].T)
        jitter = 1e-9 * float(torch.diagonal(C).abs().mean().clamp_min(1e-12))
        L = None
        for _try in range(6):
            L, info = torch.linalg.cholesky_ex(C + jitter * eye)
            if int(info) == 0:
                break
            L, jitter = None, jitter * 10
        z = torch.randn(K, dtype=torch.float64, generator=gen)
        f = mu + (L @ z if L is not None else torch.diagonal(C).clamp_min(0).sqrt() * z)  # marginal if no factor
        blocked = taken | bad if bool((~(taken | bad)).any()) else taken
        f = torch.where(blocked, torch.full_like(f, -math.inf), f)
        k = int(torch.argmax(f))
        chosen.append(k)
        taken[k] = True
        for st in states:
            _condition(st, k)
    return chosen


def _condition(state: list, j: int) -> None:
    """Believe point ``j``: a noisy observation at its mean (rank-one covariance update; incumbent raised)."""
    mean, cov, noise, fbest, _ = state
    c = cov[:, :, j]  # S x n
    denom = (cov[:, j, j] + noise).clamp_min(1e-12)
    cov -= c[:, :, None] * c[:, None, :] / denom[:, None, None]
    state[3] = torch.maximum(fbest, mean[:, j])


__all__ = ["believer_batch", "thompson_batch"]
