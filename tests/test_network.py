"""Whole-network tuning: model import and its errors, layer extraction, the budget scheduler, and real end-to-end runs
(a small CNN through Ray with the DGP searcher, ONNX input, a PyTorch factory, resume after SIGKILL)."""

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


# -- import errors: one line, non-zero exit, never a traceback ----------------------------------------------------------
def _one_line_error(p, *needles):
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr[-2000:]
    assert lines[0].startswith("raydgp: error:") and "Traceback" not in p.stderr
    for n in needles:
        assert n in lines[0], lines[0]


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
    _one_line_error(cli("tune", "--model", "raydgp.network.models:TinyCNN", "--out", str(tmp_path)), "--input-shape")
    _one_line_error(cli("tune", "--model", "no_such_pkg.mod:f", "--input-shape", "1,3,8,8", "--out", str(tmp_path)),
                    "cannot import module")
    _one_line_error(cli("tune", "--model", "raydgp.network.models:TinyCNN", "--input-shape", "1,x,8",
                        "--out", str(tmp_path)), "--input-shape")


# -- import and extraction ---------------------------------------------------------------------------------------------
def test_builtin_models_construct_and_run():
    import torch

    from raydgp.network.models import BUILTIN, seeded

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
    from raydgp.network.importer import load_model
    from raydgp.network.tasks import extract_layers, prepare

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
    from raydgp.network.importer import load_model
    from raydgp.network.tasks import extract_layers, prepare

    layers = extract_layers(prepare(load_model("resnet18").mod, cpu_target), cpu_target)
    convs = [l for l in layers if l.task.workload.op == "conv2d"]
    assert sum(l.weight for l in convs) == 20  # 17 3x3/7x7 convs + 3 downsample 1x1 convs, repeats de-duplicated
    assert len({l.task.workload.key for l in layers}) == len(layers)
    assert {"pool", "dense"} <= {l.task.workload.op for l in layers}


# -- scheduler (pure bookkeeping) --------------------------------------------------------------------------------------
def _states(specs):
    from raydgp.network.scheduler import LayerState

    return [LayerState(n, w, size, untuned_ms=u) for n, w, size, u in specs]


def test_scheduler_warms_up_biggest_first_and_keeps_the_budget():
    from raydgp.network.scheduler import TaskScheduler

    s = TaskScheduler(_states([("small", 1, 1e6, 0.1), ("big", 2, 1e6, 10.0), ("one", 1, 1, 0.5)]), total_trials=40,
                      chunk=5, warmup=4)
    handed = []
    while (c := s.next_chunk()) is not None:
        handed.append(c)
        name, n = c
        s.finish(name, [1.0] * n, n)
    assert handed[0] == ("big", 4)
    assert ("one", 1) in handed  # a one-point space gets exactly one trial
    assert sum(n for _, n in handed) <= 40
    assert s.layers["one"].trials == 1


def test_scheduler_prefers_the_layer_that_still_improves():
    from raydgp.network.scheduler import TaskScheduler

    s = TaskScheduler(_states([("flat", 1, 1e6, 10.0), ("steep", 1, 1e6, 10.0)]), total_trials=1000, chunk=8,
                      warmup=8, patience=8)
    for name in ("flat", "steep"):
        c = s.next_chunk()
        s.finish(c[0], [5.0] * 8 if c[0] == "flat" else list(np.linspace(9, 5, 8)), 8)
    # steep keeps improving; flat found 5 ms at once and never moves again
    picks = []
    for _ in range(6):
        name, n = s.next_chunk()
        picks.append(name)
        s.finish(name, [5.0] * n if name == "flat" else [s.layers[name].best_ms * 0.8] * n, n)
    assert picks.count("steep") >= 5
    assert s.converged(s.layers["flat"])


def test_scheduler_stops_cheap_and_converged_layers():
    from raydgp.network.scheduler import TaskScheduler

    s = TaskScheduler(_states([("heavy", 1, 1e6, 100.0), ("cheap", 1, 1e6, 0.01)]), total_trials=500, chunk=4,
                      warmup=4, patience=8)
    while (c := s.next_chunk()) is not None:
        s.finish(c[0], [3.0 if c[0] == "heavy" else 0.01] * c[1], c[1])
    assert s.layers["cheap"].trials == 2  # a short warm-up only: below 1% of the model
    assert s.layers["heavy"].trials < 500  # converged long before the budget
    assert s.done()


def test_scheduler_gives_more_trials_to_the_layer_that_matters_more():
    """Fake measurer: both layers improve the same way; the one called 3x per inference gets most of the budget."""
    from raydgp.network.scheduler import TaskScheduler

    s = TaskScheduler(_states([("once", 1, 1e6, 10.0), ("thrice", 3, 1e6, 10.0)]), total_trials=120, chunk=8,
                      warmup=8, patience=1000)
    rng = np.random.default_rng(0)
    while (c := s.next_chunk()) is not None:
        name, n = c
        st = s.layers[name]
        fake = [max(1.0, (st.best_ms if np.isfinite(st.best_ms) else 10.0) * rng.uniform(0.8, 1.0)) for _ in range(n)]
        s.finish(name, fake, n)
    assert s.layers["thrice"].trials > 1.5 * s.layers["once"].trials, {k: v.trials for k, v in s.layers.items()}


def test_scheduler_resumes_from_earlier_trials():
    from raydgp.network.scheduler import TaskScheduler

    st = _states([("a", 1, 1e6, 1.0), ("b", 1, 1e6, 1.0)])
    st[0].add([0.5] * 10)
    s = TaskScheduler(st, total_trials=12, chunk=4, warmup=4)
    got = []
    while (c := s.next_chunk()) is not None:
        got.append(c)
        s.finish(c[0], [0.9] * c[1], c[1])
    assert got == [("b", 2)]  # only the 2 trials left of the budget; a is already warm


# -- real end-to-end runs ----------------------------------------------------------------------------------------------
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

    src = RecordStore(ROOT / "data" / "dataset")
    entries = src.workload_entries()
    keys = sorted(entries)[:n_workloads]
    dst = RecordStore(path)
    for k in keys:
        dst.add_workload(k, entries[k]["mod"], entries[k]["space"])
    recs = [r for r in src.records() if r.workload.key in keys]
    dst.append([r for k in keys for r in [x for x in recs if x.workload.key == k][:per]])
    return path


@pytest.mark.slow
def test_tiny_cnn_end_to_end_with_the_dgp_searcher(tmp_path):
    import torch

    from raydgp.network.models import BUILTIN, seeded
    from raydgp.records import RecordStore

    out = tmp_path / "run"
    hist = _small_history(tmp_path / "history")
    p = cli("tune", "--model", "tiny_cnn", "--trials", "14", "--searcher", "dgp", "--no-default-history",
            "--history", str(hist), "--warmup", "3", "--chunk", "4", "--out", str(out), env=_env(tmp_path))
    assert p.returncode == 0, p.stderr[-3000:] + p.stdout[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(s) and s["searcher"] == "dgp" and s["verified"] is True
    assert all(LAYER_KEYS <= set(r) for r in s["layers"]) and len(s["layers"]) >= 5
    assert s["trials_total"] == 14 == len(RecordStore(out / "records").records())
    assert s["end_to_end_ms"] < s["untuned_end_to_end_ms"], s
    assert s["max_abs_err"] is not None and s["pytorch_ms"] > 0
    assert (out / "tuning_curves.png").stat().st_size > 1000
    assert (out / "ms_database" / "database_tuning_record.json").exists()
    assert "history:" in p.stdout and "stage 1: deep GP pre-trained" in p.stdout
    assert "end to end: tuned" in p.stdout
    # the library, loaded as a deployment would, matches PyTorch
    module = seeded(BUILTIN["tiny_cnn"][0](), 0)
    x = np.random.default_rng(7).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        ref = module(torch.from_numpy(x)).numpy()
    _check_library_in_fresh_process(out / "tiny_cnn.so", x, ref)
    # the user store received this run's records, so the next model starts from them
    assert len(RecordStore(tmp_path / "home" / "records").records()) == 14


@pytest.mark.slow
def test_onnx_input_end_to_end(tmp_path):
    model = make_onnx(tmp_path / "small.onnx")
    out = tmp_path / "run"
    p = cli("tune", "--model", str(model), "--trials", "5", "--searcher", "random", "--no-default-history",
            "--warmup", "2", "--chunk", "2", "--out", str(out), env=_env(tmp_path))
    assert p.returncode == 0, p.stderr[-3000:] + p.stdout[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["verified"] is True and s["reference"] == "onnxruntime" and s["onnxruntime_ms"] > 0
    assert s["source"] == "onnx" and s["trials_total"] == 5
    assert any(r["name"].startswith("fused_conv2d") for r in s["layers"])


@pytest.mark.slow
def test_torch_factory_input_end_to_end(tmp_path):
    out = tmp_path / "run"
    p = cli("tune", "--model", "raydgp.network.models:TinyCNN", "--input-shape", "1,3,32,32", "--trials", "6",
            "--searcher", "random", "--no-default-history", "--warmup", "1", "--chunk", "2", "--out", str(out),
            env=_env(tmp_path))
    assert p.returncode == 0, p.stderr[-3000:] + p.stdout[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["verified"] is True and s["source"] == "torch" and s["model"] == "TinyCNN"
    assert s["trials_total"] == 6


@pytest.mark.slow
def test_resume_after_sigkill_loses_and_repeats_nothing(tmp_path):
    from raydgp.records import RecordStore

    out = tmp_path / "run"
    args = [sys.executable, "-m", "raydgp", "tune", "--model", "tiny_cnn", "--trials", "16", "--searcher", "random",
            "--no-default-history", "--warmup", "2", "--chunk", "3", "--out", str(out)]
    env = dict(os.environ, RAY_AUTH_MODE="disabled", **_env(tmp_path))
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    recs = out / "records" / "records.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if recs.exists() and sum(1 for _ in open(recs)) >= 5:
            break
        time.sleep(0.5)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = RecordStore(out / "records").records()
    assert 5 <= len(before) < 16
    p = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:] + p.stdout[-3000:]
    assert "resuming:" in p.stdout
    after = RecordStore(out / "records").records()
    ident = lambda r: (r.workload.key, r.config, r.time)  # noqa: E731
    assert {ident(r) for r in before} <= {ident(r) for r in after}  # nothing lost
    assert len(after) == 16 and json.loads((out / "summary.json").read_text())["trials_total"] == 16
    seen = [(r.workload.key, r.config) for r in after if r.config.sketch >= 0 and r.result.status != "invalid"]
    assert len(seen) == len(set(seen)), "a finished measurement was repeated"


def test_scheduler_drops_a_layer_whose_experiments_keep_failing():
    from raydgp.network.scheduler import TaskScheduler

    s = TaskScheduler(_states([("bad", 1, 1e6, 5.0), ("good", 1, 1e6, 1.0)]), total_trials=40, chunk=4, warmup=4)
    n_bad = 0
    while (c := s.next_chunk()) is not None:
        if c[0] == "bad":
            n_bad += 1
            s.finish("bad", [], c[1])  # the experiment died before any trial
        else:
            s.finish("good", list(np.linspace(1.0, 0.5, c[1])), c[1])
    assert n_bad == 2 and s.layers["good"].trials > 4 and s.done()


@pytest.mark.slow
def test_python_api_inside_the_users_ray_with_mlflow_and_wandb(tmp_path, monkeypatch):
    """raydgp.tune_model inside a Ray the user started; Ray's own MLflow (file store) and W&B (offline) callbacks."""
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    import ray

    import raydgp

    monkeypatch.setenv("RAYDGP_HOME", str(tmp_path / "home"))
    # RAY_AUTH_MODE is left alone: Ray caches it per process, and later in-process tests start Ray with the default
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "run"
        s = raydgp.tune_model("tiny_cnn", trials=4, out=out, searcher="random", default_history=False, warmup=1,
                              chunk=2, trackers=["mlflow", "wandb"], compare_pytorch=False, log=lambda *_: None)
        assert ray.is_initialized()  # the user's Ray is left running
    finally:
        ray.shutdown()
    assert s["verified"] is True and s["trials_total"] == 4
    # MLflow: one run per trial with the latency metric, in the file store under out/mlruns
    metrics = list((out / "mlruns").glob("*/*/metrics/latency_ms"))
    assert len(metrics) >= 3, list((out / "mlruns").rglob("*"))[:20]
    # W&B offline runs with the trial metrics
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) >= 3, list(out.iterdir())
    assert all(any(r.glob("*.wandb")) for r in runs)


def test_cuda_model_spaces_and_code_generation_without_a_gpu(tmp_path):
    """The cuda path as far as this machine allows: GPU design spaces for a model's layers, and the whole model built
    to CUDA source (MetaSchedule database + DLight fallback for layers without records). Timing needs a GPU."""
    from raydgp.network.build import compile_tuned
    from raydgp.network.importer import load_model
    from raydgp.network.tasks import extract_layers, prepare
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


def test_seed_configs_take_the_best_valid_configurations_of_other_layers(small_space):
    """A sibling layer (same loop nest, other key) donates its fastest configurations; invalid ones and ones already
    measured here are skipped."""
    from dataclasses import replace

    from raydgp.network.job import seed_configs, top_configs
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
