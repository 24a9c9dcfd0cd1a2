"""A stacked transfer model: a GP of the target's residuals on top of the history's prediction.

Google Vizier's transfer learning stacks GPs: each new study's GP is fitted to the residuals of the previous one's
mean (Golovin et al., 2017). Here the "previous" model is the deep GP pre-trained on the history and never fitted to
the target (the zero-shot model), with one difference that makes the stack safe when the history misleads: its mean
enters scaled by a slope fitted on the target's own results,

    y(x) ~ a * mu_0(x) + b + f(x),   f ~ DGP fitted on the residuals y - a mu_0 - b,   a >= 0,

so a history that ranks the target well lends its shape (a > 0, the residuals are smaller and smoother than the data),
and one that does not drops out (a = 0: the member is the cold model). The uncertainty is the residual model's alone.

The stack quacks like a :class:`~raydgp.dgp.model.DeepGPSurrogate` where the search and
:class:`~raydgp.dgp.botorch_model.DGPModel` use one: ``sample_moments``, ``predict``, calling it on a batch
(``q > 1`` posteriors), ``likelihood``, ``settings``, ``eval``. No Ray or TVM here.
"""

from __future__ import annotations

import torch
from gpytorch.distributions import MultivariateNormal

from raydgp.dgp.model import DeepGPSurrogate

#: Samples through the base model's hidden layers for its (averaged, seeded) mean.
BASE_SAMPLES = 4


@torch.no_grad()
def base_mean(base: DeepGPSurrogate, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The base model's predictive mean at ``x`` (``n x d``), averaged over ``BASE_SAMPLES`` seeded samples (``n``)."""
    mean, _ = base.predict(x, seed=seed, num_samples=BASE_SAMPLES)
    return mean.mean(0)


def fit_slope(mu0: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Least-squares ``(a, b)`` of ``y ~ a mu0 + b`` with ``a >= 0`` (``a = 0``, ``b = mean(y)`` where the base's
    prediction does not rise with the target, or is constant).

    Args:
        mu0: ``n`` base predictions; y: ``n`` targets (larger is better).
    """
    mu0, y = mu0.double(), y.double()
    if mu0.numel() < 2:
        return 0.0, float(y.mean()) if y.numel() else 0.0
    dm = mu0 - mu0.mean()
    var = float((dm * dm).sum())
    a = float((dm * (y - y.mean())).sum()) / var if var > 1e-12 else 0.0
    a = max(a, 0.0)
    return a, float(y.mean() - a * mu0.mean())


class StackedSurrogate(torch.nn.Module):
    """``a * mu_0(x) + b + residual(x)``: the residual deep GP stacked on the base model's scaled mean.

    Args:
        residual: the deep GP fitted on the target's residuals (normalised inputs, as the base's).
        base: the base (pre-trained, zero-shot) deep GP; only its mean is used.
        a: slope on the base mean (>= 0); b: offset.
        seed: seed of the base mean's sampling (a fixed function of ``x`` for one stack).
    """

    def __init__(self, residual: DeepGPSurrogate, base: DeepGPSurrogate, a: float, b: float, seed: int = 0):
        super().__init__()
        self.residual = residual
        self.base = base
        self.a, self.b, self.seed = float(a), float(b), int(seed)

    @property
    def settings(self):
        return self.residual.settings

    @property
    def likelihood(self):
        return self.residual.likelihood

    def shift(self, x: torch.Tensor) -> torch.Tensor:
        """``a * mu_0(x) + b`` at ``x`` (``n x d``; ``n``)."""
        if self.a == 0.0:
            return torch.full(x.shape[:1], self.b, dtype=x.dtype)
        return self.a * base_mean(self.base, x, self.seed).to(x.dtype) + self.b

    @torch.no_grad()
    def sample_moments(self, x: torch.Tensor, num_samples: int, generator: torch.Generator
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`DeepGPSurrogate.sample_moments`: ``(mean, var)``, each ``num_samples x n``."""
        mean, var = self.residual.sample_moments(x, num_samples, generator)
        return mean + self.shift(x), var

    @torch.no_grad()
    def predict(self, x: torch.Tensor, seed: int = 0, num_samples: int | None = None,
                observation_noise: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`DeepGPSurrogate.predict`: per-sample ``(mean, var)``, each ``S x n``."""
        mean, var = self.residual.predict(x, seed=seed, num_samples=num_samples, observation_noise=observation_noise)
        return mean + self.shift(x), var

    def forward(self, x: torch.Tensor) -> MultivariateNormal:
        """The residual model's output distribution on a batch ``B x q x d``, its mean shifted (``S x B x q``)."""
        out = self.residual(x)
        sh = self.shift(x.reshape(-1, x.shape[-1])).reshape(x.shape[:-1])
        return MultivariateNormal(out.mean + sh, out.lazy_covariance_matrix)

    def eval(self):
        self.residual.eval()
        self.base.eval()
        return super().eval()
