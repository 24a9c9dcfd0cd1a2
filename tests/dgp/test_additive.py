"""The additive GP member (raydgp.dgp.additive): one kernel per parameter, summed."""

from __future__ import annotations

import torch

from raydgp.dgp.additive import AdditiveSurrogate, fit_subset, kept_groups
from raydgp.dgp.botorch_model import DGPModel, log_ei_pool


def _categorical_data(n=30, seed=0):
    """x in [0, 1] and a 3-way category (one-hot columns 1-3); y = -(x - 0.3)^2 * 4 + effect(category). Category 2 is
    the best and is seen only at x > 0.7, far from the best x."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, generator=g)
    cat = torch.randint(0, 2, (n,), generator=g)
    far = x > 0.7
    cat[far & (torch.rand(n, generator=g) < 0.5)] = 2
    effect = torch.tensor([0.0, -0.5, 1.0])[cat]
    X = torch.cat([x[:, None], torch.nn.functional.one_hot(cat, 3).float()], dim=1)
    return X, -4 * (x - 0.3) ** 2 + effect


def test_a_category_seen_only_far_away_is_predicted_where_it_was_never_seen():
    X, y = _categorical_data()
    m = AdditiveSurrogate(X, y, [(0,), (1, 2, 3)], seed=0)
    at = torch.tensor([[0.3, 0.0, 0.0, 1.0], [0.3, 1.0, 0.0, 0.0]])  # the best x with category 2, and with 0
    mean, var = m.predict(at)
    assert mean.shape == (1, 2) and var.shape == (1, 2) and bool((var > 0).all())
    # the truth: 1.0 and 0.0; the additive model carries category 2's effect over from x > 0.7
    assert float(mean[0, 0] - mean[0, 1]) > 0.6


def test_it_is_a_botorch_member_in_float64_whatever_the_acquisition_casts():
    X, y = _categorical_data()
    m = AdditiveSurrogate(X, y, [(0,), (1, 2, 3)], seed=0)
    bm = DGPModel(m, seed=0)
    ei = log_ei_pool(bm, X[:7], float(y.max()))
    assert ei.shape == (7,) and bool(torch.isfinite(ei).all())
    assert m.gp.train_inputs[0].dtype == torch.float64  # the acquisition's cast to float32 did not reach it
    post = bm.posterior(X[:5].unsqueeze(0))  # a joint posterior (q = 5), one mixture component
    assert post.distribution.covariance_matrix.shape[-2:] == (5, 5)
    again = AdditiveSurrogate(X, y, [(0,), (1, 2, 3)], seed=0)  # a fit is a function of its data and seed
    assert torch.allclose(again.predict(X[:5])[0], m.predict(X[:5])[0])


def test_groups_follow_the_columns_the_scaler_keeps():
    keep = [True, False, True, True, False, True]
    assert kept_groups([(0, 1), (2,), (3, 4), (5,)], keep) == [(0,), (1,), (2,), (3,)]
    assert kept_groups([(1,), (4,), (0, 2)], keep) == [(0, 1)]  # a group with no kept column is dropped
    assert kept_groups([(0,), (1, 2)], None) == [(0,), (1, 2)]


def test_a_believer_batch_over_hundreds_of_candidates_reads_its_joint_posterior():
    # the joint posterior of 300 candidates under an exact GP is singular in float32: built as a dense tensor it was
    # Cholesky-factored at once and raised, and every batch proposal fell back to the analytic ranking
    from raydgp.search.batch import believer_batch

    X, y = _categorical_data()
    m = AdditiveSurrogate(X, y, [(0,), (1, 2, 3)], seed=0)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(300, generator=g)
    C = torch.cat([x[:, None], torch.nn.functional.one_hot(torch.randint(0, 3, (300,), generator=g), 3).float()], 1)
    picks = believer_batch([(DGPModel(m, seed=0), 1.0)], C, float(y.max()), 4, pending=C[:2])
    assert len(set(picks)) == 4 and all(0 <= i < 300 for i in picks)


def test_past_its_limit_a_fit_keeps_the_best_half_and_the_most_recent():
    assert fit_subset([0.3, 0.1, 0.2], limit=5) == [0, 1, 2]
    y = torch.arange(20.0).flip(0)  # the best results came first
    got = fit_subset(y, limit=8)
    assert got == [0, 1, 2, 3, 16, 17, 18, 19]  # the 4 best and the 4 latest, in observation order
    y2 = torch.arange(20.0)  # the best are also the latest: the rest of the limit goes to the next most recent
    assert fit_subset(y2, limit=8) == list(range(12, 20))
