"""Model import and its errors, layer extraction, the cuda spaces without a GPU."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import ROOT, LAYER_KEYS, SUMMARY_KEYS, _check_library_in_fresh_process, _env, _one_line_error, _small_history, cli, make_onnx  # noqa: F401


def test_unknown_model_name(tmp_path):
    _one_line_error(cli("tune", "--model", "resnet1000", "--out", str(tmp_path)), "unknown model 'resnet1000'",
                    "resnet18")


def test_corrupt_and_truncated_onnx(tmp_path):
    good = make_onnx(tmp_path / "good.onnx")
    trunc = tmp_path / "trunc.onnx"
    trunc.write_bytes(good.read_bytes()[:120])
    _one_line_error(cli("tune", "--model", str(trunc), "--out", str(tmp_path / "o")), "not a valid ONNX model")
    junk = tmp_path / "junk.onnx"
    junk.write_text("this is not a protobuf")
    _one_line_error(cli("tune", "--model", str(junk), "--out", str(tmp_path / "o")), "not a valid ONNX model")
    _one_line_error(cli("tune", "--model", str(tmp_path / "missing.onnx"), "--out", str(tmp_path / "o")),
                    "not found")


def test_unsupported_operators(tmp_path):
    bad = make_onnx(tmp_path / "bad.onnx", op="FancyOp", domain="com.example")
    _one_line_error(cli("tune", "--model", str(bad), "--out", str(tmp_path / "o")), "unsupported operator", "FancyOp")
    # a PyTorch factory whose operator TVM's torch frontend cannot convert
    _one_line_error(cli("tune", "--model", "tests.net_fixtures:unsupported_op", "--input-shape", "1,3,8,8",
                        "--out", str(tmp_path / "o2")), "unsupported operator", "i1e")


def test_factory_errors(tmp_path):
    _one_line_error(cli("tune", "--model", "raydgp.models.networks:TinyCNN", "--out", str(tmp_path)), "--input-shape")
    _one_line_error(cli("tune", "--model", "no_such_pkg.mod:f", "--input-shape", "1,3,8,8", "--out", str(tmp_path)),
                    "cannot import module")
    _one_line_error(cli("tune", "--model", "raydgp.models.networks:TinyCNN", "--input-shape", "1,x,8",
                        "--out", str(tmp_path)), "--input-shape")


def test_builtin_models_construct_and_run():
    import torch

    from raydgp.models.networks import BUILTIN, seeded

    for name, (factory, shape) in BUILTIN.items():
        if name in ("vgg16", "alexnet"):
            continue  # big fully-connected layers: construction only
        m = seeded(factory(), 0)
        with torch.no_grad():
            y = m(torch.randn(shape))
        assert y.shape[0] == 1 and torch.isfinite(y).all()
    for name in ("vgg16", "alexnet"):
        assert sum(p.numel() for p in BUILTIN[name][0]().parameters()) > 50e6


def test_extract_fuses_batchnorm_and_activation(cpu_target):
    from raydgp.models.importer import load_model
    from raydgp.models.tasks import extract_layers, prepare

    m = load_model("tiny_cnn")
    layers = extract_layers(prepare(m.mod, cpu_target), cpu_target)
    names = [l.name for l in layers]
    convs = [l for l in layers if l.task.workload.op in ("conv2d", "depthwise_conv2d")]
    assert len(convs) == 3, names
    # batch norm folded into the conv weights (no per-channel subtract/divide left), ReLU fused into the epilogue
    assert all("relu" in l.name and "divide" not in l.name and "subtract" not in l.name for l in convs), names
    assert any(l.task.workload.op == "dense" for l in layers), names
    assert layers[0].task.workload.op == "conv2d" and layers[0].flops == max(l.flops for l in layers)
    assert all(l.weight >= 1 for l in layers)


def test_resnet18_layers(cpu_target):
    from raydgp.models.importer import load_model
    from raydgp.models.tasks import extract_layers, prepare

    layers = extract_layers(prepare(load_model("resnet18").mod, cpu_target), cpu_target)
    convs = [l for l in layers if l.task.workload.op == "conv2d"]
    assert sum(l.weight for l in convs) == 20  # 17 3x3/7x7 convs + 3 downsample 1x1 convs, repeats de-duplicated
    assert len({l.task.workload.key for l in layers}) == len(layers)
    assert {"pool", "dense"} <= {l.task.workload.op for l in layers}


def test_cuda_model_spaces_and_code_generation_without_a_gpu(tmp_path):
    """The cuda path as far as this machine allows: GPU design spaces for a model's layers, and the whole model built
    to CUDA source (MetaSchedule database + DLight fallback for layers without records). Timing needs a GPU."""
    from raydgp.models.build import compile_tuned
    from raydgp.models.importer import load_model
    from raydgp.models.tasks import extract_layers, prepare
    from raydgp.space.metaschedule import build_space, host_target

    target = host_target("cuda")
    prepared = prepare(load_model("tiny_cnn").mod, target)
    layers = extract_layers(prepared, target)
    convs = [l for l in layers if l.task.workload.op in ("conv2d", "depthwise_conv2d")]
    assert len(convs) == 3
    for l in convs:
        space = build_space(l.task)
        assert any(k.kind == "tile" and k.parts == 5 for k in space.sketches[0].knobs)  # GPU multi-level tiling
    ex = compile_tuned(prepared, target, tmp_path / "db")

    def walk(m):
        return [m] + [x for i in m.imports for x in walk(i)]

    cuda = [m for m in walk(ex.mod) if getattr(m, "kind", "") == "cuda"]
    assert cuda and cuda[0].inspect_source().count("__global__") >= len(layers) - 1


def test_layout_nhwc_on_cpu_nchw_on_request_and_both_verify(cpu_target, tmp_path):
    """``auto`` tunes convs in NHWC on CPU (output channels innermost), NCHW stays available, and either prepared module
    builds to a library whose output matches the framework's."""
    import pytest

    from raydgp.errors import ConfigError
    from raydgp.models.build import compare, compile_untuned, export, run_library
    from raydgp.models.importer import load_model
    from raydgp.models.tasks import extract_layers, prepare, resolve_layout
    from raydgp.space.workloads import anchor_signature

    assert resolve_layout("auto", cpu_target) == "NHWC"
    assert resolve_layout("auto", {"kind": "cuda"}) == "NCHW"
    with pytest.raises(ConfigError, match="layout 'NWHC'"):
        resolve_layout("NWHC", cpu_target)
    m = load_model("tiny_cnn")
    reference = m.reference(list(m.inputs.values()))
    for layout, tag in (("auto", "nhwc"), ("NCHW", "nchw")):
        prepared = prepare(m.mod, cpu_target, layout)
        convs = [l for l in extract_layers(prepared, cpu_target) if l.task.workload.op == "conv2d"]
        assert len(convs) == 3 and all(f"conv2d_{tag}" in anchor_signature(l.task.mod) for l in convs)
        lib = export(compile_untuned(prepared, cpu_target), tmp_path / f"{layout}.so")
        ok, err, msg = compare(run_library(lib, m.inputs, threads=1, repeat=1, min_repeat_ms=1).outputs, reference)
        assert ok, (layout, err, msg)


def test_model_run_rejects_an_unknown_layout(tmp_path):
    import pytest

    from raydgp.errors import ConfigError
    from raydgp.pipeline.settings import ModelRun

    with pytest.raises(ConfigError, match="layout 'nhwc'.*NHWC"):
        ModelRun(model="resnet18", out=tmp_path, layout="nhwc")


def test_numpy_fold_computes_what_fold_constant_computes(cpu_target):
    """Batch-norm folding and the NHWC weight transposes are folded in NumPy (no LLVM build per constant): after
    NumpyFold no call of its operators has only constant inputs, and every constant of the prepared model equals what
    TVM's own FoldConstant computed (to float32 rounding), in the same order and shapes."""
    from raydgp.models.importer import load_model
    from raydgp.models.tasks import _NUMPY_OPS, NumpyFold, prepare
    from raydgp.space.metaschedule import make_target
    from raydgp.tvm_loader import import_tvm

    tvm = import_tvm()
    from tvm import relax

    def constant_calls(mod):
        found = []
        for _, f in mod.functions_items():
            if isinstance(f, relax.Function):
                binds = {}

                def visit(e):
                    if isinstance(e, relax.VarBinding):
                        binds[e.var] = e.value
                    elif isinstance(e, relax.Call) and getattr(e.op, "name", None) in _NUMPY_OPS and all(
                            isinstance(a, tvm.ir.expr.Constant) or isinstance(binds.get(a), tvm.ir.expr.Constant)
                            for a in e.args[:_NUMPY_OPS[e.op.name][0]]):
                        found.append(e.op.name)
                for block in f.body.blocks:
                    for b in block.bindings:
                        visit(b)
                        visit(b.value)
        return found

    def constants(mod):
        out = []
        relax.analysis.post_order_visit(mod["main"], lambda e: out.append(np.asarray(e.value.numpy() if hasattr(e.value, 'numpy') else e.value))
                                        if isinstance(e, tvm.ir.expr.Constant) else None)
        return out

    m = load_model("tiny_cnn")
    with make_target(cpu_target):
        bn = relax.transform.FoldBatchnormToConv2D()(m.mod)
        assert len(constant_calls(bn)) >= 3  # the batch-norm arithmetic on the weights (its first steps)
        assert constant_calls(NumpyFold()(bn)) == []

        def passes(numpy_first):
            fold = [NumpyFold(), relax.transform.FoldConstant()] if numpy_first else [relax.transform.FoldConstant()]
            return tvm.transform.Sequential([
                *fold, relax.transform.DecomposeOpsForInference(), relax.transform.CanonicalizeBindings(), *fold,
                relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "HWIO"]}), *fold,
                relax.transform.CanonicalizeBindings(), relax.transform.DeadCodeElimination()])

        a, b = constants(passes(False)(bn)), constants(passes(True)(bn))
    assert len(a) == len(b) >= 6
    for x, y in zip(a, b):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_allclose(y, x, rtol=2e-6, atol=1e-7)
