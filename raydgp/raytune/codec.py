"""What crosses the Ray boundary, encoded once and decoded once.

Trials receive a configuration as the space's trial parameters and report back, beside the metric, the configuration
TVM actually applied (``applied``) as a JSON *string* (Ray's loggers choke on nested lists). Task, space and
measurement settings travel as the frozen Python objects themselves (Ray's object store); the one JSON hop below that
is the worker pipe, in :mod:`raydgp.measure.protocol`.
"""

from __future__ import annotations

import json
from typing import Hashable, Mapping

from raydgp.errors import RayDGPError
from raydgp.space.base import SearchSpace


def encode_applied(space: SearchSpace, config: Hashable) -> str:
    """The ``applied`` field of a trial result."""
    return json.dumps(space.to_params(config))


def decode_applied(space: SearchSpace, result: Mapping | None) -> Hashable | None:
    """The configuration a trial says it evaluated, or None when the result has none (or an unreadable one)."""
    if not result or not result.get("applied"):
        return None
    applied = result["applied"]
    try:
        return space.from_params(json.loads(applied) if isinstance(applied, str) else applied)
    except (RayDGPError, ValueError, TypeError, KeyError):
        return None
