"""The deep GP's training objective computed directly: GPyTorch's ELBO without its lazy operators.

:func:`neg_elbo` returns the same quantity as ``-DeepApproximateMLL(VariationalELBO(likelihood, model, num_data))``
applied to ``model(X)`` and ``y`` for a :class:`~raydgp.dgp.model.DeepGPSurrogate`: the expected Gaussian
log-likelihood per datum, averaged over samples propagated through the hidden layers, minus the KL divergence of every
layer's whitened ``q(u)`` from ``N(0, I)`` and plus the log-priors of the hyper-parameters, both over ``num_data``
(the likelihood's prior counted twice, as GPyTorch's MLL counts it).
It reads the same parameters (kernels, means, inducing points, ``q(u)``, noise, through GPyTorch's own constraints), so
a model trained with it is an ordinary GPyTorch model afterwards.

Why: the surrogate is refitted after every measurement, and on the small matrices of a search (tens of points, 64
inducing points, 8 hidden GPs) GPyTorch's training step is mostly the overhead of building and dispatching lazy
operators. The same arithmetic as a few dozen dense tensor operations took a transfer search's training time per late
proposal from 0.74 to 0.24 s on one core (BENCHMARKS.md section 3, "The ELBO computed directly").

One difference in how the expectation is estimated, not in what is estimated: GPyTorch samples the hidden layer's
output for the skip/output layer jointly over the ``n`` points (its full covariance), this module samples each point's
marginal (as GPyTorch itself does between hidden layers and as :meth:`DeepGPSurrogate.sample_moments` does in
prediction). The output layer's marginal at a point depends on that point's hidden value only, so both are unbiased
estimates of the same ELBO (tested against GPyTorch's value with many samples).

Pure torch: no Ray, no TVM.
"""

from __future__ import annotations

import math

import torch
from gpytorch.priors import LogNormalPrior
from linear_operator.utils.cholesky import psd_safe_cholesky

_SQRT5 = math.sqrt(5.0)
_LOG_2PI = math.log(2.0 * math.pi)


def matern52(x1: torch.Tensor, x2: torch.Tensor, lengthscale: torch.Tensor, outputscale: torch.Tensor
             ) -> torch.Tensor:
    """Scaled Matern-5/2 cross-covariance with autograd, ``... x n x m`` for ``... x n x d`` and ``... x m x d``.

    As GPyTorch's ``MaternKernel``: inputs centred on ``x1``'s mean before scaling (numerical stability of the
    expanded squared distance), squared distances clamped at 1e-30. (Prediction uses ``raydgp.dgp.model._matern52``,
    the same kernel built in place without autograd, for pools of thousands of candidates.)
    """
    mean = x1.reshape(-1, x1.shape[-1]).mean(0)
    a = (x1 - mean) / lengthscale
    b = (x2 - mean) / lengthscale
    d2 = a.pow(2).sum(-1, keepdim=True) + b.pow(2).sum(-1).unsqueeze(-2) - 2.0 * (a @ b.mT)
    d2 = d2.clamp_min(1e-30)
    r = d2.sqrt()
    k = (1.0 + _SQRT5 * r + (5.0 / 3.0) * d2) * torch.exp(-_SQRT5 * r)
    return k * outputscale[..., None, None]


def _init_q(vs) -> None:
    """GPyTorch's first-call initialisation of ``q(u)`` (to the whitened prior), if it has not happened yet."""
    if not bool(vs.variational_params_initialized.item()):
        vs._variational_distribution.initialize_variational_distribution(vs.prior_distribution)
        vs.variational_params_initialized.fill_(1)


def layer_moments(layer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Marginal mean and variance of every GP of ``layer`` at ``x``, with autograd, and the layer's KL term.

    GPyTorch's whitened ``VariationalStrategy`` in training mode: ``L L^T = K_zz + jitter`` (Cholesky in float64, as
    GPyTorch does), ``A = L^-1 K_zx``, mean ``mean(x) + A^T m``, variance ``k_xx + jitter - |A|^2 + |C^T A|^2`` with
    ``C`` the lower triangle of the variational Cholesky factor; KL of ``N(m, C C^T)`` from ``N(0, I)``.

    Args:
        layer: a :class:`~raydgp.dgp.model.DGPLayer` (``b`` GPs, or one).
        x: ``... x n x d`` inputs (broadcast over a hidden layer's ``b`` GPs).

    Returns:
        ``(mean, var, kl)``: ``... x b x n`` (hidden) or ``... x n`` (output), the same, and a scalar (summed over
        the layer's GPs).
    """
    vs = layer.variational_strategy
    _init_q(vs)
    Z = vs.inducing_points  # (b x) m x d
    kern = layer.covar_module
    ls, os = kern.base_kernel.lengthscale, kern.outputscale  # (b x) 1 x d, (b)
    if Z.dim() == 3:
        x = x.unsqueeze(-3)  # ... x 1 x n x d
    m = Z.shape[-2]
    jitter = vs.jitter_val
    Kzz = matern52(Z, Z, ls, os) + jitter * torch.eye(m, dtype=Z.dtype)
    # GPyTorch's psd_safe_cholesky, as its VariationalStrategy factors K_zz: where rounding (K_zz is formed in float32)
    # leaves it indefinite, e.g. inducing points started on near-duplicate configurations, it retries with jitter
    # instead of failing the fit
    L = psd_safe_cholesky(Kzz.double())
    Kzx = matern52(Z, x, ls, os)  # ... (x b) x m x n
    A = torch.linalg.solve_triangular(L, Kzx.double(), upper=False).to(x.dtype)
    vd = vs._variational_distribution
    mw = vd.variational_mean  # (b x) m
    C = vd.chol_variational_covar.tril()  # (b x) m x m
    mean = layer.mean_module(x) + (A * mw.unsqueeze(-1)).sum(-2)
    var = (os.unsqueeze(-1) + jitter) - A.pow(2).sum(-2) + (C.mT @ A).pow(2).sum(-2)
    # KL(N(m, S) || N(0, I)), S = C C^T: (tr S + m^T m - M - log|S|) / 2, per GP, summed
    diag = torch.diagonal(C, dim1=-2, dim2=-1)
    kl = 0.5 * (C.pow(2).sum((-2, -1)) + mw.pow(2).sum(-1) - m - 2.0 * diag.abs().log().sum(-1))
    return mean, var.clamp_min(1e-9), kl.sum()


def _log_prob(prior, x: torch.Tensor) -> torch.Tensor:
    """``prior.log_prob(x)``; a log-normal prior's in closed form (``torch.distributions``' generic transformed
    distribution, with argument validation, costs more than the rest of a layer here)."""
    if isinstance(prior, LogNormalPrior):
        base = prior.base_dist
        z = x.log()
        return -(z - base.loc).pow(2) / (2.0 * base.scale.pow(2)) - base.scale.log() - 0.5 * _LOG_2PI - z
    return prior.log_prob(x)


def neg_elbo(model, X: torch.Tensor, y: torch.Tensor, num_data: int, generator: torch.Generator) -> torch.Tensor:
    """``-ELBO / n - log prior / num_data`` of ``model`` on ``(X, y)``: what ``train_elbo`` minimises.

    Args:
        model: a :class:`~raydgp.dgp.model.DeepGPSurrogate` (in training mode; any parameters may require grad).
        X: ``n x d`` inputs (a minibatch); y: ``n`` standardised targets.
        num_data: the data size the KL and prior terms are scaled against (>= n).
        generator: the source of the hidden layers' sampling noise (the global RNG is untouched).

    Returns:
        A scalar with autograd.
    """
    S = model.settings.num_samples
    h = X
    kl = X.new_zeros(())
    for i, layer in enumerate(model.hidden):
        mu, var, k = layer_moments(layer, h)  # (S x) b x n
        kl = kl + k
        if i == 0:
            mu, var = mu.expand(S, *mu.shape), var.expand(S, *var.shape)
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype)
        h = (mu + var.sqrt() * eps).mT  # S x n x b
    if not len(model.hidden):
        h = X.expand(S, *X.shape)
    if model.skip:
        h = torch.cat([h, X.expand(h.shape[0], *X.shape)], dim=-1)
    mu, var, k = layer_moments(model.output, h)  # S x n
    kl = kl + k
    noise = model.likelihood.noise.reshape(())
    ell = -0.5 * (_LOG_2PI + noise.log()) - 0.5 * ((y - mu).pow(2) + var) / noise  # S x n
    log_prior = X.new_zeros(())
    # As GPyTorch's MLL sums them: the model's priors, and the likelihood's once more (the MLL holds the likelihood
    # both as its own and inside the model, and ``named_priors`` lists it under both names).
    for src in (model, model.likelihood):
        for _, module, prior, closure, _ in src.named_priors():
            log_prior = log_prior + _log_prob(prior, closure(module)).sum()
    return -(ell.mean() - kl / num_data + log_prior / num_data)


__all__ = ["matern52", "layer_moments", "neg_elbo"]
