"""Shared fixtures: a small real conv task on this CPU, its MetaSchedule design space, a warm measurer, a local Ray."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

SMALL_CONV = "conv2d:1,16,14,14,16,3,1,1"


def _has_gpu() -> bool:
    try:
        import subprocess

        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def pytest_collection_modifyitems(config, items):
    if _has_gpu():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (nvidia-smi found none)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


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
