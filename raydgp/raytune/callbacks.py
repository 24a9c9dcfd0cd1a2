"""Ray Tune callbacks run by the driver: write every reported measurement to the record store, show one progress line.

Records are written on the driver from what trials report, so a cluster needs no shared filesystem, and a trial that
fails inside Ray still leaves a record (status ``run_error``): no completed measurement is lost.
"""

from __future__ import annotations

import math
import sys
import time

from ray.tune import Callback

from raydgp.raytune.codec import decode_applied
from raydgp.records import Config, MeasureResult, Record, RecordStore
from raydgp.space.design_space import DesignSpace


def record_from_result(space: DesignSpace, config: dict, result: dict, tag: str = "") -> Record:
    """The :class:`Record` of one reported trial result (see :func:`raydgp.raytune.trainable.measure_config`); a
    configuration that cannot be read back is recorded as sketch -1 (kept, never trained on)."""
    cfg = decode_applied(space, result) or decode_applied(space, {"applied": config}) or Config(-1, ())
    status = result.get("status", "run_error")
    lat = tuple(result.get("latencies_ms") or ()) if status == "ok" else ()
    res = MeasureResult(status=status, latencies_ms=lat, message=str(result.get("message", "")),
                        build_s=float(result.get("build_s", 0.0)), run_s=float(result.get("run_s", 0.0)))
    return Record.now(space.workload, space.target, cfg, res, tag=tag, host=result.get("host") or None)


class RecordWriter(Callback):
    """Append one record per finished trial to a :class:`RecordStore` (lock + fsync per record)."""

    def __init__(self, store: RecordStore, space: DesignSpace, tag: str = ""):
        self.store = store
        self.space = space
        self.tag = tag
        self.records: list[Record] = []
        self._done: set[str] = set()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if trial.trial_id in self._done or "status" not in result:
            return
        self._done.add(trial.trial_id)
        rec = record_from_result(self.space, trial.config, result, self.tag)
        self.store.append(rec)
        self.records.append(rec)

    def on_trial_error(self, iteration, trials, trial, **info):
        if trial.trial_id in self._done:
            return
        self._done.add(trial.trial_id)
        err = getattr(trial, "error_file", None) or "see the Ray trial logs"
        rec = record_from_result(self.space, trial.config, {"status": "run_error",
                                                            "message": f"trial failed inside Ray ({err})"}, self.tag)
        self.store.append(rec)
        self.records.append(rec)


class ProgressLine(Callback):
    """One line per layer: trials done, failures, best latency so far (rewritten in place on a terminal)."""

    def __init__(self, name: str, total: int, stream=None, baseline_ms: float | None = None):
        self.name = name
        self.total = total
        self.stream = stream or sys.stderr
        self.baseline_ms = baseline_ms
        self.done = 0
        self.failed = 0
        self.best = math.inf
        self.t0 = time.monotonic()
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last_print = 0

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.done += 1
        if result.get("status") == "ok":
            self.best = min(self.best, float(result.get("latency_ms", math.inf)))
        else:
            self.failed += 1
        self._show()

    def on_trial_error(self, iteration, trials, trial, **info):
        self.done += 1
        self.failed += 1
        self._show()

    def line(self) -> str:
        width = 20
        filled = int(width * min(self.done, self.total) / max(self.total, 1))
        bar = "#" * filled + "-" * (width - filled)
        best = f"{self.best:.3f} ms" if math.isfinite(self.best) else "-"
        speed = ""
        if self.baseline_ms and math.isfinite(self.best):
            speed = f" ({self.baseline_ms / self.best:.1f}x vs untuned)"
        return (f"[{self.name}] [{bar}] {self.done}/{self.total} trials, {self.failed} failed, best {best}{speed}, "
                f"{time.monotonic() - self.t0:.0f} s")

    def _show(self, final: bool = False):
        if self._tty:
            self.stream.write("\r" + self.line() + ("\n" if final else ""))
            self.stream.flush()
        elif final or self.done == self.total or self.done - self._last_print >= max(1, self.total // 8):
            self._last_print = self.done
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def on_experiment_end(self, trials, **info):
        if self._tty:
            self._show(final=True)
