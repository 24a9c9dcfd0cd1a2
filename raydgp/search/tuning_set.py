"""Stage 2's tuning set: which configurations the target measures first, chosen by the pre-trained model."""

from __future__ import annotations

import torch

from raydgp.dgp.model import DeepGPSurrogate


def pick_tuning_point(model: DeepGPSurrogate, X: torch.Tensor, chosen: torch.Tensor | None, seed: int) -> int:
    """Index of the next tuning-set point among candidates ``X`` (``n x d``): predicted fast or fast-if-lucky
    (mean + 0.5 sd of the pre-trained model), and not closer to an already chosen point (``chosen``, ``m x d``) than
    a quarter of the candidates' typical spacing, so the tuning set stays diverse."""
    mean, var = model.predict(X, seed=seed)
    mu = mean.mean(0)
    sd = (var.mean(0) + mean.var(0)).sqrt()
    score = mu + 0.5 * sd
    if chosen is not None and len(chosen):
        d = torch.cdist(X, chosen).min(dim=1).values
        ref = torch.cdist(X[:256], X[:256])
        thresh = 0.25 * ref[ref > 0].median() if (ref > 0).any() else 0.0
        score = torch.where(d < thresh, torch.full_like(score, -1e9), score)
    return int(torch.argmax(score))
