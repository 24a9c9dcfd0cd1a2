"""Each layer's untuned latency: measured once per output directory and cached in ``untuned.json``."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from raydgp.atomic import write_json_atomic
from raydgp.measure.base import Measurer
from raydgp.measure.parallel import measure_groups
from raydgp.measure.protocol import MeasureSettings

log = logging.getLogger("raydgp.pipeline")


def read_cache(path: Path) -> dict:
    """The cached ``{workload key: ms or None}``; an unreadable file (from a version that wrote it in place and was
    killed) counts as empty: its layers are measured again."""
    if not path.exists():
        return {}
    try:
        d = json.loads(path.read_text())
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
        return {str(k): (float(v) if v is not None else None) for k, v in d.items()}
    except (ValueError, TypeError, UnicodeDecodeError) as e:
        log.warning("%s is unreadable (%s); measuring the untuned layers again", path, e)
        return {}


def measure_untuned(layers, make_measurer: Callable[[MeasureSettings], Measurer], settings: MeasureSettings,
                    cache: Path, workers: int = 2) -> dict[str, float]:
    """Untuned latency (ms, NaN if it failed) of every layer, by name; each measurement is saved as it finishes.

    Args:
        layers: :class:`~raydgp.models.base.ModelLayer` objects.
        make_measurer: builds the measurer (the toolchain's).
        settings: measurement settings (cut to one timed repeat of at least 5 ms, or one cold run: a baseline, not a
            tuning result; an untuned conv takes 0.1-0.7 s per call, and the whole model's took 44 s to measure with
            three).
        cache: ``untuned.json``, written atomically after every layer.
        workers: measurers at once (:func:`~raydgp.measure.parallel.measure_groups`: one builds while another times).
    """
    known = read_cache(cache)
    todo = [l for l in layers if l.key not in known]
    if todo:
        quick = replace(settings, repeat=1, min_repeat_ms=5.0, warmup=0, flush_repeat=1)
        t0 = time.monotonic()

        def save(i: int, j: int, outcome) -> None:  # saved as each finishes: a kill loses none of them
            r = outcome.result
            known[todo[i].key] = r.median_ms if r.ok else None
            write_json_atomic(cache, known)

        used = measure_groups([(l.task, [None]) for l in todo], make_measurer, quick, save, workers=workers)
        log.info("untuned layers measured in %.0f s (%d measurers)", time.monotonic() - t0, used)
    return {l.name: (known[l.key] if known.get(l.key) is not None else math.nan) for l in layers}
