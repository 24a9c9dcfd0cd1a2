"""The stacked transfer member: a residual DGP on the history's scaled mean (raydgp.dgp.stacked)."""

from __future__ import annotations

import torch

from raydgp.dgp.botorch_model import DGPModel, log_ei_pool
from raydgp.dgp.model import DGPSettings
from raydgp.dgp.stacked import StackedSurrogate, base_mean, fit_slope
from raydgp.dgp.train import fit_dgp

SMALL = DGPSettings(hidden_dims=(2,), num_inducing=16, num_samples=4)


def test_the_slope_is_least_squares_and_never_negative():
    mu0 = torch.linspace(-1, 1, 20)
    a, b = fit_slope(mu0, 2.0 * mu0 + 0.5)
    assert abs(a - 2.0) < 1e-6 and abs(b - 0.5) < 1e-6
    a, b = fit_slope(mu0, -3.0 * mu0 + 1.0)  # a history that ranks the target backwards drops out
    assert a == 0.0 and abs(b - 1.0) < 1e-6
    assert fit_slope(torch.ones(5), torch.arange(5.0)) == (0.0, 2.0)  # a constant prediction says nothing


def _fitted(seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(24, 3, generator=g)
    y = torch.sin(4 * X[:, 0]) + X[:, 1]
    return X, y, fit_dgp(X, y, SMALL, steps=15, seed=seed)


def test_the_stack_shifts_the_residual_model_by_the_scaled_base_mean():
    X, y, base = _fitted(0)
    _, _, resid = _fitted(1)
    Xq = torch.rand(7, 3, generator=torch.Generator().manual_seed(5))
    m_r, v_r = resid.predict(Xq, seed=2)
    st = StackedSurrogate(resid, base, a=0.7, b=-0.2, seed=3)
    m_s, v_s = st.predict(Xq, seed=2)
    assert torch.allclose(m_s, m_r + 0.7 * base_mean(base, Xq, 3) - 0.2, atol=1e-5)
    assert torch.equal(v_s, v_r)  # the uncertainty is the residual model's
    flat = StackedSurrogate(resid, base, a=0.0, b=0.4)
    assert torch.allclose(flat.predict(Xq, seed=2)[0], m_r + 0.4, atol=1e-6)


def test_the_stack_is_a_botorch_model_for_pools_and_batches():
    X, y, base = _fitted(0)
    _, _, resid = _fitted(1)
    st = StackedSurrogate(resid, base, a=1.0, b=0.0)
    Xq = torch.rand(9, 3, generator=torch.Generator().manual_seed(6))
    ei = log_ei_pool(DGPModel(st, seed=1), Xq, best_f=float(y.max()))
    assert ei.shape == (9,) and torch.isfinite(ei).all()
    # q > 1 (batch proposals with pending points): the joint posterior's mean is shifted the same way
    post = DGPModel(st, seed=1).posterior(Xq[:4].reshape(2, 2, 3))
    plain = DGPModel(resid, seed=1).posterior(Xq[:4].reshape(2, 2, 3))
    shift = base_mean(base, Xq[:4], 0).reshape(2, 1, 2, 1)
    assert post.mean.shape == plain.mean.shape
    # (the stack goes through GPyTorch's call, the plain DGP through the direct joint moments: the same draws, float32
    # solves of different conditioning, equal to about 1e-3)
    assert torch.allclose(post.mean, plain.mean + shift, atol=2e-3)
    assert (shift.abs() > 1e-2).any()  # the shift is there to be seen
