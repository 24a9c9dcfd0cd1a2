"""The evolutionary proposer and the failure model (no Ray, no TVM)."""

from __future__ import annotations

import numpy as np
import torch

from raydgp.search.evolution import FailureModel, evolve


def _space():
    from raydgp.testing import fake_space

    return fake_space("evo", (64, 56, 32))


def _score_by_innermost(configs):
    """A known optimum: large innermost factors of every tile, unroll index 2."""
    return np.array([sum(np.log2(d[-1]) for d in c.decisions[:-1]) - abs(c.decisions[-1] - 2) for c in configs])


def test_evolve_returns_valid_unmeasured_distinct_configurations_and_climbs():
    sp = _space()
    rng = np.random.default_rng(0)
    measured = sp.sample_many(20, rng)
    pending = sp.sample_many(3, rng, exclude=set(measured))
    exclude = set(measured) | set(pending)
    kids, scores = evolve(sp, _score_by_innermost, measured[:5], exclude, np.random.default_rng(1), generations=4,
                          population=48)
    assert kids, "no children"
    assert len(set(kids)) == len(kids)
    assert all(sp.is_valid(c) for c in kids)
    assert not set(kids) & exclude
    assert list(scores) == sorted(scores, reverse=True)
    # the search climbs: its best child beats the best of as many random samples
    rand = sp.sample_many(4 * 48, np.random.default_rng(2), exclude=exclude)
    assert scores[0] > _score_by_innermost(rand).max()


def test_evolve_is_deterministic_for_a_seed():
    sp = _space()
    parents = sp.sample_many(6, np.random.default_rng(0))
    a, _ = evolve(sp, _score_by_innermost, parents, set(parents), np.random.default_rng(5))
    b, _ = evolve(sp, _score_by_innermost, parents, set(parents), np.random.default_rng(5))
    assert a == b


def test_crossover_mixes_parents_of_one_sketch():
    sp = _space()
    a, b = sp.sample_many(2, np.random.default_rng(3))
    kids = {sp.crossover(a, b, np.random.default_rng(i)) for i in range(32)}
    for k in kids:
        assert sp.is_valid(k)
        assert all(x in (da, db) for x, da, db in zip(k.decisions, a.decisions, b.decisions))
    assert len(kids) > 2


def test_failure_model_learns_a_failing_region():
    rng = np.random.default_rng(0)
    X = torch.as_tensor(rng.uniform(0, 1, (200, 2)), dtype=torch.float32)
    failed = (X[:, 0] > 0.7).numpy()  # everything right of 0.7 fails
    fm = FailureModel().fit(X, failed)
    assert fm.active
    probe = torch.tensor([[0.9, 0.5], [0.2, 0.5]])
    p = fm.p_fail(probe)
    assert p[0] > 0.7 and p[1] < 0.2
    assert fm.log_ok(probe)[0] < fm.log_ok(probe)[1]
    assert not FailureModel().fit(X, np.zeros(200, bool)).active  # no failures: no penalty
    assert torch.all(FailureModel().fit(X[:5], np.array([1, 0, 0, 0, 0], bool)).log_ok(probe) == 0)


def test_the_search_proposes_evolved_configurations_and_avoids_failures():
    from raydgp.search import DGPSearch, SearchSettings
    from raydgp.testing import fake_latency_ms

    sp = _space()
    s = DGPSearch(sp, SearchSettings(n_init=4, pool_size=100, refit_steps=5, cold_steps=10, seed=3))
    picks = []
    for _ in range(16):
        c = s.suggest()
        assert c not in picks
        picks.append(c)
        s.observe(c, fake_latency_ms("evo", sp.trace_json(c)))
    assert s.stats["model"] == 12
    assert s.stats["evolved"] >= 1, s.stats
