"""Settings and messages shared by the measuring parent and its worker process (no TVM, no Ray here)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from raydgp.errors import ConfigError


def default_timing_lock(device: str = "cpu", device_id: int = 0) -> str:
    """The node-wide lock that makes timings exclusive: one per CPU node, one per GPU."""
    name = "cpu" if device == "cpu" else f"{device}{device_id}"
    return os.path.join(tempfile.gettempdir(), f"raydgp-timing-{os.getuid()}-{name}.lock")


@dataclass(frozen=True)
class MeasureSettings:
    """How a configuration is built, checked and timed.

    Attributes:
        build_timeout_s: limit for applying the schedule and compiling, seconds.
        run_timeout_s: limit for the correctness run plus timing, seconds (counted once the timing lock is held).
        prepare_timeout_s: limit for compiling and running the untouched task once per worker to get the reference
            output, seconds.
        lock_timeout_s: how long to wait for the node's timing lock, seconds.
        repeat: timed repeats kept (each one a median-of-``number`` run of at least ``min_repeat_ms``).
        min_repeat_ms: minimum duration of one repeat, ms (TVM raises ``number`` until it is reached).
        warmup: untimed calls before timing.
        rtol: relative tolerance of the correctness check.
        atol: absolute tolerance, relative to the largest magnitude of the reference output.
        num_threads: TVM runtime threads in the worker (the cores the trial owns); None = TVM's default.
        device: ``cpu`` or ``cuda``.
        device_id: which GPU (within ``CUDA_VISIBLE_DEVICES``).
        timing_lock: path of the lock held while timing; None = one per node (cpu) or per GPU.
        flush_cache: on a CPU, time each run after flushing the kernel's weights and output from the caches (TVM's
            ``cache_flush_cpu_non_first_arg``), as they arrive inside a whole model; then ``flush_repeat`` single runs
            are timed instead of ``repeat`` runs of ``min_repeat_ms``. Warm-cache timings of large-weight layers
            (512-channel convs, dense) came out 1.3-4x faster than the same kernels inside the model.
        flush_repeat: single cold runs timed per measurement when ``flush_cache``.
        reference_dir: a directory where workers keep each task's reference output and read it from, so it is
            computed once per run instead of once per worker process (:mod:`raydgp.measure.references`); None: each
            worker computes its own. The model and layer jobs set it to ``<out>/references``.
        pause_builds: on a CPU node, builds (and surrogate refits that take the node's build lock) wait while a kernel
            is timed, so a timing shares its cores with nothing raydgp runs (:mod:`raydgp.measure.node_locks`).
        keep_built: built kernels a worker keeps per task (most recent first), so that measuring the same
            configuration again in that worker times the kernel it built instead of building it again (the quiet
            re-timing's second round); 0: none kept (tuning measures each configuration once).
    """

    build_timeout_s: float = 60.0
    run_timeout_s: float = 30.0
    prepare_timeout_s: float = 600.0
    lock_timeout_s: float = 1800.0
    repeat: int = 5
    min_repeat_ms: float = 20.0
    warmup: int = 1
    rtol: float = 1e-3
    atol: float = 1e-4
    num_threads: int | None = None
    device: str = "cpu"
    device_id: int = 0
    timing_lock: str | None = None
    pause_builds: bool = True
    flush_cache: bool = True
    flush_repeat: int = 15
    reference_dir: str | None = None
    keep_built: int = 0

    def __post_init__(self):
        for name in ("build_timeout_s", "run_timeout_s", "prepare_timeout_s", "lock_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"MeasureSettings.{name} must be > 0 seconds, got {getattr(self, name)}")
        if self.repeat < 1 or self.flush_repeat < 1:
            raise ConfigError(f"MeasureSettings.repeat and flush_repeat must be >= 1, got {self.repeat} and "
                              f"{self.flush_repeat}")
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"MeasureSettings.device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.keep_built < 0:
            raise ConfigError(f"MeasureSettings.keep_built must be >= 0, got {self.keep_built}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ConfigError(f"MeasureSettings.num_threads must be >= 1, got {self.num_threads}")

    @property
    def lock_path(self) -> str:
        return self.timing_lock or default_timing_lock(self.device, self.device_id)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping) -> "MeasureSettings":
        return cls(**dict(d))


@dataclass(frozen=True)
class TaskPayload:
    """What a worker needs to know about a task: its key, module (TVM JSON text) and target dict."""

    key: str
    mod_json: str
    target: Mapping[str, Any] = field(default_factory=dict)


def encode_message(obj: Mapping) -> bytes:
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()
