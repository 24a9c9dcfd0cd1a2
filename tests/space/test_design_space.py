"""Design spaces from MetaSchedule: seeded valid sampling, neighbours, encode/decode, invalid configurations, cuda."""

from __future__ import annotations

import numpy as np
import pytest

from raydgp.errors import ConfigError, InvalidConfigurationError
from raydgp.records import Config
from raydgp.space.design_space import MAX_KNOBS, MAX_SKETCHES, SLOT_WIDTH, DesignSpace, perfect_tilings


def test_space_comes_from_metaschedule_sketches(small_space):
    assert len(small_space.sketches) >= 2
    kinds = {k.kind for s in small_space.sketches for k in s.knobs}
    assert {"tile", "categorical", "compute_location"} <= kinds
    tile = next(k for k in small_space.sketches[0].knobs if k.kind == "tile" and k.extent == 16)
    assert all(np.prod(t) == 16 for t in tile.choices())
    assert small_space.size > 10_000


def test_sampling_is_seeded_and_valid(small_space):
    a = [small_space.sample(np.random.default_rng(5)) for _ in range(3)]
    b = [small_space.sample(np.random.default_rng(5)) for _ in range(3)]
    assert a == b
    many = small_space.sample_many(50, np.random.default_rng(1))
    assert len(set(many)) == 50
    assert all(small_space.is_valid(c) for c in many)
    assert small_space.sample_many(50, np.random.default_rng(2)) != many


def test_sampled_configurations_apply_in_tvm(small_task, small_space):
    from raydgp.space.metaschedule import apply_config, tune_context

    postprocs = tune_context(small_task.mod, small_task.target).space_generator.postprocs
    applied = 0
    for c in small_space.sample_many(12, np.random.default_rng(3)):
        try:
            _sch, got = apply_config(small_task.mod, small_space.trace_json(c), postprocs)
        except InvalidConfigurationError:
            continue
        applied += 1
        # tiles and categorical choices are applied exactly as asked
        for k, d, (_, g) in zip(small_space.sketches[c.sketch].knobs, c.decisions, got):
            if k.kind != "compute_location":
                assert (tuple(g) if isinstance(g, list) else g) == d
    assert applied >= 6


def test_encode_decode_round_trip(small_space):
    for c in small_space.sample_many(30, np.random.default_rng(0)):
        v = small_space.encode(c)
        assert v.shape == (small_space.dim,)
        assert small_space.decode(v) == c
        assert small_space.decode(v[: small_space.config_dim]) == c
    X = small_space.encode_many(small_space.sample_many(4, np.random.default_rng(9)))
    assert X.shape == (4, small_space.dim)
    # the workload features are part of the encoding
    assert np.allclose(X[:, small_space.config_dim:], small_space.features())


def test_neighbours_differ_in_exactly_one_knob(small_space):
    c = small_space.sample(np.random.default_rng(4))
    nbs = small_space.neighbours(c)
    assert len(nbs) > 5 and len(set(nbs)) == len(nbs)
    for n in nbs:
        assert small_space.is_valid(n) and n.sketch == c.sketch
        assert sum(a != b for a, b in zip(n.decisions, c.decisions)) == 1


def test_invalid_configurations_are_told_apart(small_space):
    c = small_space.sample(np.random.default_rng(0))
    tile_i = next(i for i, k in enumerate(small_space.sketches[c.sketch].knobs) if k.kind == "tile")
    bad_tile = list(c.decisions)
    bad_tile[tile_i] = (3,) + tuple(bad_tile[tile_i][1:])  # product != extent
    for bad in (Config(c.sketch, tuple(bad_tile)), Config(99, c.decisions), Config(c.sketch, c.decisions[:-1])):
        assert not small_space.is_valid(bad)
        with pytest.raises(InvalidConfigurationError):
            small_space.trace_json(bad)


def test_space_json_round_trip(small_space):
    again = DesignSpace.from_json(small_space.to_json())
    assert again == small_space
    c = again.sample(np.random.default_rng(0))
    assert again.trace_json(c) == small_space.trace_json(c)


def test_a_space_encodes_alike_built_live_and_read_back_from_a_store(small_space):
    """A live task lists its features in FEATURE_NAMES order, a store's JSON in sorted order: the encoding must not
    depend on it (it did: a live target's features landed in other columns than its history's, so the pre-trained
    model saw every live target as an unknown workload and predicted a constant)."""
    import json

    from raydgp.records import Workload

    stored = DesignSpace.from_json(json.loads(json.dumps(small_space.to_json(), sort_keys=True)))
    assert list(stored.workload.features) != list(small_space.workload.features)  # the orders do differ
    configs = small_space.sample_many(5, np.random.default_rng(0))
    np.testing.assert_array_equal(stored.encode_many(configs), small_space.encode_many(configs))
    w = small_space.workload
    backwards = Workload(w.key, w.name, w.op, dict(reversed(list(w.features.items()))))
    assert backwards.feature_vector() == w.feature_vector()
    assert w.feature_vector() == tuple(w.features[k] for k in sorted(w.features))


def test_perfect_tilings():
    t = perfect_tilings(12, 3, 4)
    assert all(np.prod(x) == 12 and x[-1] <= 4 for x in t)
    assert (1, 3, 4) in t and (1, 1, 12) not in t


def test_tile_sampling_draws_the_stream_randrange_draws():
    """Tile sampling's inlined draw (CPython's ``Random._randbelow``) gives, from the same seed, the tilings the plain
    ``randrange`` sampling gave: sampled pools, hence proposals, are unchanged by it."""
    import random

    from raydgp.space.design_space import Knob, _factor_pairs, _sample_tile

    def reference(k, rng):
        for _ in range(100):
            parts = [1] * k.parts
            for p in _factor_pairs(k.extent):
                parts[rng.randrange(k.parts)] *= p
            if k.max_innermost <= 0 or parts[-1] <= k.max_innermost:
                return tuple(parts)
        ch = k.choices()
        return ch[rng.randrange(len(ch))]

    for parts, inner in ((1, 0), (2, 16), (3, 4), (4, 16), (5, 1), (7, 0)):
        k = Knob("tile", 0, extent=2**6 * 3 * 7, parts=parts, max_innermost=inner)
        a, b = random.Random(5), random.Random(5)
        got = [_sample_tile(k, b) for _ in range(500)]
        assert got == [reference(k, a) for _ in range(500)]
        assert len(set(got)) > 1 or parts == 1


def test_bad_workload_specs_give_clear_errors():
    from raydgp.space.workloads import parse_spec

    for bad in ("conv3d:1,2,3", "conv2d:1,2,3", "conv2d:1,64,56,56,64,3,0,1", "dense:a,b,c", "nonsense"):
        with pytest.raises(ConfigError):
            parse_spec(bad)


def test_workload_features_tell_layers_apart(cpu_target):
    from raydgp.space.workloads import FEATURE_NAMES, make_task

    a = make_task("conv2d:1,64,56,56,64,3,1,1", cpu_target).workload
    b = make_task("conv2d:1,64,56,56,128,3,2,1", cpu_target).workload
    d = make_task("depthwise:1,32,112,112,3,1,1", cpu_target).workload
    m = make_task("dense:1,512,1000", cpu_target).workload
    assert list(a.features) == list(FEATURE_NAMES)
    assert (a.op, d.op, m.op) == ("conv2d", "depthwise_conv2d", "dense")
    assert a.key != b.key and a.features != b.features
    assert a.key == make_task("conv2d:1,64,56,56,64,3,1,1", cpu_target).workload.key


def test_cuda_space_generates_without_a_gpu():
    from raydgp.space.metaschedule import apply_config, build_space, host_target, make_target, tune_context
    from raydgp.space.workloads import make_task

    target = host_target("cuda")
    task = make_task("conv2d:1,16,14,14,16,3,1,1", target)
    space = build_space(task)
    assert space.workload.features["target_cuda"] == 1.0
    knobs = space.sketches[0].knobs
    assert any(k.kind == "tile" and k.parts == 5 for k in knobs)  # GPU multi-level tiling (SSSRRSRS)
    postprocs = tune_context(task.mod, target).space_generator.postprocs
    import tvm

    built = 0
    for c in space.sample_many(40, np.random.default_rng(0)):
        try:
            sch, _ = apply_config(task.mod, space.trace_json(c), postprocs)
        except InvalidConfigurationError:
            continue  # e.g. VerifyGPUCode rejects too many threads: invalid, not a crash
        src = tvm.compile(sch.mod, target=make_target(target)).mod.imports[0].inspect_source()
        assert "__global__" in src and "threadIdx" in src
        built += 1
        if built == 2:
            break
    assert built >= 1


def test_column_groups_cover_the_encoding_by_what_each_column_describes(small_space):
    groups = small_space.column_groups
    flat = [c for g in groups for c in g]
    assert len(flat) == len(set(flat)) and max(flat) < small_space.dim  # disjoint, inside the encoding
    assert groups[0] == tuple(range(MAX_SKETCHES)) and groups[-1][-1] == small_space.dim - 1
    knobs = max(len(sk.knobs) for sk in small_space.sketches)
    assert len(groups) == 2 + min(knobs, MAX_KNOBS) and all(len(g) == SLOT_WIDTH for g in groups[1:-1])
    rng = np.random.default_rng(0)
    X = small_space.encode_many(small_space.sample_many(20, rng))
    used = {c for g in groups for c in g}
    assert not X[:, [c for c in range(small_space.dim) if c not in used]].any()  # no column left outside a group


def test_a_configuration_of_another_shape_is_carried_over_to_the_nearest_point():
    """Schedule transfer (``DesignSpace.adapt``): each tile becomes the tiling of this extent nearest in log2 factors,
    the inner ones kept; a categorical knob keeps its index, a compute location goes to the nearest accepted one; a
    point of this space is itself; a sketch of another layout does not correspond."""
    from raydgp.records import Workload
    from raydgp.space.design_space import Knob, Sketch

    def space(k_extent: int) -> DesignSpace:
        knobs = (Knob("tile", 1, extent=28, parts=4, max_innermost=64), Knob("tile", 2, extent=k_extent, parts=2),
                 Knob("categorical", 3, values=(0, 16, 64, 512)), Knob("compute_location", 4, values=(-1, 0, 3)))
        w = Workload(key=f"w{k_extent}", name="conv", op="conv2d", features={"log2_reduce_0": float(np.log2(k_extent))})
        return DesignSpace(workload=w, target={"kind": "llvm"}, sketches=(Sketch(insts=[], knobs=knobs),
                                                                         Sketch(insts=[], knobs=knobs[:2])))

    k64, k128, k96 = space(64), space(128), space(96)
    best = Config(0, ((1, 2, 1, 14), (2, 32), 3, 3))
    assert k64.is_valid(best) and k128.adapt(best) == Config(0, ((1, 2, 1, 14), (4, 32), 3, 3))
    assert k96.adapt(best).decisions[1] == (3, 32)  # the outer factor absorbs the other extent
    assert k64.adapt(best) == best
    moved = k64.adapt(Config(0, ((1, 2, 1, 14), (2, 32), 7, 2)))
    assert moved.decisions[2:] == (3, 3)  # index clamped; location 2 -> the nearest accepted, 3
    assert k128.adapt(Config(0, ((1, 2, 1, 14), (2, 32), 3))) is None  # a knob short: another sketch layout
    assert k128.adapt(Config(1, ((2, 32), (1, 2, 1, 14)))) is None  # knob kinds do not line up
    assert k128.adapt(Config(5, ())) is None


def test_a_real_conv_schedule_carried_over_to_another_shape_builds_and_passes_the_check(cpu_target, measurer):
    """The real thing: configurations of a 16-channel conv's MetaSchedule space carried over to a 32 -> 24-channel
    conv's space are points of it that TVM applies, builds, runs and checks against the reference."""
    from raydgp.measure.protocol import TaskPayload
    from raydgp.space.metaschedule import build_space
    from raydgp.space.workloads import make_task

    src = build_space(make_task("conv2d:1,16,14,14,16,3,1,1", cpu_target))
    task = make_task("conv2d:1,32,14,14,24,3,1,1", cpu_target)
    dst = build_space(task)
    payload = TaskPayload(task.workload.key, task.mod_json, task.target)
    carried = [c for c in (dst.adapt(c) for c in src.sample_many(8, np.random.default_rng(4))) if c is not None]
    assert len(carried) >= 6 and all(dst.is_valid(c) for c in carried)
    outs = [measurer.measure(payload, dst.trace_json(c)) for c in carried[:4]]
    assert sum(o.result.ok for o in outs) >= 3, [o.result.message for o in outs]
    assert all(o.result.status in ("ok", "invalid") for o in outs), [o.result.message for o in outs]


def test_a_measurement_counts_for_the_configuration_whose_schedule_it_timed():
    """``config_as_applied``: TVM's read-back decisions where they are a point of the space; the proposed configuration
    where TVM moved only a compute location to a position the space does not list (replaying it moves it alike);
    an error where TVM changed a tile or categorical decision."""
    from raydgp.records import Workload
    from raydgp.space.design_space import Knob, Sketch, config_as_applied

    knobs = (Knob("tile", 1, extent=28, parts=2), Knob("categorical", 2, values=(0, 16, 64)),
             Knob("compute_location", 3, values=(-2, -1, 2, 7)))
    w = Workload(key="w", name="conv", op="conv2d", features={})
    sp = DesignSpace(workload=w, target={"kind": "llvm"}, sketches=(Sketch(insts=[], knobs=knobs),))
    proposed = Config(0, ((4, 7), 1, 7))
    assert config_as_applied(sp, proposed, None) == proposed
    assert config_as_applied(sp, proposed, [[1, [4, 7]], [2, 1], [3, 7]]) == proposed
    assert config_as_applied(sp, proposed, [[1, [4, 7]], [2, 1], [3, 2]]) == Config(0, ((4, 7), 1, 2))  # listed
    assert config_as_applied(sp, proposed, [[1, [4, 7]], [2, 1], [3, 5]]) == proposed  # not listed: the proposed one
    with pytest.raises(InvalidConfigurationError, match="knob 0"):
        config_as_applied(sp, proposed, [[1, [2, 14]], [2, 1], [3, 5]])
    with pytest.raises(InvalidConfigurationError, match="knob 1"):
        config_as_applied(sp, proposed, [[1, [4, 7]], [2, 2], [3, 5]])
    with pytest.raises(InvalidConfigurationError):
        config_as_applied(sp, proposed, [[1, [4, 7]], [2, 1]])


def test_configurations_the_space_breeds_are_points_of_it_without_rechecking(small_space):
    """Sampled, mutated, crossed and neighbouring configurations are remembered as valid (a proposal encodes thousands
    and no longer re-checks each decision): every one of them passes the full check of a fresh copy of the space that
    remembers nothing; an invalid configuration is still refused; a pickled space carries no memory."""
    import pickle

    rng = np.random.default_rng(3)
    fresh = DesignSpace.from_json(small_space.to_json())
    pool = small_space.sample_many(200, rng)
    bred = [small_space.mutate(c, rng) for c in pool[:100]]
    same = [(a, b) for a, b in zip(pool, pool[1:]) if a.sketch == b.sketch]
    bred += [small_space.crossover(a, b, rng) for a, b in same]
    bred += small_space.neighbours(pool[0])
    for c in pool + bred:
        assert c in small_space._known_valid
        fresh.validate(c)  # raises if the remembered one is not a point of the space
        assert c == Config(c.sketch, c.decisions) and hash(c) == hash(Config(c.sketch, c.decisions))
    c = pool[0]
    tile_i = next(i for i, k in enumerate(small_space.sketches[c.sketch].knobs) if k.kind == "tile")
    bad = list(c.decisions)
    bad[tile_i] = (3,) + tuple(bad[tile_i][1:])
    bad = Config(c.sketch, tuple(bad))
    assert not small_space.is_valid(bad)
    mutant = small_space.mutate(bad, rng)  # bred from an invalid parent: checked, not remembered
    assert mutant not in small_space._known_valid or fresh.is_valid(mutant)
    again = pickle.loads(pickle.dumps(small_space))
    assert again == small_space and not again._known_valid
    assert np.array_equal(again.encode_many(pool[:5]), small_space.encode_many(pool[:5]))
    assert np.array_equal(small_space.encode_many(pool[:5]), np.stack([small_space.encode(p) for p in pool[:5]]))


def test_on_target_keeps_the_space_and_encodes_the_other_machine(small_space):
    from raydgp.space.hardware import hardware_features

    assert small_space.on_target(dict(small_space.target)) is small_space
    other = {"kind": "llvm", "mcpu": "emeraldrapids", "num-cores": 2}
    moved = small_space.on_target(other)
    assert moved.target == other and moved.sketches == small_space.sketches and moved.workload == small_space.workload
    c = small_space.sample(np.random.default_rng(0))
    x, y = small_space.encode(c), moved.encode(c)
    n = len(hardware_features(other))
    assert list(y[-n:]) == list(hardware_features(other)) and list(x[:-n]) == list(y[:-n])
    assert list(x[-n:]) != list(y[-n:])
