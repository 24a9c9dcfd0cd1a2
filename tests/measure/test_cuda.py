"""The cuda timing path, for real: skipped on machines without a CUDA GPU (``nvidia-smi`` finds none)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.slow]

CONV = "conv2d:1,64,56,56,64,3,1,1"  # a ResNet-18 conv


@pytest.fixture(scope="module")
def gpu_task():
    from raydgp.space.metaschedule import build_space, host_target
    from raydgp.space.workloads import make_task

    target = host_target("cuda")
    task = make_task(CONV, target)
    return task, build_space(task)


def test_a_conv_is_checked_and_timed_on_the_gpu(gpu_task, tmp_path):
    from raydgp.measure.local import LocalMeasurer
    from raydgp.measure.protocol import MeasureSettings, TaskPayload

    task, space = gpu_task
    payload = TaskPayload(task.workload.key, task.mod_json, task.target)
    settings = MeasureSettings(device="cuda", repeat=3, min_repeat_ms=5, timing_lock=str(tmp_path / "gpu.lock"))
    with LocalMeasurer(settings) as m:
        ok = []
        for cfg in space.sample_many(24, np.random.default_rng(0)):
            o = m.measure(payload, space.trace_json(cfg))
            assert o.result.status != "wrong_result"
            if o.result.ok:
                ok.append(o.result.median_ms)
    assert ok and all(v > 0 for v in ok), "no sampled GPU schedule built, checked and timed"


def test_a_conv_through_a_ray_trial_on_the_gpu(gpu_task, tmp_path):
    from raydgp.measure.protocol import MeasureSettings, TaskPayload
    from raydgp.raytune.cluster import init_ray
    from raydgp.raytune.experiment import tune_layer
    from raydgp.raytune.random_searcher import RandomSearcher
    from raydgp.records import RecordStore

    task, space = gpu_task
    ray = init_ray(num_gpus=1)
    try:
        res = tune_layer(TaskPayload(task.workload.key, task.mod_json, task.target), space,
                         RandomSearcher(space, seed=0), trials=8, store=RecordStore(tmp_path / "records"),
                         settings=MeasureSettings(device="cuda", repeat=3, min_repeat_ms=5),
                         storage_path=tmp_path / "ray", name="gpu conv", cpus_per_trial=1, gpus_per_trial=1,
                         show_progress=False)
    finally:
        ray.shutdown()
    assert len(res.records) == 8 and res.ok, [r.result.status for r in res.records]
