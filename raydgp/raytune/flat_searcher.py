"""``FlatSearcher``: any Ray Tune searcher (Optuna TPE, HEBO, ...) over a TVM design space, as a Ray user would wire it.

A MetaSchedule design space is a choice of sketch plus, per sketch, one decision per knob, and the valid decisions of a
knob (e.g. the perfect tilings of a loop) are known in advance. The flat view gives the inner searcher one categorical
parameter ``sketch`` and one categorical parameter per knob of every sketch (``s{i}_k{j}``: the index of the decision);
the knobs of the sketches not chosen are ignored. The inner searcher proposes, the adapter turns the proposal into a
:class:`~raydgp.space.design_space.Config` and passes every result back as the inner searcher's own (failures as
errors), so the comparison with raydgp's searchers uses the same trials, measurer and records.
"""

from __future__ import annotations

import math
from typing import Any

from ray import tune
from ray.tune.search import Searcher

from raydgp.errors import ConfigError
from raydgp.raytune.codec import decode_applied
from raydgp.space.design_space import Config, DesignSpace


def flat_param_space(space: DesignSpace) -> dict:
    """The Ray Tune param space of the flat view (``sketch`` and ``s{i}_k{j}``, all categorical indices)."""
    flat: dict[str, Any] = {"sketch": tune.choice(list(range(len(space.sketches))))}
    for i, sk in enumerate(space.sketches):
        for j, k in enumerate(sk.knobs):
            flat[f"s{i}_k{j}"] = tune.choice(list(range(len(k.choices()))))
    return flat


def config_of(space: DesignSpace, flat: dict) -> Config:
    """The configuration a flat proposal stands for."""
    s = int(flat["sketch"])
    knobs = space.sketches[s].knobs
    return Config(s, tuple(k.choices()[int(flat[f"s{s}_k{j}"])] for j, k in enumerate(knobs)))


class FlatSearcher(Searcher):
    """Wraps a Ray Tune searcher built over :func:`flat_param_space` of a design space.

    Args:
        space: the design space.
        make_inner: ``make_inner(param_space, metric, mode)`` returns the inner searcher (e.g. ``OptunaSearch``).
        metric: the trials' metric (``latency_ms``); mode: ``min``.
        points_to_evaluate: trial parameters (``{"sketch", "decisions"}``) to propose first.
    """

    def __init__(self, space: DesignSpace, make_inner, metric: str = "latency_ms", mode: str = "min",
                 points_to_evaluate: list[dict] | None = None):
        super().__init__(metric=metric, mode=mode)
        self.space = space
        self.inner = make_inner(flat_param_space(space), metric, mode)
        self._points = [dict(p) for p in (points_to_evaluate or [])]
        self._live: dict[str, tuple[bool, Config]] = {}  # trial id -> (inner's own trial?, config)
        self._seen: set = set()
        self._counts = {"inner": 0, "seeded": 0, "repeats": 0}

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # the flat space and the metric were fixed at construction

    @property
    def stats(self) -> dict:
        """``inner`` (proposals of the wrapped searcher), ``seeded``, ``repeats`` (the inner searcher proposed a
        configuration already measured: measured again, as Ray would), ``fallback`` (always 0) and ``total``."""
        return {**self._counts, "fallback": 0, "total": self._counts["inner"] + self._counts["seeded"]}

    def suggest(self, trial_id: str) -> dict | str | None:
        if self._points:
            cfg = self.space.from_params(self._points.pop(0))
            self._live[trial_id] = (False, cfg)
            self._counts["seeded"] += 1
            return self.space.to_params(cfg)
        flat = self.inner.suggest(trial_id)
        if flat is None or flat == Searcher.FINISHED:
            return flat
        cfg = config_of(self.space, flat)
        if cfg in self._seen:
            self._counts["repeats"] += 1
        self._seen.add(cfg)
        self._live[trial_id] = (True, cfg)
        self._counts["inner"] += 1
        return self.space.to_params(cfg)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        own, _ = self._live.pop(trial_id, (False, None))
        if result is not None:
            applied = decode_applied(self.space, result)
            if applied is not None:
                self._seen.add(applied)
        if not own:
            return
        value = (result or {}).get(self.metric)
        try:
            ok = value is not None and math.isfinite(float(value))
        except (TypeError, ValueError):
            ok = False
        if error or not ok:
            self.inner.on_trial_complete(trial_id, None, error=True)  # a failed trial, as the inner searcher knows it
        else:
            self.inner.on_trial_complete(trial_id, {self.metric: float(value)})

    def save(self, checkpoint_path: str) -> None:  # pragma: no cover - the inner searcher's own format
        self.inner.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:  # pragma: no cover
        self.inner.restore(checkpoint_path)


def tpe(space: DesignSpace, seed: int, metric: str = "latency_ms", mode: str = "min",
        points_to_evaluate: list[dict] | None = None) -> FlatSearcher:
    """Optuna's TPE through Ray Tune's ``OptunaSearch`` over the flat view of ``space``.

    Raises:
        ConfigError: Optuna is not installed.
    """
    try:
        import optuna
        from ray.tune.search.optuna import OptunaSearch
    except ImportError:
        raise ConfigError("the tpe searcher needs Optuna: pip install optuna (or the project's [bench] extra)") \
            from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return FlatSearcher(space, lambda ps, m, md: OptunaSearch(
        ps, metric=m, mode=md, sampler=optuna.samplers.TPESampler(seed=seed)), metric, mode, points_to_evaluate)


def hebo_search_class():
    """Ray Tune's ``HEBOSearch``, with HEBO from the environment or, failing that, from ``<venv>/hebo``, where
    ``scripts/bootstrap.sh`` installs it apart (its only release pins numpy<1.25; the directory is appended to
    ``sys.path``, so nothing in it shadows the environment's own packages).

    Raises:
        ConfigError: HEBO is not importable.
    """
    import importlib
    import importlib.util
    import sys
    from pathlib import Path

    apart = Path(sys.prefix) / "hebo"
    if importlib.util.find_spec("hebo") is None and apart.is_dir() and str(apart) not in sys.path:
        sys.path.append(str(apart))
    try:
        import hebo  # noqa: F401 - Ray's module records a failed import once, at its own import
        import ray.tune.search.hebo as ray_hebo

        if getattr(ray_hebo, "hebo", None) is None:
            ray_hebo = importlib.reload(ray_hebo)
        ray_hebo.HEBOSearch({"x": tune.uniform(0, 1)}, metric="x", mode="min")  # fails fast if HEBO is broken
    except (ImportError, AssertionError) as e:
        raise ConfigError(f"the hebo searcher needs the HEBO package, which is not importable here "
                          f"({type(e).__name__}: {str(e)[:100]}); ./scripts/bootstrap.sh installs it in "
                          f"{apart}") from None
    return ray_hebo.HEBOSearch


def hebo(space: DesignSpace, seed: int, metric: str = "latency_ms", mode: str = "min",
         points_to_evaluate: list[dict] | None = None) -> FlatSearcher:
    """HEBO through Ray Tune's ``HEBOSearch`` over the flat view of ``space``.

    Raises:
        ConfigError: HEBO is not importable here.
    """
    HEBOSearch = hebo_search_class()
    return FlatSearcher(space, lambda ps, m, md: HEBOSearch(ps, metric=m, mode=md, random_state_seed=seed),
                        metric, mode, points_to_evaluate)
