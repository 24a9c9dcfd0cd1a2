"""One layer = one Ray Tune experiment: a ``Tuner`` over a task's design space, trials as Ray actors."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from raydgp.errors import ConfigError
from raydgp.measure.base import Measurer
from raydgp.measure.protocol import MeasureSettings, TaskPayload
from raydgp.records import Record, RecordStore
from raydgp.raytune.callbacks import ProgressLine, RecordWriter
from raydgp.raytune.trainable import METRIC, MODE, measure_trainable
from raydgp.space.design_space import DesignSpace


@dataclass
class LayerResult:
    """What one layer's experiment produced."""

    name: str
    records: list[Record] = field(default_factory=list)
    wall_s: float = 0.0
    results: object = None  # Ray Tune's ResultGrid

    @property
    def ok(self) -> list[Record]:
        return [r for r in self.records if r.result.ok]

    @property
    def best(self) -> Record | None:
        return min(self.ok, key=lambda r: r.result.median_ms, default=None)

    @property
    def best_ms(self) -> float:
        b = self.best
        return b.result.median_ms if b else math.inf


def experiment_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:100]


def _unique_trainable(name: str):
    """``measure_trainable`` under a name of its own: Ray Tune keys registered trainables and ``with_parameters``
    objects by the function's name and ``str()`` in a cluster-wide store, so two experiments running at once (one per
    layer) would otherwise read each other's task and space."""
    import uuid

    def trainable(config, task, space, settings, measurer):
        measure_trainable(config, task, space, settings, measurer)

    trainable.__name__ = trainable.__qualname__ = f"raydgp_{experiment_name(name)[:60]}_{uuid.uuid4().hex[:12]}"
    return trainable


def default_width(cpus_per_trial: float, gpus_per_trial: float) -> int:
    """Trials that fit on the connected Ray cluster at once (at least 1)."""
    import ray

    res = ray.cluster_resources() if ray.is_initialized() else {}
    if gpus_per_trial:
        return max(1, int(res.get("GPU", 0) // gpus_per_trial))
    return max(1, int(res.get("CPU", 1) // max(cpus_per_trial, 1e-9)))


def tune_layer(task: TaskPayload, space: DesignSpace, searcher, *, trials: int, store: RecordStore,
               settings: MeasureSettings, storage_path: str | os.PathLike, name: str,
               cpus_per_trial: float = 1, gpus_per_trial: int = 0, max_concurrent: int | None = None,
               baseline_ms: float | None = None, callbacks: list | None = None, show_progress: bool = True,
               tag: str = "", measurer: Measurer | None = None) -> LayerResult:
    """Run one layer's search as its own Ray Tune experiment.

    Args:
        task: the task.
        space: its design space.
        searcher: a Ray Tune ``Searcher`` (``RandomSearcher``, ``DGPSearcher``, ...).
        trials: number of configurations to measure.
        store: where every measurement is appended (by the driver, as results arrive).
        settings: measurement settings (timeouts, repeats, threads).
        storage_path: Ray Tune's ``storage_path`` (local dir, NFS or bucket URI) for experiment state.
        name: experiment (layer) name.
        cpus_per_trial, gpus_per_trial: Ray resources of one trial.
        max_concurrent: trials in flight at once (None: on a GPU run the cluster's GPUs / ``gpus_per_trial``, since
            Tune holds a custom searcher without a limit to one pending trial at a time and the GPUs would fill one
            trial start at a time; the searcher learns the width, and DGPSearcher proposes from its background queue,
            in batches of that width. On a CPU run None leaves Tune's default: the node's locks serialise timings
            anyway, and the searcher proposes inline).
        baseline_ms: untuned latency, shown in the progress line.
        callbacks: extra Ray Tune callbacks (e.g. MLflow).
        measurer: what trials measure with (None: the node's warm workers; see :mod:`raydgp.raytune.trainable`).

    Returns:
        The :class:`LayerResult` with the records written.
    """
    import time

    from ray import tune

    if trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}")
    t0 = time.monotonic()
    writer = RecordWriter(store, space, tag=tag or name)
    cbs = [writer] + ([ProgressLine(name, trials, baseline_ms=baseline_ms)] if show_progress else [])
    cbs += list(callbacks or [])
    if max_concurrent is None and gpus_per_trial:
        max_concurrent = default_width(cpus_per_trial, gpus_per_trial)
    resources = {"cpu": cpus_per_trial}
    if gpus_per_trial:
        resources["gpu"] = gpus_per_trial
    trainable = tune.with_resources(
        tune.with_parameters(_unique_trainable(name), task=task, space=space, settings=settings, measurer=measurer),
        resources)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=trials, metric=METRIC, mode=MODE,
                                    reuse_actors=True, max_concurrent_trials=max_concurrent,
                                    trial_dirname_creator=lambda t: t.trial_id,
                                    trial_name_creator=lambda t: t.trial_id),
        run_config=tune.RunConfig(name=experiment_name(name), storage_path=str(Path(storage_path).resolve())
                                  if "://" not in str(storage_path) else str(storage_path),
                                  verbose=0, callbacks=cbs, log_to_file=False),
    )
    grid = tuner.fit()
    return LayerResult(name=name, records=writer.records, wall_s=time.monotonic() - t0, results=grid)
