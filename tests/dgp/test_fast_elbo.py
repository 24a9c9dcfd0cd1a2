"""The directly computed ELBO (:mod:`raydgp.dgp.fast_elbo`) against GPyTorch's ``DeepApproximateMLL``."""

from __future__ import annotations

import gpytorch
import pytest
import torch
from gpytorch.mlls import DeepApproximateMLL, VariationalELBO

from raydgp.dgp.fast_elbo import neg_elbo
from raydgp.dgp.init import initialise_from_exact_gp
from raydgp.dgp.model import DeepGPSurrogate, DGPSettings
from raydgp.dgp.train import fit_dgp, map_finetune, train_elbo


def data(n=40, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, d, generator=g)
    y = torch.sin(6 * X[:, 0]) + X[:, 1] ** 2 + 0.05 * torch.randn(n, generator=g)
    return X, (y - y.mean()) / y.std()


def model(settings, X, y, hidden_scale=None):
    m = DeepGPSurrogate(X, settings, seed=0)
    initialise_from_exact_gp(m, X, y)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        if hidden_scale is not None:  # a hidden layer that warps (its initial scale is tiny)
            for layer in m.hidden:
                layer.covar_module.outputscale = torch.full_like(layer.covar_module.outputscale, hidden_scale)
        for layer in [*m.hidden, m.output]:  # q(u) away from where initialisation put it: every KL term counts
            vd = layer.variational_strategy._variational_distribution
            layer.variational_strategy.variational_params_initialized.fill_(1)
            vd.variational_mean.add_(0.3 * torch.randn(vd.variational_mean.shape, generator=g))
            vd.chol_variational_covar.mul_(0.8).add_(0.05 * torch.randn(vd.chol_variational_covar.shape, generator=g))
    m.train()
    return m


def gpytorch_loss(m, X, y, num_data, samples, seed):
    mll = DeepApproximateMLL(VariationalELBO(m.likelihood, m, num_data=num_data))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with gpytorch.settings.num_likelihood_samples(samples):
            return -mll(m(X), y)


def test_without_hidden_layers_it_is_gpytorchs_value_exactly():
    """No sampling: the expected log-likelihood, the KL and the priors (the likelihood's counted twice, as GPyTorch
    does) must agree to float precision, and so must the gradients."""
    X, y = data()
    m = model(DGPSettings(hidden_dims=(), num_inducing=16, num_samples=4), X, y)
    ref = gpytorch_loss(m, X, y, 100, 4, 0)
    g_ref = torch.autograd.grad(ref, list(m.parameters()), allow_unused=True)
    fast = neg_elbo(m, X, y, 100, torch.Generator().manual_seed(0))
    assert float(fast.detach()) == pytest.approx(float(ref.detach()), rel=1e-5, abs=1e-5)
    g_fast = torch.autograd.grad(fast, list(m.parameters()), allow_unused=True)
    for a, b in zip(g_ref, g_fast):
        if a is None:
            assert b is None or float(b.abs().max()) == 0.0
            continue
        # float32 distances computed in another order: equal to a few parts in 1e4 of the gradient's scale
        assert torch.allclose(a, b, rtol=5e-3, atol=1e-4 * float(a.abs().max()) + 1e-6)


def test_with_a_hidden_layer_it_estimates_gpytorchs_value():
    """Sampled through a hidden layer that warps (after some training, so the noise is sane): both estimators of the
    same ELBO, over several seeds each, agree within their own spread; a term left out would show (the KL alone
    moves the value by more than the tolerance)."""
    X, y = data()
    m = model(DGPSettings(hidden_dims=(3,), num_inducing=16, num_samples=1000), X, y, hidden_scale=0.3)
    train_elbo(m, X, y, 40, 0.02, seed=0, fast=False)
    m.train()
    with torch.no_grad():
        ref = torch.tensor([float(gpytorch_loss(m, X, y, 40, 1000, s)) for s in range(5)])
        fast = torch.tensor([float(neg_elbo(m, X, y, 40, torch.Generator().manual_seed(s))) for s in range(5)])
        kl = sum(float(layer.variational_strategy.kl_divergence().sum()) for layer in [*m.hidden, m.output]) / 40
    spread = float(torch.cat([ref, fast]).std())
    assert spread > 0  # really sampled
    tol = 3 * spread + 1e-3 * float(ref.abs().mean())
    assert abs(float(ref.mean() - fast.mean())) < tol
    assert kl > 3 * tol


def test_the_skip_output_layers_moments_are_gpytorchs():
    """With the skip connection the output layer sees (hidden samples, inputs): its moments on such inputs are
    GPyTorch's. (The sampled objective is not compared there: GPyTorch draws the hidden layer jointly over the
    points for the skip layer, and its draws have about twice the layer's own marginal variance; this module, like
    prediction, draws the marginals.)"""
    from raydgp.dgp.fast_elbo import layer_moments, matern52
    from raydgp.dgp.model import _matern52

    X, y = data()
    m = model(DGPSettings(hidden_dims=(3,), num_inducing=16, num_samples=6, skip=True), X, y, hidden_scale=0.3)
    h = torch.randn(6, X.shape[0], 3, generator=torch.Generator().manual_seed(0))
    inp = torch.cat([h, X.expand(6, *X.shape)], dim=-1)
    with torch.no_grad():
        out = gpytorch.models.ApproximateGP.__call__(m.output, inp)
        mu, var, kl = layer_moments(m.output, inp)
        assert torch.allclose(out.mean, mu, rtol=1e-4, atol=1e-5)
        assert torch.allclose(out.variance, var, rtol=1e-3, atol=1e-6)
        assert float(kl) == pytest.approx(float(m.output.variational_strategy.kl_divergence()), rel=1e-4)


def test_the_hidden_layers_marginals_are_gpytorchs():
    """The moments that sampling starts from are GPyTorch's (training mode), exactly."""
    from raydgp.dgp.fast_elbo import layer_moments, matern52
    from raydgp.dgp.model import _matern52

    X, y = data()
    m = model(DGPSettings(hidden_dims=(3,), num_inducing=16, num_samples=2), X, y, hidden_scale=0.05)
    layer = m.hidden[0]
    with torch.no_grad():
        out = layer(X)  # GPyTorch: S x n x b
        mu, var, kl = layer_moments(layer, X)  # b x n
        assert torch.allclose(out.mean[0], mu.mT, rtol=1e-4, atol=1e-5)
        assert torch.allclose(out.variance[0], var.mT, rtol=1e-3, atol=1e-6)
        assert float(kl) == pytest.approx(float(layer.variational_strategy.kl_divergence().sum()), rel=1e-4)
        assert float(kl) > 0.1


def test_training_reaches_what_gpytorch_training_reaches():
    """The same fit through either objective ends at about the same ELBO (measured by GPyTorch, many samples) and
    the same predictions: the fast path changes the cost of a step, not where training goes."""
    X, y = data(n=60, d=6)
    Xt, yt = data(n=200, d=6, seed=1)
    st = DGPSettings(hidden_dims=(4,), num_inducing=32, num_samples=8)
    out = {}
    for fast in (False, True):
        m = model(st, X, y)
        losses = train_elbo(m, X, y, 60, 0.02, seed=0, fast=fast)
        assert losses[-1] < losses[0]
        with torch.no_grad():
            m.train()
            elbo = float(torch.stack([gpytorch_loss(m, X, y, 60, 64, s) for s in range(4)]).mean())
            m.eval()
            mse = float(((m.predict(Xt, seed=0)[0].mean(0) - yt) ** 2).mean())
        out[fast] = (elbo, mse)
    assert out[True][0] == pytest.approx(out[False][0], abs=0.05 + 0.05 * abs(out[False][0]))
    assert out[True][1] == pytest.approx(out[False][1], abs=0.05, rel=0.25)


def test_fast_training_is_seeded_and_leaves_the_global_rng_alone():
    X, y = data()
    st = DGPSettings(hidden_dims=(3,), num_inducing=16, num_samples=4)
    a = fit_dgp(X, y, st, steps=10, seed=3)
    b = fit_dgp(X, y, st, steps=10, seed=3)
    c = model(st, X, y)
    state = torch.random.get_rng_state()
    train_elbo(c, X, y, 5, 0.02, seed=1)
    assert torch.equal(state, torch.random.get_rng_state())
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka


def test_map_finetune_with_a_scope_trains_only_that_scope():
    """Frozen parameters stay frozen on the fast path (the scope decides what requires grad)."""
    X, y = data()
    m = model(DGPSettings(hidden_dims=(3,), num_inducing=16, num_samples=4), X, y)
    m.eval()
    before = {k: v.detach().clone() for k, v in m.named_parameters()}
    X2, y2 = data(n=12, seed=5)
    map_finetune(m, X2, y2, prior_strength=1.0, steps=10, scope="head")
    moved = {k for k, v in m.named_parameters() if not torch.equal(v, before[k])}
    assert moved and all(k.startswith(("likelihood.", "output.mean_module", "output.covar_module.raw_outputscale"))
                         for k in moved), moved


def test_an_indefinite_inducing_covariance_gets_gpytorchs_jitter_instead_of_failing_the_fit():
    """Inducing points on near-duplicate inputs under a large output scale: K_zz, formed in float32, is indefinite
    in float64 beyond the fixed jitter. GPyTorch's own path retries with more jitter (psd_safe_cholesky); the direct
    ELBO and the kept prediction factors must too (a replay search once died here, in the cold member's fresh fit)."""
    import warnings

    from raydgp.dgp.fast_elbo import layer_moments, matern52
    from raydgp.dgp.model import _matern52

    X, y = data(n=60, d=5)
    X[40:] = X[:20] + 1e-7  # duplicates, as configurations that encode alike
    m = model(DGPSettings(hidden_dims=()), X, y)
    Z = m.output.variational_strategy.inducing_points
    assert Z.shape[0] == len(X)
    with torch.no_grad():
        Z.copy_(X)  # the inducing points on the data, duplicates included
        m.output.covar_module.outputscale = torch.tensor(300.0)
    k = m.output.covar_module
    eye = m.output.variational_strategy.jitter_val * torch.eye(len(Z))
    for kernel in (matern52, _matern52):  # the plain factorisation fails on this layer, in both formulas
        Kzz = (kernel(Z, Z, k.base_kernel.lengthscale, k.outputscale) + eye).double()
        assert torch.linalg.cholesky_ex(Kzz)[1] > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # linear_operator's NumericalWarning for the added jitter
        mean, var, kl = layer_moments(m.output, X)
        assert torch.isfinite(mean).all() and torch.isfinite(var).all() and torch.isfinite(kl)
        loss = neg_elbo(m, X, y, len(X), torch.Generator().manual_seed(0))
        assert torch.isfinite(loss)
        m.eval()
        mu, v = m.predict(X[:5], num_samples=2)  # the kept prediction factors factor the same K_zz
        assert torch.isfinite(mu).all() and torch.isfinite(v).all()
