"""Ray Tune trainables over known functions, for tests and demos of the searchers."""

from __future__ import annotations

from raydgp.testing import synthetic_loss


def synthetic_trainable(config: dict) -> None:
    """Ray Tune function trainable reporting :func:`raydgp.testing.synthetic_loss` as ``loss``."""
    from ray import tune

    tune.report({"loss": synthetic_loss(config)})
