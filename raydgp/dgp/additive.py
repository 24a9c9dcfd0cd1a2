"""An additive GP member: one kernel per parameter, summed (Duvenaud et al., 2011; Kandasamy et al., 2015).

The deep GP's kernels see all inputs at once. On an ordinary hyper-parameter space with a categorical parameter
(one-hot columns) that is a weakness when data is scarce: the few results of a category lie far from the incumbent in
its other parameters, so the model cannot tell the category's effect from theirs, predicts the incumbent's other
categories from those distant results and never tries them (a search stuck on the wrong activation function while it
polishes the learning rate). A GP whose kernel is a sum of one kernel per parameter assumes the effects add: what a
category did anywhere moves its prediction everywhere. Where that holds the additive member ranks the target's
results better and the search's trust (:mod:`raydgp.search.trust`) moves weight to it; where it does not (strong
interactions) the weight stays with the deep GP.

The surrogate quacks like a :class:`~raydgp.dgp.model.DeepGPSurrogate` where the search and
:class:`~raydgp.dgp.botorch_model.DGPModel` use one (``sample_moments``, ``predict``, calling it on a batch,
``likelihood``, ``settings``, ``eval``), with one mixture component: an exact GP has no samples through hidden layers.
No Ray or TVM here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from gpytorch.distributions import MultivariateNormal
from linear_operator.operators import DenseLinearOperator


#: L-BFGS iterations of a fit. Every refit starts afresh from BoTorch's default hyper-parameters: a fit warm-started
#: from the previous one kept the length scales an early, misleading handful of results had set (4 of 10 seeds of a
#: mixed space stuck on the wrong category, against 1 of 10 fresh); 100 iterations cost about 0.3 s at 40 points on
#: two cores and found nearly the same optima as an uncapped fit (median regret 0.0021 vs 0.0013 over 10 seeds).
FIT_STEPS = 100

#: The most results a fit uses: an exact GP's fit grows as n^3 (one thread, 6 groups: 2 s at 300 points, 9.4 s at
#: 600), and the member is refitted on every result. Past it the fit keeps the best half and the most recent half
#: (:func:`fit_subset`).
MAX_POINTS = 300


def fit_subset(y: Sequence[float] | torch.Tensor, limit: int = MAX_POINTS) -> list[int]:
    """Indices of the results a fit uses: all of them up to ``limit``; past it the ``limit // 2`` best (largest
    ``y``) and the most recent of the rest, ``limit`` in all, in their original order.

    Args:
        y: ``n`` standardised targets in observation order (larger is better).
        limit: the most indices returned.
    """
    n = len(y)
    if n <= limit:
        return list(range(n))
    yt = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
    keep = set(torch.topk(yt, limit // 2).indices.tolist())
    for i in range(n - 1, -1, -1):
        if len(keep) >= limit:
            break
        keep.add(i)
    return sorted(keep)


@dataclass(frozen=True)
class _OneComponent:
    """The ``settings`` the DGP model wrapper reads: one mixture component."""

    num_samples: int = 1


def kept_groups(groups: Sequence[Sequence[int]], keep) -> list[tuple[int, ...]]:
    """Column groups of the raw encoding mapped to the model inputs (columns dropped by the input scaler removed).

    Args:
        groups: per parameter, its columns in the raw encoding.
        keep: boolean mask of the raw columns the model sees (None: all).

    Returns:
        Per parameter that still has a column, its columns among the model inputs.
    """
    if keep is None:
        return [tuple(int(c) for c in g) for g in groups if len(g)]
    pos, j = {}, 0
    for i, k in enumerate(keep):
        if k:
            pos[i] = j
            j += 1
    out = [tuple(pos[c] for c in g if c in pos) for g in groups]
    return [g for g in out if g]


class AdditiveSurrogate(torch.nn.Module):
    """An exact GP with the kernel ``sum_g ScaleKernel(Matern-5/2 on the columns of group g)``, fitted by BoTorch.

    Args:
        X: ``n x d`` normalised inputs; y: ``n`` standardised targets (larger is better).
        groups: per parameter, its input columns (indices into ``d``); every column belongs to at most one group.
        seed: seed of the hyper-parameter fit's random restarts.
        steps: L-BFGS iterations of the marginal-likelihood fit (:data:`FIT_STEPS`).
    """

    def __init__(self, X: torch.Tensor, y: torch.Tensor, groups: Sequence[Sequence[int]], seed: int = 0,
                 steps: int = FIT_STEPS):
        super().__init__()
        from botorch.fit import fit_gpytorch_mll
        from botorch.models import SingleTaskGP
        from gpytorch.kernels import AdditiveKernel, MaternKernel, ScaleKernel
        from gpytorch.mlls import ExactMarginalLogLikelihood

        groups = [tuple(int(c) for c in g) for g in groups if len(g)]
        if not groups:
            raise ValueError("an additive GP needs at least one column group")
        Xd = X.detach().to(torch.float64)
        yd = y.detach().to(torch.float64).reshape(-1, 1)
        kernel = AdditiveKernel(*[ScaleKernel(MaternKernel(nu=2.5, ard_num_dims=len(g), active_dims=g))
                                  for g in groups])
        gp = SingleTaskGP(Xd, yd, covar_module=kernel, outcome_transform=None)
        self.groups = groups
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)  # CPU only: torch.manual_seed formats a stack per device kind
            fit_gpytorch_mll(ExactMarginalLogLikelihood(gp.likelihood, gp),
                             optimizer_kwargs={"options": {"maxiter": int(steps)}})
        gp.eval()
        # kept out of the module tree: BoTorch's acquisition functions cast their model to the candidates' dtype
        # (float32), and the exact GP's algebra stays in float64
        self._box = (gp,)

    @property
    def gp(self):
        """The fitted BoTorch ``SingleTaskGP`` (float64)."""
        return self._box[0]

    settings = _OneComponent()

    @property
    def likelihood(self):
        return self.gp.likelihood

    @torch.no_grad()
    def _moments(self, x: torch.Tensor, observation_noise: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        post = self.gp.posterior(x.to(torch.float64), observation_noise=observation_noise)
        return (post.mean.reshape(-1).to(torch.float32),
                post.variance.reshape(-1).clamp_min(1e-9).to(torch.float32))

    def sample_moments(self, x: torch.Tensor, num_samples: int, generator: torch.Generator
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`DeepGPSurrogate.sample_moments`: ``(mean, var)``, each ``num_samples x n`` (rows equal)."""
        mean, var = self._moments(x)
        return mean.expand(num_samples, -1), var.expand(num_samples, -1)

    def predict(self, x: torch.Tensor, seed: int = 0, num_samples: int | None = None,
                observation_noise: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`DeepGPSurrogate.predict`: ``(mean, var)``, each ``S x n`` (``S`` = ``num_samples`` or 1)."""
        mean, var = self._moments(x, observation_noise)
        S = num_samples or 1
        return mean.expand(S, -1), var.expand(S, -1)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> MultivariateNormal:
        """The joint posterior on a batch ``B x q x d`` as one component: mean ``1 x B x q``, covariance
        ``1 x B x q x q``."""
        mvn = self.gp.posterior(x.to(torch.float64)).distribution
        mean = mvn.mean.reshape(1, *x.shape[:-1]).to(torch.float32)
        cov = mvn.covariance_matrix.reshape(1, *x.shape[:-1], x.shape[-2]).to(torch.float32)
        return MultivariateNormal(mean, DenseLinearOperator(cov))  # lazy: no Cholesky of a near-singular matrix

    def eval(self):
        self.gp.eval()
        return super().eval()
