"""Layers out: the passes that make a Relax model's layers extractable, and MetaSchedule's task extraction.

:func:`prepare` is what both extraction and the final build start from (``compile_relax`` re-runs the same fusion, so
the fused PrimFuncs, and with them the tuning records' workloads, match): batch norm folded into the preceding
convolution's weights where the pattern allows (no per-channel epilogue left), decomposed elsewhere, constants folded.
:func:`extract_layers` fuses exactly as ``compile_relax`` does (library dispatch, ``LegalizeOps``,
``AnnotateTIROpPattern``, ``FoldConstant``, ``FuseOps``, ``FuseTIR``: activations and residual adds end up in the conv
epilogue) and asks MetaSchedule for the tasks, de-duplicated structurally, with how often each occurs (its weight).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from raydgp.space.workloads import Task, make_task
from raydgp.tvm_loader import import_tvm


@dataclass(frozen=True)
class Layer:
    """One distinct task of a network.

    Attributes:
        name: MetaSchedule's task name (e.g. ``fused_conv2d_add_relu``), unique within the model.
        task: the tunable task (one PrimFunc ``main``) and its workload.
        weight: how many times the network calls it.
    """

    name: str
    task: Task
    weight: int

    @property
    def flops(self) -> float:
        import math

        return float(2 ** self.task.workload.features.get("log2_flops", 0.0)) if self.task.workload.features else \
            math.nan


#: Activation layouts a model's convolutions can be tuned in; ``auto`` is NHWC on CPU targets and NCHW on GPUs.
LAYOUTS = ("auto", "NHWC", "NCHW")


def check_layout(layout: str) -> None:
    """Raise :class:`~raydgp.errors.ConfigError` unless ``layout`` is one of :data:`LAYOUTS`."""
    if layout not in LAYOUTS:
        from raydgp.errors import ConfigError

        raise ConfigError(f"layout {layout!r}: choose one of {', '.join(LAYOUTS)}")


def resolve_layout(layout: str, target: Mapping) -> str:
    """The concrete layout (``NHWC`` or ``NCHW``) for ``layout`` on ``target``.

    ``auto`` is NHWC on CPU targets: there the output channels are the innermost loop, so MetaSchedule's sketches
    vectorize over them with the input read as a broadcast scalar, where in NCHW they vectorize over the output width
    and a stride-2 conv reads its input with a stride. Measured on 2 Intel AVX-512 cores (emeraldrapids): the whole
    ResNet-18 at the default budget 15.6 ms in NHWC vs 26.1 ms in NCHW, PyTorch eager 25.1 / 26.4 ms in the same runs
    (``BENCHMARKS.md`` section 6); the best of 30 random configurations of each layout's space: the stem 1.86 vs
    4.75 ms, a stride-2 3x3 conv 0.69 vs 1.53 ms, a 512-channel 3x3 conv 3.08 vs 3.62 ms, but a 64-channel 3x3 conv
    at 56x56 4.59 vs 1.77 ms (section 6b; tuned, that layer too is faster in NHWC, section 6). GPUs keep NCHW (not
    measured there).
    """
    check_layout(layout)
    if layout == "auto":
        return "NHWC" if str(target.get("kind", "llvm")) == "llvm" else "NCHW"
    return layout


def prepare(mod, target: Mapping, layout: str = "auto"):
    """Inference-time simplification before fusion: batch norm folded into conv weights, the rest decomposed; then,
    for ``NHWC`` (see :func:`resolve_layout`), every conv2d converted to NHWC activations and HWIO weights
    (Relax's ``ConvertLayout``: the model's input is transposed once, the weights at build time, and the neighbours
    follow the layout; the model's own inputs and outputs keep their layout)."""
    tvm = import_tvm()
    from tvm import relax

    from raydgp.space.metaschedule import make_target

    folding = [NumpyFold(), relax.transform.FoldConstant()]  # NumPy first; TVM's own for whatever is left
    passes = [
        relax.transform.FoldBatchnormToConv2D(),
        *folding,
        relax.transform.DecomposeOpsForInference(),
        relax.transform.CanonicalizeBindings(),
        *folding,
    ]
    nhwc = resolve_layout(layout, target) == "NHWC"
    if nhwc:
        passes += [relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "HWIO"]}),
                   *folding, relax.transform.CanonicalizeBindings(),
                   relax.transform.DeadCodeElimination()]
    with make_target(target):
        mod = tvm.transform.Sequential(passes)(mod)
        return mean_as_matmul(mod) if nhwc else mod


#: Operators :func:`NumpyFold` evaluates in NumPy: ``name -> (arguments that must be constants, function of (their
#: arrays, the call's attributes, its output shape))``. Elementwise float arithmetic and data movement only, where
#: NumPy computes what TVM's kernels compute (IEEE float32 add, subtract, multiply, divide and sqrt are correctly
#: rounded in both; NumPy broadcasting is Relax's).
_NUMPY_OPS = {
    "relax.add": (2, lambda a, attrs, shape: a[0] + a[1]),
    "relax.subtract": (2, lambda a, attrs, shape: a[0] - a[1]),
    "relax.multiply": (2, lambda a, attrs, shape: a[0] * a[1]),
    "relax.divide": (2, lambda a, attrs, shape: a[0] / a[1]),
    "relax.sqrt": (1, lambda a, attrs, shape: np.sqrt(a[0])),
    "relax.reshape": (1, lambda a, attrs, shape: a[0].reshape(shape)),
    "relax.permute_dims": (1, lambda a, attrs, shape: a[0].transpose(
        None if attrs.axes is None else [int(v) for v in attrs.axes])),
}


def NumpyFold():  # noqa: N802 - a pass, named like Relax's
    """A Relax pass: the calls of :data:`_NUMPY_OPS` whose inputs are all constants (float tensors of static shape),
    computed in NumPy and bound as constants; everything else untouched.

    ``FoldConstant`` compiles every constant call it folds with LLVM (one small build each): batch-norm folding and
    the NHWC weight transposes of ResNet-18 were about 220 builds, 11 of the 14 s that :func:`prepare` took on 2 AMD
    Zen 3 cores. Running it after this pass leaves it (nearly) nothing to build; any operator or dtype not covered here
    still folds there.
    """
    tvm = import_tvm()
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    def static(ty):
        if not isinstance(ty, relax.TensorType) or not isinstance(ty.shape, relax.ShapeExpr):
            return None
        try:
            return tuple(int(d) for d in ty.shape.values), str(ty.dtype)
        except TypeError:  # a symbolic dimension
            return None

    @mutator
    class _Fold(PyExprMutator):
        def __init__(self, mod):
            super().__init__(mod)
            self.mod_ = mod

        def transform(self):
            for gv, func in self.mod_.functions_items():
                if isinstance(func, relax.Function):
                    self.builder_.update_func(gv, self.builder_.normalize(self.visit_expr(func)))
            return self.builder_.get()

        def constant(self, e):
            if isinstance(e, relax.Var):
                e = self.lookup_binding(e)
            return e if isinstance(e, tvm.ir.expr.Constant) else None

        @staticmethod
        def array(c):
            v = c.value  # a tensor, or a Python number for a scalar (a FloatImm: batch norm's epsilon)
            if hasattr(v, "numpy"):
                return v.numpy()
            if not isinstance(v, (int, float)):
                return None
            ty = static(c.ty)
            dtype = ty[1] if ty else str(getattr(c.ty, "dtype", c.ty))
            try:
                return np.full(ty[0] if ty else (), v, dtype=dtype)
            except TypeError:  # not a NumPy dtype
                return None

        def visit_call_(self, call):
            new = self.visit_expr_post_order(call)
            name = getattr(new.op, "name", None) if isinstance(new, relax.Call) else None
            if name not in _NUMPY_OPS:
                return new
            out = static(call.ty)
            if out is None or out[1] not in ("float32", "float64", "float16"):
                return new
            n, fn = _NUMPY_OPS[name]
            consts = [self.constant(a) for a in new.args[:n]]
            if len(consts) < n or any(c is None for c in consts):
                return new
            arrays = [self.array(c) for c in consts]
            if any(a is None or str(a.dtype) != out[1] for a in arrays):
                return new
            value = np.ascontiguousarray(np.asarray(fn(arrays, new.attrs, out[0])).astype(out[1], copy=False))
            if value.shape != out[0]:
                return new
            return relax.const(value, out[1])

    return tvm.transform.module_pass(lambda mod, ctx: _Fold(mod).transform(), opt_level=0, name="raydgp.NumpyFold")


def mean_as_matmul(mod):
    """Every ``mean`` of a 4-D float tensor over its two middle axes (a global average pool in NHWC) as a matmul of
    a constant ``1/(H*W)`` row with the tensor viewed as ``N x (H*W) x C``, reshaped back.

    In NHWC the pooled axes lie outside the channels, so the reduction's own loop nest reads the input with a stride
    of ``C`` and MetaSchedule's rules for it neither vectorize nor reorder it: the global pool of a small MobileNet-like
    net ran in 0.06-0.14 ms, as long as its largest conv (``depthwise_small.onnx``, emeraldrapids, 2 cores). As a
    matmul the channels are the vectorized innermost loop of a multi-level tiled dense task. The reshapes are views.
    """
    tvm = import_tvm()
    from tvm import relax
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    x = wildcard()
    pattern = is_op("relax.mean")(x)

    def rewrite(expr, matches):
        call, inp = matches[pattern], matches[x]
        ty = inp.ty
        if not isinstance(ty, relax.TensorType) or ty.ndim != 4 or not isinstance(ty.shape, relax.ShapeExpr) \
                or str(ty.dtype) not in ("float32", "float16", "float64"):
            return expr
        dtype = str(ty.dtype)
        try:
            n, h, w, c = (int(d) for d in ty.shape.values)
        except TypeError:  # a symbolic dimension
            return expr
        axes = sorted(int(a) % 4 for a in (call.attrs.axis or ()))
        if axes != [1, 2]:
            return expr
        row = relax.const(np.full((1, 1, h * w), 1.0 / (h * w), dtype=dtype), dtype)
        pooled = relax.op.matmul(row, relax.op.reshape(inp, (n, h * w, c)))
        return relax.op.reshape(pooled, (n, 1, 1, c) if call.attrs.keepdims else (n, c))

    out = mod.clone()
    for gv, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            out[gv] = rewrite_call(pattern, rewrite, func)
    return out


def fuse(mod, target: Mapping):
    """The fusion ``compile_relax`` applies before looking schedules up (same passes, same order); on CPU targets the
    constant weights are then marked layout-free (``AttachAttrLayoutFreeBuffers``, as
    ``static_shape_tuning_pipeline(cpu_weight_prepack=True)`` does), so schedules may prepack them."""
    tvm = import_tvm()
    from tvm import relax
    from tvm.relax import pipeline

    from raydgp.space.metaschedule import make_target

    t = make_target(target)
    try:
        dispatch = pipeline.library_dispatch_passes(t)
    except (ValueError, AttributeError):
        dispatch = []
    from raydgp.space.workloads import prepacks

    layout_free = [relax.transform.AttachAttrLayoutFreeBuffers()] if prepacks(target) else []
    with t, tvm.transform.PassContext(opt_level=3):
        return tvm.transform.Sequential([*dispatch, relax.transform.LegalizeOps(),
                                         relax.transform.AnnotateTIROpPattern(), relax.transform.FoldConstant(),
                                         relax.transform.FuseOps(), relax.transform.FuseTIR(), *layout_free])(mod)


def extract_layers(prepared_mod, target: Mapping) -> list[Layer]:
    """The distinct tasks of a prepared Relax module, largest FLOPs first."""
    import_tvm()
    from tvm.s_tir import meta_schedule as ms

    from raydgp.space.metaschedule import make_target

    fused = fuse(prepared_mod, target)
    extracted = ms.relax_integration.extract_tasks(fused, make_target(target))
    layers, names = [], set()
    for t in extracted:
        mod = t.dispatched[0]
        name = str(t.task_name)
        while name in names:
            name += "_"
        names.add(name)
        layers.append(Layer(name=name, task=make_task(mod, target, name=name), weight=int(t.weight)))
    layers.sort(key=lambda l: -l.flops * l.weight)
    return layers
