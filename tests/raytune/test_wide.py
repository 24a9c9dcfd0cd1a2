"""Running wide on a simulated Ray cluster (issue 11): Ray's own multi-node ``Cluster`` with fake GPUs, the real
scheduler and Tune controller, DGPSearcher proposing from its background queue."""

from __future__ import annotations

import json

import pytest


def test_simulated_cluster_runs_a_wide_dgp_experiment_and_shuts_down(tmp_path):
    import ray
    from ray import tune

    from raydgp import DGPSearcher
    from raydgp.dgp.model import DGPSettings
    from raydgp.raytune.simulate import busy_fraction, simulated_cluster, sleep_trainable
    from raydgp.raytune.synthetic import problem_space
    from raydgp.search import SearchSettings

    if ray.is_initialized():
        ray.shutdown()
    settings = SearchSettings(n_init=4, pool_size=300, cold_steps=20, refit_steps=5, evolve_generations=1,
                              evolve_population=16, dgp=DGPSettings(hidden_dims=(2,), num_inducing=16, num_samples=4))
    searcher = DGPSearcher(metric="loss", mode="min", settings=settings, seed=0)  # queue="auto": on when wide
    with simulated_cluster(2, gpus_per_node=4, cpus_per_node=4) as address:
        assert ray.cluster_resources().get("GPU") == 8 and address
        trainable = tune.with_resources(tune.with_parameters(sleep_trainable, problem="hartmann6", seconds=0.5),
                                        {"cpu": 0, "gpu": 1})
        grid = tune.Tuner(trainable, param_space=problem_space("hartmann6"), tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=32, metric="loss", mode="min", reuse_actors=True,
            max_concurrent_trials=8), run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0)).fit()
    assert not ray.is_initialized()  # the simulated cluster is gone
    done = [r for r in grid if r.metrics and "t_end" in r.metrics]
    assert len(done) == 32 and not grid.errors
    params = [json.dumps({k: r.config[k] for k in problem_space("hartmann6")}, sort_keys=True) for r in done]
    assert len(set(params)) == 32  # never a duplicate proposal
    st = searcher.stats
    assert searcher.queued and st["queue"]["handed"] == 32 and st["fallback"] == 0, st
    iv = [(r.metrics["t_start"], r.metrics["t_end"]) for r in done]
    events = sorted([(a, 1) for a, _ in iv] + [(b, -1) for _, b in iv])
    width, run = 0, 0
    for _, d in events:
        run += d
        width = max(width, run)
    assert 3 <= width <= 8, width  # ran wide, never wider than the GPUs
    assert 0 < busy_fraction(iv, 8) <= 1
    searcher.close()


def test_simulated_cluster_refuses_bad_sizes_and_a_running_ray():
    from raydgp.errors import ConfigError
    from raydgp.raytune.simulate import simulated_cluster

    with pytest.raises(ConfigError, match="nodes"):
        with simulated_cluster(0):
            pass


def test_restore_mid_run_with_the_queue():
    """Eight trials out, three back, checkpoint; the restored searcher takes the five running trials' results and
    never proposes any configuration handed out before."""
    import math

    from raydgp import DGPSearcher
    from raydgp.search import SearchSettings
    from raydgp.testing import fake_space

    st = SearchSettings(n_init=3, pool_size=200, refit_steps=5, cold_steps=10, seed=0, queue="on")

    def make():
        s = DGPSearcher(fake_space("c"), metric="latency_ms", mode="min", settings=st, seed=0)
        s.set_max_concurrency(8)
        return s

    def suggest(s, tid):
        import time

        for _ in range(6000):
            p = s.suggest(tid)
            if p is not None:
                return p
            time.sleep(0.01)
        raise AssertionError("no proposal")

    a = make()
    out = {str(i): suggest(a, str(i)) for i in range(8)}
    for i in range(3):
        a.on_trial_complete(str(i), {"latency_ms": 1.0 + i})
    state = a.get_state()
    a.close()
    b = make()
    b.set_state(json.loads(json.dumps(state)))
    for i in range(3, 8):
        b.on_trial_complete(str(i), {"latency_ms": 2.0 + i if i != 5 else math.nan})
    handed = {json.dumps(p, sort_keys=True) for p in out.values()}
    later = [json.dumps(suggest(b, f"n{i}"), sort_keys=True) for i in range(10)]
    assert not handed & set(later) and len(set(later)) == 10
    with b._queue.paused() as core:
        assert len(core.observed) == 8  # every result, before and after the restore
    b.close()
