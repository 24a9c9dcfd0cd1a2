"""The model job end to end for real (a small CNN through Ray with the DGP searcher, ONNX input, a PyTorch factory,
resume after SIGKILL, the Python API inside the user's Ray)."""

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


@pytest.mark.slow
def test_tiny_cnn_end_to_end_with_the_dgp_searcher(tmp_path):
    import torch

    from raydgp.models.networks import BUILTIN, seeded
    from raydgp.records import RecordStore

    out = tmp_path / "run"
    hist = _small_history(tmp_path / "history")
    p = cli("tune", "--model", "tiny_cnn", "--trials", "14", "--searcher", "dgp", "--no-default-history",
            "--history", str(hist), "--warmup", "3", "--chunk", "4", "--out", str(out), env=_env(tmp_path))
    assert p.returncode == 0, p.stderr[-3000:] + p.stdout[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(s) and s["searcher"] == "dgp" and s["verified"] is True
    assert all(LAYER_KEYS <= set(r) for r in s["layers"]) and len(s["layers"]) >= 5
    assert s["trials_total"] == 14 == sum(r.tag != "retime" for r in RecordStore(out / "records").records())
    assert s["end_to_end_ms"] < s["untuned_end_to_end_ms"], s
    assert s["max_abs_err"] is not None and s["pytorch_ms"] > 0
    assert (out / "tuning_curves.png").stat().st_size > 1000
    assert (out / "ms_database" / "database_tuning_record.json").exists()
    assert "history:" in p.stderr and "stage 1: deep GP pre-trained" in p.stderr  # log records: stderr
    assert "end to end: tuned" in p.stdout  # the result: stdout
    assert s["proposals"]["fallback"] == 0 and s["proposals"]["refit_failures"] == 0, s["proposals"]
    # the one-point layers (reshape, transpose) are measured directly, outside any experiment, and built into the
    # verified library like the rest
    chunks = json.loads((out / "chunks.json").read_text())
    assert {"reshape1", "transpose1"} <= {c["layer"] for c in chunks if c["direct"]}, chunks
    # the library, loaded as a deployment would, matches PyTorch
    module = seeded(BUILTIN["tiny_cnn"][0](), 0)
    x = np.random.default_rng(7).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        ref = module(torch.from_numpy(x)).numpy()
    _check_library_in_fresh_process(out / "tiny_cnn.so", x, ref)
    # the user store received this run's records, so the next model starts from them
    assert sum(r.tag != "retime" for r in RecordStore(tmp_path / "home" / "records").records()) == 14


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
    p = cli("tune", "--model", "raydgp.models.networks:TinyCNN", "--input-shape", "1,3,32,32", "--trials", "6",
            "--searcher", "random", "--no-default-history", "--warmup", "1", "--chunk", "2", "--out", str(out),
            "--no-reference", env=_env(tmp_path))
    assert p.returncode == 0, p.stderr[-3000:] + p.stdout[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["verified"] is True and s["source"] == "torch" and s["model"] == "TinyCNN"
    assert s["trials_total"] == 6 and s["end_to_end_ms"] > 0
    assert s["pytorch_ms"] is None and "no reference timed" in s["timing"]  # --no-reference: verified, not raced


@pytest.mark.slow
def test_resume_after_sigkill_loses_and_repeats_nothing(tmp_path):
    from raydgp.records import RecordStore

    out = tmp_path / "run"
    args = [sys.executable, "-m", "raydgp", "tune", "--model", "tiny_cnn", "--trials", "16", "--searcher", "random",
            "--no-default-history", "--warmup", "2", "--chunk", "3", "--out", str(out), "--no-reference"]
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
    before = [r for r in RecordStore(out / "records").records() if r.tag != "retime"]
    assert 5 <= len(before) < 16
    p = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:] + p.stdout[-3000:]
    assert "resuming:" in p.stderr
    after = [r for r in RecordStore(out / "records").records() if r.tag != "retime"]  # re-timings re-measure
    ident = lambda r: (r.workload.key, r.config, r.time)  # noqa: E731
    assert {ident(r) for r in before} <= {ident(r) for r in after}  # nothing lost
    assert len(after) == 16 and json.loads((out / "summary.json").read_text())["trials_total"] == 16
    seen = [(r.workload.key, r.config) for r in after if r.config.sketch >= 0 and r.result.status != "invalid"]
    assert len(seen) == len(set(seen)), "a finished measurement was repeated"


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
                              chunk=2, trackers=["mlflow", "wandb"], compare_reference=False)
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
