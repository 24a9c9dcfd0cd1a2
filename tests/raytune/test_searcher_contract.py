"""Every searcher against the three tests of Ray Tune's own ``tune/tests/test_searchers.py``: NaN/inf/error results
are survived, warm start (points to evaluate, evaluated points) works, and save/restore with an unfinished trial
continues where it stopped. Run on a design space built without TVM (DGP and random) and a Ray param space (DGP)."""

from __future__ import annotations

import json
import math

import pytest

from raydgp.search import SearchSettings

FAST = SearchSettings(n_init=3, pool_size=200, refit_steps=5, cold_steps=10, seed=0)


def _make(kind: str, seed: int = 0, points=None):
    from raydgp.raytune.dgp_searcher import DGPSearcher
    from raydgp.raytune.random_searcher import RandomSearcher
    from raydgp.testing import fake_space

    if kind == "random":
        return RandomSearcher(fake_space("c"), metric="latency_ms", mode="min", seed=seed, points_to_evaluate=points)
    if kind == "dgp-design":
        return DGPSearcher(fake_space("c"), metric="latency_ms", mode="min", seed=seed, settings=FAST,
                           points_to_evaluate=points)
    if kind == "dgp-queue":  # proposals from the background queue (issue 11), as run wide
        from dataclasses import replace

        s = DGPSearcher(fake_space("c"), metric="latency_ms", mode="min", seed=seed,
                        settings=replace(FAST, queue="on"), points_to_evaluate=points)
        s.set_max_concurrency(4)
        return s
    from ray import tune

    space = {"x": tune.uniform(0, 1), "k": tune.randint(0, 4), "act": tune.choice(["relu", "tanh"])}
    return DGPSearcher(space, metric="latency_ms", mode="min", seed=seed, settings=FAST, points_to_evaluate=points)


KINDS = ["random", "dgp-design", "dgp-params", "dgp-queue"]


def _suggest(s, trial_id: str, timeout: float = 60.0):
    """``suggest()`` as Tune calls it: a searcher run wide may answer None ("not ready") and is asked again."""
    import time

    end = time.monotonic() + timeout
    while True:
        p = s.suggest(trial_id)
        if p is not None or time.monotonic() > end:
            return p
        time.sleep(0.01)


def _value(params) -> float:
    return 1.0 + len(json.dumps(params, sort_keys=True)) % 7


@pytest.mark.parametrize("kind", KINDS)
def test_nan_inf_and_errored_results_are_survived(kind):
    s = _make(kind)
    bad = [math.nan, math.inf, -math.inf, None]
    seen = []
    for i in range(10):
        p = _suggest(s, str(i))
        assert isinstance(p, dict)
        seen.append(json.dumps(p, sort_keys=True))
        if i % 3 == 2:
            s.on_trial_complete(str(i), None, error=True)
        else:
            s.on_trial_complete(str(i), {"latency_ms": bad[i % 4] if i < 6 else _value(p)})
    assert len(set(seen)) == len(seen)
    assert isinstance(_suggest(s, "next"), dict)
    assert s.stats["fallback"] == 0, s.stats


@pytest.mark.parametrize("kind", KINDS)
def test_warm_start_points_to_evaluate_and_evaluated_points(kind):
    base = _make(kind)
    first = [_suggest(base, str(i)) for i in range(2)]
    s = _make(kind, points=[first[0]])
    assert s.suggest("a") == first[0]  # points to evaluate come first
    s.add_evaluated_point(first[1], 3.0)
    later = [json.dumps(_suggest(s, str(i)), sort_keys=True) for i in range(6)]
    assert json.dumps(first[1], sort_keys=True) not in later  # evaluated elsewhere: not proposed again


@pytest.mark.parametrize("kind", KINDS)
def test_save_restore_with_an_unfinished_trial(kind, tmp_path):
    a = _make(kind)
    for i in range(4):
        p = _suggest(a, str(i))
        a.on_trial_complete(str(i), {"latency_ms": _value(p)})
    unfinished = _suggest(a, "running")
    a.save(str(tmp_path / "state.json"))
    json.loads((tmp_path / "state.json").read_text())  # plain JSON: a checkpoint is never unpickled
    b = _make(kind, seed=0)
    b.restore(str(tmp_path / "state.json"))
    b.on_trial_complete("running", {"latency_ms": _value(unfinished)})  # the unfinished trial reports after restore
    nxt = [json.dumps(_suggest(b, str(i)), sort_keys=True) for i in range(10, 14)]
    done = {json.dumps(unfinished, sort_keys=True)}
    assert not done & set(nxt) and len(set(nxt)) == 4


@pytest.mark.parametrize("kind", ["random", "dgp-design"])
def test_earlier_invalid_records_stay_invalid(kind):
    """A restarted chunk's searcher gets earlier records with their status: an invalid one is never proposed and
    (DGP) never trained on as a slow configuration."""
    s = _make(kind)
    p = _make(kind, seed=5).suggest("x")
    s.add_evaluated_record(p, "invalid", None)
    if kind != "random":
        core = s._core
        cfg = s._space.from_params(p)
        assert cfg in core.invalid and cfg not in core.observed
    assert p not in [s.suggest(str(i)) for i in range(8)]
