"""The three-stage search without Ray or TVM: seeded, never repeats itself, counts where its proposals came from."""

from __future__ import annotations

import numpy as np
import pytest

from raydgp.search import DGPSearch, SearchSettings

FAST = SearchSettings(n_init=3, pool_size=150, refit_steps=5, cold_steps=10, seed=7)


def _space():
    from raydgp.testing import fake_space

    return fake_space("loop", (64, 32))


def _run(n: int, settings: SearchSettings = FAST):
    from raydgp.measure.protocol import TaskPayload
    from raydgp.testing import FakeMeasurer

    sp, m = _space(), FakeMeasurer()
    s = DGPSearch(sp, settings)
    picks = []
    for _ in range(n):
        c = s.suggest()
        picks.append(c)
        s.observe(c, m.measure(TaskPayload("loop", "{}", {}), sp.trace_json(c)).result.median_ms)
    return s, picks


def test_seeded_serial_search_is_deterministic_and_never_repeats():
    s1, a = _run(8)
    _, b = _run(8)
    assert a == b and len(set(a)) == 8


def test_proposals_are_counted_by_their_source():
    s, _ = _run(7)
    assert s.stats["random"] == 3 and s.stats["model"] == 4 and s.stats["refit_failures"] == 0


def test_the_search_improves_on_its_tuning_set():
    from raydgp.testing import fake_latency_ms

    s, picks = _run(14)
    lat = [fake_latency_ms("loop", _space().trace_json(c)) for c in picks]
    assert min(lat[3:]) <= min(lat[:3])


def test_random_interleaving_is_seeded_counted_and_off_by_default():
    from dataclasses import replace

    s0, a = _run(12)
    assert "interleaved" not in s0.stats
    s1, b = _run(12, replace(FAST, random_interleave=0.5))
    s2, c = _run(12, replace(FAST, random_interleave=0.5))
    assert b == c and len(set(b)) == 12  # seeded, never repeats
    assert 1 <= s1.stats["interleaved"] <= 9 and b[:3] == a[:3]  # the tuning set is never interleaved
    assert s1.stats["model"] + s1.stats["interleaved"] == 12 - 3
    with pytest.raises(Exception, match="random_interleave"):
        SearchSettings(random_interleave=1.0)


def test_bad_settings_are_refused():
    from raydgp.errors import ConfigError

    with pytest.raises(ConfigError):
        SearchSettings(pool_refresh=0)
    with pytest.raises(ConfigError):
        SearchSettings(init="oracle")


@pytest.mark.parametrize("maximize", [False, True])
def test_metrics_that_are_not_latencies_are_modelled_not_dropped(maximize):
    """A loss that goes negative (or a large metric to maximise) is modelled as itself: every result is kept and the
    model proposes (no silent random search)."""
    sp = _space()
    s = DGPSearch(sp, FAST, maximize=maximize)
    rng = np.random.default_rng(0)
    for c in sp.sample_many(8, rng):
        x = float(np.abs(sp.encode(c)).sum()) / 10
        s.observe(c, (1000.0 + 50 * x) if maximize else (-3.0 + x))  # exp(-1000) would underflow; -3 is not a latency
    X, y, kept = s._target_xy()
    assert len(kept) == 8 and np.isfinite(y).all() and y.std() > 0
    s.suggest()
    assert s.stats["model"] == 1 and s.stats["random"] == 0


def _three_sketch_space():
    """Three sketches of one fake workload; the trace carries the sketch, so the fake latency differs by sketch."""
    from raydgp.space.design_space import DesignSpace, Knob, Sketch
    from raydgp.testing import fake_space

    one = fake_space("sketches", (64, 32))
    k = one.sketches[0].knobs
    return DesignSpace(one.workload, one.target, (Sketch([], k), Sketch([], k[:1] + k[2:]), Sketch([], k[1:])))


def _latency(sp, c) -> float:
    from raydgp.testing import fake_latency_ms

    return fake_latency_ms("sketches", sp.trace_json(c)) * (1.0, 3.0, 9.0)[c.sketch]  # sketch 0 looks best


@pytest.mark.parametrize("batch", [1, 3])
def test_every_sketch_gets_its_minimum_of_guided_samples(batch):
    sp = _three_sketch_space()
    s = DGPSearch(sp, SearchSettings(**(FAST.__dict__ | {"sketch_min": 4, "sketch_min_when": "always"})))
    seen = []
    while len(seen) < 18:
        got = [s.suggest()] if batch == 1 else s.suggest_batch(batch)
        assert len(set(got)) == len(got) and not set(got) & set(seen)
        seen += got
        for c in got:
            s.observe(c, _latency(sp, c))
    per = [sum(c.sketch == k for c in seen) for k in range(3)]
    assert min(per) >= 4, per
    assert 0 < s.stats["sketch_min"] <= 12 and s.stats["model"] >= 1, s.stats
    # off by default (and with sketch_min_when=distrust, the default, a search without history owes nothing)
    off = DGPSearch(sp, SearchSettings(**(FAST.__dict__ | {"sketch_min": 4})))
    for _ in range(18):
        c = off.suggest()
        off.observe(c, _latency(sp, c))
    assert "sketch_min" not in off.stats
    with pytest.raises(Exception, match="sketch_min"):
        SearchSettings(sketch_min=-1)
    with pytest.raises(Exception, match="sketch_min_when"):
        SearchSettings(sketch_min_when="sometimes")


def test_a_space_without_structures_owes_nothing():
    s, _ = _run(10, SearchSettings(**(FAST.__dict__ | {"sketch_min": 4, "sketch_min_when": "always"})))
    assert "sketch_min" not in s.stats  # one sketch: nothing to balance


def _mixed_space():
    from raydgp.space.param_space import Dim, ParamSpace

    return ParamSpace([Dim(("x",), "float", low=0.0, high=1.0), Dim(("y",), "float", low=0.0, high=1.0),
                       Dim(("act",), "choice", values=("a", "b", "c"))])


def _mixed_loss(c):
    return (c[0] - 0.3) ** 2 + (c[1] - 0.6) ** 2 + {"a": 0.0, "b": 0.3, "c": 0.6}[c[2]]


def test_an_ordinary_space_without_history_gets_an_additive_member_weighed_by_its_ranking():
    sp = _mixed_space()
    s = DGPSearch(sp, SearchSettings(seed=0, n_init=6, pool_size=256, cold_steps=20, refit_steps=10))
    assert s.trust.members == ("cold", "additive")
    for _ in range(16):
        c = s.suggest()
        s.observe(c, _mixed_loss(c))
    w = s.trust_weights()
    assert set(w) == {"cold", "additive"} and abs(sum(w.values()) - 1) < 1e-6
    assert s.trust.summary()["additive"]["tested"] >= 8  # every new result tested it before it was fitted on it
    assert "additive_weight" in s.stats and s.stats.get("additive_failures", 0) == 0


def test_the_additive_member_can_be_turned_off_and_design_spaces_get_one_only_when_asked():
    s = DGPSearch(_mixed_space(), SearchSettings(seed=0, additive_member="off"))
    assert s.trust.members == ("cold",) and s._groups is None
    # a TVM design space names its columns' groups, but gets the member only when asked (on)
    assert DGPSearch(_space(), FAST)._groups is None
    on = DGPSearch(_space(), SearchSettings(**(FAST.__dict__ | {"additive_member": "on"})))
    assert on._groups and on.trust.members == ("cold", "additive")


def test_a_failed_additive_fit_is_counted_and_the_search_goes_on(monkeypatch):
    from botorch.exceptions.errors import ModelFittingError

    import raydgp.search.loop as loop

    def refuse(*a, **k):
        raise ModelFittingError("All attempts to fit the model have failed.")  # what BoTorch raises, seen live

    monkeypatch.setattr(loop, "AdditiveSurrogate", refuse)
    s = DGPSearch(_mixed_space(), SearchSettings(seed=0, n_init=6, pool_size=256, cold_steps=20, refit_steps=10))
    for _ in range(10):
        c = s.suggest()
        s.observe(c, _mixed_loss(c))
    assert s.stats["additive_failures"] >= 1 and s.stats["model"] >= 1 and len(s.observed) == 10
