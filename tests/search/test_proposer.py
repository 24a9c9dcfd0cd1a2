"""The proposal queue (issue 11): no duplicate, no lost result under concurrency; serial runs deterministic; believer
batches spread; a failing model never stalls the search."""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from raydgp.dgp.model import DGPSettings
from raydgp.errors import ConfigError
from raydgp.search import DGPSearch, SearchSettings
from raydgp.search.proposer import ProposalQueue
from raydgp.space.param_space import Dim, ParamSpace

FAST = SearchSettings(n_init=4, pool_size=200, cold_steps=30, refit_steps=8, evolve_generations=1,
                      evolve_population=16, dgp=DGPSettings(hidden_dims=(2,), num_inducing=16, num_samples=4))


def _space(n: int = 400) -> ParamSpace:
    return ParamSpace([Dim(("i",), "choice", values=tuple(range(n)))], {})


class _FakeSearch:
    """A search object that proposes at random and counts what it was told (thread-unsafe on purpose: the queue must
    be the only one touching it)."""

    def __init__(self, space, fail_every: int = 0):
        self.space = space
        self.rng = np.random.default_rng(0)
        self.observed: dict = {}
        self.fail_every = fail_every
        self.calls = 0
        self._inside = False

    @property
    def seen(self):
        return set(self.observed)

    def observe(self, c, v, status="ok"):
        assert not self._inside, "observe() ran while a batch was being computed"
        assert c not in self.observed, "a result observed twice"
        self.observed[c] = (status, v)

    def suggest_batch(self, q, pending=()):
        self._inside = True
        try:
            self.calls += 1
            time.sleep(random.uniform(0, 0.002))
            if self.fail_every and self.calls % self.fail_every == 0:
                raise RuntimeError("model exploded")
            return self.space.sample_many(q, self.rng, exclude=self.seen | set(pending))
        finally:
            self._inside = False


def test_many_fast_trials_no_duplicate_no_lost_result():
    """32 worker threads take proposals and report at once, until a finite space runs out: every configuration is
    handed out once, every result reaches the search, and the queue says when the space is exhausted."""
    sp = _space(600)
    fake = _FakeSearch(sp, fail_every=7)
    q = ProposalQueue(fake, batch_size=16, max_staleness=4, wait_s=0.01)
    handed, lock = [], threading.Lock()

    def worker(k):
        rnd = random.Random(k)
        while not q.exhausted:
            c = q.suggest()
            if c is None:
                continue
            with lock:
                handed.append(c)
            time.sleep(rnd.uniform(0, 0.003))
            q.observe(c, float(rnd.random()), "ok" if rnd.random() > 0.1 else "run_error")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    q.drain()
    q.close()
    assert len(handed) == len(set(handed)) == 600  # all of the space, each once
    assert set(fake.observed) == set(handed)  # no result lost
    assert q.stats["batch_failures"] > 0 and q.stats["fallback"] > 0  # a failing model: random, counted, no stall
    assert not q.running


class _SlowSearch(_FakeSearch):
    """A model whose batches take ``batch_s`` (a refit slower than a trial)."""

    def __init__(self, space, batch_s: float):
        super().__init__(space)
        self.batch_s = batch_s
        self.sizes: list[int] = []

    def suggest_batch(self, q, pending=()):
        self.sizes.append(q)
        time.sleep(self.batch_s)
        return super().suggest_batch(q, pending)


def _two_workers(max_batch, trials: int = 24, trial_s: float = 0.02, batch_s: float = 0.12, refit_every: int = 1,
                 stagger_s: float = 0.0):
    sp = _space(400)
    slow = _SlowSearch(sp, batch_s)
    q = ProposalQueue(slow, batch_size=2, max_staleness=1, wait_s=0.005, max_batch=max_batch,
                      refit_every=refit_every)
    handed, lock = [], threading.Lock()

    def worker(delay=0.0):
        time.sleep(delay)
        while True:
            with lock:
                if len(handed) >= trials:
                    return
            c = q.suggest()
            if c is None:
                continue
            with lock:
                handed.append(c)
            time.sleep(trial_s)
            q.observe(c, 1.0)

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i * stagger_s,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    wall = time.monotonic() - t0
    q.drain()
    q.close()
    assert len(handed) == len(set(handed)) and set(slow.observed) == set(handed)  # no duplicate, nothing lost
    return slow.sizes, q.stats, wall


def test_batches_grow_when_the_model_is_slower_than_the_trials():
    """Two workers, trials of 20 ms, batches of 120 ms: fixed batches of 2 are superseded before they are used and
    the workers wait for the model; adaptive batches hold the results expected meanwhile, up to max_batch."""
    fixed_sizes, fixed, fixed_wall = _two_workers(max_batch=None)
    sizes, stats, wall = _two_workers(max_batch=8)
    assert set(fixed_sizes) == {2} and fixed["largest_batch"] == 2
    assert max(sizes) > 2 and max(sizes) <= 8 and stats["largest_batch"] == max(sizes)
    assert sizes[0] == 2  # nothing measured yet: as wide as the search
    assert wall < 0.8 * fixed_wall, (wall, fixed_wall)


def test_refit_every_two_results_halves_the_batches_and_loses_nothing():
    """Trials slower than a batch: with refit_every=1 the proposer refits on (nearly) every result; with 2 it waits
    for two while its batch lasts, computing about half as many batches, with no duplicate and no lost result
    (checked in _two_workers) and every proposal handed out by a batch at most two results old."""
    kw = dict(max_batch=8, trials=24, trial_s=0.08, batch_s=0.01, stagger_s=0.04)  # results one at a time
    _, every, _ = _two_workers(refit_every=1, **kw)
    _, paced, _ = _two_workers(refit_every=2, **kw)
    assert every["batches"] >= 18, every
    assert paced["batches"] <= 0.75 * every["batches"], (paced, every)
    assert paced["handed"] == every["handed"] == 24


def test_the_searcher_paces_refits_where_it_shares_the_node_cores():
    from raydgp.measure.node_locks import NodeComputeGuard
    from raydgp.raytune.dgp_searcher import DGPSearcher

    sp = _space()
    assert DGPSearcher(sp, metric="m", mode="min", settings=FAST).queue_refit_every == 1
    guarded = DGPSearcher(sp, metric="m", mode="min", settings=FAST, compute_guard=NodeComputeGuard("/tmp/x.lock"))
    assert guarded.queue_refit_every == 2
    explicit = DGPSearcher(sp, metric="m", mode="min", settings=replace(FAST, queue_refit_every=3),
                           compute_guard=NodeComputeGuard("/tmp/x.lock"))
    assert explicit.queue_refit_every == 3


def test_batches_grow_only_where_the_model_shares_the_node_cores():
    """``queue_max_batch`` auto: a plain Ray Tune searcher keeps its batches as wide as the search (trials faster than
    a refit would otherwise get proposals from a model up to 8 results old: BENCHMARKS.md 7.1 (emeraldrapids-2c));
    raydgp's own jobs (a compute guard) let them grow to 8; an explicit value wins; the queue gets it."""
    from raydgp.measure.node_locks import NodeComputeGuard
    from raydgp.raytune.dgp_searcher import DGPSearcher

    sp = _space()
    plain = DGPSearcher(sp, metric="m", mode="min", settings=FAST)
    assert plain.queue_max_batch == 0
    guarded = DGPSearcher(sp, metric="m", mode="min", settings=FAST, compute_guard=NodeComputeGuard("/tmp/x.lock"))
    assert guarded.queue_max_batch == 8
    explicit = DGPSearcher(sp, metric="m", mode="min", settings=replace(FAST, queue_max_batch=5))
    assert explicit.queue_max_batch == 5
    for s, expect in ((plain, 2), (guarded, 8), (explicit, 5)):
        s.set_max_concurrency(2)
        q = s._proposal_queue()
        try:
            assert q.batch_size == 2 and q.max_batch == expect
        finally:
            q.close()
    with pytest.raises(ConfigError, match="queue_max_batch=-1"):
        SearchSettings(queue_max_batch=-1)


def test_serial_queue_is_deterministic_and_matches_refit_on_every_result():
    def run():
        s = DGPSearch(_space(), FAST)
        q = ProposalQueue(s, batch_size=1, max_staleness=0, wait_s=60.0, serial=True)
        out = []
        for _ in range(10):
            c = q.suggest()
            out.append(c)
            q.observe(c, float((c[0] - 123) ** 2))
        q.close()
        return out, s

    a, sa = run()
    b, _ = run()
    assert a == b and len(set(a)) == 10
    assert sa.stats["model"] >= 6  # after the tuning set, the model proposed


def test_batch_proposals_are_distinct_and_avoid_pending():
    sp = _space()
    s = DGPSearch(sp, FAST)
    for c in sp.sample_many(12, np.random.default_rng(1)):
        s.observe(c, float((c[0] - 200) ** 2 / 1e4 + 1))
    batch = s.suggest_batch(16)
    assert len(batch) == len(set(batch)) == 16 and not set(batch) & s.seen
    more = s.suggest_batch(16, pending=batch)
    assert not set(more) & set(batch) and len(set(more)) == 16
    assert s.stats["model"] >= 32


def test_believer_batch_spreads_and_believes_pending_points():
    """With an uncertain model the believer batch spreads over the space where plain top-q by EI piles onto one
    optimum; a pending point is believed like an earlier pick of the same batch (the DGP's hidden-layer samples depend
    on the batch's composition, so "like", not "exactly as")."""
    from raydgp.dgp.botorch_model import DGPModel, log_ei_pool
    from raydgp.dgp.train import fit_dgp
    from raydgp.search.batch import believer_batch

    g = torch.Generator().manual_seed(2)
    X = torch.rand(6, 1, generator=g)
    y = torch.sin(6 * X[:, 0])
    y = (y - y.mean()) / y.std()
    C = torch.linspace(0, 1, 201).unsqueeze(-1)
    best = float(y.max())

    def spread(idx):
        return float(torch.pdist(C[idx]).mean())

    ratios = []
    for seed in range(3):  # three fits of the same 6 points: how far a batch spreads depends on the fit
        dgp = fit_dgp(X, y, DGPSettings(hidden_dims=(1,), num_inducing=6, num_samples=4), steps=60, seed=seed)
        m = DGPModel(dgp, seed=0)
        top = torch.topk(log_ei_pool(m, C, best), 6).indices.tolist()
        picks = believer_batch([(m, 1.0)], C, best, 6)
        assert len(set(picks)) == 6
        ratios.append(spread(picks) / spread(top))
        again = believer_batch([(m, 1.0)], C, best, 1, pending=C[picks[:1]])
        assert again != picks[:1]  # the pending point is believed: the next pick goes elsewhere
        assert abs(float(C[again[0]] - C[picks[1]])) < 0.05  # near where the batch put its second pick
    assert sorted(ratios)[1] > 2, ratios  # the median fit's batch spreads more than twice as far as top-q


def test_thompson_batch_picks_distinct_likely_optima_and_avoids_failures():
    """A Thompson batch: distinct picks, reproducible for a seed, most of them near the posterior's optimum (where the
    believer's greedy EI spreads), and candidates the failure model rejects only when nothing else is left."""
    from raydgp.dgp.botorch_model import DGPModel
    from raydgp.dgp.train import fit_dgp
    from raydgp.search.batch import thompson_batch

    g = torch.Generator().manual_seed(2)
    X = torch.rand(12, 1, generator=g)
    y = torch.sin(6 * X[:, 0])
    y = (y - y.mean()) / y.std()
    C = torch.linspace(0, 1, 201).unsqueeze(-1)
    dgp = fit_dgp(X, y, DGPSettings(hidden_dims=(1,), num_inducing=8, num_samples=4), steps=60, seed=0)
    m = DGPModel(dgp, seed=0)
    picks = thompson_batch([(m, 1.0)], C, 8, seed=3)
    assert len(picks) == len(set(picks)) == 8
    assert picks == thompson_batch([(m, 1.0)], C, 8, seed=3)
    assert picks != thompson_batch([(m, 1.0)], C, 8, seed=4)
    # sin(6x) peaks at x = pi/12 = 0.26 on [0, 1] (the next peak, 1.31, is outside): most picks near it
    near = sum(abs(float(C[i]) - math.pi / 12) < 0.2 for i in picks)
    assert near >= 5, [float(C[i]) for i in picks]
    bad = torch.zeros(201, dtype=torch.float64)
    bad[C[:, 0] < 0.5] = math.log(0.01)  # the failure model rejects the left half
    ok = thompson_batch([(m, 1.0)], C, 8, log_prior=bad, seed=3)
    assert all(float(C[i]) >= 0.5 for i in ok)
    assert len(set(thompson_batch([(m, 1.0)], C[:10], 12, log_prior=bad[:10], seed=3))) == 10  # all, once each


def test_a_wide_batch_follows_the_batch_rule():
    """``batch_rule="auto"`` takes Thompson picks from ``thompson_from`` pending trials on, the believer below; both
    return distinct unmeasured configurations."""
    sp = _space()
    for rule, expect in (("auto", ("believer", "believer", "thompson", "thompson")), ("believer", ("believer",) * 4),
                         ("thompson", ("thompson",) * 4)):
        s = DGPSearch(sp, replace(FAST, batch_rule=rule, thompson_from=16))
        assert (s._batch_rule(4), s._batch_rule(15), s._batch_rule(16), s._batch_rule(40)) == expect
    assert SearchSettings().batch_rule == "auto" and SearchSettings().thompson_from == 48
    s = DGPSearch(sp, replace(FAST, batch_rule="auto", thompson_from=8))
    for c in sp.sample_many(12, np.random.default_rng(1)):
        s.observe(c, float((c[0] - 200) ** 2 / 1e4 + 1))
    first = s.suggest_batch(8)
    assert s.stats.get("thompson", 0) == 0
    more = s.suggest_batch(8, pending=first)
    assert len(set(first + more)) == 16 and not set(first + more) & s.seen
    assert s.stats["thompson"] == 8


def test_queue_paused_reads_a_consistent_search():
    s = DGPSearch(_space(), FAST)
    q = ProposalQueue(s, batch_size=4, max_staleness=2, wait_s=30.0)
    for i in range(6):
        c = q.suggest()
        q.observe(c, float(i))
    with q.paused() as search:
        assert len(search.observed) == 6
    q.close()


@pytest.mark.parametrize("bad", [{"queue": "sometimes"}, {"queue_staleness": -1}, {"queue_refit_every": 0}])
def test_bad_queue_settings_are_refused(bad):
    from raydgp.errors import ConfigError

    with pytest.raises(ConfigError):
        SearchSettings(**bad)
