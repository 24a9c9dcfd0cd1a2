"""Design spaces from TVM's own MetaSchedule space generator, and applying a configuration back onto a module.

``build_space`` asks MetaSchedule's ``post-order-apply`` generator (the target's default schedule rules) for its sketches
and turns each sampling instruction into a :class:`~raydgp.space.design_space.Knob`. ``apply_config`` replays a
configuration's trace on a fresh schedule, checks that TVM kept every decision (TVM silently *repairs* inconsistent
decisions, so the decisions are read back, never trusted), and runs the target's postprocessors. Anything TVM rejects is
an :class:`~raydgp.errors.InvalidConfigurationError`, never a crash.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from raydgp.errors import InvalidConfigurationError
from raydgp.space.design_space import DesignSpace, Knob, Sketch
from raydgp.space.workloads import Task
from raydgp.tvm_loader import import_tvm, load_intrinsics

#: Compute locations tried when enumerating a SampleComputeLocation knob (-2: inline, -1: root, i: loop i).
_LOCATION_PROBE = range(-2, 48)


def make_target(target: Mapping):
    """``tvm.target.Target`` from raydgp's target dict."""
    import_tvm()
    from tvm.target import Target

    return Target(dict(target))


def host_target(kind: str = "llvm", num_cores: int | None = None, arch: str = "sm_90") -> dict:
    """The target dict for this machine's CPU (``llvm``, with the real ``-mcpu``: ``native`` loses AVX-512) or a
    GPU (``cuda``; ``arch`` names the compute capability)."""
    import os

    tvm = import_tvm()
    if kind == "llvm":
        cores = int(num_cores or os.cpu_count() or 1)
        return {"kind": "llvm", "mcpu": str(tvm.target.codegen.llvm_get_system_cpu()), "num-cores": cores}
    if kind == "cuda":
        return {"kind": "cuda", "arch": arch, "max_threads_per_block": 1024, "max_shared_memory_per_block": 49152,
                "thread_warp_size": 32}
    raise InvalidConfigurationError(f"unknown target kind {kind!r}; use 'llvm' (CPU) or 'cuda' (GPU)")


def tune_context(mod, target: Mapping, name: str = "main"):
    """MetaSchedule's TuneContext for a task: the target's default schedule rules and postprocessors.

    For cuda the plain ``cuda`` rule set is used (thread binding, shared-memory staging, unrolling), not the
    tensor-core one: raydgp tunes fp32, and the tensor-core rules need 25 s of intrinsic registration per process.
    """
    import_tvm()
    kind = str(target.get("kind"))
    from tvm.s_tir import meta_schedule as ms

    if kind == "cuda":
        gen = ms.space_generator.PostOrderApply(sch_rules="cuda", postprocs="cuda", mutator_probs="cuda")
    else:
        load_intrinsics(kind)
        gen = "post-order-apply"
    return ms.TuneContext(mod=mod, target=make_target(target), space_generator=gen, task_name=name, rand_state=1)


def _apply_trace(mod, trace_json: list):
    """Replay a JSON trace on a fresh schedule and return it (raises TVM's error if the trace does not apply)."""
    import_tvm()
    from tvm import s_tir

    sch = s_tir.Schedule(mod, seed=1)
    s_tir.Trace.apply_json_to_schedule(trace_json, sch)
    return sch


def _plain(x):
    """TVM's JSON trace (FFI arrays, strings, IntImm/FloatImm) as plain Python JSON values."""
    if isinstance(x, (bool, int, float, str)) or x is None:
        return x
    if hasattr(x, "value") and not isinstance(x, (list, tuple)):
        v = x.value
        return int(v) if isinstance(v, (int, bool)) else float(v)
    if isinstance(x, (list, tuple)) or hasattr(x, "__iter__"):
        return [_plain(v) for v in x]
    return str(x)


def trace_as_json(trace) -> list:
    """A TVM Trace as plain JSON ``[insts, [[inst_index, decision], ...]]``."""
    return _plain(trace.as_json())


def _readback(sch) -> list:
    return [[int(i), d] for i, d in trace_as_json(sch.trace)[1]]


def build_space(task: Task) -> DesignSpace:
    """The MetaSchedule design space of a task on its target.

    Returns:
        A pure-Python :class:`DesignSpace`; a task whose generator gives no sampling instruction has one sketch with no
        knobs (a single configuration).
    """
    ctx = tune_context(task.mod, task.target, task.name)
    sketches = []
    for sch in ctx.space_generator.generate_design_space(task.mod):
        insts, decisions = trace_as_json(sch.trace)
        decisions = {int(i): d for i, d in decisions}
        knobs = []
        for idx, inst in enumerate(insts):
            kind, _inputs, attrs = inst[0], inst[1], inst[2]
            if kind == "SamplePerfectTile":
                dec = decisions[idx]
                knobs.append(Knob("tile", idx, extent=int(math.prod(dec)), parts=int(attrs[0]),
                                  max_innermost=int(attrs[1])))
            elif kind == "SampleCategorical":
                knobs.append(Knob("categorical", idx, values=tuple(int(x) if float(x).is_integer() else float(x)
                                                                 for x in attrs[0])))
            elif kind == "SampleComputeLocation":
                knobs.append(Knob("compute_location", idx, values=()))
            elif kind.startswith("Sample"):
                raise InvalidConfigurationError(f"task {task.name}: unsupported sampling instruction {kind}")
        sketches.append([insts, decisions, knobs])
    # Enumerate the loop positions TVM accepts for each compute-location knob, with the sketch's other decisions.
    for entry in sketches:
        insts, decisions, knobs = entry
        for ki, k in enumerate(knobs):
            if k.kind != "compute_location":
                continue
            ok = []
            for loc in _LOCATION_PROBE:
                trial = {**decisions, k.inst: loc}
                try:
                    sch = _apply_trace(task.mod, [insts, [[i, d] for i, d in sorted(trial.items())]])
                except Exception:  # noqa: BLE001 - TVM rejects a location with its own error types
                    continue
                if dict((i, d) for i, d in _readback(sch)).get(k.inst) == loc:
                    ok.append(loc)
            knobs[ki] = Knob("compute_location", k.inst, values=tuple(ok or [decisions[k.inst]]))
    return DesignSpace(workload=task.workload, target=dict(task.target),
                       sketches=tuple(Sketch(insts=e[0], knobs=tuple(e[2])) for e in sketches))


def apply_config(mod, trace_json: list, postprocs: Any) -> tuple[Any, list]:
    """Apply a configuration's trace and the postprocessors.

    TVM may move a compute location that does not exist under the chosen tiles (a loop of extent 1 vanishes); that is
    accepted and the location TVM actually used is returned. Any other changed decision makes the configuration invalid.

    Args:
        mod: the task's IRModule.
        trace_json: ``[insts, decisions]`` (from :meth:`DesignSpace.trace_json`).
        postprocs: the TuneContext's postprocessors (``ctx.space_generator.postprocs``).

    Returns:
        ``(schedule, applied)``: the postprocessed schedule and the decisions TVM applied, ``[[inst, decision], ...]``
        in the order of ``trace_json[1]``.

    Raises:
        InvalidConfigurationError: TVM rejected the trace, changed a tile or categorical decision, or a postprocessor
            failed.
    """
    try:
        sch = _apply_trace(mod, trace_json)
    except Exception as e:  # noqa: BLE001 - any TVM error here means "not a valid configuration"
        raise InvalidConfigurationError(f"TVM rejected the trace: {_first_line(e)}") from None
    got = {i: d for i, d in _readback(sch)}
    insts = trace_json[0]
    applied = []
    for i, d in trace_json[1]:
        g = got.get(int(i))
        if _freeze(g) != _freeze(d) and insts[int(i)][0] != "SampleComputeLocation":
            raise InvalidConfigurationError(f"TVM changed decision {d} of instruction {i} ({insts[int(i)][0]}) to {g}")
        applied.append([int(i), g])
    for p in postprocs:
        try:
            ok = p.apply(sch)
        except Exception as e:  # noqa: BLE001
            raise InvalidConfigurationError(f"postprocessor {p} failed: {_first_line(e)}") from None
        if not ok:
            raise InvalidConfigurationError(f"postprocessor {str(p).split('.')[-1]} rejected the schedule")
    return sch, applied


def _freeze(d):
    return tuple(d) if isinstance(d, list) else d


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    # TVM errors end with the useful line; keep it short.
    return (lines[-1] if lines else type(e).__name__)[:300]
