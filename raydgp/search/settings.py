"""Settings of the three-stage search (frozen, validated)."""

from __future__ import annotations

from dataclasses import dataclass, field

from raydgp.dgp.model import DGPSettings
from raydgp.errors import ConfigError

INIT_MODES = ("dgp", "random")
QUEUE_MODES = ("auto", "on", "off")
MEMBER_PICKS = ("mixture", "sample")
TRUST_PAIRS = ("all", "top")
MEMBER_MIXES = ("ei", "share")
#: When the additive member is fitted (``additive_member``).
ADDITIVE_MODES = ("auto", "on", "off")
SKETCH_MIN_WHEN = ("distrust", "always")
BATCH_RULES = ("believer", "thompson", "auto")


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
        cold_steps: Adam steps of a from-scratch fit without history (after its exact-GP start).
        cold_member_steps: Adam steps of the cold member's fresh fit beside a history (``trust``; after the same
            exact-GP start). Measured in the replay (8 layers, 2 seeds, budget 40; BENCHMARKS.md section 3, "What a
            proposal costs"): 20 steps instead of 50 left the transfer search's median trials to 5% at 20 (mean 19.2
            -> 18.4) and halved its wall (118 -> 60 s per target, median), while the search *without* history
            lost with 20 (median best after 40 trials 1.14 -> 1.27 of the best): there the cold model is the only
            model, here the mixture's other members carry the search while it is young.
        distrust_cold_steps: with ``trust``, the cold member's fresh fit takes ``cold_steps`` instead of
            ``cold_member_steps`` while the history's members (transferred, zero-shot, stacked) together hold less
            than ``idle_member_weight`` of the weight (the cold member then carries the search alone). Off by
            default: live on znver3 (NHWC, two convs no history holds, 3 seeds each; BENCHMARKS.md 7
            (``znver3-2c-nhwc``), method ``dgp_dcs``) it fired in 3 of 6 searches and the searches where it never
            fired moved as much between reruns, so no effect could be told from run-to-run variation; the replay
            had found 50 steps no better than 20 while the cold member led (BENCHMARKS.md section 3).
        cold_refresh: with ``trust``, the cold member is fitted afresh (inducing points on the data, exact-GP start,
            ``cold_member_steps``) once the target's data grew by this fraction since its last fresh fit, and
            warm-started (``refit_steps``) in between. 0 (the default): afresh on every refit while the data fit in
            the inducing points, as the search without history fits itself (measured live on two unseen convs,
            BENCHMARKS.md 7.3: better than 0.25 in 3 of 4 searches, medians 1.00 vs 1.11 ms and 3.15 vs 3.98 ms, at
            15-30% more wall).
        idle_member_weight: with ``trust``, the transferred and the cold member are refitted on every refit only
            while their trust weight is at least this; a member below it (it scores candidates at that small weight)
            is refitted once ``idle_member_every`` results arrived since its last fit, and is meanwhile still tested
            on every result it has not been fitted on, so it regains its weight when it ranks better. In a transfer
            search the cold member usually leads and the transferred model's refit was half of a proposal's time
            (BENCHMARKS.md section 3, "What a proposal costs"). 0: every member on every refit.
        idle_member_every: results between the refits of a member below ``idle_member_weight`` (1: every refit).
        dgp: the deep GP's own settings.
        seed: seed of everything random in the search.
        pretrain_seed: seed of stage 1 (None: ``seed``). Searchers that share a history and this seed share one cached
            pre-trained model (e.g. every layer chunk of a whole-model run).
        torch_threads: torch threads while fitting and scoring (small GP algebra is fastest on one thread, and on a
            tuning node the other cores are building and timing kernels).
        pretrain_threads: torch threads of stage 1 (the pre-training on the history; None: ``torch_threads``).
            ``raydgp tune`` sets the node's cores: there stage 1 runs alone on the driver before the layers start
            (2 cores, 4,000 records: 12 s on two threads against 20.5 s on one, emeraldrapids). ``raydgp layer``
            leaves it at one thread: there the trials wait for it, and with two threads the wait shrank by 2-9 s
            but the whole 64-trial runs took longer in 4 of 6 paired runs, 671 s against 627 s in all
            (``bench/ab_pretrain_threads_emeraldrapids-2c-nhwc.json``, BENCHMARKS.md 7.3b).
        async_refit: refit on new results in a background thread and keep proposing with the latest finished model
            (a result or two behind), so ``suggest()`` stays fast; proposals then depend on timing. Off: every
            ``suggest()`` first refits on all results (deterministic for a seed). The first fit of a search is
            always synchronous. Pins torch's intra-op threads to ``torch_threads`` for the process.
        evolve_generations: generations of the evolutionary search over the acquisition that adds bred candidates
            (crossovers and mutations of the best measured and best scored configurations) to each proposal's pool;
            0 = random pool and neighbours only.
        evolve_population: children bred per generation (and the most kept).
        failure_model: penalise candidates near the target's failed configurations (invalid, build/run errors,
            timeouts, wrong results) with ``log(1 - P(fail))`` on the acquisition.
        max_staleness: with ``async_refit``, the most results a proposing model may be behind: a ``suggest()`` that
            finds the model further behind waits for the running refit (and, if still behind, refits at once). 0 is
            a synchronous refit on every result; trials slower than a refit never wait.
        trust: with history, also keep a cold model (the target's data only) and score candidates under the mixture
            of the two, weighted by how well each has ranked the target's results it had not seen
            (:mod:`raydgp.search.trust`), so a misleading history costs a few trials, not the search.
        zero_shot_member: with ``trust``, the pre-trained model itself (never fitted to the target) is a third member,
            tested on every result: where fine-tuning on a few target points spoils a history that ranks the target
            well (measured in the leave-one-model-out replay, BENCHMARKS.md section 7.2), its weight moves to the
            zero-shot model, and back to the fine-tuned or the cold one when they rank better.
        queue: proposals off the critical path (:mod:`raydgp.search.proposer`): a background thread refits on every
            result and keeps a queue of batch proposals that believe every running trial, so the Ray Tune searcher's
            ``suggest()`` answers in microseconds. ``auto``: on when the searcher runs more than one trial at a time
            (Tune's ``max_concurrent_trials``); ``on`` / ``off``.
        random_interleave: probability that a proposal after the tuning set is a random configuration instead of the
            model's (SMAC3's ``ProbabilityRandomDesign``): a search whose model has written off a region it has seen
            only bad samples of (a misleading history, or an unlucky tuning set) still samples it now and then.
            Seeded by ``seed`` on its own stream; counted as ``interleaved`` in the stats.
        cold_start: with ``trust``, when the cold member outweighs the history (the history's versions rank the
            target's results worse), the next proposals are random until the target holds ``n_init`` configurations
            chosen without the history (random tuning-set points, interleaved and these): the history picked the tuning
            set, and a cold model fitted only on points a misleading history chose exploits where it was led (measured
            live on a 5x5 conv no history holds: 12.3 ms against the cold DGP's 3.2 ms, BENCHMARKS.md section 7.3).
            Counted as ``cold_start`` in the stats.
        sketch_min: after the tuning set, every structure of the space (a design space's MetaSchedule sketches) gets
            at least this many configurations (measured, failed or running) before the acquisition may write it
            off: while one has fewer, the proposal is the best-scored candidate *of that structure*. A model fitted on
            a handful of samples per sketch (or a history recorded elsewhere) locks onto one sketch early (measured
            live: the DGP searches spent 50+ of 64 trials in one sketch, while another held a 15% faster schedule;
            BENCHMARKS.md 7.3); the guided samples cost a few trials and are the model's best guesses there. 0: off.
            Counted as ``sketch_min`` in the stats. When it applies is ``sketch_min_when``.
        sketch_min_when: ``distrust`` (the default): only in a search with history while the cold member outweighs
            the history's versions (the same test as ``cold_start``), where a misleading history may have written
            off a structure the target needs (seen once live on a 5x5 conv no history holds, znver5, seed 0: the
            tuning set put 6 of 8 points in one sketch and none in the sketch of the fast schedules; 4.03 ms without,
            1.71 ms with ``sketch_min=6``); ``always``: in every search with structures. Measured over seeds it did
            not pay (BENCHMARKS.md 7 ``znver5-2c``: re-timed medians 1.02 vs 0.64 ms and 3.34 vs 3.16 ms with and
            without ``sketch_min=6``, 2 seeds on two unseen convs), so ``sketch_min`` stays 0 by default.
        member_pick: with ``trust``, how the members' weights make a proposal: ``mixture`` scores candidates by the
            weighted mixture's EI (``log sum_m w_m EI_m``; a confidently wrong member with a large EI then leads at
            a small weight), ``sample`` draws one member per proposal with probability equal to its weight and
            follows its own EI (Thompson sampling over the members: with the cold member at weight 0.8, four
            proposals in five are the search without history). Seeded on its own stream; the drawn member leads
            (``<member>_led`` in the stats). A batch (``suggest_batch``) follows one draw.
        member_mix: with ``member_pick="mixture"``, how the members' EIs add up: ``ei`` (the default:
            ``sum_m w_m EI_m``; a member whose posterior expects large improvements somewhere leads even at a small
            weight, as a history fitted on thousands of points does where it is confidently wrong); ``share`` (each
            member's EI divided by its own largest over the pool first, so that a member's best candidate scores its
            weight and the trust weights decide who leads). Measured with ``trust_pairs="top"`` (2026-12-06,
            emeraldrapids): live on two convs no history holds (64 trials, 2 seeds, every method re-timed together;
            BENCHMARKS.md 7 (``emeraldrapids-2c``), method ``dgp_shtop``) re-timed medians 1.09 and 4.05 ms against
            the cold DGP's 1.13 and 4.55 and the default's 1.34 and 5.37; but in the leave-one-task-out replay (8
            layers x 2 seeds, budget 40) median trials to 5% 29 vs 25.5 with the history's tuning set and 32.5 vs
            25 with a random one (worse on 2 of 8 layers with the history's tuning set, on 6 of 8 with a random one,
            better on 1): not the default (BENCHMARKS.md 7.2b).
        trust_pairs: which pairs of measured configurations the trust's ranking test counts
            (:class:`~raydgp.search.trust.TrustTracker`): ``all`` (the default) every pair; ``top`` only pairs whose
            better point is among the best quarter measured, so that a member earns weight by telling the fast
            configurations from the rest and ordering them, where the search decides (a history that knows which
            schedules are slow on any CPU outranks the cold model under ``all`` while it misleads among the fast
            ones). Measured together with ``member_mix`` (above).
        stacked_member: with ``trust``, a fourth member (:mod:`raydgp.dgp.stacked`): a cold DGP fitted on the
            residuals of the zero-shot model's mean, scaled by a slope fitted on the target's results (``>= 0``), as
            Google Vizier stacks a study's GP on its predecessors'. A history that ranks the target well lends its
            shape; one that does not gets slope 0 and the member is the cold model. One more fresh cold fit per
            refit. The fitted slope is ``stacked_slope`` in the stats.
        additive_member: an additive GP (:mod:`raydgp.dgp.additive`: one kernel per parameter, summed) beside the
            search's own model, weighed against it by the same prequential ranking test as the history's members
            (:mod:`raydgp.search.trust`): it shares a categorical value's effect across the other parameters, which
            the deep GP cannot with few results, and loses its weight where the parameters interact. ``auto``: on in
            searches without history over ordinary spaces (the Ray Tune spaces of
            :class:`~raydgp.space.param_space.ParamSpace`, which name their parameters' columns, ``column_groups``);
            ``on``: wherever the space names column groups, TVM design spaces too (a group per knob slot; in the
            replay it did not clearly beat the cold DGP there: BENCHMARKS.md 7.2 (``znver4-2c``)), and beside a
            history; ``off``. One exact-GP fit per refit (about 0.3 s at 40 points on two cores), on at most
            300 results (:data:`raydgp.dgp.additive.MAX_POINTS`: the best half and the most recent).
        queue_staleness: with the queue, the most results a handed-out proposal's model may be behind (None: the
            larger of ``max_staleness`` and half the width, so that results arriving during one refit do not starve
            the workers).
        queue_max_batch: with the queue run wide, the most proposals one batch may hold. A batch is as wide as the
            search, or, when computing one (refit and scoring) takes longer than the interval between results, as
            many as the results expected while the next one is computed, plus one, up to this: otherwise every
            result supersedes a batch of two before it is used and the workers wait for the model (measured on a
            2-core CPU, one conv, two trials in flight: a proposal every 2.9 s while a trial took 0.8 s). 0: always
            as wide as the search. None (auto): 8 where the model shares the node's cores with the trials (raydgp's
            own jobs: the searcher has a compute guard), 0 elsewhere: a Ray Tune user's fast trials then get
            proposals at most one batch of the search's width behind, not up to 8 results (as a plain searcher on
            Hartmann-6 with trials faster than a refit, 40 trials 2 at a time, median of 5 seeds: regret 1.32 with
            growing batches, random search 1.30, batches as wide as the search 0.34, Optuna TPE 0.50, refitting on
            every result 0.157: BENCHMARKS.md 7.1 (``emeraldrapids-2c``)).
        prefetch: ``on``: a job that knows its history before its trials start (``raydgp layer``) starts stage 1
            in the background at once (:meth:`~raydgp.search.loop.DGPSearch.prefetch_pretrained`), to overlap Ray's
            start, the untuned baseline and the first trials; off (the default): stage 1 runs when the first
            proposal needs it, and the trials wait for it (23-30 s on 2 cores with a fresh stage-1 cache). Proposals
            are the same either way. Measured on 2 cores (emeraldrapids, two unseen NHWC layers x two seeds, fresh
            caches, interleaved; ``bench/ab_prefetch_emeraldrapids-2c-nhwc.json``): on, the search took longer
            in 4 of 4 (77-104 s against 63-93 s): the stall shrank to 9 s, but stage 1 beside the builds slowed
            both more than it saved. Off until a node with cores to spare shows otherwise. ``raydgp tune`` refuses
            it (its layers share one stage 1).
        batch_rule: how a batch's model picks are chosen (:mod:`raydgp.search.batch`): ``believer`` (greedy EI, each
            pending point and earlier pick believed at its posterior mean), ``thompson`` (each pick the maximum of a
            joint posterior sample; the pending points are not believed, the batch's earlier picks are) or ``auto``
            (``thompson`` when ``thompson_from`` or more trials are pending beside the batch, the believer below).
            Emulated on Hartmann-6 (BENCHMARKS.md section 8 (``znver3-2c``), six seeds): 64 wide, each batch of 16
            proposed beside 48 running trials, believing them pushed the believer's picks away from the
            posterior's mass (median regret after 256 trials 0.377; Thompson 0.246, better in 5 of 6 seeds); 32
            wide, beside 24, the believer was as good (0.128 against 0.105, better in 4 of 6 seeds).
        thompson_from: see ``batch_rule``; 48 by the measurement above.
        queue_refit_every: with the queue run wide, the results that arrive before the proposer refits while its
            newest batch still holds fresh proposals (a dry queue is refilled on the first new result; the newest
            batch believed the trials then running, Kriging believer). None (auto): 2 where the model shares the
            node's cores with the builds and timings (a CPU node; the searcher then has a compute guard), 1 elsewhere.
            On a 2-core CPU with two trials in flight a refit on every result kept one core fitting all the time
            and the trials waited for proposals (BENCHMARKS.md section 6).
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
    cold_member_steps: int = 20
    distrust_cold_steps: bool = False
    cold_refresh: float = 0.0
    idle_member_weight: float = 0.2
    idle_member_every: int = 4
    dgp: DGPSettings = field(default_factory=DGPSettings)
    seed: int = 0
    torch_threads: int = 1
    pretrain_threads: int | None = None
    pretrain_seed: int | None = None
    async_refit: bool = False
    evolve_generations: int = 3
    evolve_population: int = 64
    failure_model: bool = True
    max_staleness: int = 1
    trust: bool = True
    zero_shot_member: bool = True
    queue: str = "auto"
    queue_staleness: int | None = None
    queue_max_batch: int | None = None
    queue_refit_every: int | None = None
    random_interleave: float = 0.0
    cold_start: bool = True
    sketch_min: int = 0
    sketch_min_when: str = "distrust"
    member_pick: str = "mixture"
    trust_pairs: str = "all"
    member_mix: str = "ei"
    stacked_member: bool = False
    additive_member: str = "auto"
    prefetch: bool = False
    batch_rule: str = "auto"
    thompson_from: int = 48

    def __post_init__(self):
        if self.init not in INIT_MODES:
            raise ConfigError(f"init={self.init!r}: choose one of {INIT_MODES}")
        if self.n_init < 1 or self.pool_size < 1:
            raise ConfigError("n_init and pool_size must be >= 1")
        if not 0 < self.pool_refresh <= 1:
            raise ConfigError(f"pool_refresh={self.pool_refresh}: must be in (0, 1]")
        if self.prior_strength < 0:
            raise ConfigError("prior_strength must be >= 0")
        if self.queue not in QUEUE_MODES:
            raise ConfigError(f"queue={self.queue!r}: choose one of {QUEUE_MODES}")
        if self.queue_max_batch is not None and self.queue_max_batch < 0:
            raise ConfigError(f"queue_max_batch={self.queue_max_batch}: must be >= 0 (0: batches as wide as the "
                              f"search) or None (auto)")
        if self.queue_refit_every is not None and self.queue_refit_every < 1:
            raise ConfigError(f"queue_refit_every={self.queue_refit_every}: must be >= 1 or None (auto)")
        if self.queue_staleness is not None and self.queue_staleness < 0:
            raise ConfigError(f"queue_staleness={self.queue_staleness}: must be >= 0 or None")
        if not 0.0 <= self.random_interleave < 1.0:
            raise ConfigError(f"random_interleave={self.random_interleave}: must be in [0, 1)")
        if self.member_mix not in MEMBER_MIXES:
            raise ConfigError(f"member_mix={self.member_mix!r}: choose one of {MEMBER_MIXES}")
        if self.trust_pairs not in TRUST_PAIRS:
            raise ConfigError(f"trust_pairs={self.trust_pairs!r}: choose one of {TRUST_PAIRS}")
        if self.member_pick not in MEMBER_PICKS:
            raise ConfigError(f"member_pick={self.member_pick!r}: choose one of {MEMBER_PICKS}")
        if self.additive_member not in ADDITIVE_MODES:
            raise ConfigError(f"additive_member={self.additive_member!r}: choose one of {ADDITIVE_MODES}")
        if self.sketch_min_when not in SKETCH_MIN_WHEN:
            raise ConfigError(f"sketch_min_when={self.sketch_min_when!r}: choose one of {SKETCH_MIN_WHEN}")
        if self.sketch_min < 0:
            raise ConfigError(f"sketch_min={self.sketch_min}: must be >= 0 (0: off)")
        if self.cold_steps < 0 or self.cold_member_steps < 0 or self.refit_steps < 0:
            raise ConfigError(f"cold_steps={self.cold_steps}, cold_member_steps={self.cold_member_steps}, "
                              f"refit_steps={self.refit_steps}: each must be >= 0")
        if self.cold_refresh < 0:
            raise ConfigError(f"cold_refresh={self.cold_refresh}: must be >= 0 (0: a fresh cold fit on every result)")
        if self.torch_threads < 1 or (self.pretrain_threads is not None and self.pretrain_threads < 1):
            raise ConfigError(f"torch_threads={self.torch_threads}, pretrain_threads={self.pretrain_threads}: "
                              f"each must be >= 1 (pretrain_threads may be None: torch_threads)")
        if self.max_staleness < 0:
            raise ConfigError(f"max_staleness={self.max_staleness}: must be >= 0 (0: refit on every result)")
        if self.batch_rule not in BATCH_RULES or self.thompson_from < 1:
            raise ConfigError(f"batch_rule={self.batch_rule!r}, thompson_from={self.thompson_from}: choose a rule "
                              f"of {BATCH_RULES} and thompson_from >= 1")
        if not 0.0 <= self.idle_member_weight < 1.0 or self.idle_member_every < 1:
            raise ConfigError(f"idle_member_weight={self.idle_member_weight} must be in [0, 1) (0: every member on "
                              f"every refit) and idle_member_every={self.idle_member_every} >= 1")


#: Settings a job sets itself (from its own flags) and that ``--search-option`` therefore does not take.
JOB_OWNED = ("seed", "pretrain_seed", "dgp")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def parse_search_options(options) -> dict:
    """``KEY=VALUE`` strings (``raydgp layer/tune --search-option``) as keyword arguments of :class:`SearchSettings`,
    each value parsed as its field's type (bools: true/false/on/off/1/0; ``none`` for the optional integers).

    Raises:
        ConfigError: not ``KEY=VALUE``, an unknown or job-owned key, or a value of the wrong type.
    """
    from dataclasses import fields

    known = {f.name: f for f in fields(SearchSettings) if f.name not in JOB_OWNED}
    out = {}
    for opt in options or ():
        key, sep, text = str(opt).partition("=")
        key, text = key.strip().replace("-", "_"), text.strip()
        if not sep or not key:
            raise ConfigError(f"search option {opt!r}: write KEY=VALUE, e.g. random_interleave=0.2")
        if key in JOB_OWNED:
            raise ConfigError(f"search option {key!r} is set by the command's own flags (--seed, --history)")
        if key not in known:
            raise ConfigError(f"unknown search option {key!r}; choose from {', '.join(sorted(known))}")
        default = known[key].default
        try:
            if isinstance(default, bool):
                if text.lower() not in _TRUE + _FALSE:
                    raise ValueError(text)
                value = text.lower() in _TRUE
            elif default is None:  # the optional integers (queue_staleness, queue_refit_every)
                value = None if text.lower() == "none" else int(text)
            else:
                value = type(default)(text)
        except ValueError:
            kind = "true or false" if isinstance(default, bool) else type(default or 0).__name__
            raise ConfigError(f"search option {key}={text!r}: expected {kind}") from None
        out[key] = value
    SearchSettings(**out)  # the settings' own checks (ranges, choices) now, with the flag still in view
    return out
