"""A design space as plain data: MetaSchedule sketches and their knobs, with sampling, neighbours and a numeric encoding.

The space is *built* from TVM's own MetaSchedule space generator (:mod:`raydgp.space.metaschedule`), but once built it is
pure Python and JSON-serialisable, so searchers, models and Ray drivers use it without importing TVM. Applying a
configuration to a module (and so truly validating it) is TVM's job and happens in the measurement workers.

Each sampling instruction of a sketch's trace is one knob:

* ``tile`` (``SamplePerfectTile``): ``n`` factors whose product is the loop extent; innermost <= ``max_innermost``.
* ``categorical`` (``SampleCategorical``): an index into ``values`` (e.g. unroll depth 0/16/64/512).
* ``compute_location`` (``SampleComputeLocation``): one of the loop positions that TVM accepted when the space was built.

A configuration is ``Config(sketch, decisions)``; its trace is the sketch's instructions plus those decisions, in
MetaSchedule's own JSON trace format.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import random
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from raydgp.errors import InvalidConfigurationError
from raydgp.records import Config, Workload
from raydgp.space.base import SearchSpace
from raydgp.space.hardware import HARDWARE_FEATURES, hardware_features

#: Encoding layout: sketch one-hot, then one fixed-width slot per knob (padded), then workload features.
MAX_SKETCHES = 8
MAX_KNOBS = 24
SLOT_WIDTH = 5


def sample_distinct(sample, n: int, rng: np.random.Generator, exclude: set | None = None,
                    max_tries: int | None = None) -> list:
    """Up to ``n`` distinct draws of ``sample(rng)`` that are not in ``exclude`` (gives up after ``max_tries``)."""
    seen = set(exclude or ())
    out: list = []
    tries, limit = 0, max_tries or 20 * n + 100
    while len(out) < n and tries < limit:
        tries += 1
        c = sample(rng)
        if c not in seen:
            seen.add(c)
            out.append(c)
    return out


@functools.lru_cache(maxsize=4096)
def _factor_pairs(n: int) -> tuple[int, ...]:
    """Prime factors of ``n`` with multiplicity, ascending."""
    out, p = [], 2
    while p * p <= n:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    if n > 1:
        out.append(n)
    return tuple(out)


@functools.lru_cache(maxsize=4096)
def perfect_tilings(extent: int, n: int, max_innermost: int) -> tuple[tuple[int, ...], ...]:
    """All ordered ``n``-way factorisations of ``extent`` whose innermost factor is <= ``max_innermost``."""

    def rec(rest: int, parts: int) -> list[tuple[int, ...]]:
        if parts == 1:
            return [(rest,)]
        out = []
        for d in range(1, rest + 1):
            if rest % d == 0:
                out.extend((d,) + tail for tail in rec(rest // d, parts - 1))
        return out

    return tuple(t for t in rec(extent, n) if max_innermost <= 0 or t[-1] <= max_innermost)


def _nearest_tiling(k: "Knob", d: tuple[int, ...]) -> tuple[int, ...]:
    """The valid tiling of knob ``k`` nearest to ``d`` (another extent's tiling): least sum over positions of
    ``2**position * |log2 t - log2 d|``, so the inner factors stay where they can; ties go to the first tiling."""
    ch = k.choices()
    if not ch:
        return d
    t = np.log2(np.asarray(ch, dtype=np.float64))
    w = 2.0 ** np.arange(k.parts)
    cost = (np.abs(t - np.log2(np.asarray(d, dtype=np.float64))) * w).sum(axis=1)
    return ch[int(np.argmin(cost))]


def _sample_tile(k: "Knob", rng: random.Random) -> tuple[int, ...]:
    primes = _factor_pairs(k.extent)
    n = k.parts
    bits, getrandbits = n.bit_length(), rng.getrandbits
    for _ in range(100):
        parts = [1] * n
        for p in primes:
            # rng.randrange(n), inlined as CPython's Random._randbelow draws it (the same stream; a proposal samples
            # a few hundred configurations, and randrange's argument checks were a tenth of their cost)
            j = getrandbits(bits)
            while j >= n:
                j = getrandbits(bits)
            parts[j] *= p
        if k.max_innermost <= 0 or parts[-1] <= k.max_innermost:
            return tuple(parts)
    ch = k.choices()  # innermost bound rarely met by chance: fall back to uniform over valid tilings
    return ch[rng.randrange(len(ch))]


@dataclass(frozen=True)
class Knob:
    """One sampling instruction of a sketch.

    Attributes:
        kind: ``tile``, ``categorical`` or ``compute_location``.
        inst: index of the instruction in the sketch's trace.
        extent: loop extent (tile).
        parts: number of factors (tile).
        max_innermost: largest innermost factor allowed (tile; 0 = no limit).
        values: candidate values (categorical), or accepted loop positions (compute_location).
    """

    kind: str
    inst: int
    extent: int = 0
    parts: int = 0
    max_innermost: int = 0
    values: tuple = ()

    def choices(self) -> tuple:
        """Every valid decision of this knob."""
        if self.kind == "tile":
            return perfect_tilings(self.extent, self.parts, self.max_innermost)
        if self.kind == "categorical":
            return tuple(range(len(self.values)))
        return tuple(self.values)

    def valid(self, decision: Any) -> bool:
        if self.kind == "tile":
            return (isinstance(decision, tuple) and len(decision) == self.parts
                    and all(isinstance(x, int) and x >= 1 for x in decision)
                    and math.prod(decision) == self.extent
                    and (self.max_innermost <= 0 or decision[-1] <= self.max_innermost))
        if self.kind == "categorical":
            return isinstance(decision, int) and 0 <= decision < len(self.values)
        return isinstance(decision, int) and decision in self.values

    def to_json(self) -> dict:
        return {"kind": self.kind, "inst": self.inst, "extent": self.extent, "parts": self.parts,
                "max_innermost": self.max_innermost, "values": list(self.values)}

    @classmethod
    def from_json(cls, d: dict) -> "Knob":
        return cls(kind=d["kind"], inst=int(d["inst"]), extent=int(d["extent"]), parts=int(d["parts"]),
                   max_innermost=int(d["max_innermost"]), values=tuple(d["values"]))


@dataclass(frozen=True)
class Sketch:
    """A MetaSchedule sketch: its trace instructions (JSON, decisions removed) and its knobs in trace order."""

    insts: Any
    knobs: tuple[Knob, ...]

    def to_json(self) -> dict:
        return {"insts": self.insts, "knobs": [k.to_json() for k in self.knobs]}

    @classmethod
    def from_json(cls, d: dict) -> "Sketch":
        return cls(insts=d["insts"], knobs=tuple(Knob.from_json(k) for k in d["knobs"]))


@dataclass(frozen=True)
class DesignSpace(SearchSpace):
    """The design space of one task on one target.

    Attributes:
        workload: the task's description (its features are appended to every encoding).
        target: the target dict.
        sketches: the MetaSchedule sketches, each with its knobs.
    """

    workload: Workload
    target: dict
    sketches: tuple[Sketch, ...] = field(default_factory=tuple)

    def __post_init__(self):
        # Configurations known to be points of this space (drawn by its sampler, or checked once): a proposal encodes
        # thousands of them, and re-checking every decision of each was a tenth of its time. Keyed by value (a
        # configuration equal to a valid one is valid), bounded, and never pickled (see __getstate__).
        object.__setattr__(self, "_known_valid", set())

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_known_valid", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        object.__setattr__(self, "_known_valid", set())

    def _remember_valid(self, config: Config) -> None:
        known = self._known_valid
        if len(known) >= 200_000:
            known.clear()
        known.add(config)

    # -- basics --------------------------------------------------------------------------------------------------------
    def on_target(self, target: Mapping) -> "DesignSpace":
        """The same space on another machine: its encodings carry that machine's hardware features (a workload key can
        hold several machines' recordings of the same configurations). ``self`` when the target is the same."""
        return self if dict(target) == self.target else DesignSpace(self.workload, dict(target), self.sketches)

    @property
    def size(self) -> int:
        """Number of distinct configurations (sum over sketches of the product of the knobs' choice counts)."""
        return sum(math.prod(len(k.choices()) for k in s.knobs) for s in self.sketches)

    def validate(self, config: Config) -> None:
        """Raise :class:`InvalidConfigurationError` unless ``config`` is a point of this space (checked in Python;
        the measurement worker checks again against TVM)."""
        if not isinstance(config, Config):
            raise InvalidConfigurationError(f"expected a Config, got {type(config).__name__}")
        if config in self._known_valid:
            return
        if not 0 <= config.sketch < len(self.sketches):
            raise InvalidConfigurationError(f"sketch {config.sketch} out of range 0..{len(self.sketches) - 1}")
        knobs = self.sketches[config.sketch].knobs
        if len(config.decisions) != len(knobs):
            raise InvalidConfigurationError(
                f"sketch {config.sketch} has {len(knobs)} knobs, the configuration gives {len(config.decisions)}")
        for i, (k, d) in enumerate(zip(knobs, config.decisions)):
            if not k.valid(d):
                detail = f"extent {k.extent}, {k.parts} parts, innermost <= {k.max_innermost}" if k.kind == "tile" \
                    else f"choices {list(k.choices())}"
                raise InvalidConfigurationError(f"knob {i} ({k.kind}): {d!r} is not valid ({detail})")
        self._remember_valid(config)

    def is_valid(self, config: Config) -> bool:
        try:
            self.validate(config)
            return True
        except InvalidConfigurationError:
            return False

    # -- the trial boundary (SearchSpace) -------------------------------------------------------------------------------
    def to_params(self, config: Config) -> dict:
        """``{"sketch": int, "decisions": [...]}``: what a trial receives."""
        return config.to_json()

    def from_params(self, params: dict) -> Config:
        """The :class:`Config` of trial parameters (not checked against the space: see :meth:`is_valid`).

        Raises:
            InvalidConfigurationError: ``params`` is not a configuration at all.
        """
        try:
            return Config.from_json(params)
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidConfigurationError(f"not a configuration ({type(e).__name__}: {e}): {params!r}"[:300]) from None

    # -- sampling and mutation -----------------------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator | random.Random, sketch: int | None = None) -> Config:
        """One random configuration.

        The sketch is uniform (unless given); a tile puts each prime factor of the extent into a uniformly chosen
        position and retries while the innermost factor is too large; categorical knobs and compute locations are
        uniform over the knob's values. This is not quite TVM's own sampling: TVM 0.27's ``SamplePerfectTile`` draws
        about uniformly over the valid tilings (on a 320-extent, 4-way tile with innermost at most 64 it puts 26% of
        draws at innermost 1 and 9% at 16, 32 or 64, this sampler 15% and 2%), and ``SampleComputeLocation`` picks among
        the positions the drawn tiles leave, some of which the space's knob lacks (:func:`~raydgp.space.metaschedule.
        build_space` probes them under one set of tiles). On a 3x3 conv (160 -> 320, 14x14, NHWC, znver3), 48 draws of
        each built and timed interleaved, twice: best 3.62 and 4.13 ms against TVM's 2.96 and 2.46, median 12.5 and
        12.6 against 14.2 and 10.1 (``scripts/bench_sampling.py``; BENCHMARKS 7.3d, where widening the locations to
        TVM's was tried and reverted).
        ``rng``: a numpy Generator (one Python ``random.Random`` is seeded from it) or a ``random.Random`` (fast:
        :meth:`sample_many` draws thousands per proposal).
        """
        r = rng if isinstance(rng, random.Random) else random.Random(int(rng.integers(2**63)))
        s = r.randrange(len(self.sketches)) if sketch is None else sketch
        decisions = []
        for k in self.sketches[s].knobs:
            if k.kind == "tile":
                decisions.append(_sample_tile(k, r))
            else:
                ch = k.choices()
                decisions.append(ch[r.randrange(len(ch))])
        config = Config._of_frozen(s, tuple(decisions))  # valid by construction: every knob drawn from its choices
        self._remember_valid(config)
        return config

    def sample_many(self, n: int, rng: np.random.Generator, exclude: set | None = None,
                    max_tries: int | None = None) -> list[Config]:
        """Up to ``n`` distinct configurations not in ``exclude`` (seeded by ``rng``)."""
        r = random.Random(int(rng.integers(2**63)))
        return sample_distinct(lambda _: self.sample(r), n, rng, exclude, max_tries)

    @property
    def structures(self) -> tuple:
        """The sketches' indices: a configuration's sketch is its structure."""
        return tuple(range(len(self.sketches)))

    def structure_of(self, config: Config) -> int:
        return config.sketch

    def neighbours(self, config: Config) -> list[Config]:
        """All configurations that differ from ``config`` in exactly one knob, by one small step.

        A tile moves one prime factor from one position to another (MetaSchedule's MutateTileSize); a categorical
        knob or a compute location takes any other value.
        """
        self.validate(config)
        knobs = self.sketches[config.sketch].knobs
        out: list[Config] = []
        for i, (k, d) in enumerate(zip(knobs, config.decisions)):
            for nd in self._knob_moves(k, d):
                decisions = list(config.decisions)
                decisions[i] = nd
                out.append(self._child(config.sketch, tuple(decisions), True))
        return out

    def _child(self, sketch: int, decisions: tuple, parents_valid: bool) -> Config:
        """A configuration bred from configurations (a knob moved, or knobs taken from two parents of one sketch):
        its decisions are frozen already, and it is a point of the space when its parents are (every knob move and
        every knob's decision is valid on its own)."""
        child = Config._of_frozen(sketch, decisions)
        if parents_valid:
            self._remember_valid(child)
        return child

    def mutate(self, config: Config, rng: np.random.Generator) -> Config:
        """One knob changed at random, as MetaSchedule's mutators do: a tile moves a prime factor between two
        positions (MutateTileSize) or, one time in four, is sampled afresh; a categorical knob (unroll) or a compute
        location takes another value (MutateUnroll, MutateComputeLocation)."""
        knobs = self.sketches[config.sketch].knobs
        if not knobs:
            return config
        i = int(rng.integers(len(knobs)))
        k, d = knobs[i], config.decisions[i]
        if k.kind == "tile" and rng.random() < 0.25:
            nd = _sample_tile(k, random.Random(int(rng.integers(2**63))))
        else:
            moves = self._knob_moves(k, d)
            if not moves:
                return config
            nd = moves[int(rng.integers(len(moves)))]
        decisions = list(config.decisions)
        decisions[i] = nd
        return self._child(config.sketch, tuple(decisions), config in self._known_valid)

    def crossover(self, a: Config, b: Config, rng: np.random.Generator) -> Config | None:
        """Each knob's decision from ``a`` or ``b`` (the same sketch only: knobs are per sketch)."""
        if a.sketch != b.sketch:
            return None
        pick = rng.random(len(a.decisions)) < 0.5
        return self._child(a.sketch, tuple(x if p else y for x, y, p in zip(a.decisions, b.decisions, pick)),
                           a in self._known_valid and b in self._known_valid)

    def adapt(self, config: Config) -> Config | None:
        """The point of this space nearest to ``config``, a configuration of *another* workload's space (a layer of
        another shape, or this one's shape with another epilogue), or None where the two do not correspond.

        This is schedule transfer: a fast configuration of a similar layer, carried over knob by knob. The sketch must
        have the same layout here (its index, its number of knobs, each knob's kind and tile width); a tile becomes the
        perfect tiling of this loop's extent nearest in log2 factors, the inner factors weighted most (they are the
        vector width and register block; the outer ones absorb a different extent); a categorical knob keeps its
        index where it exists; a compute location becomes the nearest accepted position. ``config`` itself is
        returned when it is already a point of this space.
        """
        if not isinstance(config, Config) or not 0 <= config.sketch < len(self.sketches):
            return None
        knobs = self.sketches[config.sketch].knobs
        if len(config.decisions) != len(knobs):
            return None
        out = []
        for k, d in zip(knobs, config.decisions):
            if k.kind == "tile":
                if not (isinstance(d, tuple) and len(d) == k.parts and all(isinstance(x, int) and x >= 1 for x in d)):
                    return None
                out.append(d if k.valid(d) else _nearest_tiling(k, d))
            elif isinstance(d, tuple) or not isinstance(d, int):
                return None
            elif k.kind == "categorical":
                out.append(min(max(d, 0), len(k.values) - 1))
            else:
                out.append(d if d in k.values else min(k.values, key=lambda v: (abs(v - d), v)))
        cfg = Config(config.sketch, tuple(out))
        return cfg if self.is_valid(cfg) else None

    @staticmethod
    def _knob_moves(k: Knob, d: Any) -> list:
        if k.kind != "tile":
            return [c for c in k.choices() if c != d]
        moves = []
        seen = {d}
        for src, dst in itertools.permutations(range(len(d)), 2):
            for p in set(_factor_pairs(d[src])):
                nd = list(d)
                nd[src] //= p
                nd[dst] *= p
                nd = tuple(nd)
                if nd not in seen and k.valid(nd):
                    seen.add(nd)
                    moves.append(nd)
        return moves

    # -- traces --------------------------------------------------------------------------------------------------------
    def trace_json(self, config: Config) -> list:
        """MetaSchedule's JSON trace ``[insts, [[inst_index, decision], ...]]`` of a configuration."""
        self.validate(config)
        sk = self.sketches[config.sketch]
        decisions = [[k.inst, list(d) if isinstance(d, tuple) else d] for k, d in zip(sk.knobs, config.decisions)]
        return [sk.insts, decisions]

    # -- encoding ------------------------------------------------------------------------------------------------------
    @property
    def config_dim(self) -> int:
        return MAX_SKETCHES + MAX_KNOBS * SLOT_WIDTH

    @property
    def dim(self) -> int:
        """Length of :meth:`encode`'s vector: configuration part + workload features + hardware features."""
        return self.config_dim + len(self.workload.features) + len(HARDWARE_FEATURES)

    @property
    def column_groups(self) -> tuple[tuple[int, ...], ...]:
        """Columns of :meth:`encode` by what they describe: the sketch one-hot, then each knob slot used by some
        sketch (its :data:`SLOT_WIDTH` columns), then the workload and hardware features. The additive member of a
        search (:mod:`raydgp.dgp.additive`) gives each group its own kernel; a slot is a different knob in each
        sketch, so within one target the slot kernels model per-slot effects and the sketch kernel each sketch's."""
        used = min(MAX_KNOBS, max((len(sk.knobs) for sk in self.sketches), default=0))
        slots = [tuple(range(MAX_SKETCHES + i * SLOT_WIDTH, MAX_SKETCHES + (i + 1) * SLOT_WIDTH)) for i in range(used)]
        return (tuple(range(MAX_SKETCHES)), *slots, tuple(range(self.config_dim, self.dim)))

    def features(self) -> np.ndarray:
        """The workload features (in name order: :meth:`~raydgp.records.Workload.feature_vector`), then the target's
        :data:`~raydgp.space.hardware.HARDWARE_FEATURES`: shape ``(n_features + n_hardware,)``."""
        return np.array(list(self.workload.feature_vector()) + list(hardware_features(self.target)),
                        dtype=np.float64)

    def encode(self, config: Config, with_features: bool = True) -> np.ndarray:
        """A fixed-length numeric vector, shape ``(dim,)`` (or ``(config_dim,)`` without features).

        Layout: sketch one-hot (:data:`MAX_SKETCHES`), then for each knob slot (:data:`MAX_KNOBS`, in trace order)
        :data:`SLOT_WIDTH` numbers: a tile's ``log2`` factors; a categorical's ``log2(1 + value)`` and index; a
        compute location's position. Unused slots are zero. Then the workload features. Knobs past :data:`MAX_KNOBS`
        are left out and sketches past :data:`MAX_SKETCHES` share the last one-hot slot: such encodings are lossy
        (fine for a surrogate model; :meth:`decode` refuses them).
        """
        self.validate(config)
        knobs = self.sketches[config.sketch].knobs
        v = np.zeros(self.config_dim)
        v[min(config.sketch, MAX_SKETCHES - 1)] = 1.0
        for i, (k, d) in enumerate(zip(knobs[:MAX_KNOBS], config.decisions)):
            base = MAX_SKETCHES + i * SLOT_WIDTH
            if k.kind == "tile":
                for j, f in enumerate(d[:SLOT_WIDTH]):
                    v[base + j] = math.log2(f)
            elif k.kind == "categorical":
                v[base] = math.log2(1.0 + float(k.values[d]))
                v[base + 1] = float(d)
            else:
                v[base] = float(d)
        if with_features:
            v = np.concatenate([v, self.features()])
        return v

    def encode_many(self, configs: Sequence[Config], with_features: bool = True) -> np.ndarray:
        """Encodings of several configurations, shape ``(n, dim)``."""
        if not configs:
            return np.zeros((0, self.dim if with_features else self.config_dim))
        X = np.stack([self.encode(c, with_features=False) for c in configs])
        if with_features:  # the same row for every configuration: built once
            X = np.concatenate([X, np.broadcast_to(self.features(), (len(configs), self.dim - self.config_dim))], 1)
        return X

    def decode(self, vector: np.ndarray) -> Config:
        """The configuration of an encoding (the inverse of :meth:`encode`).

        Raises:
            InvalidConfigurationError: the vector decodes to no valid configuration.
        """
        v = np.asarray(vector, dtype=np.float64)
        if v.shape[0] not in (self.config_dim, self.dim):
            raise InvalidConfigurationError(f"vector of length {v.shape[0]}, expected {self.config_dim} or {self.dim}")
        if len(self.sketches) > MAX_SKETCHES or any(len(sk.knobs) > MAX_KNOBS for sk in self.sketches):
            raise InvalidConfigurationError(f"this space's encoding is lossy ({len(self.sketches)} sketches, max "
                                            f"{MAX_SKETCHES}; up to {MAX_KNOBS} knobs): it cannot be decoded")
        s = int(np.argmax(v[:MAX_SKETCHES]))
        if s >= len(self.sketches):
            raise InvalidConfigurationError(f"vector names sketch {s}, the space has {len(self.sketches)}")
        decisions = []
        for i, k in enumerate(self.sketches[s].knobs):
            base = MAX_SKETCHES + i * SLOT_WIDTH
            if k.kind == "tile":
                decisions.append(tuple(int(round(2.0 ** v[base + j])) for j in range(k.parts)))
            elif k.kind == "categorical":
                decisions.append(int(round(v[base + 1])))
            else:
                decisions.append(int(round(v[base])))
        cfg = Config(s, tuple(decisions))
        self.validate(cfg)
        return cfg

    # -- serialisation -------------------------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {"v": 1, "workload": self.workload.to_json(), "target": dict(self.target),
                "sketches": [s.to_json() for s in self.sketches]}

    @classmethod
    def from_json(cls, d: dict) -> "DesignSpace":
        return cls(workload=Workload.from_json(d["workload"]), target=dict(d["target"]),
                   sketches=tuple(Sketch.from_json(s) for s in d["sketches"]))

    def dumps(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))


def config_as_applied(space: DesignSpace, proposed: Config, applied: list | None) -> Config:
    """The configuration a measurement of ``proposed`` counts for: the decisions TVM applied (``[[inst, decision],
    ...]``) where they are a point of the space, else ``proposed`` itself.

    TVM moves a compute location that does not exist under the chosen tiles to the nearest accepted one below it (a
    loop of extent 1 vanishes, and positions shift). The space lists the positions accepted under its sketch's own
    sample tiles, so under other tiles TVM can land on a position the space does not list. The schedule measured is
    still the one ``proposed`` gives: replaying it makes the same move (``SampleComputeLocation`` with a decision is
    deterministic), so the measurement counts for ``proposed``. Before this, such a measurement (a built, timed and
    checked kernel) was recorded as invalid and its latency dropped: 6-10% of a model job's trials, up to 31% of a
    layer search's.

    Raises:
        InvalidConfigurationError: the applied decisions differ from ``proposed`` in a tile or categorical knob, or in
            the sketch's shape (TVM changed the schedule itself; :func:`~raydgp.space.metaschedule.apply_config`
            already rejects those).
    """
    if not applied:
        return proposed
    decisions = tuple(tuple(d) if isinstance(d, list) else d for _i, d in applied)
    cfg = Config(proposed.sketch, decisions)
    if space.is_valid(cfg):
        return cfg
    knobs = space.sketches[proposed.sketch].knobs if 0 <= proposed.sketch < len(space.sketches) else ()
    if len(decisions) != len(proposed.decisions) or len(knobs) != len(decisions):
        space.validate(cfg)  # raises, naming what is wrong
    for i, (k, got, want) in enumerate(zip(knobs, decisions, proposed.decisions)):
        if got != want and k.kind != "compute_location":
            raise InvalidConfigurationError(f"TVM changed knob {i} ({k.kind}) from {want!r} to {got!r}")
    space.validate(proposed)
    return proposed
