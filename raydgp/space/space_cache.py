"""Design spaces kept on disk: a task's space is built once per machine, TVM version and module, not once per run.

Building a space (:func:`~raydgp.space.metaschedule.build_space`) asks MetaSchedule for its sketches and then replays
each sketch's trace for every loop position a compute-location knob might take: 50 trace applications per such knob,
about 25 s of the 42 s a ResNet-18 run spent loading its 23 layers on 2 cores (measured with ``cProfile``, 2026-12-05).
The result depends only on the task's module, its target and the code that builds it, so it is cached as JSON (never
pickled) under ``$RAYDGP_CACHE/spaces`` (default ``~/.cache/raydgp/spaces``), named by a hash of those. A file that
does not parse, or describes another workload, is ignored and rewritten.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path

from raydgp.atomic import write_json_atomic
from raydgp.space.design_space import DesignSpace
from raydgp.space.workloads import Task

log = logging.getLogger("raydgp.space")

#: Bumped whenever :func:`~raydgp.space.metaschedule.build_space` changes what it returns for the same module.
SPACE_RECIPE = "1-post-order-apply-location-probe(-2,48)"


def default_space_cache() -> Path:
    return Path(os.environ.get("RAYDGP_CACHE", Path.home() / ".cache" / "raydgp")) / "spaces"


def space_file(task: Task, cache_dir: str | os.PathLike) -> Path:
    """Where ``task``'s space is kept: a hash of its module text, target, TVM's version and :data:`SPACE_RECIPE`."""
    from raydgp.tvm_loader import import_tvm

    tag = json.dumps([task.mod_json, dict(task.target), import_tvm().__version__, SPACE_RECIPE], sort_keys=True,
                     default=str)
    return Path(cache_dir) / f"{hashlib.sha256(tag.encode()).hexdigest()[:24]}.json"


def cached_space(task: Task, cache_dir: str | os.PathLike | None = None) -> DesignSpace:
    """``task``'s design space, from the cache where it was built before (then with ``task``'s own workload
    description), else built and kept there.

    Args:
        task: the task.
        cache_dir: the cache directory (None: :func:`default_space_cache`).
    """
    from raydgp.space.metaschedule import build_space

    path = space_file(task, cache_dir if cache_dir is not None else default_space_cache())
    try:
        space = DesignSpace.from_json(json.loads(path.read_text()))
        if space.workload.key == task.workload.key and space.target == dict(task.target):
            return dataclasses.replace(space, workload=task.workload)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # not there, torn or foreign: build it
    space = build_space(task)
    try:
        write_json_atomic(path, space.to_json(), indent=None)
    except OSError as e:  # the space is still good; only the next run builds it again
        log.warning("could not keep the design space in %s (%s); the next run builds it again (set RAYDGP_CACHE to a "
                    "writable directory to keep it)", path.parent, e)
    return space
