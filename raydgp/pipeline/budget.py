"""Share a whole model's trial budget among its layers (no Ray, no TVM: plain bookkeeping, unit-tested).

In the spirit of MetaSchedule's gradient task scheduler: after a warm-up chunk for every layer, the next chunk goes to
the layer whose tuning is expected to cut end-to-end latency most,

    priority = weight x best_ms x expected relative gain,

where the expected gain is the relative improvement the layer's last chunk bought, a small optimism bonus that shrinks
with its trial count, and the layer's *headroom*: how far its FLOP rate is from what this machine can do (a fraction
``attainable`` of the peak measured once per node, :mod:`raydgp.measure.peak`). A compute-bound layer far below the peak
keeps a high priority, and is not called converged, while others are.

Layers with the same anchor loop nest (*siblings*: the same conv with another epilogue) form a group: once one member
is warm, the others start from its best configurations (the pipeline seeds them) and get a short warm-up of
``sibling_warmup`` trials.

Warm-up is shorter (2 trials) for layers that are cheap already by their untuned latency. Layers stop early when they
are *converged* (no improvement over their last ``patience`` trials, and not far below the peak) or *cheap* (below
``cheap_fraction`` of the model's estimated latency), or when their space is exhausted. Converged compute-bound layers
still below the node's peak are searched again whenever no unconverged layer can take a chunk (the most urgent by the
same priority first), so trials asked for are not left unspent while the machine says a layer could run faster; the run
ends before its budget only where no such layer is left, or no peak is known.

No decision is taken on stale information: while a layer's warm-up results are still out, a chunk does not go to an
idle layer that would matter far less than the pending one might.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class LayerState:
    """What the scheduler knows about one layer.

    Attributes:
        name: layer (task) name.
        weight: calls per inference.
        space_size: number of configurations in its design space.
        untuned_ms: latency of the untuned build of this layer (NaN if unknown), ms.
        trials: trials measured so far.
        curve: best latency (ms) after each trial so far (inf while none succeeded).
        running: trials handed out and not yet returned.
        stalls: chunks that came back without a single trial (a failing experiment); two and the layer is dropped.
        group: sibling group (layers with the same anchor loop nest); "" = a group of its own.
        flops: floating-point operations of one call (NaN: unknown, no headroom term).
        compute_bound: whether the FLOP rate is a meaningful target (convs, dense; not pools or elementwise).
        synced_at: the group leader's best (ms) when this follower was last handed its leader's configurations.
        released: a follower found to differ from its leader: searched on its own from then on.
    """

    name: str
    weight: int
    space_size: float
    untuned_ms: float = math.nan
    group: str = ""
    flops: float = math.nan
    compute_bound: bool = False
    synced_at: float = math.inf
    released: bool = False
    trials: int = 0
    curve: list = field(default_factory=list)
    running: int = 0
    stalls: int = 0

    @property
    def best_ms(self) -> float:
        return self.curve[-1] if self.curve else math.inf

    def estimate_ms(self) -> float:
        """Best known latency of the layer, or the untuned one before any success (ms)."""
        if math.isfinite(self.best_ms):
            return self.best_ms
        return self.untuned_ms if math.isfinite(self.untuned_ms) else 1.0

    def add(self, latencies_ms) -> None:
        """Record finished trials (NaN for failures)."""
        best = self.best_ms
        for v in latencies_ms:
            if v is not None and math.isfinite(v) and v < best:
                best = v
            self.curve.append(best)
            self.trials += 1


class Budget:
    """Hand out chunks of trials to layers until the total budget is spent.

    Args:
        layers: the layers' states (may already hold trials from an earlier, interrupted run).
        total_trials: the budget for the whole model, trials (including those already done).
        chunk: trials per chunk after warm-up.
        warmup: trials every layer gets first (capped by its space size).
        patience: a layer whose best has not moved in this many trials is converged.
        cheap_fraction: a layer whose weight x latency is below this share of the model's estimate stops after warm-up.
        peak_gflops: the node's measured peak (GFLOP/s); None: no headroom term.
        attainable: the share of the peak a good schedule can reach (the headroom is measured against it).
        sibling_warmup: warm-up trials of a layer whose sibling is already warm.
        pending_ratio: a pending warm-up holds back chunks for idle layers whose priority is below its potential
            priority (weight x untuned latency) divided by this.
        sync_trials: trials of a follower's sync chunk (its leader's best configurations).
        sync_gain: a follower is synced again once its leader's best improved by this fraction since the last sync.
        release_ratio: a follower slower than ``release_ratio`` x its leader's best after two syncs is searched on its
            own.
    """

    def __init__(self, layers: list[LayerState], total_trials: int, chunk: int = 16, warmup: int = 8,
                 patience: int = 32, cheap_fraction: float = 0.01, peak_gflops: float | None = None,
                 attainable: float = 0.6, sibling_warmup: int = 2, pending_ratio: float = 4.0, sync_trials: int = 2,
                 sync_gain: float = 0.02, release_ratio: float = 1.15):
        if total_trials < 1:
            raise ValueError(f"total_trials must be >= 1, got {total_trials}")
        self.layers = {l.name: l for l in layers}
        self.total = int(total_trials)
        n = max(1, len(layers))
        self.warmup = max(1, min(int(warmup), self.total // n)) if self.total >= n else 1
        self.chunk = max(1, int(chunk))
        self.patience = int(patience)
        self.cheap_fraction = float(cheap_fraction)
        self.peak_gflops = float(peak_gflops) if peak_gflops and peak_gflops > 0 else None
        self.attainable = float(attainable)
        self.sibling_warmup = max(1, int(sibling_warmup))
        self.pending_ratio = float(pending_ratio)
        self.sync_trials = max(1, int(sync_trials))
        self.sync_gain = float(sync_gain)
        self.release_ratio = float(release_ratio)

    # -- accounting ----------------------------------------------------------------------------------------------------
    @property
    def used(self) -> int:
        return sum(l.trials + l.running for l in self.layers.values())

    @property
    def finished(self) -> int:
        """Trials measured (returned), not counting those running."""
        return sum(l.trials for l in self.layers.values())

    def layers_done(self) -> int:
        """Layers that will get no further trial as things stand: converged, cheap or exhausted, none running."""
        return sum(1 for l in self.layers.values()
                   if l.running == 0 and ((self.converged(l) and not (self.remaining and self.resumable(l)))
                                          or self.cheap(l) or self._cap(l) == 0
                                          or (self._warm(l) and self.following(l) and not self._leader_improved(l))))

    @property
    def remaining(self) -> int:
        return max(0, self.total - self.used)

    def model_estimate_ms(self) -> float:
        """Sum over layers of weight x best (or untuned) latency, ms."""
        return sum(l.weight * l.estimate_ms() for l in self.layers.values())

    def _cap(self, l: LayerState) -> int:
        if l.stalls >= 2:
            return 0
        return max(0, int(min(l.space_size, 1e9)) - l.trials - l.running)

    def siblings(self, l: LayerState) -> list[LayerState]:
        """The other members of the layer's group."""
        if not l.group:
            return []
        return [o for o in self.layers.values() if o.group == l.group and o.name != l.name]

    def _sibling_warm(self, l: LayerState) -> bool:
        return any(o.trials >= min(self.warmup, int(min(o.space_size, 1e9))) and math.isfinite(o.best_ms)
                   for o in self.siblings(l))

    def warmup_of(self, l: LayerState) -> int:
        """Warm-up trials of a layer: the full warm-up; ``sibling_warmup`` once a sibling is warm (it starts from the
        sibling's best); 2 for a layer that is cheap by its untuned latency."""
        n = self.warmup
        if self.cheap(l):
            n = min(n, 2)
        if self._sibling_warm(l):
            n = min(n, self.sibling_warmup)
        return max(1, min(n, int(min(l.space_size, 1e9))))

    def gflops(self, l: LayerState) -> float:
        """The layer's best FLOP rate so far, GFLOP/s (NaN when unknown)."""
        if not (math.isfinite(l.flops) and math.isfinite(l.best_ms) and l.best_ms > 0):
            return math.nan
        return l.flops / (l.best_ms * 1e-3) / 1e9

    def headroom(self, l: LayerState) -> float:
        """``1 - rate / (attainable x peak)``, clipped to [0, 1]: the share of the layer's time a good schedule could
        still save. 0 without a peak, for layers that are not compute-bound, or before any success."""
        rate = self.gflops(l)
        if self.peak_gflops is None or not l.compute_bound or not math.isfinite(rate):
            return 0.0
        return min(1.0, max(0.0, 1.0 - rate / (self.attainable * self.peak_gflops)))

    def _warm(self, l: LayerState) -> bool:
        return l.trials + l.running >= self.warmup_of(l)

    def converged(self, l: LayerState) -> bool:
        """No gain in the last ``patience`` trials; a layer still below half of the attainable rate gets three times
        that patience."""
        if l.trials < max(self.warmup, self.patience) or not math.isfinite(l.best_ms):
            return False
        patience = self.patience * (3 if self.headroom(l) > 0.5 else 1)
        return l.curve[-patience - 1] <= l.best_ms if len(l.curve) > patience else False

    def resumable(self, l: LayerState) -> bool:
        """A converged layer that the machine says could still run faster (compute-bound, below the node's peak,
        space left): it is searched again whenever no unconverged layer can take a chunk, so that the trials asked
        for are spent rather than left while a layer sits below the peak. Its best during the search is
        what counts here, and on a noisy host that best is optimistic (the best of many noisy timings): a layer can
        look at the attainable rate during the search and re-time far below it."""
        if not (self.converged(l) and not self.cheap(l) and not self.following(l) and self._cap(l) > 0):
            return False
        rate = self.gflops(l)
        return self.peak_gflops is not None and l.compute_bound and math.isfinite(rate) and \
            rate < self.peak_gflops

    def stop_reason(self, l: LayerState) -> str:
        """Why the layer gets no further trial as things stand (``""`` while it may): for a run that ends before its
        budget is spent, said per layer in the log and the summary."""
        if self._cap(l) == 0:
            return "failing experiments" if l.stalls >= 2 else "space exhausted"
        if self.cheap(l):
            return "cheap (under {:.0%} of the model's latency)".format(self.cheap_fraction)
        if self.following(l):
            return "follows its sibling group's leader"
        if self.converged(l) and not self.resumable(l):
            rate = self.gflops(l)
            at = f" at {rate / self.peak_gflops:.0%} of the node's peak" if self.peak_gflops and l.compute_bound \
                and math.isfinite(rate) else ""
            return f"converged{at} (no gain in its last {self.patience} trials)"
        return ""

    def cheap(self, l: LayerState) -> bool:
        total = self.model_estimate_ms()
        return total > 0 and l.weight * l.estimate_ms() < self.cheap_fraction * total

    def expected_gain(self, l: LayerState) -> float:
        """Relative latency improvement expected from the layer's next chunk (dimensionless)."""
        if not math.isfinite(l.best_ms):
            return 1.0
        k = min(len(l.curve), max(self.chunk, 1))
        before = l.curve[-k - 1] if len(l.curve) > k else (l.untuned_ms if math.isfinite(l.untuned_ms) else l.best_ms)
        recent = max(0.0, (before - l.best_ms) / max(before, 1e-12)) if math.isfinite(before) else 1.0
        return recent + 0.1 / math.sqrt(max(l.trials, 1)) + 0.5 * self.headroom(l)

    def priority(self, l: LayerState) -> float:
        return self.group_weight(l) * l.estimate_ms() * self.expected_gain(l)

    # -- decisions -----------------------------------------------------------------------------------------------------
    def next_chunk(self, max_trials: int | None = None) -> tuple[str, int] | None:
        """The next (layer, trials) to run, or None when nothing is left to hand out now.

        Warm-up first (largest weight x latency first), then a follower's sync when its group's leader improved, then
        by priority. Chunks are never larger than what is left of the budget or of the layer's space, nor than
        ``max_trials`` (what fits in the time left; at least 1). Returns None also while every candidate layer already
        has trials running, or while a pending warm-up may matter more.
        """
        pick = self._pick()
        if pick is None:
            return None
        l, n, sync = pick
        if max_trials is not None:
            n = max(1, min(n, int(max_trials)))
        if sync or (self.following(l) and math.isfinite(self.leader(l).best_ms)):
            l.synced_at = self.leader(l).best_ms  # its chunk starts from the leader's best (the pipeline seeds it)
        return self._hand_out(l, n)

    def _pick(self) -> tuple[LayerState, int, bool] | None:
        if self.remaining <= 0:
            return None
        idle = [l for l in self.layers.values() if l.running == 0 and self._cap(l) > 0]
        cold = [l for l in idle if not self._warm(l)]
        # A layer whose sibling is warming up waits for it (it will start from the sibling's best), unless no other
        # layer needs its warm-up.
        lone = [l for l in cold if not any(o.running and not math.isfinite(o.best_ms) for o in self.siblings(l))]
        cold = lone or cold
        if cold:
            l = max(cold, key=lambda l: l.weight * l.estimate_ms())
            n = min(self.warmup_of(l) - l.trials - l.running, self._cap(l), self.remaining)
            return l, max(1, n), False
        syncs = [f for f in idle if self.following(f) and self._leader_improved(f)]
        if syncs:
            f = max(syncs, key=lambda f: f.weight * f.estimate_ms())
            # the budget's last trials are shared among the followers waiting for a sync: one each at least
            return f, min(self.sync_trials, self._cap(f), max(1, self.remaining // len(syncs))), True
        live = [l for l in idle if not self.converged(l) and not self.cheap(l) and not self.following(l)]
        if not live:
            # no unconverged layer can take a chunk now while trials are left: the converged ones still below the
            # node's peak go on (trials asked for are spent where the machine says a layer could run faster)
            live = [l for l in idle if self.resumable(l)]
        if not live:
            return None
        live.sort(key=self.priority, reverse=True)
        if self.priority(live[0]) * self.pending_ratio < self.pending_potential():
            return None  # a warm-up whose results are still out may matter far more: wait for it
        # what is left of the budget is kept for the followers' last syncs: the most urgent layer that leaves it
        for l in live:
            n = min(self.chunk, self._cap(l), self.remaining - self._sync_reserve(exclude=l))
            if n >= 1:
                return l, n, False
        if any(o.running for o in self.layers.values()):
            return None  # a running chunk may still need the reserve (its leader improves: its followers sync)
        # Nothing runs and nothing else can use it: the reserve was kept for syncs after the chunk of a leader that
        # cannot get one without it. The leader gets what is left but one trial per follower (each follower's last
        # sync then measures the leader's new best), or all of it where that leaves none: the trials asked for are
        # spent, none held back.
        l = live[0]
        keep = self._sync_reserve(exclude=l) // self.sync_trials
        n = min(self.chunk, self._cap(l), self.remaining - keep if self.remaining > keep else self.remaining)
        return (l, n, False) if n >= 1 else None

    def _sync_reserve(self, exclude: LayerState | None = None) -> int:
        """Trials kept for followers whose leader is still searching or has improved since their last sync (the
        leader about to get a chunk counts as searching)."""
        n = 0
        for f in self.layers.values():
            # a follower with nothing left to measure (a one-point space: a transpose) can take no sync
            if self._warm(f) and self.following(f) and self._cap(f) > 0:
                lead = self.leader(f)
                if lead.running or lead is exclude or self._leader_improved(f):
                    n += self.sync_trials
        return n

    # -- sibling groups ------------------------------------------------------------------------------------------------
    def leader(self, l: LayerState) -> LayerState:
        """The group's leader: the member with the largest weight x untuned latency (the one tuned first)."""
        members = [l] + self.siblings(l)
        return max(members, key=lambda o: (o.weight * (o.untuned_ms if math.isfinite(o.untuned_ms) else 0.0),
                                           o.weight, o.name))

    def following(self, l: LayerState) -> bool:
        """Whether ``l`` follows its group's leader: it gets no search chunks of its own, only syncs (the leader's best
        configurations, measured on ``l``) whenever the leader improves. A follower that stays more than
        ``release_ratio`` slower than its leader after two syncs is released: it is searched on its own."""
        if not l.group or self.leader(l) is l:
            return False
        # released when, synced twice, it still stays slower than what its leader had at its last sync
        if l.trials >= self.warmup_of(l) + 2 * self.sync_trials and math.isfinite(l.synced_at) and \
                l.running == 0 and l.best_ms > self.release_ratio * l.synced_at:
            l.released = True
        return not l.released

    def _leader_improved(self, f: LayerState) -> bool:
        lead = self.leader(f)
        if not math.isfinite(lead.best_ms):
            return False
        return not math.isfinite(f.synced_at) or lead.best_ms < f.synced_at * (1.0 - self.sync_gain)

    def group_weight(self, l: LayerState) -> int:
        """Calls per inference that a gain on ``l`` buys: its own, plus its followers' if it leads a group."""
        if not l.group or self.leader(l) is not l:
            return l.weight
        return l.weight + sum(f.weight for f in self.siblings(l) if self.following(f))

    def pending_potential(self) -> float:
        """The largest priority a running layer without any result yet might turn out to have (weight x untuned)."""
        pend = [l.weight * l.estimate_ms() for l in self.layers.values() if l.running and not math.isfinite(l.best_ms)]
        return max(pend, default=0.0)

    def _hand_out(self, l: LayerState, n: int) -> tuple[str, int]:
        l.running += n
        return l.name, n

    def finish(self, name: str, latencies_ms, handed_out: int) -> None:
        """A chunk came back: ``latencies_ms`` per finished trial (NaN = failed); fewer than handed out is fine."""
        l = self.layers[name]
        l.running = max(0, l.running - handed_out)
        latencies_ms = list(latencies_ms)
        l.stalls = 0 if latencies_ms else l.stalls + 1
        l.add(latencies_ms)

    def done(self) -> bool:
        """True when no further chunk can be handed out and none is running."""
        if any(l.running for l in self.layers.values()):
            return False
        return self._pick() is None
