"""Prepacked weights in measurement: split a layout-rewritten kernel into its weight prepack and the kernel proper.

MetaSchedule's ``RewriteLayout`` postprocessor (run on tasks whose weights are marked ``layout_free_buffers``) puts a
layout-transform block at the top of the kernel: the weights are read in a tiled layout that suits the schedule. In a
deployed model that transform must run once, at build, never per call. Relax's ``SplitLayoutRewritePreproc`` pass does
exactly that split for the whole model (and ``FoldConstant`` then packs the constant weights at build time), so the
measurement uses the same pass on a one-call Relax wrapper of the kernel:

* ``check`` runs the wrapper as deployed (prepack from the *original* weights, then the prepacked kernel) and its output
  is compared with the reference computed from the original weights: a schedule whose packing or compute is wrong
  never counts;
* ``timed`` is the prepacked kernel alone with the packed weights that prepack produced (what MetaSchedule's own builder
  and runner time: ``RemoveWeightLayoutRewriteBlock`` + arguments in the rewritten layout).

A kernel without a layout-rewrite block splits into nothing: it is timed as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from raydgp.tvm_loader import import_tvm


#: Total time (ms) the cold runs of one slow kernel may take; fast kernels are timed ``repeat`` times regardless.
COLD_TIMING_BUDGET_MS = 300.0


@dataclass
class SplitKernel:
    """A compiled kernel with its prepack step (one compiled module holds both).

    Attributes:
        lib: the compiled runtime module; ``lib[kernel_name]`` is the kernel proper (destination-passing style).
        kernel_name: the kernel's function name in ``lib``.
        run_all: ``run_all(arrays)`` runs prepack + kernel on the task's original arguments (numpy arrays, the output
            buffer last) and returns the device arguments of the kernel proper (packed weights included; the result is
            the last one).
        prepacked: whether a layout-rewrite block was split off.
    """

    lib: Any
    kernel_name: str
    run_all: Callable[[Sequence[np.ndarray]], list]
    prepacked: bool

    def time(self, args: list, dev, repeat: int, min_repeat_ms: int, flush_cache: bool = False) -> list[float]:
        """Latencies in ms of the kernel proper on ``args``.

        Without ``flush_cache``: ``repeat`` means of runs lasting at least ``min_repeat_ms`` each (warm caches).
        With it: ``repeat`` single runs, each after TVM's ``cache_flush_cpu_non_first_arg`` has flushed every argument
        but the input from the CPU caches (what MetaSchedule's runner does with ``enable_cpu_cache_flush``): the
        weights arrive from memory as they do inside a model, where the other layers have evicted them.
        """
        if flush_cache:
            def cold(n: int) -> list[float]:
                t = self.lib.time_evaluator(self.kernel_name, dev, number=1, repeat=int(n), min_repeat_ms=0,
                                            f_preproc="cache_flush_cpu_non_first_arg")
                return [float(x) * 1e3 for x in t(*args).results]

            # A slow kernel (an untuned layer, a poor configuration: 50-600 ms) gets fewer cold runs: as many as fit
            # in COLD_TIMING_BUDGET_MS, the first included (one when the first alone exceeds it), instead of
            # ``repeat`` runs of 0.5-9 s in all. Such a kernel is far from a layer's best; its ranking survives.
            first = cold(1)
            rest = int(repeat) - 1
            if rest > 0 and first[0] * int(repeat) > COLD_TIMING_BUDGET_MS:
                rest = min(rest, max(0, int(COLD_TIMING_BUDGET_MS // max(first[0], 1e-9)) - 1))
            return first + (cold(rest) if rest > 0 else [])
        else:
            timer = self.lib.time_evaluator(self.kernel_name, dev, number=1, repeat=int(repeat),
                                            min_repeat_ms=int(min_repeat_ms))
        return [float(x) * 1e3 for x in timer(*args).results]


def split_and_build(scheduled_mod, arg_shapes: Sequence[tuple[Sequence[int], str]], target, dev) -> SplitKernel:
    """Split the layout-rewrite preprocessing off a scheduled task and compile both parts.

    Args:
        scheduled_mod: the postprocessed schedule's module (one PrimFunc ``main``).
        arg_shapes: ``[(shape, dtype), ...]`` of the original task's arguments, output last.
        target: ``tvm.target.Target``.
        dev: the device the arguments live on.

    Returns:
        A :class:`SplitKernel`; without a layout-rewrite block the kernel is the scheduled function itself.
    """
    tvm = import_tvm()
    from tvm import relax

    func = scheduled_mod["main"]
    if not (func.attrs and list(func.attrs.get("layout_free_buffers", []) or [])):
        return _plain(scheduled_mod, target, dev)  # nothing may be rewritten: the kernel as it is
    bb = relax.BlockBuilder()
    params = [relax.Var(f"a{i}", relax.TensorType(list(s), d)) for i, (s, d) in enumerate(arg_shapes[:-1])]
    out_shape, out_dtype = arg_shapes[-1]
    with bb.function("main", params):
        gv = bb.add_func(func.without_attr("global_symbol"), "kernel")
        with bb.dataflow():
            o = bb.emit_output(relax.call_tir(gv, params, relax.TensorType(list(out_shape), out_dtype)))
        bb.emit_func_output(o)
    split = relax.transform.SplitLayoutRewritePreproc()(bb.get())
    calls = _dataflow_calls(split["main"])
    tir = {gv.name_hint: f for gv, f in split.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}
    lib = tvm.compile(tvm.IRModule({name: f.with_attr("global_symbol", name) for name, f in tir.items()}),
                      target=target)
    kernel_name = [c[1] for c in calls if c[1] is not None][-1]
    funcs = _jit(lib, tir)

    def run_all(arrays):
        env: dict = {p: tvm.runtime.tensor(np.ascontiguousarray(a), dev) for p, a in zip(params, arrays[:-1])}
        last_args: list = []
        for var, fname, args, outs, index in calls:
            if fname is None:  # a tuple element, or an alias (index -1)
                env[var] = env[args] if index < 0 else env[args][index]
                continue
            outputs = [tvm.runtime.tensor(np.zeros(s, dtype=d), dev) for s, d in outs]
            last_args = [env[a] for a in args] + outputs
            funcs[fname](*last_args)
            env[var] = outputs if len(outputs) > 1 else outputs[0]
        return last_args

    return SplitKernel(lib=lib.mod if hasattr(lib, "mod") else lib, kernel_name=kernel_name, run_all=run_all,
                       prepacked=len(tir) > 1)


def _plain(mod, target, dev) -> SplitKernel:
    tvm = import_tvm()
    lib = tvm.compile(mod, target=target)
    main = _jit(lib, ["main"])["main"]

    def run_all(arrays):
        args = [tvm.runtime.tensor(np.ascontiguousarray(a), dev) for a in arrays]
        main(*args)
        return args

    return SplitKernel(lib=lib.mod if hasattr(lib, "mod") else lib, kernel_name="main", run_all=run_all,
                       prepacked=False)


def _jit(lib, names) -> dict:
    """``{name: lib[name]}``, looked up now: TVM's LLVM module generates its machine code at the first function
    lookup (``LazyInitJIT``), 0.1-0.6 s for a conv (measured on emeraldrapids), so a caller that builds outside the
    node's timing lock and runs inside it gets the code generation done while building, not inside the lock."""
    return {name: lib[name] for name in names}


def _dataflow_calls(main) -> list:
    """The bindings of a split wrapper: ``(var, tir_name | None, arg_vars | tuple_var, out_shapes, tuple_index)``."""
    tvm = import_tvm()
    from tvm import relax

    out = []
    for block in main.body.blocks:
        for b in block.bindings:
            v = b.value
            if isinstance(v, relax.TupleGetItem):
                out.append((b.var, None, v.tuple_value, None, int(v.index)))
            elif isinstance(v, relax.Call) and str(v.op.name if hasattr(v.op, "name") else v.op) == "relax.call_tir":
                gv, args = v.args[0], list(v.args[1].fields)
                sinfo = v.ty_args
                shapes = []
                for s in sinfo:
                    for t in (s.fields if isinstance(s, relax.TupleType) else [s]):
                        shapes.append(([int(x) for x in t.shape.values], str(t.dtype)))
                out.append((b.var, gv.name_hint, args, shapes, 0))
            elif isinstance(v, relax.Var):
                out.append((b.var, None, v, None, -1))
            else:
                raise ValueError(f"unexpected binding in the split kernel: {type(v).__name__}")
    return out
