"""Ray Tune's own searchers (Optuna TPE) over a design space's flat view: valid configurations, results passed back."""

from __future__ import annotations

import math

import pytest

from raydgp.errors import ConfigError


def test_flat_view_covers_every_knob_and_maps_back_to_valid_configurations():
    import numpy as np

    from raydgp.raytune.flat_searcher import config_of, flat_param_space
    from raydgp.testing import fake_space

    sp = fake_space("flat", (64, 32))
    flat = flat_param_space(sp)
    assert set(flat) == {"sketch", "s0_k0", "s0_k1", "s0_k2"}
    rng = np.random.default_rng(0)
    for _ in range(20):
        choice = {k: int(rng.choice(v.categories)) for k, v in flat.items()}
        assert sp.is_valid(config_of(sp, choice))


def test_tpe_proposes_valid_configurations_and_learns_from_results():
    pytest.importorskip("optuna")
    from raydgp.raytune.flat_searcher import tpe
    from raydgp.testing import fake_latency_ms, fake_space

    sp = fake_space("flat", (64, 32))
    s = tpe(sp, seed=0)
    lat = []
    for i in range(24):
        params = s.suggest(f"t{i}")
        cfg = sp.from_params(params)
        assert sp.is_valid(cfg)
        v = fake_latency_ms("flat", sp.trace_json(cfg)) if i % 7 else math.nan  # some trials fail
        s.on_trial_complete(f"t{i}", {"latency_ms": v})
        lat.append(v)
    assert s.stats["inner"] == 24 and s.inner._ot_study.trials[-1].state.is_finished()
    ok = [v for v in lat if math.isfinite(v)]
    assert min(ok[8:]) <= min(ok[:8])  # TPE after its start-up trials finds at least as good


def test_hebo_runs_from_the_bootstraps_own_directory_or_is_a_clear_error():
    """``scripts/bootstrap.sh`` installs HEBO apart (``.venv/hebo``); the real searcher then proposes valid
    configurations and takes results back. Without it, one clear error."""
    from raydgp.raytune.flat_searcher import hebo, hebo_search_class
    from raydgp.testing import fake_latency_ms, fake_space

    sp = fake_space("flat", (64, 32))
    try:
        hebo_search_class()
    except ConfigError as e:
        assert "HEBO" in str(e) and "bootstrap" in str(e)
        return
    s = hebo(sp, seed=0)
    for i in range(8):
        params = s.suggest(f"t{i}")
        cfg = sp.from_params(params)
        assert sp.is_valid(cfg)
        s.on_trial_complete(f"t{i}", {"latency_ms": fake_latency_ms("flat", sp.trace_json(cfg))})
    assert s.stats["inner"] == 8
