"""The three-stage DGP search over one space (no Ray here; :mod:`raydgp.raytune.dgp_searcher` adapts it).

1. **Pre-train** the deep GP on history (other workloads' records, or earlier points of the same space), once, cached.
2. **Transfer**: the target's first ``n_init`` measurements are the *tuning set*, chosen by the pre-trained DGP
   (configurations it predicts fast or is unsure about, kept apart from each other) or at random; then the DGP is
   fine-tuned on the target's data by MAP estimation (ELBO + Gaussian prior around the pre-trained weights).
3. **Search**: each proposal scores a candidate pool (fresh samples + neighbours of the best configurations so far) with
   BoTorch's LogEI under the DGP and proposes the best configuration that is neither measured nor pending; with pending
   points, the top candidates are rescored jointly with them (qLogEI).

A *space* is anything with ``sample_many(n, rng, exclude)``, ``neighbours(config)``, ``encode_many(configs)`` and
``size``: a TVM :class:`~raydgp.space.design_space.DesignSpace` or a :class:`~raydgp.space.param_space.ParamSpace`.
Configurations are hashable.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Hashable, Sequence

import numpy as np
import torch

from raydgp.dgp.botorch_model import DGPModel, log_ei_pool, q_log_ei_with_pending
from raydgp.dgp.data import InputScaler, standardised_targets
from raydgp.dgp.model import DeepGPSurrogate, DGPSettings
from raydgp.dgp.train import fit_dgp, map_finetune, pretrain, train_elbo
from raydgp.errors import ConfigError

INIT_MODES = ("dgp", "random")


class _torch_threads:
    """Temporarily set torch's intra-op threads (restored on exit)."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        self.old = torch.get_num_threads()
        if self.n and self.n != self.old:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        if torch.get_num_threads() != self.old:
            torch.set_num_threads(self.old)


@dataclass(frozen=True)
class SearchSettings:
    """Settings of the three-stage search.

    Attributes:
        n_init: size of the tuning set (stage 2's first measurements).
        init: how the tuning set is chosen: ``dgp`` (by the pre-trained model) or ``random``.
        pool_size: random candidates scored per proposal.
        pool_refresh: fraction of the pool replaced by fresh random samples at each proposal (the oldest go first;
            measured and pending configurations leave at once). The pool is kept encoded between proposals, so a
            proposal samples and encodes only ``pool_refresh * pool_size`` new configurations; 1.0 draws a whole new
            pool every time.
        neighbour_seeds: how many of the best configurations contribute their neighbours to the pool.
        prior_strength: precision of the MAP prior around the pre-trained weights (0: plain fine-tuning).
        finetune_scope: ``variational`` (the head plus the output GP's q(u), with some inducing points moved onto
            the target: measured best, BENCHMARKS.md section 2), ``head`` (output mean, output scale, noise),
            ``output`` (the whole output GP layer + likelihood) or ``all`` parameters are fine-tuned.
        refit_steps: Adam steps of a warm-started refit when new results arrived.
        cold_steps: Adam steps of a from-scratch fit without history.
        dgp: the deep GP's own settings.
        seed: seed of everything random in the search.
        pretrain_seed: seed of stage 1 (None: ``seed``). Searchers that share a history and this seed share one cached
            pre-trained model (e.g. every layer chunk of a whole-model run).
        torch_threads: torch threads while fitting and scoring (small GP algebra is fastest on one thread, and on a
            tuning node the other cores are building and timing kernels).
        async_refit: refit on new results in a background thread and keep proposing with the latest finished model
            (a result or two behind), so ``suggest()`` stays fast; proposals then depend on timing. Off: every
            ``suggest()`` first refits on all results (deterministic for a seed). The first fit of a search is
            always synchronous. Pins torch's intra-op threads to ``torch_threads`` for the process.
    """

    n_init: int = 8
    init: str = "dgp"
    pool_size: int = 2000
    pool_refresh: float = 0.0625
    neighbour_seeds: int = 5
    prior_strength: float = 10.0
    finetune_scope: str = "variational"
    refit_steps: int = 30
    cold_steps: int = 50
    dgp: DGPSettings = field(default_factory=DGPSettings)
    seed: int = 0
    torch_threads: int = 1
    pretrain_seed: int | None = None
    async_refit: bool = False

    def __post_init__(self):
        if self.init not in INIT_MODES:
            raise ConfigError(f"init={self.init!r}: choose one of {INIT_MODES}")
        if self.n_init < 1 or self.pool_size < 1:
            raise ConfigError("n_init and pool_size must be >= 1")
        if not 0 < self.pool_refresh <= 1:
            raise ConfigError(f"pool_refresh={self.pool_refresh}: must be in (0, 1]")
        if self.prior_strength < 0:
            raise ConfigError("prior_strength must be >= 0")


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


class DGPSearch:
    """Propose configurations of one target space, learning from history and from the target's own results.

    Args:
        space: the target space.
        settings: search settings.
        history: stage-1 source data (encoded with the same layout as ``space.encode_many``), or None.
        cache_dir: where pre-trained weights are cached (None: no cache).
        maximize: True if larger metric values are better (latency: False).
    """

    def __init__(self, space, settings: SearchSettings = SearchSettings(), history: History | None = None,
                 cache_dir: str | None = None, maximize: bool = False):
        self.space = space
        self.settings = settings
        self.history = history if history is not None and len(history) else None
        self.cache_dir = cache_dir
        self.maximize = maximize
        self.rng = np.random.default_rng(settings.seed)
        self.observed: dict[Hashable, tuple[str, float]] = {}  # config -> (status, metric)
        self.invalid: set[Hashable] = set()
        self._pretrained: DeepGPSurrogate | None = None
        self._model: DeepGPSurrogate | None = None
        self._fitted_on = -1
        self._scaler: InputScaler | None = None
        self._calls = 0
        self._refit_thread: threading.Thread | None = None
        self._center: dict[str, torch.Tensor] | None = None  # the MAP prior's centre (pre-trained parameters)
        self._pool_configs: list = []  # the rolling candidate pool, oldest first
        self._pool_X: torch.Tensor | None = None  # its normalised encodings
        self._enc: dict[Hashable, np.ndarray] = {}  # encodings of measured / pending / neighbour configurations
        self._nbr_cache: dict[Hashable, list] = {}
        self.timings: dict[str, list[float]] = {"suggest": [], "fit": []}

    # -- data ----------------------------------------------------------------------------------------------------------
    def observe(self, config: Hashable, metric: float | None, status: str = "ok") -> None:
        """Record a result. ``metric`` None/NaN/inf or a non-``ok`` status is a failure (see :mod:`raydgp.dgp.data`)."""
        if status == "invalid":
            self.invalid.add(config)
            return
        if metric is None or not math.isfinite(float(metric)):
            status = "run_error" if status == "ok" else status
            metric = math.nan
        self.observed[config] = (status, float(metric))

    @property
    def seen(self) -> set:
        return set(self.observed) | self.invalid

    def _latency_like(self, metric: float) -> float:
        """The metric as a positive cost where smaller is better (``-log`` of it is the target)."""
        return math.exp(-metric) if self.maximize else metric

    def _target_xy(self) -> tuple[np.ndarray, np.ndarray, list]:
        configs = list(self.observed)
        st = [self.observed[c][0] for c in configs]
        m = [self.observed[c][1] for c in configs]
        if self.maximize:
            # larger is better: use exp(-metric) as a "latency" so that -log(latency) = metric
            lat = [math.exp(-v) if math.isfinite(v) else math.nan for v in m]
        else:
            lat = m
        ok = [s == "ok" and math.isfinite(v) and (v > 0 or self.maximize) for s, v in zip(st, lat)]
        st = [s if good or s != "ok" else "run_error" for s, good in zip(st, ok)]
        y, keep = standardised_targets(["t"] * len(configs), st, lat)
        X = self._encode(configs)
        return X[keep], y[keep], [c for c, k in zip(configs, keep) if k]

    # -- model ---------------------------------------------------------------------------------------------------------
    def _scaler_for(self) -> InputScaler:
        if self._scaler is None:
            if self.history is not None:
                self._scaler = InputScaler.fit(self.history.X)
            else:
                sample = self.space.sample_many(512, np.random.default_rng(self.settings.seed + 1))
                self._scaler = InputScaler.fit(self.space.encode_many(sample))
        return self._scaler

    def pretrained(self) -> DeepGPSurrogate | None:
        """Stage 1 (lazily, once): the DGP trained on the history, or None without history."""
        if self._pretrained is None and self.history is not None:
            t0 = time.perf_counter()
            sc = self._scaler_for()
            X = sc.transform(self.history.X)
            y = torch.as_tensor(self.history.y, dtype=torch.float32)
            with _torch_threads(self.settings.torch_threads):
                ps = self.settings.seed if self.settings.pretrain_seed is None else self.settings.pretrain_seed
                self._pretrained = pretrain(X, y, self.settings.dgp, seed=ps,
                                            cache_dir=self.cache_dir).model
            self.timings["fit"].append(time.perf_counter() - t0)
        return self._pretrained

    def fit(self) -> DeepGPSurrogate | None:
        """Stage 2 (and its warm-started refits): the model for the current target data."""
        with _torch_threads(self.settings.torch_threads):
            return self._fit()

    def _fit(self) -> DeepGPSurrogate | None:
        X, y, _ = self._target_xy()
        if len(y) == 0:
            return self.pretrained()
        if self._model is not None and self._fitted_on == len(y):
            return self._model
        base = self.pretrained()  # stage 1 always in the caller's thread
        if self._model is not None and self.settings.async_refit:
            # Refit a copy in the background; score with the current model (a result or two behind) meanwhile.
            if self._refit_thread is None or not self._refit_thread.is_alive():
                torch.set_num_threads(self.settings.torch_threads)  # the worker thread shares the process setting
                work = copy.deepcopy(self._model)
                self._refit_thread = threading.Thread(target=self._refit_in_background, args=(work, X, y, base),
                                                      daemon=True, name="raydgp-refit")
                self._refit_thread.start()
            return self._model
        self._model = self._refit(self._model, X, y, base)
        self._fitted_on = len(y)
        return self._model

    def _refit_in_background(self, model, X, y, base) -> None:
        try:
            new = self._refit(model, X, y, base)
        except Exception:  # noqa: BLE001 - a failed refit keeps the previous model; the next result retries
            return
        self._model, self._fitted_on = new, len(y)

    def wait_for_refit(self, timeout: float | None = None) -> None:
        """Block until a background refit (``async_refit``) has finished."""
        t = self._refit_thread
        if t is not None:
            t.join(timeout)

    def _refit(self, model: DeepGPSurrogate | None, X: np.ndarray, y: np.ndarray,
               base: DeepGPSurrogate | None) -> DeepGPSurrogate:
        """Stage 2 on the target data ``(X, y)``: a new or warm-started fit of ``model`` (trained in place)."""
        t0 = time.perf_counter()
        Xt = self._scaler_for().transform(X)
        yt = torch.as_tensor(y, dtype=torch.float32)
        s = self.settings
        if base is not None:
            if model is None:
                model = copy.deepcopy(base)
                steps = s.dgp.finetune_steps
                self._center = {k: v.detach().clone() for k, v in base.named_parameters()}
            else:
                steps = s.refit_steps
            map_finetune(model, Xt, yt, prior_strength=s.prior_strength, steps=steps, scope=s.finetune_scope,
                         seed=s.seed + len(y), prior_center=self._center)
        elif model is None or len(y) <= s.dgp.num_inducing:
            # Cold start: a new DGP on the (growing) target data, initialised from exact GPs on it.
            model = fit_dgp(Xt, yt, s.dgp, steps=s.cold_steps, seed=s.seed)
        else:
            train_elbo(model, Xt, yt, s.refit_steps, s.dgp.lr, seed=s.seed + len(y))
        self.timings["fit"].append(time.perf_counter() - t0)
        return model

    # -- proposals -----------------------------------------------------------------------------------------------------
    def _encode(self, configs: Sequence[Hashable]) -> np.ndarray:
        """Raw encodings of configurations outside the pool (cached: measured ones are encoded once)."""
        missing = [c for c in configs if c not in self._enc]
        if missing:
            if len(self._enc) > 50_000:
                self._enc.clear()
            for c, row in zip(missing, self.space.encode_many(missing)):
                self._enc[c] = row
        if not configs:
            return self.space.encode_many([])
        return np.stack([self._enc[c] for c in configs])

    def _random_pool(self, exclude: set) -> tuple[list, torch.Tensor]:
        """The rolling pool of random candidates minus ``exclude``, topped up with fresh samples (see
        ``SearchSettings.pool_refresh``)."""
        s = self.settings
        n_fresh = s.pool_size if self._pool_X is None else max(1, int(round(s.pool_size * s.pool_refresh)))
        keep = [i for i, c in enumerate(self._pool_configs) if c not in exclude]
        keep = keep[max(0, len(keep) + n_fresh - s.pool_size):]  # the oldest make room
        n_fresh = s.pool_size - len(keep)
        kept = [self._pool_configs[i] for i in keep]
        fresh = self.space.sample_many(n_fresh, self.rng, exclude=exclude | set(kept)) if n_fresh else []
        Xf = self._scaler_for().transform(self.space.encode_many(fresh)) if fresh else None
        parts = [t for t in (self._pool_X[keep] if keep else None, Xf) if t is not None]
        self._pool_configs = kept + fresh
        self._pool_X = torch.cat(parts) if parts else torch.zeros(0, self._scaler_for().out_dim)
        return self._pool_configs, self._pool_X

    def _pool(self, exclude: set) -> tuple[list, torch.Tensor]:
        """Candidates to score: the random pool plus the neighbours of the best configurations so far."""
        s = self.settings
        pool, X = self._random_pool(exclude)
        good = sorted(((v, c) for c, (st, v) in self.observed.items() if st == "ok" and math.isfinite(v)),
                      key=lambda t: -t[0] if self.maximize else t[0])
        seen_pool = set(pool)
        extra = []
        for _, c in good[: s.neighbour_seeds]:
            for n in self._neighbours(c):
                if n not in exclude and n not in seen_pool:
                    seen_pool.add(n)
                    extra.append(n)
        if extra:
            return pool + extra, torch.cat([X, self._scaler_for().transform(self._encode(extra))])
        return list(pool), X

    def _neighbours(self, config: Hashable) -> list:
        if config not in self._nbr_cache:
            self._nbr_cache[config] = self.space.neighbours(config)
        return self._nbr_cache[config]

    def suggest(self, pending: Sequence[Hashable] = ()) -> Hashable | None:
        """The next configuration to measure, or None when the space is exhausted.

        Args:
            pending: configurations being measured right now (never proposed again, and accounted for).
        """
        t0 = time.perf_counter()
        self._calls += 1
        with _torch_threads(self.settings.torch_threads):
            try:
                return self._suggest(pending)
            finally:
                self.timings["suggest"].append(time.perf_counter() - t0)

    def _suggest(self, pending: Sequence[Hashable]) -> Hashable | None:
        exclude = self.seen | set(pending)
        if len(exclude) >= self.space.size:
            return None
        n_target = len(self.observed)
        s = self.settings
        if n_target + len(pending) < s.n_init:
            return self._tuning_set_pick(exclude, pending)
        model = self._fit()
        pool, X = self._pool(exclude)
        if not pool:
            return None
        if model is None:
            return pool[0]
        _, y, _ = self._target_xy()
        best_f = float(y.max()) if len(y) else 0.0
        bm = DGPModel(model, seed=s.seed + self._calls)
        scores = log_ei_pool(bm, X, best_f)
        if pending:
            top = torch.topk(scores, min(32, len(pool))).indices
            P = self._scaler_for().transform(self._encode(list(pending)))
            q = q_log_ei_with_pending(bm, X[top], best_f, P, seed=s.seed + self._calls)
            return pool[int(top[int(torch.argmax(q))])]
        return pool[int(torch.argmax(scores))]

    def _tuning_set_pick(self, exclude: set, pending: Sequence) -> Hashable | None:
        """A tuning-set point: random, or the pre-trained DGP's pick (predicted fast or uncertain, kept diverse)."""
        s = self.settings
        model = self.pretrained() if s.init == "dgp" else None
        if model is None:
            got = self.space.sample_many(1, self.rng, exclude=exclude)
            return got[0] if got else None
        pool, X = self._random_pool(exclude)
        if not pool:
            return None
        sc = self._scaler_for()
        mean, var = model.predict(X, seed=s.seed + self._calls)
        mu = mean.mean(0)
        sd = (var.mean(0) + mean.var(0)).sqrt()
        score = mu + 0.5 * sd  # optimistic: fast, or fast-if-lucky
        chosen = list(self.observed) + list(pending)
        if chosen:
            C = sc.transform(self._encode(chosen))
            d = torch.cdist(X, C).min(dim=1).values
            # Keep the tuning set diverse: skip candidates closer than a quarter of the pool's typical spacing.
            ref = torch.cdist(X[:256], X[:256])
            thresh = 0.25 * ref[ref > 0].median() if (ref > 0).any() else 0.0
            score = torch.where(d < thresh, torch.full_like(score, -1e9), score)
        return pool[int(torch.argmax(score))]
