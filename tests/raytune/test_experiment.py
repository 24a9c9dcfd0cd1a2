"""The Ray Tune path: RandomSearcher contract, and real trials of a small conv through Ray with records on disk."""

from __future__ import annotations

import json
from pathlib import Path
import math

import pytest

from raydgp.records import Config, RecordStore, Workload
from raydgp.space.design_space import DesignSpace, Knob, Sketch


def tiny_space() -> DesignSpace:
    """A pure-Python space of 2 x 3 = 6 configurations (no TVM needed)."""
    knobs = (Knob("tile", 0, extent=4, parts=2, max_innermost=2), Knob("categorical", 1, values=(0, 16, 64)))
    return DesignSpace(Workload("tiny", "tiny", "other", {}), {"kind": "llvm"}, (Sketch([], knobs),))


def test_random_searcher_finishes_a_finite_space_without_repeats():
    from ray.tune.search import Searcher

    from raydgp.raytune.random_searcher import RandomSearcher

    sp = tiny_space()
    assert sp.size == 6
    s = RandomSearcher(sp, seed=1)
    got = [s.suggest(str(i)) for i in range(7)]
    assert got[-1] == Searcher.FINISHED
    assert len({json.dumps(c) for c in got[:6]}) == 6
    assert all(sp.is_valid(Config.from_json(c)) for c in got[:6])


def test_random_searcher_save_restore_is_json(tmp_path):
    from raydgp.raytune.random_searcher import RandomSearcher

    sp = tiny_space()
    a = RandomSearcher(sp, seed=3)
    first = [a.suggest(str(i)) for i in range(2)]
    a.save(str(tmp_path / "s.json"))
    json.loads((tmp_path / "s.json").read_text())  # plain JSON, nothing to unpickle
    b = RandomSearcher(sp, seed=99)
    b.restore(str(tmp_path / "s.json"))
    rest_a = [a.suggest(str(i)) for i in range(2, 6)]
    rest_b = [b.suggest(str(i)) for i in range(2, 6)]
    assert rest_a == rest_b and not ({json.dumps(c) for c in rest_b} & {json.dumps(c) for c in first})


@pytest.mark.slow
def test_eight_real_trials_through_ray_tune(tmp_path, local_ray, small_task, small_space):
    from raydgp.measure.protocol import MeasureSettings, TaskPayload
    from raydgp.raytune.experiment import tune_layer
    from raydgp.raytune.random_searcher import RandomSearcher

    store = RecordStore(tmp_path / "records")
    payload = TaskPayload(small_task.workload.key, small_task.mod_json, small_task.target)
    res = tune_layer(payload, small_space, RandomSearcher(small_space, seed=0), trials=8, store=store,
                     settings=MeasureSettings(num_threads=2, repeat=3, min_repeat_ms=5,
                                              timing_lock=str(tmp_path / "lock")),
                     storage_path=tmp_path / "ray", name="small conv", cpus_per_trial=2, show_progress=False)
    on_disk = RecordStore(tmp_path / "records").records()
    assert len(on_disk) == 8 == len(res.results)
    assert sum(r.result.ok for r in on_disk) >= 4
    by_config = {(r.config, r.result.status): r for r in on_disk}
    for result in res.results:
        m = result.metrics
        cfg = Config.from_json(json.loads(m["applied"]))
        rec = by_config[(cfg, m["status"])]
        if m["status"] == "ok":
            assert rec.result.median_ms == pytest.approx(m["latency_ms"])
            assert list(rec.result.latencies_ms) == pytest.approx(m["latencies_ms"])
        else:
            assert math.isnan(m["latency_ms"])
    assert all(r.workload.key == small_task.workload.key and r.host for r in on_disk)
    assert res.best_ms == min(r.result.median_ms for r in on_disk)


@pytest.mark.slow
def test_dgp_searcher_tunes_a_real_tvm_layer_through_ray(tmp_path, local_ray, small_task, small_space):
    """Transfer from a record store of another layer, then real trials of the small conv, records on disk."""
    from raydgp.dgp.model import DGPSettings
    from raydgp.measure.protocol import MeasureSettings, TaskPayload
    from raydgp.raytune.dgp_searcher import DGPSearcher
    from raydgp.raytune.experiment import tune_layer
    from raydgp.pipeline.history import load_history
    from raydgp.search import SearchSettings

    from raydgp.pipeline.history import shipped_dataset

    hist = load_history([shipped_dataset()], small_space)
    assert hist is not None and len(hist) > 3000
    settings = SearchSettings(n_init=3, pool_size=300, refit_steps=10,
                              dgp=DGPSettings(num_inducing=32, num_samples=4, pretrain_steps=40, finetune_steps=20))
    searcher = DGPSearcher(small_space, metric="latency_ms", mode="min", seed=0, history=hist, settings=settings)
    store = RecordStore(tmp_path / "records")
    payload = TaskPayload(small_task.workload.key, small_task.mod_json, small_task.target)
    res = tune_layer(payload, small_space, searcher, trials=6, store=store,
                     settings=MeasureSettings(num_threads=2, repeat=3, min_repeat_ms=5,
                                              timing_lock=str(tmp_path / "lock")),
                     storage_path=tmp_path / "ray", name="dgp small conv", cpus_per_trial=2, show_progress=False)
    recs = RecordStore(tmp_path / "records").records()
    assert len(recs) == 6 and sum(r.result.ok for r in recs) >= 3
    # the searcher never proposes a configuration twice ...
    proposed = [json.dumps(r.config, sort_keys=True) for r in res.results]
    assert len(set(proposed)) == 6, proposed
    # ... and a configuration recorded twice can only be TVM's doing: it applied a proposal as another configuration
    # (recorded as applied), one the searcher could not know while that trial was still running
    moved = sum(json.loads(r.metrics["applied"]) != r.config for r in res.results if r.metrics.get("applied"))
    assert 6 - len({r.config for r in recs}) <= moved, (proposed, moved)
    assert searcher.stats["fallback"] == 0 and searcher.stats["refit_failures"] == 0, searcher.stats
    assert res.best_ms == min(r.result.median_ms for r in recs)
