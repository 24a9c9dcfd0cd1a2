"""The three-stage DGP search over one space (no Ray, no TVM here; :mod:`raydgp.raytune.dgp_searcher` adapts it).

1. **Pre-train** the deep GP on history (other workloads' records, or earlier points of the same space), once, cached.
2. **Transfer**: the target's first ``n_init`` measurements are the *tuning set*, chosen by the pre-trained DGP
   (:mod:`raydgp.search.tuning_set`) or at random; then the DGP is fine-tuned on the target's data by MAP estimation
   (ELBO + Gaussian prior around the pre-trained weights).
3. **Search**: each proposal scores the candidates (:mod:`raydgp.search.candidates`) with BoTorch's LogEI under the
   DGP and proposes the best configuration that is neither measured nor pending; with pending points, the top
   candidates are rescored jointly with them (qLogEI).

The space is any :class:`~raydgp.space.base.SearchSpace`; configurations are hashable.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import threading
import time
from typing import Hashable, NamedTuple, Sequence

import gpytorch
import numpy as np
import torch
from botorch.exceptions.errors import ModelFittingError

from raydgp.dgp.additive import AdditiveSurrogate, fit_subset, kept_groups
from raydgp.dgp.botorch_model import DGPModel, log_ei_pool, q_log_ei_with_pending
from raydgp.dgp.data import InputScaler, standardised_targets
from raydgp.dgp.model import DeepGPSurrogate
from raydgp.dgp.stacked import StackedSurrogate, base_mean, fit_slope
from raydgp.dgp.train import fit_dgp, map_finetune, pretrain, train_elbo
from raydgp.search.candidates import CandidatePool
from raydgp.search.evolution import FailureModel, evolve
from raydgp.search.history import History
from raydgp.search.settings import SearchSettings
from raydgp.search.threads import torch_threads
from raydgp.search.trust import TrustTracker
from raydgp.search.tuning_set import pick_tuning_point
from raydgp.space.base import SearchSpace

log = logging.getLogger("raydgp.search")

#: Target points before a cold member is fitted beside the transferred model.
TRUST_MIN_POINTS = 4
#: The trust members that carry the history (their weight together decides :meth:`DGPSearch._cold_member_steps`).
HISTORY_MEMBERS = ("transfer", "zeroshot", "stacked")


class _Member(NamedTuple):
    """A scoring member: its BoTorch model, the weight its EI is scaled by, and its trust weight."""

    model: object
    weight: float
    trust: float


#: ``member_mix="share"``: the largest factor a member's EI is scaled up by (e^50: a member that expects no
#: improvement anywhere in the pool stays out of the lead instead of overflowing).
MAX_SHARE_LOG = 50.0


def _shares(members: list, parts: list) -> list:
    """``member_mix="share"``: each member's weight divided by its largest EI over the pool (``parts``: each member's
    log EI of the pool), so that its best candidate scores its trust weight: the weights, not the members' EI scales,
    decide who leads. The trust weights stay as they were."""
    top = [float(p.max()) if len(p) else 0.0 for p in parts]
    hi = max(top)
    return [m._replace(weight=m.weight * math.exp(min(hi - t, MAX_SHARE_LOG))) for m, t in zip(members, top)]


class _Scored(NamedTuple):
    """A scored candidate pool: configurations, their normalised inputs, scores and the scoring members."""

    pool: list
    X: torch.Tensor
    scores: torch.Tensor
    members: list
    best_f: float


class DGPSearch:
    """Propose configurations of one target space, learning from history and from the target's own results.

    Args:
        space: the target space.
        settings: search settings.
        history: stage-1 source data (encoded with the same layout as ``space.encode_many``), or None.
        cache_dir: where pre-trained weights are cached (None: no cache).
        maximize: True if larger metric values are better (latency: False).
        compute_guard: ``compute_guard()`` gives a context manager held around every model fit and every proposal's
            scoring (None: none). On a tuning node, :class:`raydgp.measure.node_locks.NodeComputeGuard` makes them
            wait while a kernel is timed, so the searcher never disturbs a timing.
    """

    def __init__(self, space: SearchSpace, settings: SearchSettings = SearchSettings(), history: History | None = None,
                 cache_dir: str | None = None, maximize: bool = False, compute_guard=None):
        self.space = space
        self.settings = settings
        self.history = history if history is not None and len(history) else None
        self.cache_dir = cache_dir
        self.maximize = maximize
        self.compute_guard = compute_guard
        self.rng = np.random.default_rng(settings.seed)
        self._interleave_rng = np.random.default_rng([settings.seed, 7919])  # its own stream: p=0 changes nothing
        self.observed: dict[Hashable, tuple[str, float]] = {}  # config -> (status, metric)
        self.invalid: set[Hashable] = set()
        self._pretrained: DeepGPSurrogate | None = None
        self._model: DeepGPSurrogate | None = None
        self._cold: DeepGPSurrogate | None = None  # the cold member beside a transferred model (settings.trust)
        self._cold_fresh_n = 0  # target points at the cold member's last fresh fit
        self._stacked: StackedSurrogate | None = None  # the stacked member (settings.stacked_member)
        #: per member, the configurations its current fit was trained on, and how many results it was fitted on
        self._trained: dict[str, set] = {}
        self._fit_n: dict[str, int] = {}
        self._additive: AdditiveSurrogate | None = None  # the additive member (settings.additive_member)
        groups = getattr(space, "column_groups", None)
        mode = settings.additive_member
        # auto: ordinary spaces only; a TVM design space (it has structures, its sketches) gets it only when asked:
        # in the replay its cold search with the member was not clearly better (BENCHMARKS.md section 7.2 (znver4))
        ordinary = not tuple(getattr(space, "structures", ()))
        self._groups = (tuple(groups) if groups and (mode == "on" and (self.trusting or self.history is None)
                                                     or mode == "auto" and self.history is None and ordinary)
                        else None)
        if self.history is None:
            names: tuple = ("cold",)
        else:
            names = (("transfer",) + (("zeroshot",) if settings.zero_shot_member else ())
                     + ("cold",) + (("stacked",) if settings.stacked_member else ()))
        self.trust = TrustTracker(names + (("additive",) if self._groups else ()), pairs=settings.trust_pairs)
        self._lead = self._base_lead = "transfer" if self.history is not None else "cold"
        self._fitted_on = -1
        self._scaler: InputScaler | None = None
        self._calls = 0
        self._evolved: set = set()  # the last proposal's bred candidates
        self._fail = FailureModel()  # the last proposal's failure model
        self._refit_thread: threading.Thread | None = None
        self._prefetch: threading.Thread | None = None  # stage 1 started ahead (prefetch_pretrained)
        self._center: dict[str, torch.Tensor] | None = None  # the MAP prior's centre (pre-trained parameters)
        self.candidates = CandidatePool(space, settings.pool_size, settings.pool_refresh,
                                        lambda X: self._scaler_for().transform(X), self.rng)
        self.timings: dict[str, list[float]] = {"suggest": [], "fit": []}
        #: What proposed each configuration and what failed: ``model`` (the DGP's acquisition), ``tuning_set``
        #: (stage 2's picks by the pre-trained model), ``random`` (random tuning-set points, by design),
        #: ``refit_failures`` (background refits that raised; the previous model kept proposing).
        #: ``evolved`` counts the model proposals found by the evolutionary search (not in the random pool).
        self.stats: dict[str, int] = {"model": 0, "tuning_set": 0, "random": 0, "refit_failures": 0, "evolved": 0}

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

    def _target_xy(self) -> tuple[np.ndarray, np.ndarray, list]:
        """Encoded configurations, standardised targets (larger is better) and the configurations kept.

        A positive metric to minimise (a latency) is modelled as ``-log(metric)``; any other metric (a loss that can be
        zero or negative, or a metric to maximise) as itself, sign-flipped for minimisation. Failures (non-``ok``,
        NaN/inf) sit below the worst success (:func:`~raydgp.dgp.data.standardised_targets`).
        """
        configs = list(self.observed)
        st = [self.observed[c][0] for c in configs]
        m = np.array([self.observed[c][1] for c in configs], dtype=float)
        good = np.array([s == "ok" for s in st], dtype=bool) & np.isfinite(m)
        if not self.maximize and good.any() and bool((m[good] > 0).all()):
            lat = m  # a latency-like metric: -log(metric)
        else:
            # -log(lat) = (sign * metric), standardised first so exp() cannot overflow
            v = m if self.maximize else -m
            mu = float(v[good].mean()) if good.any() else 0.0
            sd = float(v[good].std()) if good.sum() > 1 and float(v[good].std()) > 0 else 1.0
            with np.errstate(over="ignore", invalid="ignore"):
                lat = np.exp(-(v - mu) / sd)
        st = [s if ok or s != "ok" else "run_error" for s, ok in zip(st, good)]
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

    def prefetch_pretrained(self) -> bool:
        """Start stage 1 now, in a background thread, so that it overlaps what comes before the first proposal that
        needs it (a job's Ray start and untuned baseline, the seeded and random tuning-set trials) instead of
        stalling the trials afterwards: a layer search with a random tuning set waited 23-30 s for it after its sixth
        trial on 2 cores (BENCHMARKS.md 7.3b (``emeraldrapids-2c-nhwc``); there the head start cost more than it
        saved, so ``SearchSettings.prefetch`` is off by default). The thread holds the compute guard like every fit,
        so it pauses for a kernel's timing at its optimiser steps. :meth:`pretrained` waits for it; a failure there is
        logged and stage 1 runs again where it is needed. Returns whether a thread was started (not without history,
        nor once stage 1 ran or started)."""
        if self.history is None or self._pretrained is not None or self._prefetch is not None:
            return False
        self._scaler_for()  # made here, before a second thread could make it

        def work() -> None:
            try:
                with self._guard():
                    self.pretrained()
            except Exception as e:  # noqa: BLE001 - the caller's thread trains stage 1 again and reports there
                log.warning("stage 1 in the background failed (%s: %s); it runs again when needed",
                            type(e).__name__, e)

        self._prefetch = threading.Thread(target=work, name="raydgp-stage1", daemon=True)
        self._prefetch.start()
        return True

    def _await_prefetch(self) -> None:
        """Wait for a stage 1 started by :meth:`prefetch_pretrained` (outside the compute guard: a thread waiting
        inside it would keep the guard's hold from stepping aside for a timing)."""
        t = self._prefetch
        if t is not None and t is not threading.current_thread():
            t.join()

    def pretrained(self) -> DeepGPSurrogate | None:
        """Stage 1 (lazily, once): the DGP trained on the history, or None without history."""
        self._await_prefetch()
        if self._pretrained is None and self.history is not None:
            t0 = time.perf_counter()
            sc = self._scaler_for()
            X = sc.transform(self.history.X)
            y = torch.as_tensor(self.history.y, dtype=torch.float32)
            with torch_threads(self.settings.pretrain_threads or self.settings.torch_threads):
                ps = self.settings.seed if self.settings.pretrain_seed is None else self.settings.pretrain_seed
                self._pretrained = pretrain(X, y, self.settings.dgp, seed=ps,
                                            cache_dir=self.cache_dir).model
            self.timings["fit"].append(time.perf_counter() - t0)
        return self._pretrained

    def fit(self) -> DeepGPSurrogate | None:
        """Stage 2 (and its warm-started refits): the model for the current target data."""
        with torch_threads(self.settings.torch_threads):
            return self._fit()

    @property
    def trusting(self) -> bool:
        """Whether a cold member is kept beside the transferred model (history and ``settings.trust``)."""
        return self.history is not None and self.settings.trust

    def _fit(self) -> DeepGPSurrogate | None:
        X, y, configs = self._target_xy()
        if len(y) == 0:
            return self.pretrained()
        if self._model is not None and self._fitted_on == len(y):
            return self._model
        base = self.pretrained()  # stage 1 always in the caller's thread
        if self.trusting or self._groups:
            self._update_trust(X, y, configs)
        due = self._refit_due(len(y))
        cold_steps = self._cold_member_steps()
        s = self.settings
        if self._model is not None and s.async_refit:
            # Refit copies in the background and score with the current models meanwhile, but never from a model
            # more than ``max_staleness`` results behind: then wait for the running refit (and refit again if needed).
            t = self._refit_thread
            if t is not None and t.is_alive() and len(y) - self._fitted_on > s.max_staleness:
                t.join()
                self.stats["refit_waits"] = self.stats.get("refit_waits", 0) + 1
            if self._fitted_on == len(y):
                return self._model
            if self._refit_thread is None or not self._refit_thread.is_alive():
                torch.set_num_threads(s.torch_threads)  # the worker thread shares the process setting
                work = (copy.deepcopy(self._model), copy.deepcopy(self._cold), self._stacked, self._additive)
                self._refit_thread = threading.Thread(target=self._refit_in_background,
                                                      args=(work, X, y, configs, base, due, cold_steps),
                                                      daemon=True,
                                                      name="raydgp-refit")
                self._refit_thread.start()
                if len(y) - self._fitted_on > s.max_staleness:
                    self._refit_thread.join()
                    self.stats["refit_waits"] = self.stats.get("refit_waits", 0) + 1
            return self._model
        new, fitted = self._refit_members((self._model, self._cold, self._stacked, self._additive), X, y, base,
                                          configs, due, cold_steps)
        self._install(new, fitted, configs)
        return self._model

    def _install(self, models, fitted, configs) -> None:
        """Make refitted ``models`` current; ``fitted``: the members that were fitted on ``configs`` (the others
        keep what they were trained on)."""
        (self._model, self._cold, self._stacked, self._additive) = models
        for name in fitted:
            self._trained[name], self._fit_n[name] = set(configs), len(configs)
        self._fitted_on = len(configs)

    def _refit_due(self, n: int) -> dict[str, bool]:
        """Which of the transferred and the cold member a refit on ``n`` results fits (``idle_member_weight``): a
        member under the weight only once ``idle_member_every`` results arrived since its last fit; every member
        without a fit yet, and every member while there is no cold one to weigh against."""
        s = self.settings
        names = (self._base_lead, "cold") if self.history is not None else (self._base_lead,)
        if not (self.trusting and self._cold is not None and s.idle_member_weight > 0):
            return {m: True for m in names}
        w = self.trust_weights()
        return {m: w.get(m, 1.0) >= s.idle_member_weight or n - self._fit_n.get(m, -n) >= s.idle_member_every
                for m in names}

    def _cold_member_steps(self) -> int:
        """Adam steps of the cold member's next fresh fit: ``cold_member_steps`` while the history's members carry
        weight; ``cold_steps`` (what the search without history fits) once they together hold less than
        ``idle_member_weight`` of the trust (``distrust_cold_steps``): the cold member then leads alone."""
        s = self.settings
        if not (s.distrust_cold_steps and self.trusting and self._cold is not None):
            return s.cold_member_steps
        w = self.trust_weights()
        if sum(v for k, v in w.items() if k in HISTORY_MEMBERS) < s.idle_member_weight:
            return s.cold_steps
        return s.cold_member_steps

    def _refit_in_background(self, models, X, y, configs, base, due, cold_steps=None) -> None:
        try:
            with self._guard():
                new, fitted = self._refit_members(models, X, y, base, configs, due, cold_steps)
        except Exception as e:  # noqa: BLE001 - a failed refit keeps the previous model (counted and logged)
            self.stats["refit_failures"] += 1
            log.warning("background refit failed (%s: %s); proposing with the previous model", type(e).__name__, e)
            return
        self._install(new, fitted, configs)

    def wait_for_refit(self, timeout: float | None = None) -> None:
        """Block until a background refit (``async_refit``) has finished."""
        t = self._refit_thread
        if t is not None:
            t.join(timeout)

    def _refit_members(self, models, X, y, base, configs, due=None, cold_steps=None):
        """Refit the transferred (or, without history, cold) model and, when trusting, the cold member (and the
        stacked one, ``stacked_member``); and the additive member (``additive_member``). ``due``: which of the first
        two to fit (:meth:`_refit_due`; None: both); ``cold_steps``: Adam steps of a fresh fit of the cold member
        (:meth:`_cold_member_steps`; None: ``cold_member_steps``).

        Returns:
            ``((model, cold, stacked, additive), names of the members fitted on these results)``.
        """
        model, cold, stacked, additive = models
        due = due or {}
        skipped = sum(not v for v in due.values())
        if skipped:  # members under idle_member_weight that keep their fit this time
            self.stats["idle_refits_skipped"] = self.stats.get("idle_refits_skipped", 0) + skipped
        fitted = []
        if model is None or due.get(self._base_lead, True):
            model = self._refit(model, X, y, base)
            fitted.append(self._base_lead)
        if self._groups and len(y) >= TRUST_MIN_POINTS:
            additive = self._fit_additive(X, y)
            fitted.append("additive")
        s = self.settings
        if self.trusting and len(y) >= TRUST_MIN_POINTS and (cold is None or due.get("cold", True)):
            fitted.append("cold")
            if cold is None or (len(y) <= s.dgp.num_inducing
                                and len(y) >= (1.0 + s.cold_refresh) * self._cold_fresh_n):
                # A fresh fit (inducing points on the data, exact-GP start) once the data grew by ``cold_refresh``
                # (by default on every refit, as the search without history fits itself; about a second each).
                steps = s.cold_member_steps if cold_steps is None else cold_steps
                if steps != s.cold_member_steps:
                    self.stats["cold_full_fits"] = self.stats.get("cold_full_fits", 0) + 1
                cold = self._refit(None, X, y, None, steps=steps, warm=cold)
                self._cold_fresh_n = len(y)
            else:
                t0 = time.perf_counter()
                train_elbo(cold, self._scaler_for().transform(X), torch.as_tensor(y, dtype=torch.float32),
                           s.refit_steps, s.dgp.lr, seed=s.seed + len(y))
                self.timings["fit"].append(time.perf_counter() - t0)
        if self.trusting and len(y) >= TRUST_MIN_POINTS and s.stacked_member:
            stacked = self._fit_stacked(X, y, configs, base)
            fitted.append("stacked")
        return (model, cold, stacked, additive), fitted

    def _fit_additive(self, X: np.ndarray, y: np.ndarray) -> AdditiveSurrogate | None:
        """The additive member, fitted afresh on the target's results (all of them up to ``MAX_POINTS``; None,
        counted, where its fit fails: the others propose)."""
        t0 = time.perf_counter()
        sc = self._scaler_for()
        idx = fit_subset(y)  # at most MAX_POINTS: the best half and the most recent
        X, y = X[idx], y[idx]
        try:
            m = AdditiveSurrogate(sc.transform(X), torch.as_tensor(y, dtype=torch.float32),
                                  kept_groups(self._groups, sc.keep), seed=self.settings.seed + len(y))
        except (RuntimeError, ValueError, ModelFittingError) as e:
            # a singular or non-converging fit (linear_operator's errors, BoTorch's "all attempts to fit failed")
            self.stats["additive_failures"] = self.stats.get("additive_failures", 0) + 1
            log.warning("additive member fit failed (%s: %s); proposing without it", type(e).__name__, e)
            return None
        self.timings["fit"].append(time.perf_counter() - t0)
        return m

    def _fit_stacked(self, X: np.ndarray, y: np.ndarray, configs: list, base: DeepGPSurrogate) -> StackedSurrogate:
        """The stacked member (:mod:`raydgp.dgp.stacked`): the zero-shot mean's slope and offset fitted on the
        target's successful results, and a fresh cold DGP on all results' residuals."""
        t0 = time.perf_counter()
        Xt = self._scaler_for().transform(X)
        yt = torch.as_tensor(y, dtype=torch.float32)
        seed = self.settings.seed
        mu0 = base_mean(base, Xt, seed)
        ok = torch.as_tensor([self.observed[c][0] == "ok" for c in configs], dtype=torch.bool)
        a, b = fit_slope(mu0[ok], yt[ok]) if int(ok.sum()) >= 2 else (0.0, float(yt.mean()))
        resid = fit_dgp(Xt, yt - (a * mu0 + b), self.settings.dgp, steps=self.settings.cold_steps, seed=seed)
        self.stats["stacked_slope"] = round(a, 4)
        self.timings["fit"].append(time.perf_counter() - t0)
        return StackedSurrogate(resid, base, a, b, seed=seed)

    def _update_trust(self, X: np.ndarray, y: np.ndarray, configs: list) -> None:
        """Test the current members on the measured points they were not trained on (:mod:`raydgp.search.trust`)."""
        ok = [i for i, c in enumerate(configs) if self.observed[c][0] == "ok"]
        if len(ok) < 2:
            return
        cfg = [configs[i] for i in ok]
        yo = y[ok]
        Xt = None
        if self.history is None:
            members = {"cold": self._model}
        else:
            members = {"transfer": self._model if self._model is not None else self.pretrained(),
                       "cold": self._cold}
        if "additive" in self.trust.members:
            members["additive"] = self._additive
        if "stacked" in self.trust.members:
            members["stacked"] = self._stacked
        if "zeroshot" in self.trust.members:
            members["zeroshot"] = self.pretrained()
        for name, model in members.items():
            if model is None:
                continue
            # a point a member was trained on is no test of it (the zero-shot model is trained on none)
            trained = () if name == "zeroshot" else self._trained.get(name, ())
            test = [i for i in self.trust.untested(name, cfg) if cfg[i] not in trained]
            if not test:
                continue
            if Xt is None:
                Xt = self._scaler_for().transform(X[ok])
            mean, _ = model.predict(Xt, seed=self.settings.seed, num_samples=4)
            self.trust.record(name, cfg, test, mean.mean(0).numpy(), yo)

    def trust_weights(self) -> dict[str, float]:
        """The members' current weights (``{"transfer": 1.0}`` until a cold member exists; without history
        ``{"cold": 1.0}`` until the additive member exists)."""
        if self.history is None:
            if self._additive is None:
                return {"cold": 1.0}
            return self.trust.weights(seed=self.settings.seed + len(self.observed))
        if not self.trusting or self._cold is None:
            return {"transfer": 1.0} if self.history is not None else {"cold": 1.0}
        return self.trust.weights(seed=self.settings.seed + len(self.observed), group=("transfer", "zeroshot"))

    def _refit(self, model: DeepGPSurrogate | None, X: np.ndarray, y: np.ndarray,
               base: DeepGPSurrogate | None, steps: int | None = None,
               warm: DeepGPSurrogate | None = None) -> DeepGPSurrogate:
        """Stage 2 on the target data ``(X, y)``: a new or warm-started fit of ``model`` (trained in place).
        ``steps``: Adam steps of a fresh cold fit (default ``settings.cold_steps``); ``warm``: the previous fresh cold
        fit, whose exact GPs start the new one's (default ``model``)."""
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
            model = fit_dgp(Xt, yt, s.dgp, steps=s.cold_steps if steps is None else steps, seed=s.seed,
                            warm=warm if warm is not None else model)
        else:
            train_elbo(model, Xt, yt, s.refit_steps, s.dgp.lr, seed=s.seed + len(y))
        self.timings["fit"].append(time.perf_counter() - t0)
        return model

    # -- proposals -----------------------------------------------------------------------------------------------------
    def _encode(self, configs: Sequence[Hashable]) -> np.ndarray:
        return self.candidates.encode(configs)

    def _best_configs(self) -> list:
        good = sorted(((v, c) for c, (st, v) in self.observed.items() if st == "ok" and math.isfinite(v)),
                      key=lambda t: -t[0] if self.maximize else t[0])
        return [c for _, c in good[: self.settings.neighbour_seeds]]

    def suggest(self, pending: Sequence[Hashable] = ()) -> Hashable | None:
        """The next configuration to measure, or None when the space is exhausted.

        Args:
            pending: configurations being measured right now (never proposed again, and accounted for).
        """
        t0 = time.perf_counter()
        self._calls += 1
        if self.settings.init == "dgp" or len(self.observed) + len(pending) >= self.settings.n_init:
            self._await_prefetch()  # stage 1 is needed here: wait for it outside the guard
        with torch_threads(self.settings.torch_threads), self._guard():
            try:
                try:
                    return self._suggest(pending)
                except torch.linalg.LinAlgError:
                    # A covariance that float32 Cholesky cannot factor (near-duplicate inputs): once more with 100x
                    # GPyTorch's jitter and more tries before the caller's random fallback; counted.
                    self.stats["jitter_retries"] = self.stats.get("jitter_retries", 0) + 1
                    with gpytorch.settings.cholesky_jitter(float_value=1e-4, double_value=1e-6), \
                            gpytorch.settings.cholesky_max_tries(6):
                        return self._suggest(pending)
            finally:
                self.timings["suggest"].append(time.perf_counter() - t0)

    def _guard(self):
        return self.compute_guard() if self.compute_guard is not None else contextlib.nullcontext()

    def _suggest(self, pending: Sequence[Hashable]) -> Hashable | None:
        exclude = self.seen | set(pending)
        if len(exclude) >= self.space.size:
            return None
        n_target = len(self.observed)
        s = self.settings
        if n_target + len(pending) < s.n_init:
            return self._tuning_set_pick(exclude, pending)
        reason = "interleaved" if self._interleave(1) else "cold_start" if self._cold_start_due() else None
        if reason:
            got = self._random_picks(1, exclude, reason)
            if got:
                return got[0]
        scored = self._score_pool(exclude)
        if not isinstance(scored, _Scored):
            return scored
        pool, X, scores, members, best_f = scored
        owed = self._sketch_picks(pool, scores, list(pending), 1)
        if owed:
            self.stats["model"] -= 1  # _score_pool counted it as the model's; it is counted as sketch_min
            return owed[0]
        best = int(torch.argmax(scores))
        chosen = pool[best]
        bm = max(members, key=lambda m: m.trust).model  # joint rescoring with pending points: the leading member
        if pending:
            P = self._scaler_for().transform(self._encode(list(pending)))
            # candidates that encode exactly like a pending point add nothing and make the joint covariance singular
            far = torch.cdist(X, P).min(dim=1).values > 1e-6
            scores_far = torch.where(far, scores, torch.full_like(scores, -math.inf))
            top = torch.topk(scores_far, min(32, int(far.sum()))).indices if bool(far.any()) else None
            if top is not None and len(top):
                try:
                    q = q_log_ei_with_pending(bm, X[top], best_f, P, seed=s.seed + self._calls)
                    chosen = pool[int(top[int(torch.argmax(q))])]
                except torch.linalg.LinAlgError:  # numerically singular joint posterior: the analytic ranking
                    self.stats["joint_fallback"] = self.stats.get("joint_fallback", 0) + 1
                    chosen = pool[int(top[0])]
        if chosen in self._evolved:
            self.stats["evolved"] += 1  # a model proposal that only the evolutionary search found
        return chosen

    def _score_pool(self, exclude: set):
        """Fit, then score the candidate pool (and evolved children) by the mixture's LogEI.

        Returns:
            a :class:`_Scored` ``(pool, X, scores, members, best_f)``; or a single configuration / None where no
            model scores (a random pick before any model exists; None when no candidate is left). Counts the proposal
            in :attr:`stats`.
        """
        s = self.settings
        model = self._fit()
        pool, X = self.candidates.with_neighbours(exclude, self._best_configs())
        self._evolved = set()
        if not pool:
            return None
        if model is None:
            self.stats["random"] += 1
            return pool[0]
        self.stats["model"] += 1
        _, y, _ = self._target_xy()
        best_f = float(y.max()) if len(y) else 0.0
        members = self._scoring_members(model)
        fail = self._failure_model()
        self._fail = fail
        pool_parts = [log_ei_pool(m.model, X, best_f) for m in members]
        if s.member_mix == "share" and len(members) > 1:
            members = _shares(members, pool_parts)

        def acquisition(Xc: torch.Tensor, parts=None) -> torch.Tensor:
            # EI under the mixture of the members' posteriors: log sum_m w_m EI_m, plus log P(not failing).
            parts = [log_ei_pool(m.model, Xc, best_f) for m in members] if parts is None else parts
            parts = [math.log(m.weight) + p for m, p in zip(members, parts)]
            ei = parts[0] if len(parts) == 1 else torch.logsumexp(torch.stack(parts), dim=0)
            return ei + fail.log_ok(Xc)

        scores = acquisition(X, pool_parts)
        if s.evolve_generations > 0:
            pool, X, scores = self._evolve(pool, X, scores, exclude, acquisition)
        if self._lead != self._base_lead:  # proposals led by another member than the search's own model
            key = f"{self._lead}_led"
            self.stats[key] = self.stats.get(key, 0) + 1
        return _Scored(pool, X, scores, members, best_f)

    def suggest_batch(self, q: int, pending: Sequence[Hashable] = ()) -> list:
        """``q`` configurations to measure at once, accounting for the ``pending`` ones (running trials).

        Tuning-set points first (while the tuning set is not complete, counting pending points), then a greedy
        Kriging-believer batch under the model (:func:`raydgp.search.batch.believer_batch`): one fit, one scoring of
        the pool, then ``q`` picks among its top ``max(256, 4q)`` that each believe the pending and earlier picks.

        Returns:
            Up to ``q`` distinct configurations, none measured or pending (fewer when the space runs out).
        """
        t0 = time.perf_counter()
        self._calls += 1
        out: list = []
        pend = list(pending)
        s = self.settings
        if s.init == "dgp" or len(self.observed) + len(pend) + q > s.n_init:
            self._await_prefetch()  # stage 1 is needed in this batch: wait for it outside the guard
        with torch_threads(s.torch_threads), self._guard():
            try:
                while len(out) < q:
                    exclude = self.seen | set(pend)
                    if len(exclude) >= self.space.size:
                        break
                    if len(self.observed) + len(pend) < s.n_init:
                        c = self._tuning_set_pick(exclude, pend)
                        if c is None:
                            break
                        out.append(c)
                        pend.append(c)
                        continue
                    k = self._interleave(q - len(out))
                    kc = min(q - len(out) - k, self._cold_start_due())
                    for n, reason in ((k, "interleaved"), (kc, "cold_start")):
                        if n > 0:
                            got = self._random_picks(n, exclude, reason)
                            out += got
                            pend += got
                            exclude = exclude | set(got)
                    if len(out) < q:
                        out += self._model_batch(q - len(out), pend, exclude)
                    break
            finally:
                self.timings.setdefault("batch", []).append(time.perf_counter() - t0)
        return out

    def _interleave(self, q: int) -> int:
        """How many of the next ``q`` proposals are random (``random_interleave``; its own seeded stream)."""
        p = self.settings.random_interleave
        return int((self._interleave_rng.random(q) < p).sum()) if p > 0 else 0

    def _cold_start_due(self) -> int:
        """How many random proposals the cold member is still owed (``cold_start``): none unless it outweighs the
        history's group; then ``n_init`` minus the configurations proposed without the history (running or not)."""
        s = self.settings
        if not (s.cold_start and self._history_distrusted()):
            return 0
        unbiased = self.stats["random"] + self.stats.get("interleaved", 0) + self.stats.get("cold_start", 0)
        return max(0, s.n_init - unbiased)

    def _history_distrusted(self) -> bool:
        """Whether the cold member outweighs the history's versions (the fine-tuned and the zero-shot model)."""
        if not (self.trusting and self._cold is not None):
            return False
        w = self.trust_weights()
        return w.get("cold", 0.0) > w.get("transfer", 0.0) + w.get("zeroshot", 0.0)

    def _sketch_picks(self, pool: list, scores: torch.Tensor, pending: list, q: int) -> list:
        """Up to ``q`` proposals owed to under-sampled structures (``sketch_min``, when ``sketch_min_when`` says so):
        for each structure with fewer than ``sketch_min`` configurations (measured, failed or in ``pending``), fewest
        first, its best-scored candidate in ``pool`` (none if the pool holds none of it)."""
        k, structures = self.settings.sketch_min, tuple(getattr(self.space, "structures", ()))
        if k <= 0 or len(structures) < 2:
            return []
        if self.settings.sketch_min_when == "distrust" and not self._history_distrusted():
            return []
        count = {s: 0 for s in structures}
        for c in list(self.seen) + list(pending):
            s = self.space.structure_of(c)
            if s in count:
                count[s] += 1
        owed = sorted((n, i, s) for i, (s, n) in enumerate(count.items()) if n < k)
        if not owed:
            return []
        of = [self.space.structure_of(c) for c in pool]
        out = []
        for _, _, s in owed:
            if len(out) >= q:
                break
            idx = [i for i, t in enumerate(of) if t == s]
            if idx:
                out.append(pool[idx[int(torch.argmax(scores[idx]))]])
        self.stats["sketch_min"] = self.stats.get("sketch_min", 0) + len(out)
        return out

    def _random_picks(self, k: int, exclude: set, reason: str) -> list:
        """``k`` random unmeasured configurations, counted in the stats under ``reason``."""
        got = self.space.sample_many(k, self.rng, exclude=exclude)
        self.stats[reason] = self.stats.get(reason, 0) + len(got)
        return got

    def _batch_rule(self, p: int) -> str:
        """``believer`` or ``thompson`` for a batch beside ``p`` pending trials (``SearchSettings.batch_rule``:
        ``auto`` takes Thompson picks from ``thompson_from`` pending on, where believing them all before the first
        pick pushes the believer off the posterior's mass)."""
        rule = self.settings.batch_rule
        if rule == "auto":
            return "thompson" if p >= self.settings.thompson_from else "believer"
        return rule

    def _model_batch(self, q: int, pending: list, exclude: set) -> list:
        from raydgp.search.batch import believer_batch, thompson_batch

        scored = self._score_pool(exclude)
        if scored is None:
            return []
        if not isinstance(scored, _Scored):  # no model yet: random picks
            got = [scored] + self.space.sample_many(q - 1, self.rng, exclude=exclude | {scored}) if q > 1 else [scored]
            self.stats["random"] += len(got) - 1
            return got
        pool, X, scores, members, best_f = scored
        s = self.settings
        self.stats["model"] -= 1  # _score_pool counted one; the model's picks are counted below
        owed = self._sketch_picks(pool, scores, pending, q)  # counted as sketch_min
        if len(owed) == q:
            return owed
        pending = list(pending) + owed
        K = min(len(pool), max(256, 4 * q))
        top = torch.topk(scores, K).indices
        P = self._scaler_for().transform(self._encode(pending)) if pending else None
        if P is not None:
            # candidates that encode exactly like a pending point add nothing and make the joint covariance singular
            far = torch.cdist(X[top], P).min(dim=1).values > 1e-6
            top = top[far]
        if len(top) == 0:
            return owed
        log_prior = self._fail.log_ok(X[top])
        try:
            if self._batch_rule(len(pending)) == "thompson":
                picks = thompson_batch([(m.model, m.weight) for m in members], X[top], q - len(owed),
                                       log_prior=log_prior, seed=s.seed * 1_000_003 + self._calls)
                self.stats["thompson"] = self.stats.get("thompson", 0) + len(picks)  # model picks made this way
            else:
                picks = believer_batch([(m.model, m.weight) for m in members], X[top], best_f, q - len(owed),
                                       pending=P, log_prior=log_prior)
        except torch.linalg.LinAlgError:  # a singular joint posterior: the analytic ranking, counted
            self.stats["joint_fallback"] = self.stats.get("joint_fallback", 0) + 1
            picks = list(range(min(q - len(owed), len(top))))
        chosen = [pool[int(top[i])] for i in picks]
        self.stats["model"] += len(chosen)
        chosen = owed + chosen
        self.stats["evolved"] += sum(c in self._evolved for c in chosen)
        return chosen

    def _scoring_members(self, model: DeepGPSurrogate) -> list[_Member]:
        """``(BoTorch model, weight, trust weight)`` of each member that scores candidates (weights under 1% are
        dropped; the weight is the trust weight until ``member_mix="share"`` scales it).

        With ``member_pick="sample"``, one member drawn by the trust weights (seeded per proposal) scores alone.
        """
        s = self.settings
        seed = s.seed + self._calls
        self._lead = self._base_lead
        if self.history is None and self._additive is None or self.history is not None and (
                not self.trusting or self._cold is None):
            return [_Member(DGPModel(model, seed=seed), 1.0, 1.0)]
        w = self.trust_weights()
        self._lead = max(w, key=w.get)
        # each member's prequential ranking accuracy and test count (the evidence behind the weights), for summaries
        self.stats["trust"] = {m: {"accuracy": v["accuracy"], "tested": v["tested"]}
                               for m, v in self.trust.summary(group=("transfer", "zeroshot")).items()}
        if self.history is None:
            named = [("cold", model, w["cold"])]
        else:
            self.stats["transfer_weight"] = round(w["transfer"], 4)
            named = [("transfer", model, w["transfer"]), ("cold", self._cold, w["cold"])]
        if "additive" in w and self._additive is not None:
            self.stats["additive_weight"] = round(w["additive"], 4)
            named.append(("additive", self._additive, w["additive"]))
        if "zeroshot" in w:
            self.stats["zeroshot_weight"] = round(w["zeroshot"], 4)
            named.append(("zeroshot", self.pretrained(), w["zeroshot"]))
        if "stacked" in w and self._stacked is not None:
            self.stats["stacked_weight"] = round(w["stacked"], 4)
            named.append(("stacked", self._stacked, w["stacked"]))
        named = [t for t in named if t[2] >= 0.01]
        total = sum(wt for _, _, wt in named)
        if s.member_pick == "sample" and len(named) > 1:
            rng = np.random.default_rng([s.seed, self._calls, 0x6D656D])  # its own stream: other draws unchanged
            name, m, _ = named[int(rng.choice(len(named), p=[wt / total for _, _, wt in named]))]
            self._lead = name
            return [_Member(DGPModel(m, seed=seed), 1.0, 1.0)]
        return [_Member(DGPModel(m, seed=seed), wt / total, wt / total) for _, m, wt in named]

    def _failure_model(self) -> FailureModel:
        """The failure model on every measured configuration of the target (invalid ones included)."""
        fm = FailureModel()
        if not self.settings.failure_model:
            return fm
        configs = list(self.observed) + [c for c in self.invalid if c not in self.observed]
        failed = np.array([c in self.invalid or self.observed[c][0] != "ok" or not math.isfinite(self.observed[c][1])
                           for c in configs], dtype=bool)
        if failed.sum() < fm.min_failures:
            return fm
        return fm.fit(self._scaler_for().transform(self._encode(configs)), failed)

    def _evolve(self, pool: list, X: torch.Tensor, scores: torch.Tensor, exclude: set, acquisition):
        """Add evolved candidates (:func:`~raydgp.search.evolution.evolve`) bred from the best measured and the best
        scored configurations to the pool, scored by ``acquisition`` (normalised inputs -> scores); returns the grown
        ``(pool, X, scores)``."""
        s = self.settings
        top = torch.topk(scores, min(16, len(pool))).indices.tolist()
        parents = self._best_configs() + [pool[i] for i in top]
        have = set(pool)

        def score(configs):
            return acquisition(self._scaler_for().transform(self._encode(configs))).detach().numpy()

        kids, _ = evolve(self.space, score, parents, exclude | have, self.rng, generations=s.evolve_generations,
                         population=s.evolve_population, keep=s.evolve_population)
        if not kids:
            return pool, X, scores
        Xk = self._scaler_for().transform(self._encode(kids))
        sk = acquisition(Xk)
        self._evolved = set(kids)
        return pool + kids, torch.cat([X, Xk]), torch.cat([scores, sk])

    def _tuning_set_pick(self, exclude: set, pending: Sequence) -> Hashable | None:
        """A tuning-set point: random, or the pre-trained DGP's pick (:func:`~raydgp.search.tuning_set.pick_tuning_point`)."""
        s = self.settings
        model = self.pretrained() if s.init == "dgp" else None
        if model is None:
            got = self.space.sample_many(1, self.rng, exclude=exclude)
            self.stats["random"] += bool(got)
            return got[0] if got else None
        pool, X = self.candidates.random(exclude)
        if not pool:
            return None
        chosen = list(self.observed) + list(pending)
        C = self._scaler_for().transform(self._encode(chosen)) if chosen else None
        self.stats["tuning_set"] += 1
        return pool[pick_tuning_point(model, X, C, seed=s.seed + self._calls)]
