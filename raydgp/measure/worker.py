"""The measurement worker: a warm process that builds, checks and times configurations, one request at a time.

Started by :class:`raydgp.measure.local.LocalMeasurer` as ``python -m raydgp.measure.worker``. It imports TVM once and
keeps, per task, the parsed module, MetaSchedule's postprocessors, the random inputs and the reference output (the
untouched task compiled as is, run once; for a request of the untuned task itself, that request's own output; read
from ``reference_dir`` where another worker kept it, :mod:`raydgp.measure.references`).
Requests arrive as JSON lines on stdin; progress events and the result leave as JSON lines on a private copy of stdout
(fd 1 itself is pointed at stderr, so nothing TVM prints can corrupt the protocol).

Events, in order: ``prepared`` (task ready, with its reference output unless the request is the untuned task itself),
``built`` (schedule applied and compiled), ``timing`` (the node's timing lock is held; the run timeout starts),
``result``. If the process dies or stops answering, the parent turns that into a result with a status; the worker
itself reports every error it can catch as a result.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections import OrderedDict

import numpy as np


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return f"{type(e).__name__}: {(lines[-1] if lines else '')[:300]}"


class _TaskState:
    def __init__(self, key, mod, target, postprocs, inputs, reference, shapes):
        self.key = key
        self.shapes = shapes
        self.mod = mod
        self.target = target
        self.postprocs = postprocs
        self.inputs = inputs
        self.reference = reference
        # built kernels kept to be measured again (MeasureSettings.keep_built): trace JSON -> (kernel, applied)
        self.built: OrderedDict = OrderedDict()


class Worker:
    def __init__(self, out):
        self.out = out
        from raydgp.tvm_loader import import_tvm

        self.tvm = import_tvm()
        self.tasks: dict[str, _TaskState] = {}
        self._lock = None

    # -- protocol ------------------------------------------------------------------------------------------------------
    def emit(self, **msg):
        self.out.write(json.dumps(msg, separators=(",", ":")) + "\n")
        self.out.flush()

    def device(self, settings):
        return self.tvm.cpu(0) if settings["device"] == "cpu" else self.tvm.cuda(settings["device_id"])

    def lock(self, settings):
        from raydgp.measure.node_locks import TimingLock

        lock = TimingLock(settings["timing_lock"], exclusive=self.exclusive(settings))
        lock.acquire()
        self._lock = lock
        self.emit(ev="timing")

    def unlock(self):
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @staticmethod
    def exclusive(settings) -> bool:
        """Builds pause while a kernel is timed on the CPU (they would share its cores); a GPU timing runs beside them."""
        return settings["device"] == "cpu" and bool(settings.get("pause_builds", True))

    def building(self, settings):
        from raydgp.measure.node_locks import building

        return building(settings["timing_lock"], self.exclusive(settings))

    # -- per task ------------------------------------------------------------------------------------------------------
    def prepare(self, req) -> _TaskState:
        """The task's state: module, target, inputs, and (once a configuration is to be checked) the reference output.

        A request for the untuned task itself needs no separate reference run: its own output is the reference
        (:meth:`measure` keeps it), which saves one compile and one run of the slowest kernel of all.
        """
        key = req["key"]
        settings = req["settings"]
        untuned = req.get("trace") is None and not req.get("candidate_mod")
        st = self.tasks.get(key)
        if st is None:
            from raydgp.space.metaschedule import make_target
            from tvm.s_tir.meta_schedule.arg_info import ArgInfo

            mod = self.tvm.ir.load_json(req["mod"])
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
            shapes = [(list(a.shape), str(a.dtype)) for a in inputs]
            st = _TaskState(key, mod, make_target(req["target"]), None, inputs, None, shapes)
            self.tasks[key] = st
        if st.postprocs is None and req.get("trace"):
            from raydgp.space.metaschedule import tune_context

            st.postprocs = list(tune_context(st.mod, req["target"]).space_generator.postprocs)
        if st.reference is None and not untuned:
            st.reference = self._cached_reference(req, st)
        if st.reference is None and not untuned:
            with self.building(settings):
                plain = self.tvm.compile(st.mod, target=st.target)
                plain_main = plain["main"]  # the LLVM code is generated at the first lookup: here, not in the lock
            dev = self.device(settings)
            self.lock(settings)
            try:
                args = [self.tvm.runtime.tensor(a, dev) for a in st.inputs]
                plain_main(*args)
                dev.sync()
                st.reference = [a.numpy() for a in args]
            finally:
                self.unlock()
            self._keep_reference(req, st)
        return st

    def _reference_file(self, req):
        from raydgp.measure.references import reference_path

        d = req["settings"].get("reference_dir")
        return reference_path(d, req["key"], req["target"], self.tvm.__version__) if d else None

    def _cached_reference(self, req, st):
        """``[output]`` from ``reference_dir`` (:mod:`raydgp.measure.references`), or None."""
        from raydgp.measure.references import load_reference

        path = self._reference_file(req)
        ref = load_reference(path, *st.shapes[-1]) if path is not None else None
        return [ref] if ref is not None else None

    def _keep_reference(self, req, st):
        from raydgp.measure.references import save_reference

        path = self._reference_file(req)
        if path is not None and st.reference is not None:
            save_reference(path, st.reference[-1])

    # -- one request ---------------------------------------------------------------------------------------------------
    def measure(self, req) -> dict:
        settings = req["settings"]
        try:
            st = self.prepare(req)
        except Exception as e:  # noqa: BLE001 - a task that cannot even run as is
            return dict(status="run_error", message=f"reference run of the task failed: {_first_line(e)}")
        self.emit(ev="prepared")
        from raydgp.errors import InvalidConfigurationError
        from raydgp.space.metaschedule import apply_config

        t0 = time.perf_counter()
        applied = None
        from raydgp.measure.prepack import split_and_build

        keep = int(settings.get("keep_built") or 0)
        ckey = None
        if keep > 0 and (req.get("candidate_mod") or req.get("trace") is not None):
            ckey = req.get("candidate_mod") or json.dumps(req["trace"], separators=(",", ":"))
        hit = st.built.get(ckey) if ckey is not None else None
        if hit is not None:  # built before in this worker: measured again as it was built (re-timing)
            st.built.move_to_end(ckey)
            kernel, applied = hit
            dev = self.device(settings)
            self.emit(ev="built", build_s=0.0, kept=True)
            return self._check_and_time(req, st, kernel, dev, 0.0, applied)
        try:
            with self.building(settings):
                t0 = time.perf_counter()  # build time, not the wait for a timing in progress
                if req.get("candidate_mod"):
                    sched_mod = self.tvm.ir.load_json(req["candidate_mod"])
                elif req.get("trace") is None:
                    sched_mod = st.mod
                else:
                    sch, applied = apply_config(st.mod, req["trace"], st.postprocs or [])
                    sched_mod = sch.mod
                dev = self.device(settings)
                kernel = split_and_build(sched_mod, st.shapes, st.target, dev)
        except InvalidConfigurationError as e:
            return dict(status="invalid", message=str(e), build_s=time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001
            return dict(status="build_error", message=_first_line(e), build_s=time.perf_counter() - t0,
                        applied=applied)
        build_s = time.perf_counter() - t0
        if ckey is not None:
            st.built[ckey] = (kernel, applied)
            while len(st.built) > keep:
                st.built.popitem(last=False)
        self.emit(ev="built", build_s=build_s)
        return self._check_and_time(req, st, kernel, dev, build_s, applied)

    def _check_and_time(self, req, st: _TaskState, kernel, dev, build_s: float, applied) -> dict:
        """Run a built kernel as deployed, check its output against the reference, and time it (under the node's
        timing lock)."""
        settings = req["settings"]
        self.lock(settings)
        t1 = time.perf_counter()
        try:
            try:
                # As deployed: the weights packed from the originals, then the kernel proper; checked against the
                # reference computed from the original weights.
                args = kernel.run_all(st.inputs)
                dev.sync()
            except Exception as e:  # noqa: BLE001
                return dict(status="run_error", message=_first_line(e), build_s=build_s,
                            run_s=time.perf_counter() - t1, applied=applied)
            if st.reference is None:  # the untuned task itself (see prepare): its output is the reference
                st.reference = [a.numpy() for a in args]
                self._keep_reference(req, st)
            got_out, ref = args[-1].numpy(), st.reference[-1]
            scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
            if not np.allclose(got_out, ref, rtol=settings["rtol"], atol=settings["atol"] * scale, equal_nan=False):
                err = float(np.max(np.abs(got_out.astype(np.float64) - ref.astype(np.float64)))) if ref.size else 0.0
                return dict(status="wrong_result", message=f"the output differs from the reference (max abs err "
                            f"{err:.3g})", build_s=build_s, run_s=time.perf_counter() - t1, applied=applied)
            # Timed: the kernel proper on the packed weights (the packing runs once per deployed model, at build).
            kfunc = kernel.lib[kernel.kernel_name]
            for _ in range(int(settings["warmup"])):
                kfunc(*args)
            dev.sync()
            flush = settings["device"] == "cpu" and bool(settings.get("flush_cache", True))
            repeat = int(settings["flush_repeat"] if flush else settings["repeat"])
            lat = kernel.time(args, dev, repeat, int(round(float(settings["min_repeat_ms"]))), flush_cache=flush)
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
