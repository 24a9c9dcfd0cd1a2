"""The searchers raydgp's own jobs use, by name: one registry instead of a string switch in each job."""

from __future__ import annotations

from typing import Callable

from raydgp.errors import ConfigError
from raydgp.space.base import SearchSpace


def _random(space, seed, history, pretrain_seed, cache_dir, points_to_evaluate, compute_guard):
    from raydgp.raytune.random_searcher import RandomSearcher

    return RandomSearcher(space, metric="latency_ms", mode="min", seed=seed, points_to_evaluate=points_to_evaluate)


def _dgp(space, seed, history, pretrain_seed, cache_dir, points_to_evaluate, compute_guard, **options):
    from raydgp.dgp.train import default_cache_dir
    from raydgp.raytune.dgp_searcher import DGPSearcher
    from raydgp.search import SearchSettings

    return DGPSearcher(space, metric="latency_ms", mode="min", seed=seed, history=history,
                       points_to_evaluate=points_to_evaluate,
                       settings=SearchSettings(**{"async_refit": True, **options, "seed": seed,
                                                  "pretrain_seed": pretrain_seed}),
                       cache_dir=cache_dir or str(default_cache_dir()), compute_guard=compute_guard)


def _tpe(space, seed, history, pretrain_seed, cache_dir, points_to_evaluate, compute_guard):
    from raydgp.raytune.flat_searcher import tpe

    return tpe(space, seed, points_to_evaluate=points_to_evaluate)


def _hebo(space, seed, history, pretrain_seed, cache_dir, points_to_evaluate, compute_guard):
    from raydgp.raytune.flat_searcher import hebo

    return hebo(space, seed, points_to_evaluate=points_to_evaluate)


#: ``tpe`` and ``hebo`` are the peers a Ray user would reach for (Ray Tune's OptunaSearch / HEBOSearch over the flat
#: view of the design space, :mod:`raydgp.raytune.flat_searcher`); they ignore the history.
SEARCHERS: dict[str, Callable] = {"dgp": _dgp, "random": _random, "tpe": _tpe, "hebo": _hebo}


def make_searcher(name: str, space: SearchSpace, seed: int, history=None, pretrain_seed: int | None = None,
                  cache_dir: str | None = None, points_to_evaluate: list | None = None, settings=None,
                  search_options=()):
    """A Ray Tune searcher over ``space``: ``dgp`` (:class:`~raydgp.raytune.dgp_searcher.DGPSearcher`), ``random``
    (:class:`~raydgp.raytune.random_searcher.RandomSearcher`), ``tpe`` or ``hebo`` (flat view, for comparisons),
    metric ``latency_ms``, mode ``min``.

    ``settings`` (the trials' :class:`~raydgp.measure.protocol.MeasureSettings`): on a CPU node with
    ``pause_builds``, the searcher's model computation takes the node's build lock, so it never runs beside a timing
    (the searcher runs on the driver's node, where the trials of raydgp's own jobs also run).

    ``search_options``: ``(name, value)`` pairs of :class:`~raydgp.search.SearchSettings` for the ``dgp`` searcher
    (``--search-option``, parsed by :func:`~raydgp.search.settings.parse_search_options`).

    Raises:
        ConfigError: an unknown name, or search options for a searcher other than ``dgp``.
    """
    try:
        factory = SEARCHERS[name]
    except KeyError:
        raise ConfigError(f"unknown searcher {name!r}; choose one of {', '.join(SEARCHERS)}") from None
    options = dict(search_options or ())
    if options and name != "dgp":
        raise ConfigError(f"search options ({', '.join(options)}) set the dgp searcher's settings; the {name} "
                          "searcher takes none: drop --search-option or use --searcher dgp")
    guard = None
    if settings is not None and settings.device == "cpu" and settings.pause_builds:
        from raydgp.measure.node_locks import NodeComputeGuard

        guard = NodeComputeGuard(settings.lock_path)
    return factory(space, seed, history, pretrain_seed, cache_dir, points_to_evaluate, guard, **options)
