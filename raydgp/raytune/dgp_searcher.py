"""``DGPSearcher``: a Ray Tune searcher driven by a deep Gaussian process, with transfer learning from history.

A thin adapter over :class:`raydgp.search.DGPSearch`: it converts the search space, keeps track of running trials
(pending points), and turns Ray's callbacks into observations. It works through the
:class:`~raydgp.space.base.SearchSpace` interface only, so TVM design spaces and Ray param spaces are one code path.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

from ray.tune.search import Searcher
from ray.tune.search.sample import Categorical, Domain, Float, Integer, LogUniform, Quantized, Uniform
from ray.tune.search.variant_generator import parse_spec_vars

from raydgp.errors import RayDGPError, SearchSpaceError
from raydgp.raytune.codec import decode_applied
from raydgp.raytune.json_state import JsonStateMixin
from raydgp.search import DGPSearch, History, SearchSettings
from raydgp.space.base import SearchSpace
from raydgp.space.param_space import Dim, ParamSpace

log = logging.getLogger("raydgp.raytune")


def convert_search_space(spec: dict) -> ParamSpace:
    """A Ray Tune param space (``tune.choice``, ``randint``, ``qrandint``, ``uniform``, ``loguniform``, ``quniform``,
    nested dicts, constants) as a :class:`ParamSpace`.

    Raises:
        SearchSpaceError: ``grid_search``, a normal distribution, a ``sample_from`` or anything else without bounds.
    """
    resolved, domains, grids = parse_spec_vars(spec)
    if grids:
        raise SearchSpaceError(
            f"DGPSearcher cannot use grid_search ({'/'.join(map(str, grids[0][0]))}); use tune.choice for a "
            "categorical parameter, or run the grid without a searcher")
    dims = []
    for path, domain in domains:
        name = "/".join(map(str, path))
        sampler = domain.get_sampler() if isinstance(domain, Domain) else None
        q = None
        if isinstance(sampler, Quantized):
            q, sampler = sampler.q, sampler.sampler
        if isinstance(domain, Categorical):
            dims.append(Dim(tuple(path), "choice", values=tuple(domain.categories)))
        elif isinstance(domain, Integer):
            if q:
                vals = [v for v in range(int(domain.lower), int(domain.upper) + 1) if v % int(q) == 0]
                dims.append(Dim(tuple(path), "choice" if isinstance(sampler, LogUniform) else "int",
                                values=tuple(vals), low=vals[0], high=vals[-1] + int(q), q=int(q)))
            else:
                dims.append(Dim(tuple(path), "int", low=int(domain.lower), high=int(domain.upper), q=1,
                                log=isinstance(sampler, LogUniform)))
        elif isinstance(domain, Float) and isinstance(sampler, (Uniform, LogUniform)):
            if q:
                lo, hi = float(domain.lower), float(domain.upper)
                n = int(round((hi - lo) / q))
                dims.append(Dim(tuple(path), "choice", values=tuple(round(lo + i * q, 12) for i in range(n + 1))))
            else:
                dims.append(Dim(tuple(path), "float", low=float(domain.lower), high=float(domain.upper),
                                log=isinstance(sampler, LogUniform)))
        else:
            raise SearchSpaceError(f"DGPSearcher cannot search parameter {name!r} ({type(domain).__name__} with "
                                   f"{type(sampler).__name__} sampling); use tune.choice, randint, qrandint, "
                                   "uniform, quniform or loguniform")
    constants = {tuple(p): v for p, v in resolved}
    return ParamSpace(dims, constants)


class DGPSearcher(JsonStateMixin, Searcher):
    """Deep-GP Bayesian optimisation for Ray Tune, with transfer learning from earlier results.

    Works on TVM design spaces (raydgp's own tuning) and on ordinary Ray Tune param spaces alike.

    Args:
        space: a :class:`~raydgp.space.base.SearchSpace` (e.g. a TVM ``DesignSpace``), a Ray Tune param-space dict,
            or None to take the Tuner's ``param_space``.
        metric: the metric to optimise (or from ``TuneConfig``).
        mode: ``min`` or ``max`` (or from ``TuneConfig``).
        points_to_evaluate: configurations (dicts) to try first.
        history: stage-1 source data (:class:`raydgp.search.History`) for transfer, e.g. other layers' records.
        settings: :class:`raydgp.search.SearchSettings` (tuning-set size and mode, pool size, MAP prior strength).
        seed: seed of every random choice.
        compute_guard: held around model fits and scoring (see :class:`raydgp.search.DGPSearch`); raydgp's own jobs
            pass the node's :class:`~raydgp.measure.node_locks.NodeComputeGuard`, so the searcher never computes
            while a kernel is timed on its node.
        cache_dir: where pre-trained weights are cached.

    Example:
        >>> from ray import tune
        >>> from raydgp import DGPSearcher
        >>> def objective(config):
        ...     tune.report({"loss": (config["x"] - 0.3) ** 2 + 0.1 * config["layers"]})
        >>> tuner = tune.Tuner(
        ...     objective,
        ...     param_space={"x": tune.uniform(0, 1), "layers": tune.randint(1, 5)},
        ...     tune_config=tune.TuneConfig(search_alg=DGPSearcher(metric="loss", mode="min", seed=0),
        ...                                 num_samples=20),
        ... )
        >>> best = tuner.fit().get_best_result(metric="loss", mode="min").config
    """

    def __init__(self, space: SearchSpace | dict | None = None, metric: str | None = None, mode: str | None = None,
                 points_to_evaluate: Sequence[dict] | None = None, history: History | None = None,
                 settings: SearchSettings | None = None, seed: int = 0, cache_dir: str | None = None,
                 compute_guard=None):
        if mode is not None and mode not in ("min", "max"):
            raise SearchSpaceError(f"mode must be 'min' or 'max', got {mode!r}")
        super().__init__(metric=metric, mode=mode)
        self._settings = settings or SearchSettings(seed=seed, async_refit=True)
        if settings is not None and seed and settings.seed != seed:
            from dataclasses import replace

            self._settings = replace(settings, seed=seed)
        self._history = history
        self._cache_dir = cache_dir
        self._compute_guard = compute_guard
        self._points = [dict(p) for p in (points_to_evaluate or [])]
        self._live: dict[str, Any] = {}
        self._core: DGPSearch | None = None
        self._space: SearchSpace | None = None
        self._fallbacks = 0
        self._seeded = 0
        self._width = 1  # trials at once, as Tune's ConcurrencyLimiter tells (set_max_concurrency)
        self._queue = None  # the ProposalQueue once started (settings.queue)
        #: seconds each ``suggest()`` took in the driver (including "not ready" answers) and whether it proposed
        self.suggest_log: list[tuple[float, bool]] = []
        if space is not None:
            self._set_space(space)

    # -- space ---------------------------------------------------------------------------------------------------------
    def _set_space(self, space) -> None:
        if isinstance(space, dict):
            space = convert_search_space(space)
        if not isinstance(space, SearchSpace):
            raise SearchSpaceError(f"unsupported space type {type(space).__name__}: give a SearchSpace (e.g. a "
                                   "DesignSpace) or a Ray param-space dict")
        self._space = space
        self._core = DGPSearch(self._space, self._settings, history=self._history, cache_dir=self._cache_dir,
                               maximize=(self._mode == "max"), compute_guard=self._compute_guard)

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec) -> bool:
        if self._core is not None and config:
            return False  # Ray's rule: a searcher given its own space refuses a second one
        if metric and not self._metric:
            self._metric = metric
        if mode and not self._mode:
            self._mode = mode
        if self._core is None and config:
            self._set_space(config)
        elif self._core is not None:
            self._core.maximize = self._mode == "max"
        return True

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        """Learn the width (Tune's ``max_concurrent_trials`` reaches here through its ``ConcurrencyLimiter``).

        Returns False: the limiter keeps enforcing the limit, the searcher only sizes its proposal batches by it.
        """
        self._width = max(1, int(max_concurrent or 1))
        return False

    @property
    def queued(self) -> bool:
        """Whether proposals come from a background :class:`~raydgp.search.proposer.ProposalQueue`."""
        q = self._settings.queue
        return q == "on" or (q == "auto" and self._width > 1)

    @property
    def queue_refit_every(self) -> int:
        """Results between the background proposer's refits while its batch lasts (``queue_refit_every``; auto: 2
        where the model shares the node's cores with the trials, i.e. the searcher has a compute guard)."""
        k = self._settings.queue_refit_every
        return int(k) if k is not None else (2 if self._compute_guard is not None else 1)

    @property
    def queue_max_batch(self) -> int:
        """The most proposals one queue batch may hold when the model is slower than the trials
        (``queue_max_batch``; auto: 8 where the model shares the node's cores with the trials, i.e. the searcher has a
        compute guard (raydgp's own jobs), else 0: batches as wide as the search, so fast trials do not get
        proposals from a model up to 8 results old)."""
        k = self._settings.queue_max_batch
        return int(k) if k is not None else (8 if self._compute_guard is not None else 0)

    def _proposal_queue(self):
        if self._queue is None:
            from dataclasses import replace

            from raydgp.search.proposer import ProposalQueue

            s = self._settings
            # the proposer's thread is the asynchrony: inside it every batch refits on all results received
            self._core.settings = replace(self._core.settings, async_refit=False)
            staleness = s.queue_staleness if s.queue_staleness is not None else max(s.max_staleness,
                                                                                     self._width // 2)
            self._queue = ProposalQueue(self._core, batch_size=self._width, max_staleness=staleness,
                                        wait_s=0.05 if self._width > 1 else 30.0,
                                        serial=self._width == 1, running=list(self._live.values()),
                                        max_batch=self.queue_max_batch, refit_every=self.queue_refit_every)
        return self._queue

    def prefetch(self) -> bool:
        """Start stage 1 (the pre-training on the history) in the background now, so that it overlaps what a job
        does before its trials need the model (Ray's start, the untuned baseline, the first trials): see
        :meth:`~raydgp.search.loop.DGPSearch.prefetch_pretrained`. Returns whether it started (not without a space
        or history, nor with ``SearchSettings.prefetch`` off). One layer's job calls it; a model job, whose layers share
        one stage 1, does not."""
        return self._core is not None and self._settings.prefetch and self._core.prefetch_pretrained()

    def close(self) -> None:
        """Stop the background proposer, if any (results received are applied first)."""
        if self._queue is not None:
            self._queue.close()

    @property
    def stats(self) -> dict:
        """Where the proposals came from: ``model`` (DGP acquisition), ``tuning_set`` (the pre-trained model's
        picks), ``random`` (random tuning-set points by design), ``interleaved`` (random by ``random_interleave``),
        ``cold_start`` (random while the cold member outweighs the history: ``SearchSettings.cold_start``),
        ``sketch_min`` (the best-scored candidate of an under-sampled sketch: ``SearchSettings.sketch_min``),
        ``seeded`` (``points_to_evaluate``), ``fallback`` (random because the model raised: never silent, logged as
        a warning), ``refit_failures``, and ``total``."""
        st = dict(self._core.stats) if self._core else {"model": 0, "tuning_set": 0, "random": 0, "refit_failures": 0,
                                                         "evolved": 0}
        st.update(seeded=self._seeded, fallback=self._fallbacks)
        st["total"] = (st["model"] + st["tuning_set"] + st["random"] + st.get("interleaved", 0)
                       + st.get("cold_start", 0) + st.get("sketch_min", 0) + st["seeded"] + st["fallback"])
        if self._queue is not None:
            # proposals computed (model, tuning_set, random) differ from those handed out: total counts the latter
            st["queue"] = dict(self._queue.stats)
            bt = sorted(self._queue.timings["batch"])
            if bt:  # seconds per batch computation (refit + scoring), the proposer's cost
                st["queue"].update(batch_s_median=round(bt[len(bt) // 2], 3), batch_s_total=round(sum(bt), 1),
                                   refit_every=self._queue.refit_every)
            st["fallback"] += st["queue"]["fallback"]  # random proposals after a failed batch (logged)
            st["total"] = st["queue"]["handed"] + st["seeded"] + self._fallbacks
        return st

    # -- Searcher API --------------------------------------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict | str | None:
        import time

        t0 = time.perf_counter()
        out = self._suggest(trial_id)
        self.suggest_log.append((time.perf_counter() - t0, isinstance(out, dict)))
        return out

    def _suggest(self, trial_id: str) -> dict | str | None:
        if self._core is None:
            raise SearchSpaceError("DGPSearcher has no search space: pass space=... or a Tuner param_space")
        if not self._metric or not self._mode:
            raise SearchSpaceError("DGPSearcher needs metric and mode: pass them here or in tune.TuneConfig")
        if self._points:
            params = self._points.pop(0)
            self._live[trial_id] = self._space.from_params(params)
            self._seeded += 1
            return params
        if self.queued:
            q = self._proposal_queue()
            cfg = q.suggest()
            if cfg is None:
                # None: not ready, Tune asks again next step
                return Searcher.FINISHED if q.exhausted else None
            self._live[trial_id] = cfg
            return self._space.to_params(cfg)
        try:
            cfg = self._core.suggest(pending=list(self._live.values()))
        except Exception as e:  # noqa: BLE001 - a model failure must not end the search: fall back to random
            cfg = self._random_fallback(e)
        if cfg is None:
            return Searcher.FINISHED
        self._live[trial_id] = cfg
        return self._space.to_params(cfg)

    def _random_fallback(self, err: BaseException):
        """A random proposal after the model raised: counted in :attr:`stats` and logged, never silent."""
        self._fallbacks += 1
        if self._fallbacks == 1 or self._fallbacks % 10 == 0:
            log.warning("DGPSearcher: the model failed (%s: %s); proposing at random (%d so far)",
                        type(err).__name__, err, self._fallbacks)
        exclude = self._core.seen | set(self._live.values())
        got = self._space.sample_many(1, self._core.rng, exclude=exclude)
        return got[0] if got else None

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        cfg = self._live.pop(trial_id, None)
        if cfg is None or self._core is None:
            return
        observe = self._queue.observe if self._queue is not None else self._core.observe
        if error or not result:
            observe(cfg, None, "run_error")
            return
        status = str(result.get("status", "ok"))
        applied = decode_applied(self._space, result)
        if applied is not None and applied != cfg:
            observe(cfg, None, "invalid")  # TVM moved it: never propose it again
            cfg = applied
        value = result.get(self._metric)
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = math.nan
        observe(cfg, value, status)

    def add_evaluated_point(self, parameters: dict, value: float, error: bool = False, pruned: bool = False,
                            intermediate_values: list | None = None) -> None:
        """Warm start: a result obtained elsewhere (same space)."""
        if self._core is None:
            raise SearchSpaceError("DGPSearcher.add_evaluated_point needs the search space first (pass space=...)")
        observe = self._queue.observe if self._queue is not None else self._core.observe
        observe(self._space.from_params(parameters), None if error else value, "run_error" if error else "ok")

    def add_evaluated_record(self, parameters: dict, status: str, value: float | None) -> None:
        """Warm start from a record: like :meth:`add_evaluated_point`, keeping the record's status, so an earlier
        ``invalid`` configuration stays invalid (never proposed, never trained on as a slow one)."""
        if self._core is None:
            raise SearchSpaceError("DGPSearcher.add_evaluated_record needs the search space first (pass space=...)")
        try:
            cfg = self._space.from_params(parameters)
        except RayDGPError:
            return  # a record of no configuration of this space (sketch -1): nothing to learn
        observe = self._queue.observe if self._queue is not None else self._core.observe
        observe(cfg, value if status == "ok" else None, status)

    # -- state (JSON only) ---------------------------------------------------------------------------------------------
    def get_state(self) -> dict:
        if self._queue is not None:
            with self._queue.paused():  # every received result applied, the proposer idle while we read
                return self._get_state()
        return self._get_state()

    def _get_state(self) -> dict:
        core = self._core
        enc = self._space.config_to_json if self._space is not None else None
        return {
            "metric": self._metric, "mode": self._mode, "points": self._points,
            "observed": [[enc(c), s, (v if math.isfinite(v) else None)] for c, (s, v) in core.observed.items()]
            if core else [],
            "invalid": [enc(c) for c in core.invalid] if core else [],
            "live": {t: enc(c) for t, c in self._live.items()},
            "rng": core.rng.bit_generator.state if core else None,
            "seeded": self._seeded, "fallbacks": self._fallbacks, "width": self._width,
        }

    def set_state(self, state: dict) -> None:
        self._metric, self._mode = state["metric"], state["mode"]
        self._points = list(state["points"])
        if self._core is None:
            raise SearchSpaceError("restore a DGPSearcher constructed with its space")
        dec = self._space.config_from_json
        self._seeded, self._fallbacks = state.get("seeded", 0), state.get("fallbacks", 0)
        self._width = int(state.get("width", self._width))
        if self._queue is not None:  # a restore replaces the data: the proposer starts again from it
            self._queue.close()
            self._queue = None
        self._core.maximize = self._mode == "max"
        for c, s, v in state["observed"]:
            self._core.observe(dec(c), v, s)
        for c in state["invalid"]:
            self._core.invalid.add(dec(c))
        # Trials that were running at the checkpoint are rerun by Ray under the same ids.
        self._live = {t: dec(c) for t, c in state["live"].items()}
        if state.get("rng"):
            self._core.rng.bit_generator.state = state["rng"]

    def __getstate__(self):
        # Ray pickles the searcher into its experiment state: drop the fitted models, keep the data.
        d = self.__dict__.copy()
        d["_queue"] = None  # a thread; the restored searcher starts its own
        if d.get("_core") is not None:
            d["_core_state"] = self.get_state()
            d["_core"] = None
            d["_space_obj"] = self._space
        return d

    def __setstate__(self, d):
        state = d.pop("_core_state", None)
        space = d.pop("_space_obj", None)
        self.__dict__.update(d)
        if space is not None:
            self._set_space(space)
            if state:
                self.set_state(state)
