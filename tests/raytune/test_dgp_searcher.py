"""DGPSearcher as a Ray Tune searcher: spaces, the trio from Ray's test_searchers.py, real Ray Tune runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from ray import tune
from ray.tune.search import ConcurrencyLimiter, Repeater, Searcher

from raydgp import DGPSearcher
from raydgp.dgp.model import DGPSettings
from raydgp.errors import SearchSpaceError
from raydgp.search import SearchSettings

FAST = SearchSettings(n_init=3, pool_size=200, cold_steps=40, refit_steps=10,
                      dgp=DGPSettings(hidden_dims=(2,), num_inducing=16, num_samples=4))

SPACE = {"x": tune.uniform(0, 1), "nested": {"lr": tune.loguniform(1e-4, 1e-1)}, "k": tune.randint(0, 4),
         "q": tune.qrandint(8, 64, 8), "act": tune.choice(["relu", "tanh"]), "fixed": 3}


from raydgp.raytune.synthetic import synthetic_trainable
from raydgp.testing import synthetic_loss as objective_value


def make(**kw):
    s = DGPSearcher(metric="loss", mode="min", seed=0, settings=kw.pop("settings", FAST), **kw)
    s.set_search_properties(None, None, SPACE)
    return s


def test_suggestions_respect_the_space():
    s = make()
    for i in range(5):
        c = s.suggest(str(i))
        assert 0 <= c["x"] <= 1 and 1e-4 <= c["nested"]["lr"] <= 1e-1 and c["k"] in range(4)
        assert c["q"] % 8 == 0 and 8 <= c["q"] <= 64 and c["act"] in ("relu", "tanh") and c["fixed"] == 3
        s.on_trial_complete(str(i), {"loss": objective_value(c)})


@pytest.mark.parametrize("bad", [{"x": tune.grid_search([1, 2])}, {"x": tune.randn(0, 1)},
                                 {"x": tune.sample_from(lambda _: 1)}])
def test_unsupported_spaces_get_a_clear_error(bad):
    s = DGPSearcher(metric="loss", mode="min")
    with pytest.raises(SearchSpaceError, match="DGPSearcher cannot"):
        s.set_search_properties(None, None, bad)


def test_nan_inf_and_errored_results_are_survived():
    """Ray's testNanInfResults / error results: the search keeps going and proposes fresh configurations."""
    s = make()
    seen = set()
    results = [{"loss": float("nan")}, {"loss": float("inf")}, None, {"loss": 1.0}, {"other": 2}, {"loss": 0.5}]
    for i, r in enumerate(results):
        c = s.suggest(str(i))
        seen.add(json.dumps(c, sort_keys=True))
        s.on_trial_complete(str(i), r, error=r is None)
    for i in range(6, 9):
        c = s.suggest(str(i))
        assert json.dumps(c, sort_keys=True) not in seen
        s.on_trial_complete(str(i), {"loss": objective_value(c)})
    statuses = [st for st, _ in s._core.observed.values()]
    assert statuses.count("ok") == 5 and statuses.count("run_error") == 4


def test_warm_start_points_to_evaluate_and_evaluated_points():
    pts = [{"x": 0.3, "nested": {"lr": 0.01}, "k": 0, "q": 32, "act": "relu", "fixed": 3}]
    s = make(points_to_evaluate=pts)
    assert s.suggest("0") == pts[0]
    s.on_trial_complete("0", {"loss": 0.0})
    s.add_evaluated_point({"x": 0.9, "nested": {"lr": 0.1}, "k": 3, "q": 8, "act": "tanh", "fixed": 3}, 2.0)
    assert len(s._core.observed) == 2


def test_save_restore_with_an_unfinished_trial(tmp_path):
    s = make()
    for i in range(3):
        c = s.suggest(str(i))
        s.on_trial_complete(str(i), {"loss": objective_value(c)})
    pending = s.suggest("3")  # still running at the checkpoint
    s.save(str(tmp_path / "ckpt"))
    json.loads((tmp_path / "ckpt").read_text())  # JSON, nothing to unpickle
    r = make()
    r.restore(str(tmp_path / "ckpt"))
    r.on_trial_complete("3", {"loss": objective_value(pending)})
    assert len(r._core.observed) == 4
    nxt = r.suggest("4")
    assert nxt is not None and nxt != pending


def test_finished_when_a_finite_space_is_exhausted():
    s = DGPSearcher(metric="m", mode="max", seed=0, settings=FAST)
    s.set_search_properties(None, None, {"a": tune.choice([1, 2]), "b": tune.choice(["x", "y"])})
    got = []
    for i in range(5):
        c = s.suggest(str(i))
        if c == Searcher.FINISHED:
            break
        got.append(c)
        s.on_trial_complete(str(i), {"m": float(c["a"])})
    assert len(got) == 4 and c == Searcher.FINISHED
    assert len({json.dumps(g, sort_keys=True) for g in got}) == 4


def test_needs_metric_and_space():
    with pytest.raises(SearchSpaceError, match="no search space"):
        DGPSearcher(metric="m", mode="min").suggest("0")
    with pytest.raises(SearchSpaceError):
        DGPSearcher(metric="m", mode="sideways")


def _run(local_ray, tmp_path, alg, seed, n):
    tuner = tune.Tuner(synthetic_trainable, param_space=SPACE,
                       tune_config=tune.TuneConfig(search_alg=alg, num_samples=n, metric="loss", mode="min",
                                                   max_concurrent_trials=2, reuse_actors=True),
                       run_config=tune.RunConfig(verbose=0, storage_path=str(tmp_path), name=f"r{seed}{id(alg)}"))
    return tuner.fit().get_best_result().metrics["loss"]


@pytest.mark.slow
def test_real_ray_run_beats_random_search_on_average(tmp_path, local_ray):
    """Known optimum 0 at x=0.3, lr=1e-2, k=0, q=32, relu. Three seeds each, 24 trials, same Ray.

    Offline (same settings, 8 seeds, no Ray): best after 24 trials 0.092 (DGP) vs 0.221 (random), DGP better on
    8 of 8 seeds; after 16 trials 0.148 vs 0.221 (5 of 8), too close for a 3-seed test.
    """
    from ray.tune.search import BasicVariantGenerator

    settings = SearchSettings(n_init=5, pool_size=400, cold_steps=60, refit_steps=15,
                              dgp=DGPSettings(hidden_dims=(2,), num_inducing=24, num_samples=4))
    dgp, rnd = [], []
    for seed in range(3):
        dgp.append(_run(local_ray, tmp_path, ConcurrencyLimiter(DGPSearcher(seed=seed, settings=settings), 2),
                        seed, 24))
        rnd.append(_run(local_ray, tmp_path, BasicVariantGenerator(random_state=seed), seed, 24))
    assert np.mean(dgp) < np.mean(rnd), (dgp, rnd)


@pytest.mark.slow
def test_works_inside_repeater(tmp_path, local_ray):
    alg = Repeater(DGPSearcher(seed=1, settings=FAST), repeat=2)
    best = _run(local_ray, tmp_path, alg, 9, 6)
    assert math.isfinite(best)
