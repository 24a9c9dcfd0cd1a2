"""The shipped tuning history (package data, ``shipped/``) and helpers to read it as a benchmark."""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence


def layer_spec(tag: str) -> str:
    """The layer a dataset record's tag (``dataset:<spec>``) measured, in the NCHW spelling.

    The same layer recorded in NHWC (``conv2d_nhwc:...``, ``depthwise_nhwc:...``: another loop nest of the same
    layer) is the same layer: a benchmark that holds a layer out must hold out both layouts.
    """
    spec = tag.split("dataset:", 1)[-1]
    return spec.replace("conv2d_nhwc:", "conv2d:", 1).replace("depthwise_nhwc:", "depthwise:", 1)


def layers_of(records: Iterable) -> dict[str, list[str]]:
    """Workload keys per dataset layer (:func:`layer_spec` of a record's ``dataset:<spec>`` tag), most ``ok`` records
    first.

    One layer has one key per layout and kernel signature (weights layout-free or not); one key can hold several
    machine kinds' recordings (each record carries its target: a task is a ``(key, hardware)`` pair). A benchmark
    that holds a layer out must leave out every key of its spec, and usually targets the task with the most records.
    """
    ok: Counter = Counter()
    keys: dict[str, set] = {}
    for r in records:
        if not r.tag.startswith("dataset:"):
            continue
        spec = layer_spec(r.tag)
        keys.setdefault(spec, set()).add(r.workload.key)
        ok[r.workload.key] += r.result.ok
    return {s: sorted(ks, key=lambda k: (-ok[k], k)) for s, ks in keys.items()}


def target_task(records: Iterable, keys: Sequence[str]) -> tuple[str | None, str | None, list]:
    """A held-out layer's target task among its ``keys`` (:func:`layers_of`): the ``(workload key, hardware)`` pair
    with the most ``ok`` records, as ``(key, hardware tag, those ok records)``; ``(None, None, [])`` if none.

    One key can hold several machine kinds' recordings of the same configurations (the shipped history's NHWC parts:
    emeraldrapids and znver3); a target read by key alone would take one machine's latencies for another's.
    """
    from raydgp.space.hardware import hardware_tag

    wanted = set(keys)
    by: dict[tuple[str, str], list] = {}
    for r in records:
        if r.workload.key in wanted and r.result.ok:
            by.setdefault((r.workload.key, hardware_tag(r.target or {})), []).append(r)
    if not by:
        return None, None, []
    (key, hw), recs = max(by.items(), key=lambda kv: (len(kv[1]), kv[0]))
    return key, hw, recs
