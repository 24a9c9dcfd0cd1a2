"""The parent side of measurement: a warm worker process, timeouts, and every failure turned into a result.

:class:`LocalMeasurer` keeps one worker process (:mod:`raydgp.measure.worker`) alive between requests, so ``import tvm`` and
per-task preparation are paid once. Each request is watched phase by phase (prepare, build, wait for the timing lock,
run); a phase that overruns its timeout or a worker that dies (segfault, abort, OOM kill) ends the request with a
``timeout``, ``build_error`` or ``run_error`` result, the worker is killed and a fresh one starts with the next request.
Nothing here raises for a bad candidate.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time

from raydgp.measure.base import Measurer, Outcome
from raydgp.measure.protocol import MeasureSettings, TaskPayload, encode_message
from raydgp.records import MeasureResult


class _Died(Exception):
    pass


class _TimedOut(Exception):
    pass


class LocalMeasurer(Measurer):
    """Builds, checks and times configurations in a warm, isolated worker process.

    Args:
        settings: timeouts, timing and correctness settings.

    Example:
        >>> m = LocalMeasurer(MeasureSettings(num_threads=2))
        >>> out = m.measure(TaskPayload(key, mod_json, target), space.trace_json(config))
        >>> out.result.status, out.result.median_ms
    """

    def __init__(self, settings: MeasureSettings | None = None):
        self.settings = settings or MeasureSettings()
        self._proc: subprocess.Popen | None = None
        self._buf = b""
        self._stderr_path: str | None = None
        self.restarts = 0

    # -- worker lifecycle ----------------------------------------------------------------------------------------------
    def _start(self) -> None:
        env = dict(os.environ)
        if self.settings.num_threads:
            env["TVM_NUM_THREADS"] = str(self.settings.num_threads)
        fd, self._stderr_path = tempfile.mkstemp(prefix="raydgp-worker-", suffix=".log")
        self._proc = subprocess.Popen([sys.executable, "-m", "raydgp.measure.worker"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=fd, env=env, start_new_session=True)
        os.close(fd)
        self._buf = b""
        self._wait_event({"ready"}, 300.0)

    def _kill(self, count_restart: bool = True) -> None:
        if self._proc is None:
            return
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for f in (self._proc.stdin, self._proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        self._proc = None
        self.restarts += int(count_restart)
        if self._stderr_path and os.path.exists(self._stderr_path):
            os.unlink(self._stderr_path)
        self._stderr_path = None

    def close(self) -> None:
        """Stop the worker (a later request starts a new one)."""
        if self._proc is not None and self._proc.poll() is None:
            try:
                self._proc.stdin.write(encode_message({"op": "exit"}))
                self._proc.stdin.flush()
                self._proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._kill(count_restart=False)

    def __del__(self):
        try:
            if self._proc is not None:
                self._kill()
        except Exception:  # noqa: BLE001
            pass

    # -- reading events ------------------------------------------------------------------------------------------------
    def _wait_event(self, names: set[str], timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        fd = self._proc.stdout.fileno()
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line, self._buf = self._buf[:nl], self._buf[nl + 1:]
                msg = json.loads(line)
                if msg.get("ev") in names or msg.get("ev") == "result":
                    return msg
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise _TimedOut()
            r, _, _ = select.select([fd], [], [], min(left, 1.0))
            if r:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise _Died()
                self._buf += chunk

    def _death_message(self) -> str:
        code = self._proc.wait(timeout=10) if self._proc else None
        if code is not None and code < 0:
            try:
                what = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                what = f"killed by signal {-code}"
        else:
            what = f"exited with code {code}"
        tail = ""
        if self._stderr_path and os.path.exists(self._stderr_path):
            with open(self._stderr_path, "rb") as f:
                f.seek(max(0, os.path.getsize(self._stderr_path) - 2000))
                lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
            tail = f": {lines[-1].strip()[:200]}" if lines else ""
        return f"worker process {what}{tail}"

    # -- the request ---------------------------------------------------------------------------------------------------
    def measure(self, task: TaskPayload, trace: list | None, candidate_mod_json: str | None = None) -> Outcome:
        """Build, check and time one configuration of a task.

        Args:
            task: the task (key, module JSON, target).
            trace: the configuration's trace ``[insts, decisions]``; None measures the task as is (untuned).
            candidate_mod_json: measure this module instead (same signature as the task; for tests and imported
                schedules). Its output is still checked against the task's reference.

        Returns:
            An :class:`Outcome`; its result's status is ``ok``, ``invalid``, ``build_error``, ``run_error``,
            ``timeout`` or ``wrong_result``. Latencies are in ms.
        """
        s = self.settings
        req = {"op": "measure", "key": task.key, "mod": task.mod_json, "target": dict(task.target), "trace": trace,
               "candidate_mod": candidate_mod_json, "settings": {**s.to_json(), "timing_lock": s.lock_path}}
        phase = "start"
        t_build = 0.0
        try:
            if self._proc is None or self._proc.poll() is not None:
                if self._proc is not None:
                    self._kill()
                self._start()
            phase = "prepare"
            self._proc.stdin.write(encode_message(req))
            self._proc.stdin.flush()
            msg = self._wait_event({"prepared"}, s.prepare_timeout_s)
            if msg["ev"] == "result":
                return self._outcome(msg)
            phase = "build"
            t0 = time.monotonic()
            msg = self._wait_event({"built"}, s.build_timeout_s)
            t_build = time.monotonic() - t0
            if msg["ev"] == "result":
                return self._outcome(msg)
            phase = "lock"
            msg = self._wait_event({"timing"}, s.lock_timeout_s)
            if msg["ev"] == "result":
                return self._outcome(msg)
            phase = "run"
            msg = self._wait_event({"result"}, s.run_timeout_s)
            return self._outcome(msg)
        except _TimedOut:
            self._kill()
            limit = {"prepare": s.prepare_timeout_s, "build": s.build_timeout_s, "lock": s.lock_timeout_s,
                     "run": s.run_timeout_s}.get(phase, 300.0)
            what = {"prepare": "computing the reference output", "build": "building",
                    "lock": "waiting for the timing lock", "run": "running"}.get(phase, "starting the worker")
            return Outcome(MeasureResult("timeout", message=f"{what} took longer than {limit:g} s; the worker was "
                                                            f"killed", build_s=t_build))
        except (_Died, BrokenPipeError, OSError, ValueError) as e:
            msg = self._death_message() if isinstance(e, (_Died, BrokenPipeError)) else f"worker I/O error: {e}"
            self._kill()
            status = "build_error" if phase in ("start", "build") else "run_error"
            where = {"prepare": " while computing the reference output", "build": " while building",
                     "lock": " while running", "run": " while running"}.get(phase, " while starting")
            return Outcome(MeasureResult(status, message=msg + where, build_s=t_build))

    @staticmethod
    def _outcome(msg: dict) -> Outcome:
        res = MeasureResult(status=msg["status"], latencies_ms=tuple(msg.get("latencies_ms", ())),
                            message=str(msg.get("message", ""))[:500], build_s=float(msg.get("build_s", 0.0)),
                            run_s=float(msg.get("run_s", 0.0)))
        return Outcome(res, msg.get("applied"))
