"""Tasks: TVM PrimFuncs to tune, built from short workload specs or taken as given, with their workload features.

A *task* is an ``IRModule`` with one PrimFunc named ``main`` (a layer, e.g. a conv2d with its fused bias + ReLU epilogue),
plus the :class:`~raydgp.records.Workload` that describes it without TVM: a stable key, an op kind and numeric features
(loop extents, FLOPs, dtype, target) so that one model can learn across layers.

Workload spec syntax (``kind:comma,separated,ints``):

* ``conv2d:N,C,H,W,K,R,stride,pad``: NCHW conv2d, K output channels, RxR kernel, + bias + ReLU.
* ``depthwise:N,C,H,W,R,stride,pad``: depthwise conv2d + bias + ReLU.
* ``dense:M,K,N``: ``[M,K] x [N,K]^T`` + bias.
* ``conv2d_nhwc:...`` and ``depthwise_nhwc:...`` (the same numbers): the same layers in NHWC with HWIO weights, built
  as Relax's legalization builds a model's convs after ``ConvertLayout`` (``topi.nn.conv``, a depthwise conv as a
  grouped one), so their loop nests are those of a model tuned with ``--layout NHWC``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from raydgp.errors import ConfigError
from raydgp.records import Workload
from raydgp.tvm_loader import import_tvm

#: Operator kinds used as a one-hot workload feature.
OP_KINDS = ("conv2d", "depthwise_conv2d", "dense", "pool", "elementwise", "other")
MAX_SPATIAL = 6
MAX_REDUCE = 4

#: Names of the numeric workload features, in encoding order. Every workload has all of them.
FEATURE_NAMES = (
    tuple(f"op_{k}" for k in OP_KINDS)
    + tuple(f"log2_spatial_{i}" for i in range(MAX_SPATIAL))
    + tuple(f"log2_reduce_{i}" for i in range(MAX_REDUCE))
    + ("log2_flops", "dtype_bits", "n_blocks", "target_cuda", "num_cores")
)

_SPEC_ARITY = {"conv2d": 8, "depthwise": 7, "dense": 3, "conv2d_nhwc": 8, "depthwise_nhwc": 7}
SPEC_HELP = ("conv2d:N,C,H,W,K,R,stride,pad | depthwise:N,C,H,W,R,stride,pad | dense:M,K,N "
             "(conv2d_nhwc: and depthwise_nhwc: take the same numbers)")


@dataclass(frozen=True)
class Task:
    """A tunable task: the module and its description.

    Attributes:
        name: task name (a layer name or the spec).
        mod: ``tvm.IRModule`` with one PrimFunc ``main``.
        workload: key, op kind and features (target-specific: the target is a feature).
        target: target dict, e.g. ``{"kind": "llvm", "mcpu": "znver3", "num-cores": 2}``.
    """

    name: str
    mod: object
    workload: Workload
    target: Mapping

    @property
    def mod_json(self) -> str:
        tvm = import_tvm()
        return tvm.ir.save_json(self.mod)


def parse_spec(spec: str) -> tuple[str, tuple[int, ...]]:
    """Split ``kind:ints`` and check its arity and values.

    Raises:
        ConfigError: an unknown kind, a wrong number of integers or a non-positive size.
    """
    kind, sep, rest = spec.partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in _SPEC_ARITY:
        raise ConfigError(f"unknown workload spec {spec!r}; expected {SPEC_HELP}")
    try:
        vals = tuple(int(v) for v in rest.split(","))
    except ValueError:
        raise ConfigError(f"workload spec {spec!r} has a non-integer field; expected {SPEC_HELP}") from None
    if len(vals) != _SPEC_ARITY[kind]:
        raise ConfigError(f"workload spec {spec!r} has {len(vals)} numbers, {kind} needs {_SPEC_ARITY[kind]}: {SPEC_HELP}")
    pad_index = {"conv2d": 7, "depthwise": 6, "conv2d_nhwc": 7, "depthwise_nhwc": 6}.get(kind)
    if any(v <= 0 for i, v in enumerate(vals) if i != pad_index) or (pad_index is not None and vals[pad_index] < 0):
        raise ConfigError(f"workload spec {spec!r}: sizes and strides must be positive, padding non-negative")
    return kind, vals


def build_spec_module(spec: str):
    """The IRModule of a workload spec (see the module docstring)."""
    kind, v = parse_spec(spec)
    tvm = import_tvm()
    from tvm import te, topi

    if kind == "conv2d":
        n, c, h, w, k, r, stride, pad = v
        if (h + 2 * pad - r) // stride + 1 <= 0 or (w + 2 * pad - r) // stride + 1 <= 0:
            raise ConfigError(f"workload spec {spec!r}: the kernel does not fit the padded input")
        data = te.placeholder((n, c, h, w), name="data")
        weight = te.placeholder((k, c, r, r), name="weight")
        bias = te.placeholder((1, k, 1, 1), name="bias")
        out = topi.nn.relu(topi.add(topi.nn.conv2d_nchw(data, weight, stride, pad, 1), bias))
        args = [data, weight, bias, out]
    elif kind == "depthwise":
        n, c, h, w, r, stride, pad = v
        if (h + 2 * pad - r) // stride + 1 <= 0:
            raise ConfigError(f"workload spec {spec!r}: the kernel does not fit the padded input")
        data = te.placeholder((n, c, h, w), name="data")
        weight = te.placeholder((c, 1, r, r), name="weight")
        bias = te.placeholder((1, c, 1, 1), name="bias")
        out = topi.nn.relu(topi.add(topi.nn.depthwise_conv2d_nchw(data, weight, stride, pad, 1), bias))
        args = [data, weight, bias, out]
    elif kind in ("conv2d_nhwc", "depthwise_nhwc"):
        if kind == "conv2d_nhwc":
            n, c, h, w, k, r, stride, pad = v
            groups = 1
        else:
            n, c, h, w, r, stride, pad = v
            k, groups = c, c
        if (h + 2 * pad - r) // stride + 1 <= 0 or (w + 2 * pad - r) // stride + 1 <= 0:
            raise ConfigError(f"workload spec {spec!r}: the kernel does not fit the padded input")
        data = te.placeholder((n, h, w, c), name="data")
        weight = te.placeholder((r, r, c // groups, k), name="weight")
        bias = te.placeholder((1, 1, 1, k), name="bias")
        conv = topi.nn.conv(data, weight, stride, pad, 1, groups, "NHWC", "HWIO")
        out = topi.nn.relu(topi.add(conv, bias))
        args = [data, weight, bias, out]
    else:
        m, kk, n = v
        a = te.placeholder((m, kk), name="A")
        b = te.placeholder((n, kk), name="B")
        bias = te.placeholder((n,), name="bias")
        out = topi.add(topi.nn.dense(a, b), bias)
        args = [a, b, bias, out]
    func = te.create_prim_func(args)
    return tvm.IRModule({"main": func})


def _anchor_block_info(mod) -> tuple[str, list[int], list[int], int, int, float]:
    """The anchor block (TVM's own choice: the one with the most reduction work): its name, spatial and reduction
    extents, output dtype bits; plus the number of blocks and TVM's FLOP estimate of the whole function."""
    tvm = import_tvm()
    from tvm import s_tir
    from tvm.s_tir import analysis

    sch = s_tir.Schedule(mod)
    try:
        n_blocks = len(sch.get_child_blocks(sch.get_sblock("root")))
    except Exception:  # noqa: BLE001 - a function without a root block has one block
        n_blocks = 1
    try:
        flops = float(analysis.estimate_tir_flops(mod))
    except Exception:  # noqa: BLE001 - estimate is optional
        flops = 0.0
    block = analysis.find_anchor_sblock(mod)
    if block is None:
        return "main", [], [], 32, n_blocks, flops
    spatial, reduce = [], []
    for iv in block.iter_vars:
        ext = iv.dom.extent
        if not isinstance(ext, tvm.tirx.IntImm):
            continue
        (reduce if int(iv.iter_type) == 2 else spatial).append(int(ext))
    bits = 32
    if block.writes:
        bits = int(tvm.runtime.DataType(str(block.writes[0].source.dtype)).bits)
    return str(block.name_hint), spatial, reduce, bits, n_blocks, flops


def anchor_signature(mod) -> str:
    """What identifies a task's anchor loop nest regardless of its epilogue: the anchor block's iteration domain
    (extents and kinds, in order) and the shapes of the buffers it reads and writes. Two tasks with the same signature
    are *siblings*: the same conv (or matmul) with another fused epilogue (bias + ReLU vs + residual add + ReLU), whose
    schedules carry over."""
    tvm = import_tvm()
    from tvm.s_tir import analysis

    block = analysis.find_anchor_sblock(mod)
    if block is None:
        return "none"
    def dim(d) -> str:
        return str(int(d)) if isinstance(d, tvm.tirx.IntImm) else str(d)

    dom = ",".join(f"{'r' if int(iv.iter_type) == 2 else 's'}{dim(iv.dom.extent)}" for iv in block.iter_vars)
    reads = ";".join("x".join(dim(d) for d in r.source.shape) for r in block.reads)
    writes = ";".join("x".join(dim(d) for d in w.source.shape) for w in block.writes)
    return f"{block.name_hint.rstrip('0123456789_')}[{dom}]({reads})->({writes})"


def op_kind(block_name: str, n_reduce: int) -> str:
    """Operator kind from the anchor block's name (TOPI's names) and whether it reduces."""
    name = block_name.lower()
    if "depthwise" in name:
        return "depthwise_conv2d"
    if "conv" in name:
        return "conv2d"
    if "matmul" in name or "dense" in name or "batch_matmul" in name:
        return "dense"
    if "pool" in name:
        return "pool"
    if n_reduce == 0:
        return "elementwise"
    return "other"


def workload_of(mod, target: Mapping, name: str = "main") -> Workload:
    """Describe a task module without TVM: key, op kind and the features of :data:`FEATURE_NAMES`."""
    import_tvm()
    import tvm_ffi

    anchor, spatial, reduce, bits, n_blocks, flops = _anchor_block_info(mod)
    kind = op_kind(anchor, len(reduce))
    feats: dict[str, float] = {f"op_{k}": float(k == kind) for k in OP_KINDS}
    for i in range(MAX_SPATIAL):
        feats[f"log2_spatial_{i}"] = math.log2(spatial[i]) if i < len(spatial) else 0.0
    for i in range(MAX_REDUCE):
        feats[f"log2_reduce_{i}"] = math.log2(reduce[i]) if i < len(reduce) else 0.0
    feats["log2_flops"] = math.log2(max(flops, 1.0))
    feats["dtype_bits"] = float(bits)
    feats["n_blocks"] = float(n_blocks)
    feats["target_cuda"] = float(target.get("kind") == "cuda")
    feats["num_cores"] = float(target.get("num-cores", 0) or 0)
    shash = int(tvm_ffi.structural_hash(mod)) & ((1 << 64) - 1)
    tkind = target.get("kind", "llvm")
    key = f"{kind}-{tkind}-{shash:016x}"  # content only: equal layers share records
    return Workload(key=key, name=name, op=kind, features=feats)


def prepacks(target: Mapping) -> bool:
    """Whether tasks on ``target`` get their weights prepacked (MetaSchedule's ``RewriteLayout``: CPU targets)."""
    return str(target.get("kind", "llvm")) == "llvm"


def mark_layout_free(mod, indices=(1, 2)):
    """The module with its PrimFunc's weight (and bias) arguments marked ``layout_free_buffers``, as Relax's
    ``AttachAttrLayoutFreeBuffers`` marks a model's constants: ``RewriteLayout`` may then store them in the layout the
    schedule reads best, packed once at build."""
    tvm = import_tvm()
    return tvm.IRModule({"main": mod["main"].with_attr("layout_free_buffers", list(indices))})


def make_task(spec_or_mod, target: Mapping, name: str | None = None) -> Task:
    """A :class:`Task` from a workload spec string or an IRModule / PrimFunc.

    A spec's weight and bias are layout-free on CPU targets (see :func:`mark_layout_free`); a given module keeps its
    own attributes (a model's tasks are marked by Relax's ``AttachAttrLayoutFreeBuffers`` at extraction).
    """
    tvm = import_tvm()
    if isinstance(spec_or_mod, str):
        mod = build_spec_module(spec_or_mod)
        if prepacks(target):
            mod = mark_layout_free(mod)
        name = name or spec_or_mod.replace(":", "_").replace(",", "_")
    else:
        mod = spec_or_mod
        if isinstance(mod, tvm.tirx.PrimFunc):
            mod = tvm.IRModule({"main": mod})
        funcs = [gv for gv in mod.get_global_vars()]
        if len(funcs) != 1:
            raise ConfigError(f"a task module must hold exactly one PrimFunc, this one has {len(funcs)}")
        if funcs[0].name_hint != "main":
            mod = tvm.IRModule({"main": mod[funcs[0]].with_attr("global_symbol", "main")})
        name = name or funcs[0].name_hint
    return Task(name=name, mod=mod, workload=workload_of(mod, target, name), target=dict(target))
