"""Timing rounds in one fresh process: it starts and prepares once, then times a round each time it is asked.

The deployed library and the framework reference are timed in alternation (tuned, reference, tuned, ...), each in a
process of its own, so that a change of the machine's load falls on both sides of their ratio. Starting a fresh
process per round paid the start-up every time (Python, TVM or PyTorch and ONNX Runtime imported, the library loaded,
the model exported to ONNX again): about 4 s per round on each side, 25 s of ResNet-18's 61 s deploy step on a
2-core AMD Zen 3 node. Here each side starts once and waits, idle, on its standard input while the other times.

Protocol (one JSON object per line on standard output): the child prints ``{"ready": true, ...}`` once it is
prepared, then for every line ``go`` it reads, times a round and prints ``{"latencies_ms": [...], ...}``; any other
line, or the end of its input, ends it. Standard error goes to a file (read back for the error message), so that a
chatty child never blocks on a full pipe. This module imports neither TVM nor Ray.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Mapping, Sequence

from raydgp.errors import RayDGPError


class RoundsProcess:
    """The parent's side: a child process serving timing rounds (:func:`serve`).

    Args:
        cmd: the child's command line.
        env: its environment.
        timeout_s: how long its start (until ready) and each round may take.
        what: how errors name it (``"running /path/lib.so"``).

    Raises:
        RayDGPError: the child failed to start, exited or did not answer within ``timeout_s`` (it is then killed).
    """

    def __init__(self, cmd: Sequence[str], env: Mapping[str, str] | None = None, timeout_s: float = 600.0,
                 what: str = "the timing process"):
        self.what, self.timeout_s = what, float(timeout_s)
        self._failure: str | None = None  # why it stopped answering (every later round says the same)
        self._err = tempfile.TemporaryFile(mode="w+b")
        self._lines: queue.Queue = queue.Queue()
        try:
            self._p = subprocess.Popen(list(cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err,
                                       env=dict(env) if env is not None else None, text=True, bufsize=1)
        except OSError as e:
            self._err.close()
            raise RayDGPError(f"{what} failed to start: {e}") from None
        threading.Thread(target=self._read, daemon=True).start()
        self.ready: dict = self._next()
        if not self.ready.get("ready"):
            self._fail(f"failed: it answered {self.ready!r} instead of ready")

    def _read(self) -> None:
        for line in self._p.stdout:
            self._lines.put(line)
        self._lines.put(None)  # end of output: the child exited

    def _next(self) -> dict:
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self._fail(f"took longer than {self.timeout_s:.0f} s")
            if line is None:
                try:
                    self._p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
                self._fail(f"failed: {self._tail()}")
            try:
                msg = json.loads(line)
            except ValueError:  # a stray line on stdout (a library printing): not a message
                continue
            if isinstance(msg, dict):
                return msg

    def _fail(self, why: str):
        """Stop the child and raise (the first reason it stopped, on this and every later call)."""
        if self._failure is None:
            self._failure = why
        self.close(kill=True)
        raise RayDGPError(f"{self.what} {self._failure}")

    def _tail(self) -> str:
        code = self._p.poll()
        try:
            self._err.seek(0)
            lines = self._err.read().decode(errors="replace").strip().splitlines()
        except (OSError, ValueError):
            lines = []
        return lines[-1] if lines else f"exit status {code}"

    def round(self) -> dict:
        """Time one round; its message (``latencies_ms``, ...)."""
        if self._failure is not None:
            self._fail(self._failure)
        try:
            self._p.stdin.write("go\n")
            self._p.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            try:
                self._p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            self._fail(f"failed: {self._tail()}")
        return self._next()

    def close(self, kill: bool = False) -> None:
        """End the child (asked first, killed if it does not go within 10 s; ``kill``: at once)."""
        if kill and self._p.poll() is None:
            self._p.kill()
            self._p.wait()
        try:
            self._p.stdin.close()  # the end of its input: the child leaves its loop
        except (OSError, ValueError):
            pass
        if self._p.poll() is None:
            try:
                self._p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._p.kill()
                self._p.wait()
        try:
            self._err.close()
        except (OSError, ValueError):
            pass

    def __enter__(self) -> "RoundsProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def serve(time_round: Callable[[], dict], ready: dict | None = None, stdin=None, stdout=None) -> int:
    """The child's side: say ready, then time a round per ``go`` line until any other line or the end of input.

    Args:
        time_round: times one round and returns its message (``{"latencies_ms": [...]}``).
        ready: extra fields of the ready message.
    """
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stdout.write(json.dumps({"ready": True, **(ready or {})}) + "\n")
    stdout.flush()
    for line in stdin:
        if line.strip() != "go":
            break
        stdout.write(json.dumps(time_round()) + "\n")
        stdout.flush()
    return 0


class RoundsTimer:
    """Base of the timers that own a :class:`RoundsProcess` (``self._proc``): closed by :meth:`close` or as a context
    manager."""

    _proc: RoundsProcess

    def close(self) -> None:
        self._proc.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
