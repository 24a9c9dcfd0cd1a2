"""Stage-1 source data: other workloads' records encoded in the target space's layout."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from raydgp.dgp.data import standardised_targets


@dataclass(frozen=True)
class History:
    """Source data for stage 1: encoded configurations and standardised targets (larger is better)."""

    X: np.ndarray
    y: np.ndarray

    @classmethod
    def empty(cls, dim: int) -> "History":
        return cls(np.zeros((0, dim)), np.zeros(0))

    def __len__(self) -> int:
        return len(self.y)


def history_from_records(records: Sequence, spaces: dict[str, Any], exclude_workload: str | None = None,
                         exclude_hardware: str | None = None) -> History:
    """Encode TVM records of several workloads (the spaces by workload key), skipping ``exclude_workload``.

    Each record is encoded with the hardware it was measured on (its own target, not its space's), and a task is a
    ``(workload key, hardware)`` pair: targets are standardised per task, and ``exclude_workload`` leaves out only the
    records of that workload measured on ``exclude_hardware`` (a :func:`~raydgp.space.hardware.hardware_tag`; None:
    on any hardware). Failed and invalid measurements follow :mod:`raydgp.dgp.data`.
    """
    from raydgp.space.hardware import hardware_features, hardware_tag

    def excluded(r) -> bool:
        return r.workload.key == exclude_workload and (exclude_hardware is None
                                                       or hardware_tag(r.target) == exclude_hardware)

    rows = [r for r in records if r.workload.key in spaces and not excluded(r) and r.config.sketch >= 0]
    X, keep_rows = [], []
    for r in rows:
        sp = spaces[r.workload.key]
        if sp.is_valid(r.config):
            x = sp.encode(r.config)
            hw = hardware_features(r.target or sp.target)
            x[len(x) - len(hw):] = hw
            X.append(x)
            keep_rows.append(r)
    if not keep_rows:
        dim = next(iter(spaces.values())).dim if spaces else 0
        return History.empty(dim)
    tasks = [f"{r.workload.key}@{hardware_tag(r.target or spaces[r.workload.key].target)}" for r in keep_rows]
    y, keep = standardised_targets(tasks, [r.result.status for r in keep_rows],
                                   [r.result.median_ms for r in keep_rows])
    X = np.stack(X)
    return History(X[keep], y[keep])
