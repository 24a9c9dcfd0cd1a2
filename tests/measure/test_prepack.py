"""Prepacked weights: layout-rewritten schedules build, measure, pass the correctness check (computed from the original
weights), round-trip through the MetaSchedule database, and a tuned tiny model packs its weights at build."""

from __future__ import annotations

import numpy as np
import pytest


def _valid_schedules(task, n, seed=0):
    from raydgp.space.metaschedule import apply_config, build_space, tune_context

    space = build_space(task)
    post = tune_context(task.mod, task.target).space_generator.postprocs
    out = []
    for c in space.sample_many(40, np.random.default_rng(seed)):
        try:
            sch, _ = apply_config(task.mod, space.trace_json(c), post)
        except Exception:  # noqa: BLE001 - invalid samples are skipped
            continue
        out.append((c, sch))
        if len(out) >= n:
            break
    return space, out


def _shapes(task):
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    return [([int(s) for s in a.shape], str(a.dtype)) for a in ArgInfo.from_prim_func(task.mod["main"])]


@pytest.mark.parametrize("spec", ["conv2d:1,16,14,14,16,3,1,1", "dense:1,64,32"])
def test_layout_rewritten_schedule_splits_checks_and_times(spec, cpu_target):
    import tvm

    from raydgp.measure.prepack import split_and_build
    from raydgp.space.metaschedule import make_target
    from raydgp.space.workloads import make_task

    task = make_task(spec, cpu_target)
    assert list(task.mod["main"].attrs["layout_free_buffers"]) == [1, 2]
    target, dev = make_target(cpu_target), tvm.cpu()
    shapes = _shapes(task)
    rng = np.random.default_rng(1)
    arrays = [rng.uniform(-1, 1, s).astype(d) for s, d in shapes]
    ref = tvm.compile(task.mod, target=target)
    ref_args = [tvm.runtime.tensor(a, dev) for a in arrays]
    ref["main"](*ref_args)
    _, schedules = _valid_schedules(task, 3)
    assert schedules
    packed_any = False
    for _, sch in schedules:
        k = split_and_build(sch.mod, shapes, target, dev)
        args = k.run_all(arrays)
        np.testing.assert_allclose(args[-1].numpy(), ref_args[-1].numpy(), rtol=1e-3, atol=1e-3)
        if k.prepacked:
            packed_any = True
            assert k.kernel_name.endswith("_prepacked")
            assert tuple(args[1].shape) != tuple(shapes[1][0])  # the kernel reads the weight in another layout
        lat = k.time(args, dev, repeat=2, min_repeat_ms=1)
        assert len(lat) == 2 and all(x > 0 for x in lat)
    assert packed_any, "RewriteLayout never rewrote the weight"


@pytest.mark.parametrize("spec", ["conv2d:1,16,14,14,16,3,1,1", None])
def test_functions_are_looked_up_at_build_not_at_the_first_run(spec, cpu_target, monkeypatch):
    """TVM's LLVM module generates its code at the first function lookup; the build must do it (outside the node's
    timing lock), so that running the kernel in the lock looks nothing up (plain and split kernels)."""
    import tvm

    import raydgp.measure.prepack as prepack
    from raydgp.space.metaschedule import make_target
    from raydgp.space.workloads import make_task

    lookups: list = []

    class Recording:
        def __init__(self, lib):
            self._lib = lib

        def __getitem__(self, name):
            lookups.append(name)
            return self._lib[name]

    real = tvm.compile
    monkeypatch.setattr(tvm, "compile", lambda *a, **k: Recording(real(*a, **k)))
    task = make_task(spec or "conv2d:1,16,14,14,16,3,1,1", cpu_target)
    shapes = _shapes(task)
    target, dev = make_target(cpu_target), tvm.cpu()
    if spec:
        mod = _valid_schedules(task, 1)[1][0][1].mod
    else:  # nothing layout-free: the plain kernel
        mod = tvm.IRModule({"main": task.mod["main"].without_attr("layout_free_buffers")})
    k = prepack.split_and_build(mod, shapes, target, dev)
    assert k.prepacked == bool(spec) and (spec or k.kernel_name == "main")
    built = list(lookups)
    assert k.kernel_name in built
    arrays = [np.random.default_rng(0).uniform(-1, 1, s).astype(d) for s, d in shapes]
    k.run_all(arrays)
    assert lookups == built  # running looked nothing up


def test_a_wrong_prepacked_kernel_is_caught(measurer, cpu_target):
    """A schedule whose kernel is right but whose packing is wrong must fail the check (the check runs the packing)."""
    import tvm

    from raydgp.measure.protocol import TaskPayload
    from raydgp.space.workloads import make_task

    task = make_task("conv2d:1,16,14,14,16,3,1,1", cpu_target)
    _, schedules = _valid_schedules(task, 1)
    _, sch = schedules[0]
    good = tvm.ir.save_json(sch.mod)
    payload = TaskPayload(task.workload.key, task.mod_json, cpu_target)
    assert measurer.measure(payload, None, good).result.ok
    # Corrupt the layout-rewrite block: scale what it stores, so the packed weight (only) is wrong.
    script = sch.mod.script()
    assert "meta_schedule.layout_rewrite_preproc" in script
    broken_mod = _scale_preproc(sch.mod)
    out = measurer.measure(payload, None, tvm.ir.save_json(broken_mod))
    assert out.result.status == "wrong_result", out.result.message


def _scale_preproc(mod):
    """The module with its layout-rewrite block storing ``2 * w`` instead of ``w``."""
    import tvm
    from tvm import s_tir

    sch = s_tir.Schedule(mod)
    for b in sch.get_child_blocks(sch.get_sblock("root")):
        stmt = sch.get(b)
        if "meta_schedule.layout_rewrite_preproc" in (stmt.annotations or {}):
            store = stmt.body
            new = tvm.tirx.BufferStore(store.buffer, store.value * tvm.tirx.const(2.0, "float32"), store.indices)
            sch.state.replace(sch.get_sref(b), stmt.__class__(
                stmt.iter_vars, stmt.reads, stmt.writes, stmt.name_hint, new, stmt.init, stmt.alloc_buffers,
                stmt.match_buffers, stmt.annotations), {})
            return sch.mod
    raise AssertionError("no layout-rewrite block")


def test_prepacked_records_round_trip_through_the_metaschedule_database(tmp_path, cpu_target):
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from raydgp.records import MeasureResult, Record, RecordStore
    from raydgp.space.ms_database import export_to_metaschedule
    from raydgp.space.workloads import make_task

    task = make_task("conv2d:1,16,14,14,16,3,1,1", cpu_target)
    space, schedules = _valid_schedules(task, 2)
    store = RecordStore(tmp_path / "store")
    store.add_workload(task.workload.key, task.mod_json, space.to_json())
    for i, (c, _) in enumerate(schedules):
        store.append(Record(workload=task.workload, target=dict(cpu_target), config=c,
                            result=MeasureResult("ok", latencies_ms=(1.0 + i,))))
    n = export_to_metaschedule(store, tmp_path / "db", top_k=1)
    assert n == 1
    db = ms.database.JSONDatabase(work_dir=str(tmp_path / "db"))
    rec = db.query_tuning_record(task.mod, tvm.target.Target(dict(cpu_target)), "main")
    assert rec is not None
    sch = ms.tir_integration.compile_tir(db, task.mod, tvm.target.Target(dict(cpu_target)))
    assert sch is not None
    assert "layout_rewrite" in sch.mod.script() or "T_layout_trans" in sch.mod.script()


@pytest.mark.slow
def test_tiny_model_packs_its_weights_at_build_and_verifies(tmp_path, cpu_target):
    """Random schedules for every tiny-CNN layer: the tuned module calls only prepacked kernels on constant (packed)
    weights, builds, and matches PyTorch."""
    import tvm
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    from raydgp.models.build import compare, compile_tuned, export, run_library, tuned_module
    from raydgp.models.importer import load_model
    from raydgp.models.tasks import extract_layers, prepare
    from raydgp.space.metaschedule import make_target

    m = load_model("tiny_cnn", None, seed=0)
    prepared = prepare(m.mod, cpu_target)
    layers = extract_layers(prepared, cpu_target)
    dbdir = tmp_path / "db"
    dbdir.mkdir()
    db = ms.database.JSONDatabase(work_dir=str(dbdir))
    target = make_target(cpu_target)
    convs = 0
    for l in layers:
        _, schedules = _valid_schedules(l.task, 1)
        if not schedules:
            continue
        convs += l.task.workload.op == "conv2d"
        wl = db.commit_workload(l.task.mod)
        db.commit_tuning_record(ms.database.TuningRecord(
            trace=schedules[0][1].trace, workload=wl, run_secs=[1e-3], target=target,
            args_info=ArgInfo.from_prim_func(l.task.mod["main"])))
    assert convs >= 2
    mod = tuned_module(prepared, cpu_target, dbdir)
    names = [gv.name_hint for gv in mod.get_global_vars()]
    assert any(n.endswith("_prepacked") for n in names)
    assert not any(n.endswith("_weight_prepack") for n in names), "weights would be packed per call"
    called = []

    def visit(e):
        if isinstance(e, relax.Call) and len(e.args) and isinstance(e.args[0], tvm.ir.GlobalVar):
            called.append(e.args[0].name_hint)

    relax.analysis.post_order_visit(mod["main"].body, visit)
    assert sum(n.endswith("_prepacked") for n in called) >= convs
    lib = export(compile_tuned(prepared, cpu_target, dbdir), tmp_path / "m.so")
    run = run_library(lib, m.inputs, threads=2, repeat=2, min_repeat_ms=1)
    ok, err, msg = compare(run.outputs, m.reference(list(m.inputs.values())))
    assert ok, msg


def test_a_slow_kernel_gets_fewer_cold_runs_and_a_fast_one_all_of_them():
    """Cold timing: ``repeat`` single runs, except for a kernel so slow that they would exceed the budget: then as many
    as fit in it (an untuned layer of 500 ms would otherwise be run 15 times)."""
    from types import SimpleNamespace

    from raydgp.measure.prepack import COLD_TIMING_BUDGET_MS, SplitKernel

    def lib_of(seconds):
        calls = []

        def time_evaluator(name, dev, number, repeat, min_repeat_ms, f_preproc=""):
            assert number == 1 and f_preproc == "cache_flush_cpu_non_first_arg"
            calls.append(repeat)
            return lambda *args: SimpleNamespace(results=[seconds] * repeat)

        return SimpleNamespace(time_evaluator=time_evaluator), calls

    lib, calls = lib_of(0.001)
    k = SplitKernel(lib=lib, kernel_name="main", run_all=None, prepacked=True)
    assert k.time([], None, 15, 0, flush_cache=True) == [1.0] * 15 and sum(calls) == 15
    lib, calls = lib_of(COLD_TIMING_BUDGET_MS / 1e3 / 3)  # a third of the budget per run: 3 runs in all
    k = SplitKernel(lib=lib, kernel_name="main", run_all=None, prepacked=True)
    assert len(k.time([], None, 15, 0, flush_cache=True)) == 3 and sum(calls) == 3
    lib, calls = lib_of(0.5)  # slower than the whole budget: one run
    k = SplitKernel(lib=lib, kernel_name="main", run_all=None, prepacked=True)
    assert len(k.time([], None, 15, 0, flush_cache=True)) == 1 and sum(calls) == 1
