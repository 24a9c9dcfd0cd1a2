"""Node-wide locks that keep a kernel's timing exclusive of every other computation raydgp runs on the node.

Three lock files per device, all ``fcntl.flock`` locks (released by the kernel if a holder dies):

* ``<lock>`` (the timing lock): one timing at a time.
* ``<lock>.builds``: held *shared* by every build (schedule application + compile) or other heavy computation on the
  node (a surrogate refit), *exclusive* by a timing. So a timing waits for the builds in flight to finish and no build
  runs while a kernel is timed.
* ``<lock>.gate``: taken briefly by a build before it joins ``.builds``, and held by a timing for its whole duration, so
  that a stream of overlapping builds cannot starve a waiting timing (``flock`` itself gives shared holders priority).

A timing takes ``lock -> gate -> builds``; a build takes ``gate`` (released at once) then ``builds``. No holder waits
for a lock while holding one a waiter of the other kind needs, so there is no deadlock.

With ``exclusive=False`` (a GPU timing: builds run on the host CPU and do not disturb it) only the timing lock is used.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
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


@contextlib.contextmanager
def building(path: str | None, exclusive: bool = True) -> Iterator[None]:
    """Hold the node's build lock (shared) around a build or other heavy computation; waits while a kernel is timed.

    Args:
        path: the timing lock's path (None: no locking, e.g. off-node).
        exclusive: False makes this a no-op (timings that builds do not disturb).
    """
    if not path or not exclusive:
        yield
        return
    gate, builds = _open(path + ".gate"), _open(path + ".builds")
    try:
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(builds, fcntl.LOCK_SH)
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)
        yield
    finally:
        fcntl.flock(builds, fcntl.LOCK_UN)
        os.close(builds)
        os.close(gate)


class NodeComputeGuard:
    """A picklable ``guard()`` -> context manager for other heavy computation on the node (a searcher's model fits
    and scoring): it takes the build lock, so it pauses while a kernel is timed and a timing waits for it."""

    def __init__(self, path: str):
        self.path = path

    def __call__(self):
        return building(self.path)
