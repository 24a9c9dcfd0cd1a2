"""Data-driven initialisation of the deep GP from exact GPs: the DGP starts where an exact GP would be.

Why: on small data (tens of points) Adam on the ELBO from a generic start lands in poor hyper-parameter basins (a
measured example: held-out Spearman 0.24 where an exact GP on the same 20 points reaches 0.86; the same sparse layer
given the exact GP's hyper-parameters reaches 0.83). Exact GPs are fitted reliably by L-BFGS on their marginal
likelihood, so the DGP borrows their answer as its starting point and the ELBO only refines it:

1. An exact GP (Matern-5/2 ARD, the priors of :mod:`raydgp.dgp.model`) on (a subsample of) the inputs gives ARD
   lengthscales ``l`` (``d``).
2. Each hidden layer's linear mean becomes the projection onto the top principal directions of the ARD-scaled inputs
   ``X / l``: relevant inputs survive the projection, irrelevant ones are scaled away. The hidden GPs get the same
   lengthscales and a small output scale (a small warping on top of the projection).
3. A second exact GP on the projected inputs sets the output layer's kernel, mean and the noise, and the output
   layer's variational distribution is set to that exact GP's posterior at the inducing points (whitened).

Pure torch / gpytorch / BoTorch's fitting routine: no Ray, no TVM.
"""

from __future__ import annotations

import logging
import warnings

import gpytorch
import torch
from gpytorch.kernels import MaternKernel, ScaleKernel
from gpytorch.likelihoods import GaussianLikelihood
from gpytorch.means import ConstantMean
from gpytorch.mlls import ExactMarginalLogLikelihood

from raydgp.dgp.model import DeepGPSurrogate, lengthscale_prior, noise_prior

log = logging.getLogger("raydgp.dgp")

#: Largest subsample the exact GPs are fitted on (O(n^3): 512 points take well under a second per L-BFGS run).
MAX_EXACT_POINTS = 512


def fit_exact_gp(X: torch.Tensor, y: torch.Tensor, warm=None):
    """An exact GP (BoTorch ``SingleTaskGP`` with the DGP's kernel family and priors) fitted by L-BFGS on its
    marginal likelihood (``fit_gpytorch_mll``; kernels evaluated eagerly: the same numbers without GPyTorch's lazy
    kernel tensors).

    Args:
        X: ``n x d`` inputs; y: ``n`` targets (standardised).
        warm: an exact GP fitted before on inputs of the same width (the previous fit of a growing data set): L-BFGS
            starts from its kernel and noise instead of the priors' modes and stops at a relative change of the
            objective of 1e-6 (measured on a conv's recorded results, 16 to 56 points: the same marginal likelihood,
            median difference 0, in 0.4x the time of a fresh fit).
    """
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP

    X, y = X.double(), y.double()
    d = X.shape[-1]
    covar = ScaleKernel(MaternKernel(nu=2.5, ard_num_dims=d, lengthscale_prior=lengthscale_prior(d)))
    lik = GaussianLikelihood(noise_prior=noise_prior())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gp = SingleTaskGP(X, y.unsqueeze(-1), likelihood=lik, covar_module=covar, mean_module=ConstantMean(),
                          outcome_transform=None).double()
        wk = getattr(warm, "covar_module", None)
        warm_ok = wk is not None and wk.base_kernel.lengthscale.shape[-1] == d
        with torch.no_grad():
            if warm_ok:
                covar.base_kernel.lengthscale = wk.base_kernel.lengthscale.detach().reshape(1, d).to(X)
                covar.outputscale = wk.outputscale.detach().reshape(()).to(X)
                lik.noise = warm.likelihood.noise.detach().reshape(-1).to(X)
            else:
                covar.base_kernel.lengthscale = torch.full((1, d), float(lengthscale_prior(d).mode), dtype=X.dtype)
                covar.outputscale = torch.tensor(1.0, dtype=X.dtype)
                lik.noise = torch.tensor(0.05, dtype=X.dtype)
            gp.mean_module.constant.fill_(float(y.mean()))
        options = {"maxiter": 100, **({"ftol": 1e-6} if warm_ok else {})}
        try:
            with gpytorch.settings.lazily_evaluate_kernels(False):
                fit_gpytorch_mll(ExactMarginalLogLikelihood(lik, gp), optimizer_kwargs={"options": options})
        except Exception as e:  # noqa: BLE001 - a failed fit keeps its start (the priors' modes or the previous fit)
            log.info("exact-GP initialisation fit failed (%s: %s); starting from %s", type(e).__name__, e,
                     "the previous fit's hyper-parameters" if warm_ok else "the priors' modes")
    gp.eval()
    return gp


def _scaled_pca(X: torch.Tensor, k: int) -> torch.Tensor:
    """``d x k``: top-``k`` principal directions of ``X`` (padded with the largest-variance unit vectors)."""
    d = X.shape[-1]
    Xc = X - X.mean(0)
    _, _, V = torch.linalg.svd(Xc, full_matrices=False)
    W = V[: min(k, V.shape[0])].T
    if W.shape[1] < k:
        order = torch.argsort(Xc.var(0), descending=True)
        W = torch.cat([W, torch.eye(d, dtype=X.dtype)[:, order[: k - W.shape[1]]]], dim=1)
    return W


@torch.no_grad()
def initialise_from_exact_gp(model: DeepGPSurrogate, X: torch.Tensor, y: torch.Tensor, seed: int = 0,
                             warm: DeepGPSurrogate | None = None) -> None:
    """Set ``model``'s parameters from exact GPs fitted on ``(X, y)`` (see the module docstring). In place.

    Args:
        model: a freshly built DGP on inputs of width ``d``.
        X: ``n x d`` training inputs; y: ``n`` standardised targets.
        seed: seed of the subsample used when ``n > MAX_EXACT_POINTS``.
        warm: a DGP initialised this way before (the previous fit of a growing data set): its exact GPs are the
            L-BFGS starts (:func:`fit_exact_gp`). The exact GPs are kept on ``model`` for the next fit (outside its
            parameters and state).
    """
    n = X.shape[0]
    if n < 3:
        return
    warm0, warm1 = (warm.__dict__.get("_exact_gps") if warm is not None else None) or (None, None)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=g)[:MAX_EXACT_POINTS]
    Xs, ys = X[idx].double(), y[idx].double()
    with torch.enable_grad():
        gp0 = fit_exact_gp(Xs, ys, warm=warm0)
    model.__dict__["_exact_gps"] = (gp0, None)  # (plain attribute: not a submodule, not in the state dict)
    ls = gp0.covar_module.base_kernel.lengthscale.detach().reshape(-1)  # d
    H, Zh = Xs, None
    for layer in model.hidden:
        d_in = H.shape[-1]
        ls_in = ls if d_in == ls.numel() else torch.ones(d_in, dtype=H.dtype)
        h = layer.mean_module.weights.shape[0]
        W = torch.diag(1.0 / ls_in) @ _scaled_pca(H / ls_in, h)  # d_in x h
        layer.mean_module.weights.copy_(W.T.unsqueeze(-1).to(layer.mean_module.weights))
        layer.mean_module.bias.zero_()
        k = layer.covar_module.base_kernel
        k.lengthscale = ls_in.reshape(1, 1, -1).expand_as(k.lengthscale).to(k.lengthscale)
        Z = layer.variational_strategy.inducing_points
        Zh = Z[0] @ W.to(Z)  # the output layer's inducing points: the projected inducing inputs
        H = H @ W
    out = model.output
    if not len(model.hidden):  # a single-layer sparse GP: the output layer sits on the inputs themselves
        Zh = out.variational_strategy.inducing_points.detach().clone()
    if model.skip or Zh is None:
        return
    with torch.enable_grad():
        gp1 = fit_exact_gp(H, ys, warm=warm1)
    model.__dict__["_exact_gps"] = (gp0, gp1)
    kern = out.covar_module
    kern.base_kernel.lengthscale = gp1.covar_module.base_kernel.lengthscale.to(kern.base_kernel.lengthscale)
    kern.outputscale = gp1.covar_module.outputscale.to(kern.outputscale)
    out.mean_module.constant.fill_(float(gp1.mean_module.constant))
    model.likelihood.noise = gp1.likelihood.noise.to(model.likelihood.noise)
    out.variational_strategy.inducing_points.copy_(Zh.to(out.variational_strategy.inducing_points))
    # q(u) = the exact GP's posterior at the inducing points, whitened: u = L v with L L^T = K_zz.
    Zd = Zh.double()
    m = Zd.shape[0]
    Kxx = gp1.covar_module(H).to_dense() + gp1.likelihood.noise * torch.eye(H.shape[0], dtype=H.dtype)
    Kzx = gp1.covar_module(Zd, H).to_dense()
    Kzz = gp1.covar_module(Zd).to_dense() + 1e-4 * torch.eye(m, dtype=H.dtype)
    A = torch.linalg.solve(Kxx, Kzx.T)  # n x m
    mu = A.T @ (ys - gp1.mean_module.constant)
    S = Kzz - Kzx @ A
    L = torch.linalg.cholesky(Kzz)
    Li = torch.linalg.solve_triangular(L, torch.eye(m, dtype=H.dtype), upper=False)
    Sw = Li @ S @ Li.T
    Sw = 0.5 * (Sw + Sw.T) + 1e-4 * torch.eye(m, dtype=H.dtype)
    try:
        chol = torch.linalg.cholesky(Sw)
    except RuntimeError:
        chol = torch.eye(m, dtype=H.dtype) * 0.1
    vd = out.variational_strategy._variational_distribution
    vd.variational_mean.copy_((Li @ mu).to(vd.variational_mean))
    vd.chol_variational_covar.copy_(chol.to(vd.chol_variational_covar))
    # GPyTorch would reset q(u) to the prior on the first call otherwise.
    out.variational_strategy.variational_params_initialized.fill_(1)
