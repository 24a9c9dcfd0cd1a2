"""The replay benchmark's method table (``scripts/bench_search_replay.py``): each method name runs the search settings
it says it does (a name that silently ran another method's settings once made three replay variants one), and
``--live`` turns live runs' record stores into targets."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import bench_search_replay as replay  # noqa: E402

from raydgp.search import SearchSettings  # noqa: E402

DEFAULT = SearchSettings()


@pytest.mark.parametrize("method, init, mix, pairs", [
    ("dgp", "dgp", DEFAULT.member_mix, DEFAULT.trust_pairs),
    ("dgp_rand", "random", DEFAULT.member_mix, DEFAULT.trust_pairs),
    ("dgp_prev", "dgp", "ei", "all"), ("dgp_rand_prev", "random", "ei", "all"),
    ("dgp_top", "dgp", "ei", "top"), ("dgp_rand_top", "random", "ei", "top"),
    ("dgp_share", "dgp", "share", "all"), ("dgp_rand_share", "random", "share", "all"),
    ("dgp_share_top", "dgp", "share", "top"), ("dgp_rand_share_top", "random", "share", "top"),
])
def test_each_trust_variant_runs_the_settings_it_names(method, init, mix, pairs):
    st = replay.method_settings(method, seed=3, n_candidates=120)
    assert (st.init, st.member_mix, st.trust_pairs) == (init, mix, pairs)
    assert st.seed == 3 and st.pool_size == 120 and st.evolve_generations == 0


def test_every_dgp_method_has_distinct_settings():
    dgp = [m for m in replay.METHODS if m not in ("random", "exact_gp", "mtgp", "rgpe", "fsbo")
           and not m.startswith("cold")]
    settings = {m: replay.method_settings(m, 0, 10) for m in dgp}
    # only the name that spells out today's defaults runs what `dgp` runs
    spelled = {("ei", "all"): "prev", ("share", "top"): "share_top"}[(DEFAULT.member_mix, DEFAULT.trust_pairs)]
    assert {m for m in dgp if settings[m] == settings["dgp"]} == {"dgp", f"dgp_{spelled}"}
    assert {m for m in dgp if settings[m] == settings["dgp_rand"]} == {"dgp_rand", f"dgp_rand_{spelled}"}


def test_live_run_directories_become_targets(tmp_path):
    from raydgp.records import Config, MeasureResult, Record, RecordStore, Workload

    run = tmp_path / "dgp-conv-s0"
    store = RecordStore(run / "records")
    w = Workload(key="conv2d-llvm-abc", name="conv2d_1_8_8_8_8_3_1_1", op="conv2d", features={"op_conv2d": 1.0})
    for i, ms in enumerate((2.0, 1.0, 3.0)):
        store.append(Record(workload=w, config=Config(sketch=0, decisions=((i,),)), target={"kind": "llvm"},
                            result=MeasureResult(status="ok", latencies_ms=(ms,)), tag="dgp"))
    (run / "summary.json").write_text(json.dumps({"workload": "conv2d:1,8,8,8,8,3,1,1"}))
    recs, spaces, specs = replay._live_records([run], history_keys=set())
    assert specs == ["conv2d:1,8,8,8,8,3,1,1"] and len(recs) == 3
    assert {r.tag for r in recs} == {"dataset:conv2d:1,8,8,8,8,3,1,1"}
    # a configuration measured twice counts at the median of its measurements
    again = Record(workload=w, config=Config(sketch=0, decisions=((1,),)), target={"kind": "llvm"},
                   result=MeasureResult(status="ok", latencies_ms=(5.0,)), tag="dgp")
    lat = replay._latencies(recs + [again, again], "conv2d-llvm-abc", median=True)
    assert lat[Config(sketch=0, decisions=((1,),))] == 5.0 and len(lat) == 3
    assert replay._latencies(recs + [again], "conv2d-llvm-abc")[Config(sketch=0, decisions=((1,),))] == 5.0
    with pytest.raises(ValueError, match="in the history already"):
        replay._live_records([run], history_keys={"conv2d-llvm-abc"})
    with pytest.raises(ValueError, match="not a live search's run directory"):
        replay._live_records([tmp_path], history_keys=set())


def test_a_key_recorded_on_two_machines_gives_each_machines_latencies_and_target(small_space):
    """The shipped NHWC parts 3 and 4 are the same kernels (one key) on two machine kinds, with the same
    configurations: a target task reads its own machine's latencies only, and its space encodes that machine."""
    import numpy as np

    from raydgp.records import Config, MeasureResult, Record
    from raydgp.space.design_space import DesignSpace
    from raydgp.space.hardware import hardware_features

    w = small_space.workload
    a, b = {"kind": "llvm", "mcpu": "emeraldrapids", "num-cores": 2}, {"kind": "llvm", "mcpu": "znver3", "num-cores": 2}
    cfgs = [Config(sketch=0, decisions=((i,),)) for i in range(3)]
    recs = [Record(workload=w, config=c, target=t, result=MeasureResult(status="ok", latencies_ms=(ms,)),
                   tag="dataset:x") for t, f in ((a, 1.0), (b, 10.0)) for c, ms in zip(cfgs, (f, 2 * f, 3 * f))]
    assert replay._latencies(recs, w.key, hardware="llvm:emeraldrapids:2") == dict(zip(cfgs, (1.0, 2.0, 3.0)))
    assert replay._latencies(recs, w.key, hardware="llvm:znver3:2") == dict(zip(cfgs, (10.0, 20.0, 30.0)))
    stored = DesignSpace(w, dict(a), small_space.sketches)
    assert replay._target_space(stored, recs, w.key, "llvm:emeraldrapids:2") is stored
    other = replay._target_space(stored, recs, w.key, "llvm:znver3:2")
    assert other.target == b and other.sketches == stored.sketches
    x = other.encode(small_space.sample(np.random.default_rng(0)))
    assert list(x[len(x) - len(hardware_features(b)):]) == list(hardware_features(b))


def test_target_hardware_picks_the_layers_recording_on_that_machine(tmp_path):
    """``--target-hardware``: the target is the layer's recording on that hardware (the shipped history's NHWC part
    on emeraldrapids: 100 configurations per ResNet-18 layer) instead of the one with the most records (Zen 3: 300);
    a tag nothing was recorded on is refused."""
    spec = "conv2d:1,512,7,7,512,3,1,1"
    out = {}
    for hw in (None, "llvm:emeraldrapids:2"):
        path = tmp_path / f"{hw}.json"
        argv = ["--targets", spec, "--methods", "cold", "--seeds", "1", "--budget", "3", "--random-seeds", "2",
                "--out", str(path), "--cache", str(tmp_path / "c")] + (["--target-hardware", hw] if hw else [])
        assert replay.main(argv) == 0
        out[hw] = json.loads(path.read_text())
    assert out[None]["targets"][spec]["candidates"] == 300 and out[None]["target_hardware"] is None
    assert out["llvm:emeraldrapids:2"]["targets"][spec]["candidates"] == 100
    assert out["llvm:emeraldrapids:2"]["target_hardware"] == "llvm:emeraldrapids:2"
    with pytest.raises(SystemExit):
        replay.main(["--targets", spec, "--methods", "cold", "--target-hardware", "llvm:nosuchcpu:2"])


def test_compare_prints_each_files_cut_and_methods_side_by_side(tmp_path):
    """``--compare``: one row per (file, method) with the file's history cut and target hardware, and the median and
    mean trials to 5% over its targets."""
    a = {"subsample": "own", "target_hardware": "llvm:emeraldrapids:2",
         "targets": {"t1": {"cold": {"trials_to_5pct": 10.0}, "dgp_prev": {"trials_to_5pct": 2.0}},
                     "t2": {"cold": {"trials_to_5pct": 30.0}, "dgp_prev": {"trials_to_5pct": 4.0}},
                     "t3": {"cold": {"trials_to_5pct": 41.0}, "dgp_prev": {"trials_to_5pct": 41.0}}}}
    b = {"targets": {"t1": {"dgp_prev": {"trials_to_5pct": 7.0}}}}
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    table = replay._compare_table([str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    rows = table.splitlines()
    assert "| `a.json` | own | llvm:emeraldrapids:2 | cold | 3 | 30 | 27 |" in rows
    assert "| `a.json` | own | llvm:emeraldrapids:2 | dgp_prev | 3 | 4 | 15.7 |" in rows
    assert "| `b.json` | random (before 2026-12-06) | most records (Zen 3) | dgp_prev | 1 | 7 | 7 |" in rows
    only = replay._compare_table([str(tmp_path / "a.json")], ["dgp_prev"])
    assert "| cold |" not in only and "| dgp_prev |" in only
