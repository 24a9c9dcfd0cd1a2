"""Time the framework reference in a fresh process, as the tuned library is timed: ``python -m
raydgp.models.run_reference MODEL SHAPE SEED THREADS REPEAT MIN_REPEAT_MS`` prints ``{"latencies_ms": [...],
"framework": ...}``. PyTorch eager for built-in models and factories, ONNX Runtime for ``.onnx`` files."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time


def reference_latencies(model: str, input_shape, seed: int, threads: int, repeat: int = 10,
                         min_repeat_ms: float = 50.0, timeout_s: float = 600.0) -> dict | None:
    """The framework references' latencies, timed in a fresh process on ``threads`` threads like the tuned library:
    ``{"pytorch": [ms, ...], "onnxruntime": [ms, ...]}`` (``repeat`` each; PyTorch models: eager, and ONNX Runtime on
    the model exported to ONNX; .onnx models: ONNX Runtime only), or None if it could not run."""
    shape = ",".join(str(v) for v in input_shape) if input_shape else "-"
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "raydgp.models.run_reference", model, shape, str(seed), str(threads), str(repeat),
           str(min_repeat_ms)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
        info = json.loads(p.stdout.strip().splitlines()[-1])
        got = {info["framework"]: [float(v) for v in info["latencies_ms"]]}
        if info.get("onnxruntime_latencies_ms"):
            got["onnxruntime"] = [float(v) for v in info["onnxruntime_latencies_ms"]]
        return got
    except (subprocess.TimeoutExpired, IndexError, ValueError, KeyError):
        return None


def time_reference(model: str, input_shape, seed: int, threads: int, repeat: int = 10,
                   min_repeat_ms: float = 50.0, timeout_s: float = 600.0) -> dict | None:
    """The framework references' median latencies (:func:`reference_latencies`): ``{"pytorch": ms, ...}``."""
    got = reference_latencies(model, input_shape, seed, threads, repeat, min_repeat_ms, timeout_s)
    return None if got is None else {k: float(statistics.median(v)) for k, v in got.items()}


def _timed(fn, repeat: int, min_repeat_ms: float) -> list[float]:
    fn()
    per = []
    for _ in range(repeat):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            el = time.perf_counter() - t0
            if el * 1e3 >= min_repeat_ms:
                break
        per.append(el * 1e3 / n)
    return per


def main(argv: list[str]) -> int:
    model, shape, seed, threads, repeat, min_ms = argv
    threads, repeat, min_ms = int(threads), int(repeat), float(min_ms)
    from raydgp.models.importer import parse_shape

    shape_t = parse_shape(shape) if shape != "-" else None
    if model.lower().endswith(".onnx"):
        import numpy as np
        import onnxruntime as ort

        from raydgp.models.importer import load_model

        m = load_model(model, shape_t, int(seed))
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        feed = {k: np.ascontiguousarray(v) for k, v in m.inputs.items()}
        lat = _timed(lambda: sess.run(None, feed), repeat, min_ms)
        fw = "onnxruntime"
    else:
        import torch

        torch.set_num_threads(threads)
        from raydgp.models.importer import load_torch_module

        module, x = load_torch_module(model, shape_t, int(seed))
        with torch.no_grad():
            lat = _timed(lambda: module(x), repeat, min_ms)
        fw = "pytorch"
        ort_lat = None
        try:  # ONNX Runtime on the same model, exported with torch's (TorchScript-based) ONNX exporter
            import os
            import tempfile
            import warnings

            import onnxruntime as ort

            with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                path = os.path.join(d, "m.onnx")
                torch.onnx.export(module, (x,), path, dynamo=False)
                so = ort.SessionOptions()
                so.intra_op_num_threads = threads
                so.inter_op_num_threads = 1
                sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
                feed = {sess.get_inputs()[0].name: x.numpy()}
                ort_lat = _timed(lambda: sess.run(None, feed), repeat, min_ms)
        except Exception:  # noqa: BLE001 - ONNX Runtime is a comparison, not a requirement
            ort_lat = None
        print(json.dumps({"latencies_ms": lat, "framework": fw, "onnxruntime_latencies_ms": ort_lat}))
        return 0
    print(json.dumps({"latencies_ms": lat, "framework": fw}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
