"""From measurements to training data: targets, failed measurements, input normalisation.

This is the ONE place where failed measurements are handled:

* ``invalid`` (never built: not a point of the space as TVM sees it) is left out of the regression; searchers still
  remember it so they never propose it again.
* ``build_error``, ``run_error``, ``timeout`` and ``wrong_result`` are kept as *slow*: their target is the workload's
  worst ``ok`` target minus :data:`FAILURE_MARGIN` (in standardised units), so the model learns to avoid their region.
  A failure is never treated as fast.

The target is ``-log(latency_ms)``, standardised per workload (mean 0, std 1 over that workload's ``ok`` points), so
layers of very different cost share one scale and larger is better.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

FAILURE_MARGIN = 1.0
FAILED = ("build_error", "run_error", "timeout", "wrong_result")


def standardised_targets(workloads: Sequence[str], statuses: Sequence[str], latencies_ms: Sequence[float]
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Standardised ``-log(latency)`` per workload, with failures placed below the worst success.

    Args:
        workloads: workload key per measurement, length n.
        statuses: status per measurement.
        latencies_ms: median latency per measurement (ignored unless ``ok``).

    Returns:
        ``(y, keep)``: ``y`` of shape ``(n,)`` (NaN where not kept) and the boolean mask of measurements used for
        training (everything but ``invalid``, and workloads with no ``ok`` point at all).
    """
    n = len(statuses)
    y = np.full(n, np.nan)
    keep = np.zeros(n, dtype=bool)
    wl = np.asarray(workloads)
    st = np.asarray(statuses)
    lat = np.asarray(latencies_ms, dtype=np.float64)
    for w in np.unique(wl):
        idx = np.where(wl == w)[0]
        ok = idx[(st[idx] == "ok") & np.isfinite(lat[idx]) & (lat[idx] > 0)]
        if len(ok) == 0:
            continue
        raw = -np.log(lat[ok])
        mu = raw.mean()
        sd = raw.std() if len(ok) > 1 else 1.0
        sd = sd if sd > 1e-6 else 1.0
        y[ok] = (raw - mu) / sd
        keep[ok] = True
        worst = y[ok].min()
        bad = idx[np.isin(st[idx], FAILED)]
        y[bad] = worst - FAILURE_MARGIN
        keep[bad] = True
    return y, keep


@dataclass(frozen=True)
class InputScaler:
    """Affine input normalisation fixed on the source data, so pre-training and transfer see one input space.

    Columns constant in the fit data are dropped (``keep``): nothing can be learned about them from that data, and
    design-space encodings are mostly such padding (the shipped history: 114 of 149 columns are constant), so the
    model's kernels work on the informative columns only.
    """

    mean: np.ndarray
    std: np.ndarray
    keep: np.ndarray | None = None  # boolean mask of the columns passed to the model (None: all)

    @classmethod
    def fit(cls, X: np.ndarray) -> "InputScaler":
        X = np.asarray(X, dtype=np.float64)
        mean = X.mean(0) if len(X) else np.zeros(X.shape[1])
        std = X.std(0) if len(X) > 1 else np.ones(X.shape[1])
        keep = std > 1e-8
        if not keep.any():  # nothing varies: keep everything rather than nothing
            keep[:] = True
        std = np.where(std > 1e-8, std, 1.0)
        return cls(mean, std, keep)

    @property
    def out_dim(self) -> int:
        return int(self.keep.sum()) if self.keep is not None else len(self.mean)

    def transform(self, X: np.ndarray) -> torch.Tensor:
        """``n x d`` raw encodings to ``n x out_dim`` model inputs (float32)."""
        Z = (np.asarray(X, dtype=np.float64) - self.mean) / self.std
        if self.keep is not None:
            Z = Z[:, self.keep]
        return torch.as_tensor(Z, dtype=torch.float32)

    def to_json(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(),
                "keep": None if self.keep is None else self.keep.tolist()}

    @classmethod
    def from_json(cls, d: dict) -> "InputScaler":
        keep = d.get("keep")
        return cls(np.asarray(d["mean"], dtype=np.float64), np.asarray(d["std"], dtype=np.float64),
                   None if keep is None else np.asarray(keep, dtype=bool))
