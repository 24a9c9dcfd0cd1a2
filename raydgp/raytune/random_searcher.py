"""``RandomSearcher``: the baseline Ray Tune searcher over a TVM design space (uniform, seeded, no repeats)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from ray.tune.search import Searcher

from raydgp.raytune.json_state import JsonStateMixin

from raydgp.records import Config
from raydgp.space.design_space import DesignSpace


class RandomSearcher(JsonStateMixin, Searcher):
    """Propose distinct configurations of a :class:`DesignSpace` uniformly at random.

    Args:
        space: the design space.
        metric: the reported metric (``latency_ms``).
        mode: ``min`` or ``max``.
        seed: seed of the searcher's own generator.

    Example:
        >>> from ray import tune
        >>> searcher = RandomSearcher(space, metric="latency_ms", mode="min", seed=0)
        >>> tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(search_alg=searcher, num_samples=32))
    """

    def __init__(self, space: DesignSpace, metric: str | None = "latency_ms", mode: str | None = "min", seed: int = 0,
                 points_to_evaluate: list[dict] | None = None):
        super().__init__(metric=metric, mode=mode)
        self.space = space
        self._points = [dict(p) for p in (points_to_evaluate or [])]
        self.seed = int(seed)
        self._rng = np.random.default_rng(self.seed)
        self._seen: set[Config] = set()

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        if metric and not self._metric:
            self._metric = metric
        if mode and not self._mode:
            self._mode = mode
        return True

    def suggest(self, trial_id: str) -> dict | str | None:
        while self._points:
            try:
                cfg = Config.from_json(self._points.pop(0))
            except (KeyError, TypeError, ValueError):
                continue
            if cfg not in self._seen and self.space.is_valid(cfg):
                self._seen.add(cfg)
                return cfg.to_json()
        if len(self._seen) >= self.space.size:
            return Searcher.FINISHED
        found = self.space.sample_many(1, self._rng, exclude=self._seen, max_tries=1000)
        if not found:
            return Searcher.FINISHED
        self._seen.add(found[0])
        return found[0].to_json()

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if result and result.get("applied"):
            try:
                self._seen.add(Config.from_json(json.loads(result["applied"])))
            except (KeyError, TypeError, ValueError):
                pass

    def add_evaluated_point(self, parameters: dict, value: float, error: bool = False, pruned: bool = False,
                            intermediate_values: list | None = None) -> None:
        """A configuration measured elsewhere (e.g. in an earlier run): never proposed again."""
        try:
            self._seen.add(Config.from_json(parameters))
        except (KeyError, TypeError, ValueError):
            pass

    # JSON, never pickle: a checkpoint file may come from anywhere.
    def get_state(self) -> dict[str, Any]:
        return {"seed": self.seed, "rng": self._rng.bit_generator.state,
                "seen": [c.to_json() for c in self._seen], "metric": self._metric, "mode": self._mode,
                "points": self._points}

    def set_state(self, state: dict[str, Any]) -> None:
        self.seed = int(state["seed"])
        self._rng = np.random.default_rng(self.seed)
        self._rng.bit_generator.state = state["rng"]
        self._seen = {Config.from_json(c) for c in state["seen"]}
        self._metric, self._mode = state["metric"], state["mode"]
        self._points = list(state.get("points", []))

