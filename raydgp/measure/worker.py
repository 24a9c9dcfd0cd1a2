"""The measurement worker: a warm process that builds, checks and times configurations, one request at a time.

Started by :class:`raydgp.measure.local.LocalMeasurer` as ``python -m raydgp.measure.worker``. It imports TVM once and keeps,
per task, the parsed module, MetaSchedule's postprocessors, the random inputs and the reference output (the untouched
task compiled as is, run once). Requests arrive as JSON lines on stdin; progress events and the result leave as JSON lines
on a private copy of stdout (fd 1 itself is pointed at stderr, so nothing TVM prints can corrupt the protocol).

Events, in order: ``prepared`` (reference ready), ``built`` (schedule applied and compiled), ``timing`` (the node's timing
lock is held; the run timeout starts), ``result``. If the process dies or stops answering, the parent turns that into a
result with a status; the worker itself reports every error it can catch as a result.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

import numpy as np


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return f"{type(e).__name__}: {(lines[-1] if lines else '')[:300]}"


class _TaskState:
    def __init__(self, key, mod, target, postprocs, inputs, reference, untuned_ex):
        self.key = key
        self.mod = mod
        self.target = target
        self.postprocs = postprocs
        self.inputs = inputs
        self.reference = reference
        self.untuned_ex = untuned_ex


class Worker:
    def __init__(self, out):
        self.out = out
        from raydgp.tvm_loader import import_tvm

        self.tvm = import_tvm()
        self.tasks: dict[str, _TaskState] = {}
        self._lock_fd = None

    # -- protocol ------------------------------------------------------------------------------------------------------
    def emit(self, **msg):
        self.out.write(json.dumps(msg, separators=(",", ":")) + "\n")
        self.out.flush()

    def device(self, settings):
        return self.tvm.cpu(0) if settings["device"] == "cpu" else self.tvm.cuda(settings["device_id"])

    def lock(self, settings):
        import fcntl

        path = settings["timing_lock"]
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        fcntl.flock(fd, fcntl.LOCK_EX)  # released by the kernel if this process dies
        self._lock_fd = fd
        self.emit(ev="timing")

    def unlock(self):
        import fcntl

        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- per task ------------------------------------------------------------------------------------------------------
    def prepare(self, req) -> _TaskState:
        key = req["key"]
        if key in self.tasks:
            return self.tasks[key]
        from raydgp.space.metaschedule import make_target, tune_context
        from tvm.s_tir.meta_schedule.arg_info import ArgInfo

        settings = req["settings"]
        mod = self.tvm.ir.load_json(req["mod"])
        target = make_target(req["target"])
        postprocs = list(tune_context(mod, req["target"]).space_generator.postprocs) if req.get("trace") else []
        rng = np.random.default_rng(0)
        inputs = []
        for info in ArgInfo.from_prim_func(mod["main"]):
            shape = [int(x) for x in info.shape]
            dtype = str(info.dtype)
            if "float" in dtype:
                inputs.append(rng.uniform(-1.0, 1.0, size=shape).astype(dtype))
            elif "int" in dtype:
                inputs.append(rng.integers(0, 8, size=shape).astype(dtype))
            else:
                inputs.append(np.zeros(shape, dtype=dtype))
        untuned = self.tvm.compile(mod, target=target)
        dev = self.device(settings)
        self.lock(settings)
        try:
            args = [self.tvm.runtime.tensor(a, dev) for a in inputs]
            untuned["main"](*args)
            dev.sync()
            reference = [a.numpy() for a in args]
        finally:
            self.unlock()
        state = _TaskState(key, mod, target, postprocs, inputs, reference, untuned)
        self.tasks[key] = state
        return state

    # -- one request ---------------------------------------------------------------------------------------------------
    def measure(self, req) -> dict:
        settings = req["settings"]
        t0 = time.perf_counter()
        try:
            st = self.prepare(req)
        except Exception as e:  # noqa: BLE001 - a task that cannot even run as is
            return dict(status="run_error", message=f"reference run of the task failed: {_first_line(e)}")
        self.emit(ev="prepared")
        from raydgp.errors import InvalidConfigurationError
        from raydgp.space.metaschedule import apply_config

        t0 = time.perf_counter()
        applied = None
        try:
            if req.get("candidate_mod"):
                ex = self.tvm.compile(self.tvm.ir.load_json(req["candidate_mod"]), target=st.target)
            elif req.get("trace") is None:
                ex = st.untuned_ex
            else:
                sch, applied = apply_config(st.mod, req["trace"], st.postprocs)
                ex = self.tvm.compile(sch.mod, target=st.target)
        except InvalidConfigurationError as e:
            return dict(status="invalid", message=str(e), build_s=time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001
            return dict(status="build_error", message=_first_line(e), build_s=time.perf_counter() - t0,
                        applied=applied)
        build_s = time.perf_counter() - t0
        self.emit(ev="built", build_s=build_s)
        dev = self.device(settings)
        self.lock(settings)
        t1 = time.perf_counter()
        try:
            args = [self.tvm.runtime.tensor(a, dev) for a in st.inputs]
            try:
                ex["main"](*args)
                dev.sync()
            except Exception as e:  # noqa: BLE001
                return dict(status="run_error", message=_first_line(e), build_s=build_s,
                            run_s=time.perf_counter() - t1, applied=applied)
            for i, (got, ref) in enumerate(zip(args, st.reference)):
                g = got.numpy()
                scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
                if not np.allclose(g, ref, rtol=settings["rtol"], atol=settings["atol"] * scale, equal_nan=False):
                    err = float(np.max(np.abs(g.astype(np.float64) - ref.astype(np.float64)))) if g.size else 0.0
                    return dict(status="wrong_result", message=f"output {i} differs from the reference (max abs err "
                                f"{err:.3g})", build_s=build_s, run_s=time.perf_counter() - t1, applied=applied)
            for _ in range(int(settings["warmup"])):
                ex["main"](*args)
            dev.sync()
            timer = ex.mod.time_evaluator("main", dev, number=1, repeat=int(settings["repeat"]),
                                          min_repeat_ms=int(round(float(settings["min_repeat_ms"]))))
            res = timer(*args)
            lat = [float(x) * 1e3 for x in res.results]
        except Exception as e:  # noqa: BLE001
            return dict(status="run_error", message=_first_line(e), build_s=build_s,
                        run_s=time.perf_counter() - t1, applied=applied)
        finally:
            self.unlock()
        return dict(status="ok", latencies_ms=lat, build_s=build_s, run_s=time.perf_counter() - t1, applied=applied)


def main() -> None:
    # Keep a private copy of stdout for the protocol; everything else that writes to fd 1 goes to stderr.
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    w = Worker(proto)
    w.emit(ev="ready", pid=os.getpid())
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        if req.get("op") == "exit":
            break
        try:
            result = w.measure(req)
        except Exception as e:  # noqa: BLE001 - never die on a request
            traceback.print_exc()
            result = dict(status="run_error", message=f"worker error: {_first_line(e)}")
        w.emit(ev="result", **result)


if __name__ == "__main__":
    main()
