"""Shared fixtures: a small real conv task on this CPU, its MetaSchedule design space, a warm measurer, a local Ray."""

from __future__ import annotations

import fcntl
import os
import sys

import pytest

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _WORKER:
    # The suite runs in two pytest-xdist workers (pyproject's addopts). Without an address, ray.init() joins the
    # latest local cluster it finds under Ray's temp dir, so each worker (and the CLI runs it starts) gets its own: a
    # test's Ray never joins, or is shut down by, the other worker's.
    os.environ["RAY_TMPDIR"] = f"/tmp/raytest-{_WORKER}"
    os.makedirs(os.environ["RAY_TMPDIR"], exist_ok=True)

SMALL_CONV = "conv2d:1,16,14,14,16,3,1,1"


def _has_gpu() -> bool:
    try:
        import subprocess

        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def pytest_collection_modifyitems(config, items):
    # the slow end-to-end tests first: pytest-xdist hands tests out in this order, so the long ones do not end the run
    # on one worker while the other idles
    items.sort(key=lambda item: "slow" not in item.keywords)
    if _has_gpu():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (nvidia-smi found none)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="module")
def _alone_when_marked(request, tmp_path_factory):
    """Under pytest-xdist, a module with a test marked ``alone`` (``ray up`` / ``ray down`` run ``ray stop``, which
    stops every Ray process on the machine) holds a lock shared by the workers exclusively, every other module holds
    it shared, and no module leaves a Ray running in its worker: so the ``alone`` module runs while no other test (and
    no Ray of another test) runs."""
    if not _WORKER:
        yield
        return
    alone = any(item.module is request.module and item.get_closest_marker("alone") for item in request.session.items)
    path = tmp_path_factory.getbasetemp().parent / "alone.lock"  # the workers' common base directory
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        try:
            yield
        finally:
            ray = sys.modules.get("ray")  # a Ray this module started (in-process) ends with it
            if ray is not None and ray.is_initialized():
                ray.shutdown()
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def cpu_target():
    from raydgp.space.metaschedule import host_target

    return host_target("llvm", 2)


@pytest.fixture(scope="session")
def small_task(cpu_target):
    from raydgp.space.workloads import make_task

    return make_task(SMALL_CONV, cpu_target)


@pytest.fixture(scope="session")
def small_space(small_task):
    from raydgp.space.metaschedule import build_space

    return build_space(small_task)


@pytest.fixture(scope="session")
def small_payload(small_task):
    from raydgp.measure.protocol import TaskPayload

    return TaskPayload(small_task.workload.key, small_task.mod_json, small_task.target)


@pytest.fixture(scope="session")
def measurer(tmp_path_factory):
    from raydgp.measure.local import LocalMeasurer
    from raydgp.measure.protocol import MeasureSettings

    lock = str(tmp_path_factory.mktemp("lock") / "timing.lock")
    m = LocalMeasurer(MeasureSettings(num_threads=2, run_timeout_s=5, build_timeout_s=60, repeat=3, min_repeat_ms=5,
                                 timing_lock=lock))
    yield m
    m.close()


@pytest.fixture(scope="module")
def local_ray():
    from raydgp.raytune.cluster import init_ray

    ray = init_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Small GP linear algebra runs fastest on one thread, and leaves the other core to TVM's workers."""
    import torch

    torch.set_num_threads(1)
