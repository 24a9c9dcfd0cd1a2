"""Reference outputs kept on disk, so that a task's reference is computed once per run, not once per worker process.

Every measurement checks the kernel's output against the task's reference: the untouched task compiled as is and run
once on the worker's random inputs (seeded, the same in every worker). A worker computes it the first time it sees a
task; a whole-model run starts workers for the untuned baselines, the measurement service (two per node) and the
re-timing, so each layer's plain build and its run (0.1-0.7 s for an untuned conv) were paid up to four times. With
``MeasureSettings.reference_dir`` set, the first worker that has a task's reference (the untuned measurement's own
output, or a plain run) writes it there and the others read it.

Files are plain ``.npy`` arrays (read with ``allow_pickle=False``: never unpickled), named by a hash of the task key,
the target, TVM's version and the input recipe; a file of the wrong shape or type, or one that cannot be read, is
ignored (and rewritten). Written atomically: a reader never sees half a file. This module imports neither TVM nor Ray.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

#: How the workers draw a task's inputs (:meth:`raydgp.measure.worker.Worker.prepare`); part of every file's name, so
#: that a change of the recipe never meets an old reference.
INPUT_RECIPE = "default_rng(0); floats uniform(-1, 1), ints integers(0, 8), others zeros; in argument order"


def reference_path(directory: str | os.PathLike, key: str, target: Mapping[str, Any], tvm_version: str) -> Path:
    """Where the reference output of task ``key`` on ``target`` is kept in ``directory``."""
    tag = json.dumps([key, dict(target), tvm_version, INPUT_RECIPE], sort_keys=True, default=str)
    return Path(directory) / f"{hashlib.sha256(tag.encode()).hexdigest()[:24]}.npy"


def load_reference(path: Path, shape, dtype: str) -> np.ndarray | None:
    """The array at ``path`` if it is a readable ``.npy`` of ``shape`` and ``dtype``, else None (no file, a torn or
    foreign one)."""
    try:
        with open(path, "rb") as f:
            arr = np.load(f, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if not isinstance(arr, np.ndarray) or list(arr.shape) != [int(s) for s in shape] or str(arr.dtype) != str(dtype):
        return None
    return arr


def save_reference(path: Path, arr: np.ndarray) -> None:
    """Write ``arr`` to ``path`` atomically (a temporary file in the same directory, then a rename). Best effort: a
    directory that cannot be written only means the next worker computes the reference itself."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".ref-", suffix=".npy")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        pass
