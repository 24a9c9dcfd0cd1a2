"""The SearchSpace contract, run against every implementation (no TVM needed: the design space is built by hand)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from raydgp.space.base import SearchSpace


def _design_space():
    from raydgp.testing import fake_space

    return fake_space("contract", (64, 56))


def _param_space():
    from raydgp.space.param_space import Dim, ParamSpace

    return ParamSpace([Dim(("x",), "float", low=0.0, high=1.0), Dim(("k",), "int", low=0, high=5, q=1),
                       Dim(("act",), "choice", values=("relu", "tanh"))], {("fixed",): 3})


@pytest.fixture(params=["design_space", "param_space"])
def space(request) -> SearchSpace:
    return _design_space() if request.param == "design_space" else _param_space()


def test_is_a_search_space(space):
    assert isinstance(space, SearchSpace)
    assert space.size > 1 and space.dim >= 1


def test_samples_are_distinct_valid_and_seeded(space):
    a = space.sample_many(20, np.random.default_rng(3))
    b = space.sample_many(20, np.random.default_rng(3))
    assert a == b and len(set(a)) == 20 and all(space.is_valid(c) for c in a)
    c = space.sample_many(5, np.random.default_rng(4), exclude=set(a))
    assert not set(c) & set(a)


def test_neighbours_are_valid_one_step_moves(space):
    cfg = space.sample_many(1, np.random.default_rng(0))[0]
    nb = space.neighbours(cfg)
    assert nb and cfg not in nb and all(space.is_valid(n) for n in nb)


def test_encoding_shape(space):
    cfgs = space.sample_many(7, np.random.default_rng(1))
    X = space.encode_many(cfgs)
    assert X.shape == (7, space.dim) and np.isfinite(X).all()
    assert space.encode_many([]).shape == (0, space.dim)


def test_trial_and_checkpoint_round_trips(space):
    for cfg in space.sample_many(5, np.random.default_rng(2)):
        params = space.to_params(cfg)
        assert space.from_params(json.loads(json.dumps(params))) == cfg
        assert space.config_from_json(json.loads(json.dumps(space.config_to_json(cfg)))) == cfg


def test_not_a_configuration_is_a_clear_error(space):
    from raydgp.errors import RayDGPError

    with pytest.raises(RayDGPError):
        space.from_params({"nonsense": 1})


def test_neighbours_do_not_depend_on_the_process_hash_seed():
    # a serial search under a fixed seed proposes the same in every process: str hashes differ between processes
    import subprocess
    import sys

    code = ("from tests.space.test_contract import _param_space; s = _param_space(); "
            "print(s.neighbours((0.5, 2, 'tanh')))")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**__import__("os").environ, "PYTHONHASHSEED": h}).stdout for h in ("1", "2")}
    assert len(outs) == 1 and next(iter(outs)).startswith("[(")
