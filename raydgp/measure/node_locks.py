"""Node-wide locks that keep a kernel's timing exclusive of every other computation raydgp runs on the node.

Three lock files per device, all ``fcntl.flock`` locks (released by the kernel if a holder dies):

* ``<lock>`` (the timing lock): one timing at a time.
* ``<lock>.builds``: held *shared* by every build (schedule application + compile) or other heavy computation on the
  node (a surrogate refit), *exclusive* by a timing. So a timing waits for the builds in flight to finish and no build
  runs while a kernel is timed.
* ``<lock>.gate``: taken briefly by a build before it joins ``.builds``, and held by a timing for its whole duration, so
  that a stream of overlapping builds cannot starve a waiting timing (``flock`` itself gives shared holders priority).

A timing takes ``lock -> gate -> builds``; a build takes ``gate`` (released at once) then ``builds``. No holder waits
for a lock while holding one a waiter of the other kind needs, so there is no deadlock; within a process the build lock
is one counted hold shared by its threads (a thread that holds it may wait for another that wants it).

With ``exclusive=False`` (a GPU timing: builds run on the host CPU and do not disturb it) only the timing lock is used.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from typing import Iterator


def _open(path: str) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)


class TimingLock:
    """The timing side: :meth:`acquire` blocks until the node is quiet; :meth:`release` lets builds go on."""

    def __init__(self, path: str, exclusive: bool = True):
        self.path = path
        self.exclusive = exclusive
        self._fds: list[int] = []

    def acquire(self) -> None:
        paths = [self.path] + ([self.path + ".gate", self.path + ".builds"] if self.exclusive else [])
        try:
            for p in paths:
                fd = _open(p)
                self._fds.append(fd)
                fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        for fd in reversed(self._fds):
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        self._fds = []

    def __enter__(self) -> "TimingLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class _ProcessHold:
    """This process's shared hold of one build lock, counted across its threads.

    ``flock`` locks belong to open file descriptions, so two threads of one process that each open the build lock are
    two holders to the kernel. That deadlocks when a thread that holds the build lock waits for another thread that
    wants it while a timing waits on the node: the timing holds the gate and waits for the holder, the second thread
    waits for the gate, the holder waits for the second thread (a searcher's ``suggest()`` joining its background refit
    did this). So a process takes the lock once, and a thread that arrives while the process holds it joins the hold:
    at once when no timing waits; when one does, it first waits for the process's hold to end (the timing goes first,
    as the gate intends) and joins anyway after ``grace_s`` (a holder may be waiting for it). The last one out releases.
    """

    grace_s = 2.0

    def __init__(self, path: str):
        self.path = path
        self.count = 0
        self.fds: tuple[int, int] | None = None
        self.cond = threading.Condition()
        self.forced_joins = 0  # joins past a waiting timing after grace_s (a holder was waiting for the joiner)
        self.yields = 0  # holds released at a pause point for a waiting timing (yield_to_timing)

    def _timing_waits(self) -> bool:
        gate = self.fds[0]
        try:
            fcntl.flock(gate, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(gate, fcntl.LOCK_UN)
        return False

    def enter(self) -> None:
        with self.cond:
            deadline = time.monotonic() + self.grace_s
            while self.count:
                if not self._timing_waits():
                    self.count += 1
                    return
                if time.monotonic() >= deadline:
                    self.count += 1
                    self.forced_joins += 1
                    return
                self.cond.wait(0.02)
            gate, builds = _open(self.path + ".gate"), _open(self.path + ".builds")
            try:
                fcntl.flock(gate, fcntl.LOCK_EX)
                try:
                    fcntl.flock(builds, fcntl.LOCK_SH)
                finally:
                    fcntl.flock(gate, fcntl.LOCK_UN)
            except BaseException:
                os.close(builds)
                os.close(gate)
                raise
            self.fds, self.count = (gate, builds), 1

    def yield_to_timing(self) -> bool:
        """Called by the only thread of this process inside the hold (a model fit between two steps): when a timing
        waits, release the hold, wait until the timing is done, and take it again. Returns whether it stepped aside.
        With other threads of the process inside the hold it cannot release it, and does nothing."""
        with self.cond:
            if self.count != 1 or self.fds is None or not self._timing_waits():
                return False
            self.count = 0
            self._release()
            self.yields += 1
        self.enter()  # behind the waiting timing (it holds the gate while it times)
        return True

    def exit(self) -> None:
        with self.cond:
            self.count -= 1
            if not self.count:
                self._release()

    def _release(self) -> None:
        """Give the node's build lock back (under ``cond``, with no thread of the process left inside the hold)."""
        gate, builds = self.fds
        self.fds = None
        try:
            fcntl.flock(builds, fcntl.LOCK_UN)
        finally:
            os.close(builds)
            os.close(gate)
            self.cond.notify_all()


_HOLDS: dict[str, _ProcessHold] = {}
_HOLDS_MUTEX = threading.Lock()


@contextlib.contextmanager
def building(path: str | None, exclusive: bool = True) -> Iterator[None]:
    """Hold the node's build lock (shared) around a build or other heavy computation; waits while a kernel is timed.

    Re-entrant within a process: a thread of a process that already holds the lock (another thread's build or model
    fit) joins that hold, at once when no timing waits and after at most ``_ProcessHold.grace_s`` when one does, so
    threads of one process that wait for each other cannot deadlock with a waiting timing (:class:`_ProcessHold`).

    Args:
        path: the timing lock's path (None: no locking, e.g. off-node).
        exclusive: False makes this a no-op (timings that builds do not disturb).
    """
    if not path or not exclusive:
        yield
        return
    with _HOLDS_MUTEX:
        hold = _HOLDS.setdefault(path, _ProcessHold(path))
    hold.enter()
    try:
        yield
    finally:
        hold.exit()


def yield_to_timing(path: str | None) -> bool:
    """At a pause point inside :func:`building`: step aside for a timing that waits (see
    :meth:`_ProcessHold.yield_to_timing`). Returns whether it did."""
    if not path:
        return False
    with _HOLDS_MUTEX:
        hold = _HOLDS.get(path)
    return bool(hold and hold.yield_to_timing())


class NodeComputeGuard:
    """A picklable ``guard()`` -> context manager for other heavy computation on the node (a searcher's model fits
    and scoring): it takes the build lock, so it pauses while a kernel is timed and a timing waits for it. Inside it the
    fits' pause points (:mod:`raydgp.pause`, between optimiser steps) let a timing that arrives go first, so a
    timing waits for one step of a fit, not the whole of it."""

    def __init__(self, path: str):
        self.path = path

    @contextlib.contextmanager
    def __call__(self):
        from raydgp.pause import pausing

        with building(self.path), pausing(lambda: yield_to_timing(self.path)):
            yield
