"""Proposals off the critical path: a background proposer that keeps a queue of batch proposals fresh.

A tuner on a cluster can keep at most (trial time / proposal time) workers busy when every proposal is computed inside
``suggest()``. :class:`ProposalQueue` owns a :class:`~raydgp.search.loop.DGPSearch` and one background thread that
refits the model on every result that arrived and refills a queue with a batch of proposals that believes every
running trial (:meth:`DGPSearch.suggest_batch`); ``suggest()`` pops from that queue under a lock and answers in
microseconds. No Ray, no TVM here: the Ray Tune adapter (:mod:`raydgp.raytune.dgp_searcher`) drives it.

Freshness. Every proposal carries the number of results its model had seen (the *version*), and every batch replaces
the queue. Run wide, ``suggest()`` hands out proposals of the newest batch (or of one at most ``max_staleness`` results
behind): the model is never more than one batch computation behind the results, and the thread starts the next batch as
soon as a result arrives. When a batch takes longer to compute than the interval between results (a refit slower than
a trial), a batch holds the results expected meanwhile, plus one (``max_batch``), so the workers do not wait for the
model. Run serially, it hands out only proposals at most ``max_staleness`` results behind and
otherwise waits or answers "not ready" (None). ``max_staleness=0`` with one trial at a time is fully
deterministic for a seed: each proposal comes from the model refitted on every earlier result.

Correctness. The background thread is the only one that touches the search object; results reach it through an inbox.
A configuration is handed out at most once, ever; a result is never dropped (results of configurations the queue never
handed out, e.g. a warm start, are observed too).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import threading
import time
from typing import Hashable

log = logging.getLogger("raydgp.search")


class ProposalQueue:
    """A queue of fresh batch proposals, refilled by one background thread.

    Args:
        search: the :class:`~raydgp.search.loop.DGPSearch` (touched only by the background thread from now on).
        batch_size: proposals computed per refill (the width the search runs at is a good value).
        max_staleness: the most results a handed-out proposal's model may be behind the results received.
        wait_s: how long ``suggest()`` waits for a fresh proposal before answering None ("not ready").
        serial: one trial at a time: a batch is computed only on new results and a proposal is handed out only
            within ``max_staleness`` (0: a run is deterministic for a seed, each proposal from the model refitted on
            every earlier result). Wide (False): a dry queue is refilled without waiting for results, and the newest
            batch is always fresh enough (results that arrive while the next batch is computed cannot starve the
            workers; the model is then at most one batch computation behind).
        running: configurations already running (e.g. trials restored from a checkpoint): never proposed, believed.
        max_batch: wide only: when computing a batch takes longer than the interval between results, a batch of
            ``batch_size`` is used up (and each result supersedes it) long before the next one is ready, and the
            workers wait for the model: then a batch holds as many proposals as results are expected while the next
            one is computed (the last batch's time over the median interval between the recent results, plus one),
            up to ``max_batch``. None or at most ``batch_size``: always ``batch_size``.
        refit_every: wide only: results to wait for before refitting while the newest batch still holds fresh
            proposals (1: refit on every result). A dry queue is refilled on the first new result. Where the model
            shares the cores with the trials, a refit per result can keep a core busy fitting all the time.
    """

    def __init__(self, search, batch_size: int = 8, max_staleness: int = 0, wait_s: float = 0.0,
                 serial: bool = False, running=(), max_batch: int | None = None,
                 refit_every: int = 1):
        self.search = search
        self.refit_every = max(1, int(refit_every))
        self.batch_size = max(1, int(batch_size))
        self.max_batch = max(self.batch_size, int(max_batch or 0))
        self._arrivals: collections.deque = collections.deque(maxlen=9)  # monotonic times of the latest results
        self.max_staleness = max(0, int(max_staleness))
        self.wait_s = float(wait_s)
        self.serial = serial
        self._cv = threading.Condition()
        self._inbox: list[tuple[Hashable, float | None, str]] = []
        self._queue: collections.deque = collections.deque()  # (config, version)
        self._handed: set = set(running)  # every configuration ever handed out (or observed)
        self._running: set = set(running)  # handed out, no result yet
        self._busy = False  # the background thread is applying results or computing a batch
        self._received = 0  # results received (the current version)
        self._batch_version = -1  # version of the newest batch (-1: none yet)
        self._exhausted = False
        self._stop = False
        self._error: BaseException | None = None
        self.stats = {"batches": 0, "proposed": 0, "handed": 0, "stale_dropped": 0, "superseded": 0,
                      "not_ready": 0, "batch_failures": 0, "fallback": 0, "largest_batch": 0}
        self.timings: dict[str, list[float]] = {"suggest": [], "batch": []}
        self._thread = threading.Thread(target=self._run, name="raydgp-proposer", daemon=True)
        self._thread.start()

    # -- driver side ----------------------------------------------------------------------------------------------------
    def suggest(self, wait_s: float | None = None) -> Hashable | None:
        """A fresh proposal, or None when none is ready within ``wait_s`` (then ask again) or the space is exhausted
        (see :attr:`exhausted`)."""
        t0 = time.perf_counter()
        deadline = t0 + (self.wait_s if wait_s is None else wait_s)
        with self._cv:
            try:
                while True:
                    got = self._pop()
                    if got is not None or self._exhausted or self._stop:
                        return got
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        self.stats["not_ready"] += 1
                        return None
                    self._cv.wait(left)
            finally:
                self.timings["suggest"].append(time.perf_counter() - t0)

    def _pop(self) -> Hashable | None:
        while self._queue:
            cfg, version = self._queue.popleft()
            if cfg in self._handed:
                continue
            if self._received - version > self.max_staleness and (self.serial or version != self._batch_version):
                self.stats["stale_dropped"] += 1
                continue
            self._handed.add(cfg)
            self._running.add(cfg)
            self.stats["handed"] += 1
            self._cv.notify_all()  # the queue shrank: the proposer may refill
            return cfg
        self._cv.notify_all()
        return None

    def observe(self, config: Hashable, metric: float | None, status: str = "ok") -> None:
        """A result (of a handed-out configuration or any other of the space): queued for the background thread."""
        with self._cv:
            self._inbox.append((config, metric, status))
            self._running.discard(config)
            self._handed.add(config)
            self._received += 1
            self._arrivals.append(time.monotonic())
            self._cv.notify_all()

    @contextlib.contextmanager
    def paused(self, timeout: float = 120.0):
        """Hold the background thread idle, with every received result applied, while the caller reads the search
        object (checkpoints)."""
        end = time.monotonic() + timeout
        with self._cv:
            while (self._busy or self._inbox) and self._thread.is_alive() and time.monotonic() < end:
                self._cv.wait(0.05)
            yield self.search

    @property
    def exhausted(self) -> bool:
        """True once the proposer found nothing left to propose and nothing is queued."""
        with self._cv:
            return self._exhausted and not self._queue

    @property
    def running(self) -> set:
        with self._cv:
            return set(self._running)

    def drain(self, timeout: float = 60.0) -> None:
        """Block until every received result has been applied to the search object (tests, checkpoints)."""
        end = time.monotonic() + timeout
        with self._cv:
            while self._inbox and not self._stop and time.monotonic() < end:
                self._cv.wait(0.05)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the background thread (results already received are applied first)."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join(timeout)

    # -- background side ------------------------------------------------------------------------------------------------
    def _needs_batch(self) -> bool:
        new = self._received - self._batch_version
        fresh = sum(1 for c, _ in self._queue if c not in self._handed)  # the queue holds the newest batch only
        if new > 0:
            # new results: refit and re-propose (the newest model supersedes the queue); run wide with
            # ``refit_every``, once that many arrived or the queue ran dry
            return self.serial or new >= self.refit_every or fresh == 0
        return fresh == 0 and not self._exhausted and not self.serial

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stop and not self._inbox and not self._needs_batch():
                    self._cv.wait()
                if self._stop:
                    inbox, self._inbox = self._inbox, []
                    self._apply(inbox)
                    self._cv.notify_all()
                    return
                inbox, self._inbox = self._inbox, []
                version = self._received
                pending = list(self._running)
                q = self._next_batch_size()
                compute = self._needs_batch()  # False: results to apply while the batch lasts (refit_every)
                self._busy = True
            self._apply(inbox)
            if not compute:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()
                continue
            t0 = time.perf_counter()
            try:
                batch = self.search.suggest_batch(q, pending=pending)
                self.stats["largest_batch"] = max(self.stats["largest_batch"], len(batch))
            except Exception as e:  # noqa: BLE001 - a model failure must not stall the search: random, counted
                self.stats["batch_failures"] += 1
                self._error = e
                if self.stats["batch_failures"] == 1 or self.stats["batch_failures"] % 10 == 0:
                    log.warning("proposal batch failed (%s: %s); proposing at random (%d so far)",
                                type(e).__name__, e, self.stats["batch_failures"])
                batch = self.search.space.sample_many(q, self.search.rng,
                                                      exclude=self.search.seen | set(pending))
                self.stats["fallback"] += len(batch)
            self.timings["batch"].append(time.perf_counter() - t0)
            with self._cv:
                self.stats["batches"] += 1
                self._batch_version = version
                self.stats["superseded"] += sum(1 for c, _ in self._queue if c not in self._handed)
                self._queue = collections.deque((c, version) for c in batch if c not in self._handed)
                self.stats["proposed"] += len(self._queue)
                # nothing left to propose (every configuration measured or running): the space is exhausted
                self._exhausted = not self._queue
                self._busy = False
                self._cv.notify_all()

    def _next_batch_size(self) -> int:
        """``batch_size``, or (wide, with ``max_batch``) the results expected while the next batch is computed, plus
        ``refit_every`` (the proposals handed out before the next refit), when that is more. Called under the
        lock."""
        if self.serial:
            return self.batch_size
        if self.max_batch <= self.batch_size or not self.timings["batch"] or len(self._arrivals) < 3:
            return max(self.batch_size, min(self.max_batch, self.refit_every))
        t = list(self._arrivals)
        gaps = sorted(b - a for a, b in zip(t, t[1:]))
        interval = gaps[len(gaps) // 2]
        if interval <= 0:
            return self.max_batch
        expected = self.timings["batch"][-1] / interval
        return int(min(self.max_batch, max(self.batch_size, math.ceil(expected) + self.refit_every)))

    def _apply(self, inbox) -> None:
        for cfg, metric, status in inbox:
            self.search.observe(cfg, metric, status)


__all__ = ["ProposalQueue"]
