"""Time the framework reference in a fresh process, as the tuned library is timed: ``python -m
raydgp.models.run_reference MODEL SHAPE SEED THREADS REPEAT MIN_REPEAT_MS`` prints ``{"latencies_ms": [...],
"framework": ...}``; with a last argument ``rounds`` it prepares once and times a round per ``go`` line on stdin
(:mod:`raydgp.models.rounds`, :class:`ReferenceTimer`). PyTorch eager for built-in models and factories, ONNX Runtime
for ``.onnx`` files."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

from raydgp.errors import RayDGPError
from raydgp.models.rounds import RoundsTimer


def reference_latencies(model: str, input_shape, seed: int, threads: int, repeat: int = 10,
                         min_repeat_ms: float = 50.0, timeout_s: float = 600.0) -> dict | None:
    """The framework references' latencies, timed in a fresh process on ``threads`` threads like the tuned library:
    ``{"pytorch": [ms, ...], "onnxruntime": [ms, ...]}`` (``repeat`` each; PyTorch models: eager, and ONNX Runtime on
    the model exported to ONNX; .onnx models: ONNX Runtime only), or None if it could not run."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = _reference_cmd(model, input_shape, seed, threads, repeat, min_repeat_ms)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
        return _as_latencies(json.loads(p.stdout.strip().splitlines()[-1]))
    except (subprocess.TimeoutExpired, IndexError, ValueError, KeyError):
        return None


def _reference_cmd(model: str, input_shape, seed: int, threads: int, repeat: int, min_repeat_ms: float) -> list[str]:
    shape = ",".join(str(v) for v in input_shape) if input_shape else "-"
    return [sys.executable, "-m", "raydgp.models.run_reference", model, shape, str(seed), str(threads), str(repeat),
            str(min_repeat_ms)]


def _as_latencies(info: dict) -> dict:
    got = {info["framework"]: [float(v) for v in info["latencies_ms"]]}
    if info.get("onnxruntime_latencies_ms"):
        got["onnxruntime"] = [float(v) for v in info["onnxruntime_latencies_ms"]]
    return got


class ReferenceTimer(RoundsTimer):
    """The framework references loaded once in a fresh process on ``threads`` threads (a PyTorch model exported to
    ONNX once), then a round of :func:`reference_latencies`'s timings each time :meth:`round` is called. Use as a
    context manager, or :meth:`close` it.

    Raises:
        RayDGPError: (at the start or any round) the reference failed or a step took longer than ``timeout_s``.
    """

    def __init__(self, model: str, input_shape, seed: int, threads: int, repeat: int = 10,
                 min_repeat_ms: float = 50.0, timeout_s: float = 600.0):
        from raydgp.models.rounds import RoundsProcess

        self._proc = RoundsProcess(_reference_cmd(model, input_shape, seed, threads, repeat, min_repeat_ms)
                                   + ["rounds"], dict(os.environ, OMP_NUM_THREADS=str(threads)), timeout_s,
                                   what=f"timing the reference of {model}")

    def round(self) -> dict:
        """``{"pytorch": [ms, ...], "onnxruntime": [ms, ...]}`` (as :func:`reference_latencies`)."""
        try:
            return _as_latencies(self._proc.round())
        except (KeyError, TypeError, ValueError) as e:
            self.close()
            raise RayDGPError(f"timing the reference: unexpected answer ({e})") from None


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


def _prepare(model: str, shape: str, seed: int, threads: int) -> tuple[str, Callable[[], Any], Callable[[], Any] | None]:
    """``(framework, run once, ONNX Runtime run once or None)``: the model loaded (and, for a PyTorch model, exported
    to ONNX once, for ONNX Runtime) on ``threads`` threads."""
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
        return "onnxruntime", (lambda: sess.run(None, feed)), None
    import torch

    torch.set_num_threads(threads)
    from raydgp.models.importer import load_torch_module

    module, x = load_torch_module(model, shape_t, int(seed))
    torch.set_grad_enabled(False)  # this process only runs inference (as ``torch.no_grad()`` around every call)
    eager = lambda: module(x)  # noqa: E731

    ort_run = None
    try:  # ONNX Runtime on the same model, exported with torch's (TorchScript-based) ONNX exporter
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
        ort_run = lambda: sess.run(None, feed)  # noqa: E731
    except Exception:  # noqa: BLE001 - ONNX Runtime is a comparison, not a requirement
        ort_run = None
    return "pytorch", eager, ort_run


def main(argv: list[str]) -> int:
    model, shape, seed, threads, repeat, min_ms = argv[:6]
    threads, repeat, min_ms = int(threads), int(repeat), float(min_ms)
    fw, run, ort_run = _prepare(model, shape, int(seed), threads)

    def time_round() -> dict:
        msg = {"latencies_ms": _timed(run, repeat, min_ms), "framework": fw}
        if fw == "pytorch":
            try:
                msg["onnxruntime_latencies_ms"] = _timed(ort_run, repeat, min_ms) if ort_run else None
            except Exception:  # noqa: BLE001 - as above
                msg["onnxruntime_latencies_ms"] = None
        return msg

    if argv[6:7] == ["rounds"]:
        from raydgp.models.rounds import serve

        return serve(time_round)
    print(json.dumps(time_round()))
    return 0

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
