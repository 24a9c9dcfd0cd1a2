"""``RandomSearcher``: the baseline Ray Tune searcher over any :class:`~raydgp.space.base.SearchSpace` (uniform,
seeded, no repeats)."""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.tune.search import Searcher

from raydgp.errors import RayDGPError
from raydgp.raytune.codec import decode_applied
from raydgp.raytune.json_state import JsonStateMixin
from raydgp.space.base import SearchSpace


class RandomSearcher(JsonStateMixin, Searcher):
    """Propose distinct configurations of a space uniformly at random.

    Args:
        space: the space (a TVM ``DesignSpace``, or a ``ParamSpace``).
        metric: the reported metric (``latency_ms``).
        mode: ``min`` or ``max``.
        seed: seed of the searcher's own generator.
        points_to_evaluate: trial parameters to propose first (invalid ones are skipped).

    Example:
        >>> from ray import tune
        >>> searcher = RandomSearcher(space, metric="latency_ms", mode="min", seed=0)
        >>> tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(search_alg=searcher, num_samples=32))
    """

    def __init__(self, space: SearchSpace, metric: str | None = "latency_ms", mode: str | None = "min", seed: int = 0,
                 points_to_evaluate: list[dict] | None = None):
        super().__init__(metric=metric, mode=mode)
        self.space = space
        self._points = [dict(p) for p in (points_to_evaluate or [])]
        self.seed = int(seed)
        self._rng = np.random.default_rng(self.seed)
        self._seen: set = set()
        self._counts = {"random": 0, "seeded": 0}

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        if metric and not self._metric:
            self._metric = metric
        if mode and not self._mode:
            self._mode = mode
        return True

    @property
    def stats(self) -> dict:
        """Where the proposals came from (``random``, ``seeded``; ``fallback`` is always 0 here)."""
        return {**self._counts, "fallback": 0, "total": sum(self._counts.values())}

    def _config(self, params: dict):
        try:
            return self.space.from_params(params)
        except RayDGPError:
            return None

    def suggest(self, trial_id: str) -> dict | str | None:
        while self._points:
            cfg = self._config(self._points.pop(0))
            if cfg is not None and cfg not in self._seen and self.space.is_valid(cfg):
                self._seen.add(cfg)
                self._counts["seeded"] += 1
                return self.space.to_params(cfg)
        if len(self._seen) >= self.space.size:
            return Searcher.FINISHED
        found = self.space.sample_many(1, self._rng, exclude=self._seen, max_tries=1000)
        if not found:
            return Searcher.FINISHED
        self._seen.add(found[0])
        self._counts["random"] += 1
        return self.space.to_params(found[0])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        applied = decode_applied(self.space, result)
        if applied is not None:
            self._seen.add(applied)

    def add_evaluated_point(self, parameters: dict, value: float, error: bool = False, pruned: bool = False,
                            intermediate_values: list | None = None) -> None:
        """A configuration measured elsewhere (e.g. in an earlier run): never proposed again."""
        cfg = self._config(parameters)
        if cfg is not None:
            self._seen.add(cfg)

    def add_evaluated_record(self, parameters: dict, status: str, value: float | None) -> None:
        """Warm start from a record (any status): never proposed again."""
        self.add_evaluated_point(parameters, value if value is not None else float("nan"), error=status != "ok")

    # JSON, never pickle: a checkpoint file may come from anywhere.
    def get_state(self) -> dict[str, Any]:
        return {"seed": self.seed, "rng": self._rng.bit_generator.state,
                "seen": [self.space.config_to_json(c) for c in self._seen], "metric": self._metric,
                "mode": self._mode, "points": self._points, "counts": self._counts}

    def set_state(self, state: dict[str, Any]) -> None:
        self.seed = int(state["seed"])
        self._rng = np.random.default_rng(self.seed)
        self._rng.bit_generator.state = state["rng"]
        self._seen = {self.space.config_from_json(c) for c in state["seen"]}
        self._metric, self._mode = state["metric"], state["mode"]
        self._points = list(state.get("points", []))
        self._counts = dict(state.get("counts", {"random": 0, "seeded": 0}))
