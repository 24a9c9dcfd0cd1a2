"""History: the shipped dataset as package data, checked --history paths, seeding from other layers."""

from __future__ import annotations

import numpy as np
import pytest


def test_seed_configs_take_the_best_valid_configurations_of_other_layers(small_space):
    """A sibling layer (same loop nest, other key) donates its fastest configurations; invalid ones and ones already
    measured here are skipped."""
    from dataclasses import replace

    from raydgp.pipeline.history import seed_configs, top_configs
    from raydgp.records import Config, MeasureResult, Record

    rng = np.random.default_rng(0)
    cfgs = small_space.sample_many(6, rng)
    sibling = replace(small_space.workload, key="conv2d-llvm-sibling")
    recs = [Record.now(sibling, small_space.target, c, MeasureResult("ok", (float(i + 1),))) for i, c in enumerate(cfgs)]
    recs.append(Record.now(sibling, small_space.target, Config(0, ((1, 1),)), MeasureResult("ok", (0.1,))))  # invalid
    donors = top_configs(recs, per_workload=4)
    assert [round(d[0], 1) for d in donors[:2]] == [1.0, 10.0]  # relative to the sibling's best (the invalid 0.1 ms)
    got = seed_configs(small_space, {cfgs[0]}, donors, k=2)
    assert got == [cfgs[1].to_json(), cfgs[2].to_json()]


def test_the_shipped_dataset_is_package_data():
    from raydgp.pipeline.history import shipped_dataset
    from raydgp.records import RecordStore

    p = shipped_dataset()
    assert p is not None and p.is_relative_to(__import__("pathlib").Path(__import__("raydgp").__file__).parent)
    assert len(RecordStore(p).records()) >= 9000


def test_history_paths_are_checked_before_any_work(tmp_path):
    from raydgp.errors import ConfigError
    from raydgp.pipeline.history import check_history_paths

    with pytest.raises(ConfigError, match="no such directory"):
        check_history_paths([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="not a record store"):
        check_history_paths([tmp_path / "empty"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError):
        check_history_paths([tmp_path / "file"])


def test_this_hardware_kind_fills_a_cut_history_first(tmp_path):
    """With more history than stage 1 takes, records measured on this machine's kind of hardware come first among
    workloads of the same shape (``load_history``, :func:`nearest_records`: here every workload is as far from the
    target); the replay's older cut (``subsample_history``) gives them at most 3/4 and the others the rest."""
    from raydgp.pipeline.history import subsample_history
    from raydgp.search import history_from_records
    from raydgp.pipeline.history import load_history
    from raydgp.records import MeasureResult, Record, RecordStore
    from raydgp.space.design_space import DesignSpace
    from raydgp.testing import fake_space

    here = {"kind": "llvm", "mcpu": "rocketlake", "num-cores": 2}
    other = {"kind": "llvm", "mcpu": "znver3", "num-cores": 2}
    store = RecordStore(tmp_path / "s")
    rng = np.random.default_rng(0)
    for i, tgt in enumerate([here, other, other, other]):
        sp = fake_space(f"w{i}", (64 * (i + 1), 56))
        store.add_workload(sp.workload.key, "{}", sp.to_json())
        store.append([Record.now(sp.workload, tgt, c, MeasureResult("ok", (1.0 + j,)))
                      for j, c in enumerate(sp.sample_many(100, rng))])
    target = DesignSpace(fake_space("target", (32, 56)).workload, dict(here), fake_space("target", (32, 56)).sketches)
    h = load_history([tmp_path / "s"], target, max_points=80, seed=0)
    assert len(h) == 80
    mine = np.isclose(h.X[:, -2], 9.0)  # log2(512): measured with AVX-512
    assert mine.sum() == 80
    spaces = {k: DesignSpace.from_json(e["space"]) for k, e in store.workload_entries().items()}
    h, same = subsample_history(history_from_records(store.records(), spaces), here, 80, seed=0)
    assert len(h) == 80 and same.sum() == 60 and np.isclose(h.X[same, -2], 9.0).all()


def test_a_cpu_history_is_not_used_for_a_gpu_target(tmp_path):
    """Records measured on another target kind (CPU records for a cuda target) are left out; none left: cold start."""
    from raydgp.pipeline.history import load_history
    from raydgp.records import MeasureResult, Record, RecordStore
    from raydgp.space.design_space import DesignSpace
    from raydgp.testing import fake_space

    cpu = {"kind": "llvm", "mcpu": "znver3", "num-cores": 2}
    store = RecordStore(tmp_path / "s")
    sp = fake_space("w0", (64, 56))
    store.add_workload(sp.workload.key, "{}", sp.to_json())
    store.append([Record.now(sp.workload, cpu, c, MeasureResult("ok", (1.0 + j,)))
                  for j, c in enumerate(sp.sample_many(50, np.random.default_rng(0)))])
    gpu = DesignSpace(fake_space("t", (32, 56)).workload, {"kind": "cuda", "arch": "sm_90"},
                      fake_space("t", (32, 56)).sketches)
    assert load_history([tmp_path / "s"], gpu) is None
    cpu_target = DesignSpace(fake_space("t", (32, 56)).workload, dict(cpu), fake_space("t", (32, 56)).sketches)
    assert len(load_history([tmp_path / "s"], cpu_target)) == 50


def test_dataset_layers_list_every_machine_kinds_key_most_records_first():
    """The shipped dataset holds some layers on two machine kinds (one key each): a benchmark holding a layer out
    must see both keys, and the one with the most records first."""
    from raydgp.datasets import layers_of
    from raydgp.pipeline.history import shipped_dataset
    from raydgp.records import RecordStore

    recs = RecordStore(shipped_dataset()).records()
    layers = layers_of(recs)
    keys = layers["conv2d:1,64,56,56,64,3,1,1"]
    # Zen 3 and Intel AVX-512 in NCHW, and the NHWC loop nest of the same layer (Intel AVX-512 and Zen 3): one layer
    assert len(keys) == 3
    assert not any("_nhwc:" in spec for spec in layers)
    n = [sum(r.workload.key == k and r.result.ok for r in recs) for k in keys]
    assert n[0] > n[1] > 0 and n[2] > 0


def test_a_held_out_target_is_one_machines_recording_of_one_key(small_space):
    """One key recorded on two machines (the same configurations): the target task is the (key, machine) pair with
    the most ok records, and only that machine's records come with it."""
    from dataclasses import replace

    from raydgp.datasets import target_task
    from raydgp.records import MeasureResult, Record

    cfgs = small_space.sample_many(3, np.random.default_rng(2))
    a, b = {"kind": "llvm", "mcpu": "znver3", "num-cores": 2}, {"kind": "llvm", "mcpu": "emeraldrapids", "num-cores": 2}
    other = replace(small_space.workload, key="conv2d-llvm-other-layout")
    recs = ([Record.now(small_space.workload, a, c, MeasureResult("ok", (1.0 + i,))) for i, c in enumerate(cfgs)]
            + [Record.now(small_space.workload, b, c, MeasureResult("ok", (9.0 + i,))) for i, c in enumerate(cfgs)]
            + [Record.now(small_space.workload, b, cfgs[0], MeasureResult("ok", (9.5,))),
               Record.now(small_space.workload, a, cfgs[1], MeasureResult("build_error", ())),
               Record.now(other, a, cfgs[0], MeasureResult("ok", (2.0,)))])
    key, hw, got = target_task(recs, [small_space.workload.key, other.key])
    assert key == small_space.workload.key and hw.startswith("llvm:emeraldrapids")
    assert len(got) == 4 and all(r.target["mcpu"] == "emeraldrapids" for r in got)
    assert target_task(recs, ["no-such-key"]) == (None, None, [])


def test_donors_of_the_same_shape_on_the_likest_hardware_come_first(small_space):
    """Every workload's best has ratio 1.0: the order among them goes by likeness to the layer (the same loop-nest
    shape on this hardware kind, on hardware of the same vector width, on other hardware), not by file order."""
    from dataclasses import replace
    from types import SimpleNamespace

    from raydgp.pipeline.history import donor_info, rank_donors, top_configs
    from raydgp.records import MeasureResult, Record

    cfgs = small_space.sample_many(4, np.random.default_rng(1))
    here = {"kind": "llvm", "mcpu": "rocketlake", "num-cores": 2}  # the layer's machine, whatever this one is
    same_width, avx2 = {**here, "mcpu": "znver5"}, {**here, "mcpu": "znver3"}
    w = small_space.workload
    layer = SimpleNamespace(workload=w, target=here)
    other_shape = replace(w, key="conv2d-llvm-other", features={**w.features, "log2_spatial_1": 11.0})
    recs = [  # written in the worst order: unrelated shape first, this hardware kind last
        Record.now(other_shape, here, cfgs[0], MeasureResult("ok", (1.0,))),
        Record.now(replace(w, key="conv2d-llvm-avx2"), avx2, cfgs[1], MeasureResult("ok", (2.0,))),
        Record.now(replace(w, key="conv2d-llvm-wide"), same_width, cfgs[2], MeasureResult("ok", (3.0,))),
        Record.now(replace(w, key="conv2d-llvm-here", features={**w.features, "n_blocks": 9.0}), here, cfgs[3],
                   MeasureResult("ok", (4.0,))),  # another epilogue: the same shape
    ]
    donors = top_configs(recs)
    assert {d[0] for d in donors} == {1.0}
    ranked = rank_donors(donors, donor_info(recs), layer)
    assert [d[1] for d in ranked] == ["conv2d-llvm-here", "conv2d-llvm-wide", "conv2d-llvm-avx2", "conv2d-llvm-other"]


def test_a_layer_whose_shape_no_history_holds_gets_a_random_tuning_set(tmp_path, small_space):
    """The shipped dataset holds ResNet-18's 3x3 64-channel conv (other epilogues, other CPUs) and no 5x5 conv: only
    the 5x5 conv's tuning set is made random, and an explicit ``init`` is never overridden."""
    from dataclasses import replace

    from raydgp.pipeline.history import (donor_info, history_shapes, shape_signature, shipped_dataset,
                                         tuning_set_options)
    from raydgp.records import MeasureResult, Record, RecordStore

    info = donor_info(RecordStore(shipped_dataset()).records())
    shapes = history_shapes([shipped_dataset()])
    assert len(shapes) >= 20 and {v[0] for v in info.values()} == shapes
    seen = next(iter(shapes))
    known = replace(small_space.workload, op=seen[0], features=dict(seen[1:]))
    assert shape_signature(known) == seen
    assert tuning_set_options((), known, info) == ()
    unknown = replace(small_space.workload, features={**small_space.workload.features, "log2_reduce_0": 9.0})
    assert shape_signature(unknown) not in shapes
    assert tuning_set_options((("seed", 1),), unknown, info) == (("init", "random"), ("seed", 1))
    assert tuning_set_options((("init", "dgp"),), unknown, info) == (("init", "dgp"),)  # the user chose
    # a store of this very workload holds its shape
    store = RecordStore(tmp_path / "s")
    store.append(Record.now(unknown, small_space.target, small_space.sample_many(1, np.random.default_rng(0))[0],
                            MeasureResult("ok", (1.0,))))
    assert shape_signature(unknown) in history_shapes([tmp_path / "s"])


def test_only_the_same_shape_lets_the_history_pick_the_tuning_set(small_space):
    """A near shape measured on this very hardware does not make the history pick an unseen layer's tuning set (tried
    and withdrawn: live on two unseen convs the random tuning set won, BENCHMARKS.md 7.2c); the same shape measured
    on any hardware does."""
    from raydgp.pipeline.history import shape_distance, shape_signature, tuning_set_options
    from raydgp.records import Workload

    def conv(spatial, reduce):
        f = {f"log2_spatial_{i}": float(np.log2(e)) for i, e in enumerate(spatial)}
        return Workload("k", "k", "conv2d", f | {f"log2_reduce_{i}": float(np.log2(e)) for i, e in enumerate(reduce)})

    target = conv((1, 320, 14, 14), (160, 3, 3))
    near = conv((1, 256, 14, 14), (256, 3, 3))
    assert shape_distance(shape_signature(near), shape_signature(target)) <= 1.0
    assert tuning_set_options((), target, {"a": (shape_signature(near), "llvm:emeraldrapids:2", 512)}) == \
        (("init", "random"),)
    assert tuning_set_options((), target, {"a": (shape_signature(target), "llvm:znver3:2", 256)}) == ()

def test_the_nearest_shapes_best_configurations_are_carried_over_as_seeds(small_space):
    """A layer whose shape no donor has starts from the best configurations of the nearest shapes of its op measured
    on hardware of its vector width, carried over to its space (``DesignSpace.adapt``); farther shapes, other ops,
    other vector widths and configurations well behind their workload's best are left out."""
    from dataclasses import replace

    from raydgp.pipeline.history import donor_info, near_donors, rank_donors, seed_configs, top_configs
    from raydgp.records import Config, MeasureResult, Record

    here = dict(small_space.target)
    w = small_space.workload
    cfgs = small_space.sample_many(5, np.random.default_rng(7))

    def other_extent(c: Config) -> Config:  # the same schedule for a loop twice as long: not a point of this space
        knobs = small_space.sketches[c.sketch].knobs
        i = next(j for j, k in enumerate(knobs) if k.kind == "tile")
        d = list(c.decisions)
        d[i] = (d[i][0] * 2,) + tuple(d[i][1:])
        return Config(c.sketch, tuple(d))

    def shape(key, **f):
        return replace(w, key=key, features={**w.features, **f})

    near = shape("conv2d-llvm-near", log2_reduce_0=w.features["log2_reduce_0"] + 1)
    far = shape("conv2d-llvm-far", log2_spatial_1=w.features["log2_spatial_1"] + 6)
    avx2 = {**here, "mcpu": "znver3"} if here.get("mcpu") != "znver3" else {**here, "mcpu": "skylake-avx512"}
    recs = [Record.now(far, here, cfgs[0], MeasureResult("ok", (1.0,))),
            Record.now(near, here, other_extent(cfgs[1]), MeasureResult("ok", (2.0,))),
            Record.now(near, here, other_extent(cfgs[2]), MeasureResult("ok", (2.2,))),
            Record.now(near, here, other_extent(cfgs[3]), MeasureResult("ok", (9.0,))),  # 4.5x its best: left out
            Record.now(replace(w, key="dense-llvm-x", op="dense"), here, cfgs[4], MeasureResult("ok", (1.0,))),
            Record.now(shape("conv2d-llvm-avx2", log2_reduce_0=w.features["log2_reduce_0"] + 1), avx2,
                       other_extent(cfgs[4]), MeasureResult("ok", (1.0,)))]
    donors, info = top_configs(recs), donor_info(recs)
    got = near_donors(donors, info, small_space)
    assert [d[1] for d in got] == ["conv2d-llvm-near", "conv2d-llvm-near"]
    ranked = [d[1] for d in rank_donors(donors, info, small_space)]
    assert ranked == ["conv2d-llvm-near"] * 3 + ["conv2d-llvm-avx2", "conv2d-llvm-far", "dense-llvm-x"]
    seeds = seed_configs(small_space, {cfgs[1]}, [], k=4, near=got, k_near=4)
    carried = [small_space.from_params(p) for p in seeds]
    assert all(small_space.is_valid(c) for c in carried) and len(set(carried)) == len(carried) >= 1
    assert carried[0] == small_space.adapt(other_extent(cfgs[2])) or carried[0] == small_space.adapt(
        other_extent(cfgs[1]))
    assert cfgs[1] not in carried  # measured here already
    # the valid donors keep their places, and the near ones come after them
    mixed = seed_configs(small_space, set(), [(1.0, "conv2d-llvm-far", cfgs[0])], k=3, near=got, k_near=2)
    assert mixed[0] == cfgs[0].to_json() and len(mixed) == 3


def test_a_layer_the_history_never_saw_starts_from_the_nearest_shapes_carried_over(cpu_target, measurer):
    """The real thing: a 32-channel conv at 28x28 (no such shape in the shipped dataset, which holds NCHW recordings of
    an AVX2 and an AVX-512 CPU) gets as its first trials the history's best configurations of the nearest conv shapes
    measured on hardware of this vector width, carried over; they are distinct points of its space and TVM builds,
    runs and checks them."""
    from raydgp.measure.protocol import TaskPayload
    from raydgp.pipeline.history import (history_donors, history_seeds, near_donors, shape_signature,
                                         shipped_dataset)
    from raydgp.space.metaschedule import build_space
    from raydgp.space.workloads import make_task

    task = make_task("conv2d:1,32,28,28,32,3,1,1", cpu_target)
    space = build_space(task)
    donors, info = history_donors([shipped_dataset()])
    assert shape_signature(task.workload) not in {v[0] for v in info.values()}
    if not near_donors(donors, info, space):  # a CPU of a vector width the dataset has no recording of
        assert history_seeds(space, donors, info, k=3) == []
        pytest.skip("the shipped dataset holds no recording of this CPU's vector width")
    cfgs = [space.from_params(p) for p in history_seeds(space, donors, info, k=3)]
    assert len(cfgs) >= 2 and len(set(cfgs)) == len(cfgs) and all(space.is_valid(c) for c in cfgs)
    payload = TaskPayload(task.workload.key, task.mod_json, task.target)
    outs = [measurer.measure(payload, space.trace_json(c)) for c in cfgs]
    assert sum(o.result.ok for o in outs) >= len(cfgs) - 1, [o.result.message for o in outs]


def _conv_workload(key: str, spatial: tuple, reduce: tuple):
    """A conv workload with the log2 loop-extent features :func:`shape_signature` reads."""
    from raydgp.records import Workload

    f = {f"log2_spatial_{i}": float(np.log2(e)) for i, e in enumerate(spatial)}
    f |= {f"log2_reduce_{i}": float(np.log2(e)) for i, e in enumerate(reduce)}
    return Workload(key, key, "conv2d", f | {"dtype_bits": 32.0})


def test_the_history_cut_takes_the_nearest_shapes_and_this_hardware_first():
    """``nearest_records``: this hardware kind first (even a near shape measured on other hardware comes after
    everything measured here), within it whole workloads nearest the target's loop nest first: the same layer in the
    other layout (permuted axes) after the near ones, other ops last; the task that does not fit whole gives part of
    the room; the records keep their order."""
    from raydgp.pipeline.history import nearest_records
    from raydgp.records import Config, MeasureResult, Record, Workload
    from raydgp.space.design_space import DesignSpace
    from raydgp.testing import fake_space

    here = {"kind": "llvm", "mcpu": "emeraldrapids", "num-cores": 2}
    amd = {"kind": "llvm", "mcpu": "znver3", "num-cores": 2}
    target_w = _conv_workload("t", (1, 256, 14, 14), (256, 3, 3))  # NCHW: n, co, h, w / ci, kh, kw
    target = DesignSpace(target_w, here, fake_space("t").sketches)
    works = {"near_here": (_conv_workload("a", (1, 256, 14, 14), (128, 3, 3)), here),  # 1 away, this hardware
             "near_amd": (_conv_workload("a", (1, 256, 14, 14), (128, 3, 3)), amd),  # 1 away, other hardware
             "nhwc_here": (_conv_workload("b", (1, 14, 14, 256), (3, 3, 256)), here),  # the target's layer in NHWC
             "dense_here": (Workload("d", "d", "dense", {"log2_spatial_0": 9.0}), here)}  # another op
    recs = [Record.now(w, tgt, Config(0, ((i,),)), MeasureResult("ok", (1.0,)), tag=name)
            for name, (w, tgt) in works.items() for i in range(10)]
    recs = recs[::-1]  # the order of the file is not the order of the ranking
    assert nearest_records(recs, [target], None) == recs
    kept = nearest_records(recs, [target], 25, seed=0)
    tags = [r.tag for r in kept]
    assert (tags.count("near_here"), tags.count("nhwc_here"), tags.count("dense_here"), tags.count("near_amd")) == \
        (10, 10, 5, 0)
    assert [r.tag for r in nearest_records(recs, [target], 35)].count("near_amd") == 5
    assert kept == [r for r in recs if r in kept]  # original order
    assert nearest_records(recs, [target], 25, seed=0) == kept  # seeded
    assert {r.tag for r in nearest_records(recs, [target], 10)} == {"near_here"}
    # a model's layers: the distance to the nearest of them (the NHWC layer is itself a layer being tuned)
    nhwc_target = DesignSpace(works["nhwc_here"][0], here, fake_space("t").sketches)
    both = nearest_records(recs, [target, nhwc_target], 20)
    assert {r.tag for r in both} == {"near_here", "nhwc_here"}
    with pytest.raises(ValueError, match="no spaces"):
        nearest_records(recs, [], 5)


def test_a_layer_runs_history_leaves_out_its_own_records_on_this_hardware_only(tmp_path):
    """``load_history`` (a layer run): the target workload's records measured on this hardware enter as target data,
    not as history; the same workload measured elsewhere stays; ``exclude_target=False`` (a model run) keeps all."""
    from raydgp.pipeline.history import load_history
    from raydgp.records import MeasureResult, Record, RecordStore
    from raydgp.space.design_space import DesignSpace
    from raydgp.testing import fake_space

    here = {"kind": "llvm", "mcpu": "emeraldrapids", "num-cores": 2}
    other = {"kind": "llvm", "mcpu": "znver3", "num-cores": 2}
    sp = fake_space("w", (64, 56))
    target = DesignSpace(sp.workload, dict(here), sp.sketches)
    store = RecordStore(tmp_path / "s")
    store.add_workload(sp.workload.key, "{}", sp.to_json())
    rng = np.random.default_rng(0)
    for tgt, n in ((here, 7), (other, 5)):
        store.append([Record.now(sp.workload, tgt, c, MeasureResult("ok", (1.0 + j,)))
                      for j, c in enumerate(sp.sample_many(n, rng))])
    h = load_history([tmp_path / "s"], target, max_points=100)
    assert len(h) == 5 and np.isclose(h.X[:, -2], 8.0).all()  # log2(256): only the Zen 3 (AVX2) records
    assert len(load_history([tmp_path / "s"], target, exclude_target=False, max_points=100)) == 12
