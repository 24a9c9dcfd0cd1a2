"""Before the build: re-time each layer's few best candidates on a quiet node and deploy by those timings.

During tuning, trials run beside one another, beside Ray Tune experiments starting and beside the searchers; the node
locks keep builds and model fits away from a timing, but not everything (a new trial process importing its libraries,
Ray's own bookkeeping). Measured on ResNet-18 (2 cores): the leader's best configuration of a sibling group, timed as a
follower's first trial, came out 1.5-2x slower than the same configuration timed on a quiet node, where it ran within
5% on every sibling. Selecting each layer's schedule by its single best timing from that phase also favours lucky
outliers.

So once the budget is spent, and nothing else runs, every layer that matters re-times its own ``own_k`` best
configurations and the ``group_k`` best of each sibling (valid points of its space), one after the other with the
toolchain's measurer; the results are appended to the record store (tag ``retime``), and the library is built from each
layer's best *re-timed* configuration. The layer bests reported and summed are then these quiet timings.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Callable

from raydgp.errors import InvalidConfigurationError
from raydgp.measure.base import Measurer
from raydgp.measure.protocol import MeasureSettings
from raydgp.records import RETIME_TAG, Record, RecordStore

log = logging.getLogger("raydgp.pipeline")


def candidates(layer, records: list[Record], siblings: list, own_k: int, group_k: int) -> list:
    """The configurations a layer re-times: its ``own_k`` fastest, then each sibling's ``group_k`` fastest that are
    valid points of its space (distinct, in that order)."""
    def fastest(key, k):
        rows = sorted((r for r in records if r.workload.key == key and r.result.ok and r.config.sketch >= 0
                       and r.tag != RETIME_TAG), key=lambda r: r.result.median_ms)
        out, seen = [], set()
        for r in rows:
            if r.config not in seen:
                seen.add(r.config)
                out.append(r.config)
            if len(out) >= k:
                break
        return out

    out: list = []
    for c in fastest(layer.key, own_k) + [c for s in siblings for c in fastest(s.key, group_k)]:
        if c not in out and layer.space.is_valid(c):
            out.append(c)
    return out


def retime_best(layers, store: RecordStore, make_measurer: Callable[[MeasureSettings], Measurer],
                settings: MeasureSettings, target: dict, min_share: float = 0.005, own_k: int = 3,
                group_k: int = 2, workers: int = 2, confirm_k: int = 2) -> dict[str, float]:
    """Re-time the best candidates of every layer that is at least ``min_share`` of the model's estimated latency.

    ``workers`` measurers at once (:class:`~raydgp.measure.parallel.MeasurerPool`: one builds while the other times,
    timings stay exclusive; a layer's candidates all go to one of them, in both rounds: its worker keeps the kernels it
    built (``MeasureSettings.keep_built``) and the second round times them again without building them again).

    Then a second round, the layers in reverse order (so that a layer's two timings lie far apart in time), times each
    layer's ``confirm_k`` fastest of the first round again; a candidate counts by the faster of its timings. On a
    shared host a slow phase lasts seconds and slows every timing in it alike (measured here: a layer's first-round
    candidates 2.4-4.0 ms, the same configurations 0.95-1.65 ms when timed again a minute later), so one round
    misjudges whichever layers it meets; interference only slows a kernel down, hence the minimum. 0: one round.

    Returns:
        ``{layer name: best re-timed ms}`` for the layers re-timed (NaN where every candidate failed).
    """
    from raydgp.measure.parallel import MeasurerPool
    from raydgp.space.design_space import config_as_applied

    records = store.records()
    best = {}
    for l in layers:
        oks = [r.result.median_ms for r in records if r.workload.key == l.key and r.result.ok]
        best[l.name] = min(oks) if oks else math.nan
    total = sum(l.weight * v for l in layers for v in [best[l.name]] if math.isfinite(v))
    todo = [l for l in layers if math.isfinite(best[l.name]) and l.weight * best[l.name] >= min_share * total]
    out: dict[str, float] = {}
    if not todo:
        return out
    t0 = time.monotonic()
    groups = []
    for l in todo:
        out[l.name] = math.nan
        sibs = [o for o in layers if l.group and o.group == l.group and o.key != l.key]
        groups.append((l, candidates(l, records, sibs, own_k, group_k)))

    def save(i: int, j: int, res) -> None:  # each result is in the store as soon as it is measured
        l, cfg = groups[i][0], groups[i][1][j]
        try:
            applied = config_as_applied(l.space, cfg, res.applied)
        except InvalidConfigurationError:  # TVM changed the schedule itself: counts for no point of the space
            applied, res = cfg, dataclasses.replace(res, result=dataclasses.replace(
                res.result, status="invalid", latencies_ms=(), message="TVM applied decisions outside the space"))
        store.append(Record.now(l.space.workload, target, applied, res.result, tag=RETIME_TAG))
        if res.result.ok and not res.result.median_ms >= out[l.name]:
            out[l.name] = res.result.median_ms

    timed: dict[tuple[int, int], float] = {}  # (group, candidate) -> first round's ms
    kept = [0]  # second-round measurements whose kernel was kept from the first (no build)

    def first(i: int, j: int, res) -> None:
        save(i, j, res)
        timed[(i, j)] = res.result.median_ms if res.result.ok else math.inf

    n = sum(len(c) for _, c in groups)
    n2 = 0
    # the workers keep each layer's built kernels for the second round (sent to the measurer that built them)
    keep = max([len(c) for _, c in groups] + [1]) if confirm_k > 0 else 0
    with MeasurerPool(make_measurer, dataclasses.replace(settings, keep_built=keep), workers) as pool:
        slot = pool.run([(l.task, [l.space.trace_json(c) for c in cands]) for l, cands in groups], first)
        used = pool.opened
        if confirm_k > 0:
            again = []  # (group index, candidate indices), layers in reverse order
            for i in reversed(range(len(groups))):
                ranked = sorted((ms, j) for (g, j), ms in timed.items() if g == i and math.isfinite(ms))
                again.append((i, [j for _, j in ranked[:confirm_k]]))
            again = [(i, js) for i, js in again if js]
            n2 = sum(len(js) for _, js in again)

            def second(k: int, m: int, res) -> None:
                i, js = again[k]
                kept[0] += res.result.build_s == 0.0 and res.result.status in ("ok", "wrong_result", "run_error")
                save(i, js[m], res)

            pool.run([(groups[i][0].task, [groups[i][0].space.trace_json(groups[i][1][j]) for j in js])
                      for i, js in again], second, affinity=[slot[i] for i, _ in again])
    log.info("re-timed %d candidates of %d layers on the quiet node in %.0f s (%d measurers; %d timed again, "
             "layers in reverse order, %d of them without building again)", n, len(todo), time.monotonic() - t0,
             used, n2, kept[0])
    return out


def retimed_keys(store: RecordStore) -> set:
    """Workload keys that have re-timed records (the build then uses only those)."""
    return {r.workload.key for r in store.records() if r.tag == RETIME_TAG and r.result.ok}
