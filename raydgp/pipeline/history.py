"""History: the record stores a run learns from (the shipped dataset, the user store, ``--history``), stage-1 data
from them, and the best configurations of other layers that seed a layer's search."""

from __future__ import annotations

import logging
import math
import os
from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from raydgp.errors import ConfigError, RayDGPError
from raydgp.records import Record, RecordStore

log = logging.getLogger("raydgp.pipeline")


def user_store() -> Path:
    """The user-level record store every run also appends to (``$RAYDGP_HOME/records``, default ``~/.raydgp``)."""
    return Path(os.environ.get("RAYDGP_HOME", Path.home() / ".raydgp")) / "records"


def shipped_dataset() -> Path | None:
    """The recorded dataset shipped as package data (``raydgp/datasets/shipped``), or None if the install lacks it."""
    p = Path(str(resources.files("raydgp.datasets") / "shipped"))
    return p if (p / "records.jsonl.gz").exists() or (p / "records.jsonl").exists() else None


def check_history_paths(paths: Iterable[os.PathLike | str]) -> list[Path]:
    """Check record-store directories before any expensive work.

    Raises:
        ConfigError: a path is missing, is not a directory, or holds no ``records.jsonl`` (or ``.gz``).
    """
    out = []
    for p in paths or ():
        p = Path(p)
        if not p.is_dir():
            raise ConfigError(f"history {p}: no such directory; give a record store (a directory holding "
                              "records.jsonl, e.g. an earlier run's OUT/records)")
        if not any((p / f).exists() for f in ("records.jsonl", "records.jsonl.gz")):
            raise ConfigError(f"history {p}: not a record store (no records.jsonl in it); give an earlier run's "
                              "OUT/records directory")
        out.append(p)
    return out


def default_history_paths() -> list[Path]:
    """The shipped dataset and the user store, where they exist."""
    ds = shipped_dataset()
    us = user_store()
    return ([ds] if ds else []) + ([us] if (us / "records.jsonl").exists() else [])


#: The most history records stage 1 trains on (:func:`load_history`'s cut, a layer run's and a model run's).
HISTORY_POINTS = 4000


def load_history(paths, target_space, exclude_target: bool = True, max_points: int | None = None, seed: int = 0,
                 near: Sequence | None = None):
    """Stage-1 source data from record stores, each workload encoded with its own space.

    Args:
        paths: record-store directories (checked by :func:`check_history_paths`; an empty list gives None).
        target_space: the space being tuned: only workloads with encodings of its width are used.
        exclude_target: leave the target workload's own records out (True for a layer run: those enter as target data).
        max_points: cut to at most this many records, the workloads nearest the layers being tuned first
            (:func:`nearest_records`; seeded), bounding stage-1 cost.
        near: the spaces whose loop nests pick the cut (a model's layers; default ``[target_space]``).

    Returns:
        A :class:`~raydgp.search.History`, or None when the stores hold nothing usable.
    """
    from raydgp.search import history_from_records
    from raydgp.space.design_space import DesignSpace

    records, spaces = [], {}
    for p in check_history_paths(paths):
        store = RecordStore(p)
        records.extend(store.records())
        for key, entry in store.workload_entries().items():
            if entry.get("space") and key not in spaces:
                sp = DesignSpace.from_json(entry["space"])
                if sp.dim == target_space.dim:
                    spaces[key] = sp
    if not records:
        return None
    from raydgp.space.hardware import hardware_tag

    # A CPU history says nothing about GPU schedules (other sketches, thread bindings) and vice versa; inside one kind
    # the hardware features tell the machines apart. (Mixed in, the kind's features would be constant in the history
    # and dropped by the input scaling, so the model could not even tell.)
    kind = str(target_space.target.get("kind", "llvm"))
    other_kind = [r for r in records if str((r.target or {}).get("kind", "llvm")) != kind]
    if other_kind:
        records = [r for r in records if str((r.target or {}).get("kind", "llvm")) == kind]
        log.info("history: %d records measured on other target kinds than %s left out", len(other_kind), kind)
        if not records:
            log.info("history: none measured on %s: the search starts without history (cold)", kind)
            return None

    exclude = target_space.workload.key if exclude_target else None
    here = hardware_tag(target_space.target)
    usable = [r for r in records if r.workload.key in spaces
              and not (r.workload.key == exclude and hardware_tag(r.target or {}) == here)]
    kept = nearest_records(usable, list(near) if near else [target_space], max_points, seed)
    hist = history_from_records(kept, spaces)  # the target's own records are already out (usable)
    machines = sorted({hardware_tag(r.target or {}) for r in usable})
    log.info("history: %d measurements of %d workloads (%d on this hardware kind, %s), the nearest of %d; machines: "
             "%s", len(hist), len({r.workload.key for r in kept}), sum(hardware_tag(r.target or {}) == here
                                                                        for r in kept), here, len(usable),
             ", ".join(machines))
    return hist if len(hist) else None


#: :func:`subsample_history`: the largest share of the points the target's own kind of hardware gets.
OWN_HARDWARE_SHARE = 0.75


def subsample_history(hist, target: dict, max_points: int | None, seed: int = 0):
    """At most ``max_points`` points of ``hist``, the target's own kind of hardware first (up to
    :data:`OWN_HARDWARE_SHARE` of them; seeded): a user store that grows on a new machine takes over from the shipped
    history recorded elsewhere. What :func:`load_history` did before :func:`nearest_records` (2026-12-06), kept for
    the replay benchmark's ``--subsample own``.

    Args:
        hist: a :class:`~raydgp.search.History` whose rows end in the hardware features they were measured on.
        target: the target being tuned (its hardware features pick the own-hardware rows).
        max_points: the most points to keep (None: all).

    Returns:
        ``(history, same)``: the kept points (in their original order) and which of them are on the target's hardware.
    """
    from raydgp.search import History
    from raydgp.space.hardware import HARDWARE_FEATURES, hardware_features

    hw = np.array(hardware_features(target))
    same = np.all(np.isclose(hist.X[:, hist.X.shape[1] - len(HARDWARE_FEATURES):], hw), axis=1) if len(hist) else \
        np.zeros(0, bool)
    if max_points is None or len(hist) <= max_points:
        return hist, same
    rng = np.random.default_rng(seed)
    mine, other = np.flatnonzero(same), np.flatnonzero(~same)
    n_mine = min(len(mine), int(OWN_HARDWARE_SHARE * max_points))
    n_other = min(len(other), max_points - n_mine)
    n_mine = min(len(mine), max_points - n_other)
    idx = np.sort(np.concatenate([rng.choice(mine, n_mine, replace=False),
                                  rng.choice(other, n_other, replace=False)]).astype(int))
    return History(hist.X[idx], hist.y[idx]), same[idx]


#: :func:`nearest_records`: how much further away (in :func:`shape_distance`'s log2 loop-extent units) a workload
#: measured on other hardware counts, per step of :func:`_hardware_rank` (same vector width: 1 step, other: 2).
HARDWARE_DISTANCE = 1.0


def nearest_records(records: Sequence[Record], spaces: Sequence, max_points: int | None, seed: int = 0) -> list:
    """At most ``max_points`` of ``records``: this kind of hardware first, and within it (and then among the others)
    the workloads nearest to the layers being tuned first.

    Each ``(workload, hardware)`` task of the records is ranked first by whether it was measured on hardware with the
    features of the layer's target (:func:`~raydgp.space.hardware.hardware_features`: what the model itself can tell
    apart), then by its loop-nest distance (:func:`shape_distance`) to the nearest of ``spaces``, plus
    :data:`HARDWARE_DISTANCE` per hardware step away from that layer's target (:func:`_hardware_rank`); workloads of
    other ops (infinite distance) after those of the same op; ties in a seeded random order. Tasks are taken whole in
    that order, and the first one that does not fit whole gives a seeded random part of the room left. The same layer
    in another layout (NHWC vs NCHW) permutes the loop axes, so it is usually far and enters late.

    Measured (replay, leave-one-task-out, 2026-12-06; BENCHMARKS.md 7.2c): the cut before it
    (:func:`subsample_history`: this hardware kind first, up to 3/4, the rest a random draw of the others) filled a
    Zen 3 NCHW layer's history with Intel NHWC records as well, and the history-chosen tuning set needed a median of
    25.5 trials to come within 5% of the best; ordered by distance alone, 2.25, but the emeraldrapids NHWC layers then
    took the Zen 3 NCHW records after their own and needed 12 instead of 8.

    Args:
        records: the history's records (already without the target's own).
        spaces: the design spaces being tuned (their ``workload`` and ``target``): a layer run's one, a model's all.
        max_points: the most records to keep (None: all, in their order).
        seed: seeds the tie order and the part taken of the last task.

    Returns:
        The kept records, in their original order.
    """
    records = list(records)
    if max_points is None or len(records) <= max_points:
        return records
    from raydgp.space.hardware import hardware_features, hardware_tag, vector_bits

    wanted = [(shape_signature(sp.workload), hardware_tag(sp.target), vector_bits(sp.target),
               hardware_features(sp.target)) for sp in spaces]
    if not wanted:
        raise ValueError("nearest_records: no spaces to measure the distance to")
    groups: dict[tuple, list[int]] = {}
    info: dict[tuple, tuple] = {}
    for i, r in enumerate(records):
        g = (r.workload.key, hardware_tag(r.target or {}))
        if g not in groups:
            groups[g] = []
            info[g] = (shape_signature(r.workload), g[1], vector_bits(r.target or {}),
                       hardware_features(r.target or {}))
        groups[g].append(i)
    rng = np.random.default_rng(seed)
    tie = dict(zip(groups, rng.permutation(len(groups))))

    def rank(g) -> tuple:
        sig, tag, bits, feats = info[g]
        best = (2, 1, math.inf, math.inf)
        for shape, t_tag, t_bits, t_feats in wanted:
            hw = _hardware_rank(info[g], t_tag, t_bits)
            d = shape_distance(sig, shape)
            key = (int(feats != t_feats),) + ((0, d + HARDWARE_DISTANCE * hw, hw) if math.isfinite(d)
                                              else (1, float(hw), hw))
            best = min(best, key)
        return best + (tie[g],)

    keep: list[int] = []
    for g in sorted(groups, key=rank):
        room = max_points - len(keep)
        if room <= 0:
            break
        idx = groups[g]
        keep.extend(idx if len(idx) <= room else rng.choice(idx, room, replace=False).tolist())
    return [records[i] for i in sorted(keep)]


def top_configs(records: Iterable[Record], per_workload: int = 3) -> list[tuple[float, str, object]]:
    """The ``per_workload`` fastest ok configurations of every workload in ``records``, as
    ``(latency / that workload's best, workload key, config)``, best ratio first."""
    by: dict[str, list] = {}
    for r in records:
        if r.result.ok and r.config.sketch >= 0:
            by.setdefault(r.workload.key, []).append((r.result.median_ms, r.config))
    out = []
    for key, rows in by.items():
        rows.sort(key=lambda t: t[0])
        best = rows[0][0]
        seen = set()
        for ms, cfg in rows:
            if cfg in seen:
                continue
            seen.add(cfg)
            out.append((ms / best, key, cfg))
            if len(seen) >= per_workload:
                break
    return sorted(out, key=lambda t: t[0])


def shape_signature(workload) -> tuple:
    """A workload's loop-nest shape without its epilogue or hardware: op kind, dtype and the log2 loop extents (the
    same conv with a bias + ReLU or a residual add, or measured on another CPU, has the same signature)."""
    return (workload.op,) + tuple(sorted((k, round(float(v), 3)) for k, v in workload.features.items()
                                         if k.startswith(("log2_spatial", "log2_reduce", "dtype"))))


def history_shapes(paths) -> set:
    """The loop-nest shapes (:func:`shape_signature`) of every workload measured in the record stores ``paths``."""
    return {shape_signature(r.workload) for p in check_history_paths(paths) for r in RecordStore(p).records()}


def tuning_set_options(options, workload, info: dict) -> tuple:
    """``options`` (``(name, value)`` pairs of :class:`~raydgp.search.SearchSettings`) with ``init=random`` added when
    the history holds no workload of ``workload``'s loop-nest shape (on any hardware) and the options do not choose
    the tuning set.

    Args:
        options: the run's search options.
        workload: the layer being tuned.
        info: the history's workloads (:func:`donor_info`: ``{key: (shape signature, hardware tag, vector bits)}``).

    A model pre-trained on other shapes picks a tuning set it cannot rank, and the tuning set is where a misleading
    history costs most. Live on two convs no history holds (64 trials, four seeds, znver5, a history measured on other
    machines; re-timed medians, BENCHMARKS.md 7 (``znver5-2c``)): with the history's tuning set 0.694 and 3.14 ms, with
    a random one 0.724 and 2.58 ms, without history 0.654 and 2.47 ms, MetaSchedule 0.849 and 2.60 ms. With a random
    tuning set the history still enters through the trust mixture (:mod:`raydgp.search.trust`), weighted by how well
    it ranks the target's results. Tried and withdrawn (2026-12-06, BENCHMARKS.md 7.2c): letting the history pick
    when a near shape was measured on this hardware kind. Replayed leave-one-task-out on the NHWC part of the shipped
    history measured on emeraldrapids (11 ResNet-18 convs, 2 seeds) the history's pick came within 5% of the best in a
    median of 6 trials and a random one in 18; but live on the same machine, on two NHWC convs no history holds (4
    seeds each, re-timed together), the random tuning set won: 0.987 vs 1.16 ms (160 -> 320 channels) and 2.83 vs 4.30
    ms (5x5), beating the cold DGP in 8 of 8 layer-seeds where the history's pick did in 6.
    """
    options = tuple(options)
    if any(k == "init" for k, _ in options) or shape_signature(workload) in {i[0] for i in info.values()}:
        return options
    return tuple(sorted(options + (("init", "random"),)))


def donor_info(records: Iterable[Record]) -> dict:
    """``{workload key: (shape signature, hardware tag, vector bits)}`` of the records' workloads, for
    :func:`rank_donors`."""
    from raydgp.space.hardware import hardware_tag, vector_bits

    out: dict = {}
    for r in records:
        if r.workload.key not in out:
            out[r.workload.key] = (shape_signature(r.workload), hardware_tag(r.target), vector_bits(r.target))
    return out


def shape_distance(a: tuple, b: tuple) -> float:
    """How far apart two loop-nest shapes (:func:`shape_signature`) are: the sum of the absolute differences of their
    log2 loop extents (a conv with twice the input channels is 1 away); infinite between different ops."""
    if a[0] != b[0]:
        return math.inf
    da, db = dict(a[1:]), dict(b[1:])
    return float(sum(abs(float(da.get(k, 0.0)) - float(db.get(k, 0.0))) for k in set(da) | set(db)))


def _hardware_rank(info_entry, tag: str, bits: int) -> int:
    """0: measured on this hardware kind; 1: on hardware of the same vector width; 2: elsewhere."""
    return 0 if info_entry[1] == tag else 1 if info_entry[2] == bits else 2


def rank_donors(donors: Sequence, info: dict, space) -> list:
    """Donor configurations (``(ratio, key, config)`` of :func:`top_configs`) in the order a layer should try them:
    the same loop-nest shape measured on this hardware kind, then on hardware with the same vector width, then on
    other hardware, then the other workloads of the same op, nearest shape first (:func:`shape_distance`), then every
    other workload; the fastest relative to its own workload's best first within each.

    Without this, every workload's best has ratio 1.0 and the order among them is the order of the files, so a layer
    on an AVX-512 machine could start from an unrelated shape's best, or the AVX2 recording of its own shape, before
    the AVX-512 recording of its own shape.
    """
    from raydgp.space.hardware import hardware_tag, vector_bits

    shape, tag, bits = shape_signature(space.workload), hardware_tag(space.target), vector_bits(space.target)

    def likeness(d) -> tuple:
        i = info.get(d[1])
        if i is None:
            return (3, math.inf, 2)
        if i[0] == shape:
            return (0, 0.0, _hardware_rank(i, tag, bits))
        dist = shape_distance(i[0], shape)
        return (1 if math.isfinite(dist) else 2, dist, _hardware_rank(i, tag, bits))

    return sorted(donors, key=lambda d: (likeness(d), d[0]))


def near_donors(donors: Sequence, info: dict, space, max_distance: float = 4.0, max_ratio: float = 1.25) -> list:
    """The donors worth carrying over to ``space`` by :meth:`~raydgp.space.design_space.DesignSpace.adapt`: the
    fastest configurations (within ``max_ratio`` of their workload's best) of workloads of the same op whose loop-nest
    shape is at most ``max_distance`` away (:func:`shape_distance`), measured on hardware of this vector width;
    nearest shape first, then this hardware kind first, then the fastest.

    Measured (``depthwise_small.onnx``, emeraldrapids, 2 cores): the best configuration of its 64 -> 128 channel
    1x1 conv at 28x28 (0.05 ms), carried over, ran the 128 -> 128 one in 0.10-0.15 ms where that layer's own 24
    trials had found 0.22-0.29 ms, and the 32 -> 64 one at 56x56 in 0.08-0.12 ms against 0.18 ms after 28 trials.
    """
    from raydgp.space.hardware import hardware_tag, vector_bits

    shape, tag, bits = shape_signature(space.workload), hardware_tag(space.target), vector_bits(space.target)
    out = []
    for d in donors:
        i = info.get(d[1])
        if i is None or d[0] > max_ratio:
            continue
        hw = _hardware_rank(i, tag, bits)
        dist = shape_distance(i[0], shape)
        if hw < 2 and dist <= max_distance:
            out.append(((dist, hw, d[0]), d))
    return [d for _, d in sorted(out, key=lambda t: t[0])]


def seed_configs(space, own: set, donors: Sequence, k: int, near: Sequence = (), k_near: int = 0) -> list[dict]:
    """Up to ``k`` configurations to try first on a layer, as trial parameters, none measured here yet: the best ones
    of other layers (siblings with the same loop nest in this model, history workloads, the same layer in an earlier
    run: ``donors``, ranked by :func:`rank_donors`) that are valid points of this layer's space, with up to ``k_near``
    of the places kept for the ``near`` donors (:func:`near_donors`) carried over to this space
    (:meth:`~raydgp.space.design_space.DesignSpace.adapt`): a configuration of another shape is rarely a valid point
    as it is, and the nearest shapes' schedules are the ones worth carrying."""
    out, seen = [], set(own)

    def valid_donors(limit: int) -> None:
        for _, key, cfg in donors:
            if len(out) >= limit:
                break
            if cfg in seen or not space.is_valid(cfg):  # the same layer measured in an earlier run is a donor too
                continue
            seen.add(cfg)
            out.append(space.to_params(cfg))

    valid_donors(k - min(k_near, len(near)))
    n_near = 0
    for _, key, cfg in near:
        if len(out) >= k or n_near >= k_near:
            break
        a = space.adapt(cfg)
        if a is None or a in seen:
            continue
        seen.add(a)
        out.append(space.to_params(a))
        n_near += 1
    valid_donors(k)
    return out


def history_seeds(space, donors: Sequence, info: dict, k: int) -> list[dict]:
    """A layer run's first ``k`` trials (trial parameters): the history's best configurations of this loop-nest shape,
    then of the nearest other shapes of this op (:func:`near_donors`), carried over to ``space``."""
    return seed_configs(space, set(), [], k=k, near=near_donors(donors, info, space), k_near=k)


def history_donors(paths: Sequence) -> tuple[list, dict]:
    """The best configurations of every workload in the record stores ``paths`` (:func:`top_configs`) and what those
    workloads are (:func:`donor_info`), read once."""
    recs = [r for p in check_history_paths(paths) for r in RecordStore(p).records()]
    return top_configs(recs), donor_info(recs)


def append_to_user_store(store: RecordStore, keys: set) -> None:
    """Copy this run's records of ``keys`` (and their workloads) into the user store, skipping those already there.
    A failure is a warning: the run's own records are intact either way."""
    us_path = user_store()
    try:
        us = RecordStore(us_path)
        have = {(r.workload.key, r.config, r.time) for r in us.records()}
        entries = store.workload_entries()
        for k in keys:
            if k in entries:
                us.add_workload(k, entries[k]["mod"], entries[k].get("space"))
        new = [r for r in store.records() if r.workload.key in keys and (r.workload.key, r.config, r.time) not in have]
        if new:
            us.append(new)
    except (OSError, RayDGPError) as e:
        log.warning("could not update the user record store %s: %s", us_path, e)
