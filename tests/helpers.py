"""Helpers shared by the model and pipeline tests: the CLI in a subprocess, a hand-built ONNX model, small histories."""

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


ROOT = Path(__file__).parent.parent


def cli(*args, timeout=900, env=None):
    e = dict(os.environ, RAY_AUTH_MODE="disabled", **(env or {}))
    return subprocess.run([sys.executable, "-m", "raydgp", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=e)


def make_onnx(path: Path, op: str = "Relu", domain: str = "") -> Path:
    """A conv -> op -> global-average-pool ONNX model built by hand (no exporter needed)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((16, 3, 3, 3)) * 0.3).astype(np.float32), "W")
    b = numpy_helper.from_array((rng.standard_normal(16) * 0.1).astype(np.float32), "B")
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node(op, ["c"], ["r"], domain=domain),
             helper.make_node("GlobalAveragePool", ["r"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 1, 1])], [w, b])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    onnx.save(helper.make_model(g, opset_imports=opsets), str(path))
    return path


def _one_line_error(p, *needles):
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr[-2000:]
    assert lines[0].startswith("raydgp: error:") and "Traceback" not in p.stderr
    for n in needles:
        assert n in lines[0], lines[0]


SUMMARY_KEYS = {"model", "target", "searcher", "trials_total", "wall_s", "layers", "end_to_end_ms",
                "untuned_end_to_end_ms", "pytorch_ms", "max_abs_err"}
LAYER_KEYS = {"name", "workload_key", "weight", "flops", "trials", "best_ms", "untuned_ms"}


def _env(tmp_path):
    return {"RAYDGP_HOME": str(tmp_path / "home"), "RAYDGP_CACHE": str(tmp_path / "cache")}


def _check_library_in_fresh_process(lib: Path, x: np.ndarray, expected: np.ndarray):
    np.save(lib.parent / "x.npy", x)
    code = ("import sys, numpy as np\nfrom raydgp.tvm_loader import import_tvm\ntvm = import_tvm()\n"
            "from tvm import relax\nvm = relax.VirtualMachine(tvm.runtime.load_module(sys.argv[1]), tvm.cpu())\n"
            "y = vm['main'](tvm.runtime.tensor(np.load(sys.argv[2]), tvm.cpu()))\n"
            "y = y[0] if not hasattr(y, 'numpy') else y\nnp.save(sys.argv[3], y.numpy())\n")
    p = subprocess.run([sys.executable, "-c", code, str(lib), str(lib.parent / "x.npy"), str(lib.parent / "y.npy")],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    y = np.load(lib.parent / "y.npy")
    np.testing.assert_allclose(y, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())


def _small_history(path: Path, n_workloads: int = 4, per: int = 60) -> Path:
    """A few workloads of the shipped dataset, as a record store (keeps stage 1 short in tests)."""
    from raydgp.records import RecordStore

    src = RecordStore(ROOT / "raydgp" / "datasets" / "shipped")
    entries = src.workload_entries()
    keys = sorted(entries)[:n_workloads]
    dst = RecordStore(path)
    for k in keys:
        dst.add_workload(k, entries[k]["mod"], entries[k]["space"])
    recs = [r for r in src.records() if r.workload.key in keys]
    dst.append([r for k in keys for r in [x for x in recs if x.workload.key == k][:per]])
    return path


