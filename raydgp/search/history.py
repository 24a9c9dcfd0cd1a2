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


def history_from_records(records: Sequence, spaces: dict[str, Any], exclude_workload: str | None = None) -> History:
    """Encode TVM records of several workloads (the spaces by workload key), skipping ``exclude_workload``.

    Failed and invalid measurements follow :mod:`raydgp.dgp.data`.
    """
    rows = [r for r in records if r.workload.key in spaces and r.workload.key != exclude_workload
            and r.config.sketch >= 0]
    X, keep_rows = [], []
    for r in rows:
        sp = spaces[r.workload.key]
        if sp.is_valid(r.config):
            X.append(sp.encode(r.config))
            keep_rows.append(r)
    if not keep_rows:
        dim = next(iter(spaces.values())).dim if spaces else 0
        return History.empty(dim)
    y, keep = standardised_targets([r.workload.key for r in keep_rows], [r.result.status for r in keep_rows],
                                   [r.result.median_ms for r in keep_rows])
    X = np.stack(X)
    return History(X[keep], y[keep])
