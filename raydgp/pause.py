"""Cooperative pause points for long model fits (no Ray, no TVM, no locks here).

A fit that shares a node with kernel timings holds the node's compute guard for its whole length (seconds), so a timing
that arrives meanwhile waits for the whole fit. Whoever holds such a guard installs a callback with :func:`pausing`;
the training loops call :func:`pause_point` between optimiser steps, and the callback may step aside there (release the
guard until the timing is done, then take it back). Without a callback a pause point does nothing.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator

_local = threading.local()


def pause_point() -> None:
    """Let the installed callback (this thread's), if any, pause the computation here."""
    fn = getattr(_local, "fn", None)
    if fn is not None:
        fn()


@contextlib.contextmanager
def pausing(fn: Callable[[], object]) -> Iterator[None]:
    """Install ``fn`` as this thread's pause callback for the duration (nested installs restore the outer one)."""
    prev = getattr(_local, "fn", None)
    _local.fn = fn
    try:
        yield
    finally:
        _local.fn = prev
