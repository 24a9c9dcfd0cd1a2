"""Whole-file writes that a kill cannot tear: a temporary file beside the target, fsync, rename, fsync the directory."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` with ``text``: readers see the old content or the new one, never a mix (POSIX rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(str(path.parent), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # some filesystems cannot fsync a directory; the rename itself is still atomic
        pass


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> None:
    """:func:`write_text_atomic` of ``obj`` as standard JSON (NaN/inf refused)."""
    write_text_atomic(path, json.dumps(obj, indent=indent, allow_nan=False))
