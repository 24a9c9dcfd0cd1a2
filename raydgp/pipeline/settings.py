"""The settings of a model run and of a layer run: one frozen, validated object each, built by the CLI and by the
Python API alike (:func:`raydgp.pipeline.model_job.tune_model` takes keyword arguments and builds a
:class:`ModelRun`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from raydgp.errors import ConfigError
from raydgp.measure.protocol import MeasureSettings
from raydgp.models.tasks import check_layout
from raydgp.raytune.trackers import TRACKERS

SEARCHERS = ("dgp", "random", "tpe", "hebo")  # tpe, hebo: Ray Tune's own, for comparisons (one layer)
TARGETS = ("llvm", "cuda")
#: Trials of a one-layer CPU run in flight by default: one timed while the next builds and the searcher refits.
CPU_IN_FLIGHT = 2
#: Trials in flight per layer experiment of a whole-model run on a CPU. One: two layer experiments already run at once
#: there, and on 2 cores their searchers' refits are what bounds the throughput; two in flight each measured 150
#: trials in the README's 400 s against 200 (BENCHMARKS.md section 6).
MODEL_CPU_IN_FLIGHT = 1


def _search_options(options, searcher: str) -> tuple:
    """``search_options`` as sorted ``(name, value)`` pairs, checked: ``KEY=VALUE`` strings (the CLI's
    ``--search-option``) are parsed; a mapping or ``(name, value)`` pairs are checked by
    :class:`~raydgp.search.SearchSettings` itself."""
    from raydgp.search.settings import JOB_OWNED, SearchSettings, parse_search_options

    if not options:
        return ()
    items = list(options.items()) if isinstance(options, dict) else list(options)
    opts = parse_search_options([o for o in items if isinstance(o, str)])
    opts.update(tuple(o) for o in items if not isinstance(o, str))
    for key in JOB_OWNED:
        if key in opts:
            raise ConfigError(f"search option {key!r} is set by the run's own settings (seed, history)")
    try:
        SearchSettings(**opts)
    except TypeError as e:
        raise ConfigError(f"search options {sorted(opts)}: {e}") from None
    if searcher != "dgp":
        raise ConfigError(f"search options ({', '.join(opts)}) set the dgp searcher's settings; the {searcher} "
                          "searcher takes none: drop --search-option or use --searcher dgp")
    return tuple(sorted(opts.items()))


def _check_common(searcher: str, trials: int, target_kind: str) -> None:
    if searcher not in SEARCHERS:
        raise ConfigError(f"unknown searcher {searcher!r}; choose one of {', '.join(SEARCHERS)}")
    if not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"trials must be an integer >= 1, got {trials!r}")
    if target_kind not in TARGETS:
        raise ConfigError(f"target {target_kind!r}: choose one of {', '.join(TARGETS)}")


@dataclass(frozen=True)
class ModelRun:
    """Everything a whole-model run is told.

    Attributes:
        model: built-in name, ``.onnx`` path or ``package.module:factory`` (:mod:`raydgp.models.importer`).
        out: output directory; the same ``out`` resumes.
        trials: total trials for the whole model (including any an interrupted run already measured).
        searcher: ``dgp`` (deep-GP BO with transfer from the history) or ``random``.
        time_budget_s: no new layer chunk starts after this many seconds (None: no limit).
        seed: seed of the searchers (each layer chunk derives its own).
        target_kind: ``llvm`` (this CPU) or ``cuda`` (one GPU per trial).
        input_shape: input shape, for PyTorch factories and dynamic ONNX inputs.
        history: extra record stores that pre-train the DGP (stage 1).
        default_history: also pre-train on the shipped dataset and the user store.
        cpus_per_trial: Ray CPUs one trial requests (builds overlap; timings take the node's lock).
        threads: threads of a timing and of the final model (None: all cores of this machine).
        address: Ray cluster address (None: ``RAY_ADDRESS`` or an embedded local Ray).
        max_concurrent_layers: layer experiments at once (None: cluster CPUs / cpus_per_trial, or GPUs).
        in_flight: trials in flight per layer experiment (None: 1 on a CPU, the cluster's GPUs on ``cuda``). On a CPU
            each layer experiment's trials share its ``cpus_per_trial`` Ray-wise, every trial still times on all
            ``threads`` and timings stay exclusive (the node's timing lock): a second trial in flight lets the next
            configuration build, and the searcher refit and propose (from its background queue, counting the running
            trial as pending), while one is timed; 1: each layer's trials one after another, each proposal from a
            model refitted on every earlier result of the chunk. Two layer experiments run at once on a 2-core node
            by default (``max_concurrent_layers``), so one's trial runs while the other's searcher refits.
        measure: measurement settings (None: defaults on ``threads`` threads).
        chunk: trials per scheduler chunk; warmup: every layer's first chunk.
        retime: after tuning, re-time each layer's best candidates (its own and its siblings') on the quiet node and
            build from those timings (:mod:`raydgp.pipeline.retime`).
        storage: Ray Tune ``storage_path`` (None: ``out/ray``).
        trackers: ``mlflow``, ``wandb``, ``tensorboard`` logger callbacks in every layer experiment.
        compare_reference: also time the framework reference (PyTorch eager / ONNX Runtime).
        search_options: :class:`~raydgp.search.SearchSettings` fields for the dgp searcher of every layer
            (``--search-option KEY=VALUE``; ``KEY=VALUE`` strings, ``(name, value)`` pairs or a mapping).
        layout: activation layout the convolutions are tuned and built in: ``auto`` (NHWC on CPU, NCHW on GPU),
            ``NHWC`` or ``NCHW`` (:func:`raydgp.models.tasks.resolve_layout`).
    """

    model: str
    out: Path
    trials: int = 300
    searcher: str = "dgp"
    time_budget_s: float | None = None
    seed: int = 0
    target_kind: str = "llvm"
    input_shape: tuple[int, ...] | None = None
    history: tuple[Path, ...] = ()
    default_history: bool = True
    cpus_per_trial: float = 1.0
    threads: int | None = None
    address: str | None = None
    max_concurrent_layers: int | None = None
    measure: MeasureSettings | None = None
    chunk: int = 16
    warmup: int = 8
    storage: str | None = None
    trackers: tuple[str, ...] = ()
    compare_reference: bool = True
    retime: bool = True
    search_options: tuple = ()
    layout: str = "auto"
    in_flight: int | None = None

    def __post_init__(self):
        if not self.model:
            raise ConfigError("no model given: pass a built-in name, an .onnx file or package.module:factory")
        _check_common(self.searcher, self.trials, self.target_kind)
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ConfigError(f"time budget must be > 0 seconds, got {self.time_budget_s}")
        if not self.cpus_per_trial > 0:
            raise ConfigError(f"cpus_per_trial must be > 0, got {self.cpus_per_trial}")
        if self.in_flight is not None and (not isinstance(self.in_flight, int) or self.in_flight < 1):
            raise ConfigError(f"in_flight (--in-flight) must be an integer >= 1, got {self.in_flight!r}")
        for name in ("threads", "max_concurrent_layers"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ConfigError(f"{name} must be an integer >= 1, got {v!r}")
        if self.chunk < 1 or self.warmup < 1:
            raise ConfigError(f"chunk and warmup must be >= 1, got {self.chunk} and {self.warmup}")
        check_layout(self.layout)
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "history", tuple(Path(p) for p in self.history))
        names = tuple(t.strip().lower() for t in self.trackers if t and t.strip())
        for t in names:
            if t not in TRACKERS:
                raise ConfigError(f"tracker {t!r}: choose from {', '.join(TRACKERS)}")
        object.__setattr__(self, "trackers", names)
        object.__setattr__(self, "search_options", _search_options(self.search_options, self.searcher))
        if dict(self.search_options).get("prefetch"):
            raise ConfigError("search option prefetch=on is for `raydgp layer`: a model run's layers share one "
                              "stage 1, trained once when the first layer needs it; drop it")

    @property
    def n_threads(self) -> int:
        return int(self.threads or os.cpu_count() or 1)

    @property
    def gpu(self) -> bool:
        return self.target_kind == "cuda"

    @property
    def chunk_width(self) -> int | None:
        """Trials in flight per layer experiment (None on ``cuda`` without ``in_flight``: the cluster's GPUs)."""
        if self.in_flight is not None:
            return self.in_flight
        return None if self.gpu else MODEL_CPU_IN_FLIGHT

    @property
    def chunk_cpus_per_trial(self) -> float:
        """Ray CPUs one trial of a layer experiment requests: on a CPU the experiment's trials in flight share its
        ``cpus_per_trial`` (so the layers at once stay cluster CPUs / ``cpus_per_trial``)."""
        w = self.chunk_width
        return self.cpus_per_trial if self.gpu or not w else self.cpus_per_trial / w

    @property
    def measure_settings(self) -> MeasureSettings:
        """``measure`` (or the defaults on ``n_threads`` threads), keeping the reference outputs in ``out``."""
        return _with_references(self.measure or MeasureSettings(num_threads=self.n_threads,
                                                                device="cuda" if self.gpu else "cpu"), self.out)


@dataclass(frozen=True)
class LayerRun:
    """Everything a one-layer run is told (see ``raydgp layer --help``).

    Attributes:
        workload: a workload spec, e.g. ``conv2d:1,64,56,56,64,3,1,1`` (:mod:`raydgp.space.workloads`).
        out: output directory.
        trials: configurations to measure.
        searcher: ``dgp`` or ``random``.
        seed: searcher seed.
        target_kind: ``llvm`` or ``cuda``.
        cpus_per_trial: cores a trial owns and times with (None: all cores of this machine).
        address: Ray cluster address (None: ``RAY_ADDRESS`` or an embedded local Ray).
        measure: measurement settings (None: defaults on ``cpus_per_trial`` threads).
        history: record stores whose other workloads pre-train the DGP.
        search_options: :class:`~raydgp.search.SearchSettings` fields for the dgp searcher (as in :class:`ModelRun`).
        in_flight: trials running at once (None: 2 on a CPU, one per GPU on ``cuda``). On a CPU every trial still
            times on all ``cpus_per_trial`` cores and timings stay exclusive (the node's timing lock; builds and the
            searcher's refits pause while a kernel is timed), so a second trial in flight only lets the next
            configuration build, and the searcher refit and propose (from its background queue, believing the
            running trial), while one is timed; 1: strictly one after another, each proposal from a model refitted
            on every earlier result.
        seed_trials: with history (``dgp``): the first trials are the history's best configurations of this shape
            and of the nearest other shapes of this op, carried over to this space
            (:func:`~raydgp.pipeline.history.near_donors`); 0: none.
    """

    workload: str
    out: Path
    trials: int = 32
    searcher: str = "random"
    seed: int = 0
    target_kind: str = "llvm"
    cpus_per_trial: int | None = None
    address: str | None = None
    measure: MeasureSettings | None = None
    history: tuple[Path, ...] = field(default_factory=tuple)
    search_options: tuple = ()
    in_flight: int | None = None
    seed_trials: int = 4

    def __post_init__(self):
        _check_common(self.searcher, self.trials, self.target_kind)
        if not isinstance(self.seed_trials, int) or self.seed_trials < 0:
            raise ConfigError(f"seed_trials (--seed-trials) must be an integer >= 0, got {self.seed_trials!r}")
        if self.cpus_per_trial is not None and self.cpus_per_trial < 1:
            raise ConfigError(f"cpus_per_trial must be >= 1, got {self.cpus_per_trial}")
        if self.in_flight is not None and (not isinstance(self.in_flight, int) or self.in_flight < 1):
            raise ConfigError(f"in_flight (--in-flight) must be an integer >= 1, got {self.in_flight!r}")
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "history", tuple(Path(p) for p in self.history))
        object.__setattr__(self, "search_options", _search_options(self.search_options, self.searcher))

    @property
    def cores(self) -> int:
        return int(self.cpus_per_trial or os.cpu_count() or 1)

    @property
    def width(self) -> int | None:
        """Trials in flight (None on ``cuda`` without ``in_flight``: one per GPU of the cluster)."""
        if self.in_flight is not None:
            return self.in_flight
        return None if self.target_kind == "cuda" else CPU_IN_FLIGHT

    @property
    def measure_settings(self) -> MeasureSettings:
        """``measure`` (or the defaults on ``cores`` threads), keeping the reference outputs in ``out``."""
        return _with_references(self.measure or MeasureSettings(
            num_threads=self.cores, device="cuda" if self.target_kind == "cuda" else "cpu"), self.out)


def _with_references(settings: MeasureSettings, out) -> MeasureSettings:
    """``settings`` with ``reference_dir`` at ``<out>/references`` unless it names one (absolute: the workers' working
    directory may differ)."""
    if settings.reference_dir is not None:
        return settings
    return replace(settings, reference_dir=str((Path(out) / "references").resolve()))
