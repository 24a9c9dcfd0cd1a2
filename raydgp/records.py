"""Frozen record types and the crash-safe JSON-lines record store.

A record store is a directory holding two append-only JSON-lines files:

* ``records.jsonl``: one line per measurement (:class:`Record`): the workload key and features, the target, the
  configuration, the result status, every repeat's latency in ms, the wall time and the host.
* ``workloads.jsonl``: one line per distinct workload: its key and its TVM IRModule as TVM's own JSON text (so the records
  can be exported to MetaSchedule's database, which needs the module). It is text, never a pickle.

Writes take a file lock, then ``write + flush + fsync``. A writer killed mid-line leaves a torn last line: readers skip it
with a warning, and the next writer moves the fragment to ``<file>.torn`` before appending, so it can never end up in the
middle of the file. A bad line anywhere else is an error naming the file and the line. This module imports neither TVM
nor Ray.
"""

from __future__ import annotations

import json
import math
import os
import socket
import statistics
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from filelock import FileLock, Timeout

from raydgp.errors import RecordsCorruptError

SCHEMA_VERSION = 1

#: Every status a measurement can end with. Only ``ok`` carries latencies.
STATUSES = ("ok", "build_error", "run_error", "timeout", "wrong_result", "invalid")


def _freeze(value: Any) -> Any:
    """Lists (JSON arrays) to tuples, recursively, so configurations compare and hash by value."""
    if type(value) is tuple and _frozen(value):  # the common case (configurations built from configurations): as is
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) if isinstance(v, (list, tuple)) else v for v in value)
    return value


def _frozen(value: tuple) -> bool:
    """Whether a tuple holds only scalars and plain tuples of scalars (a configuration's decisions, already frozen)."""
    return all(not isinstance(v, (list, tuple))
               or type(v) is tuple and not any(isinstance(x, (list, tuple)) for x in v) for v in value)


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class Workload:
    """One tunable task (a TVM PrimFunc), described without TVM.

    Attributes:
        key: stable identifier, ``<op>-<target kind>-<structural hash>``; equal modules have equal keys.
        name: human-readable task name, e.g. ``conv2d_nchw_bias_relu``.
        op: operator kind used as a feature: ``conv2d``, ``depthwise_conv2d``, ``dense``, ``pool``, ``elementwise``, ...
        features: numeric workload features by name (loop extents, strides, dtype bits, FLOPs); the same names for every
            workload of one op kind.
    """

    key: str
    name: str
    op: str
    features: Mapping[str, float] = field(default_factory=dict)

    def feature_vector(self) -> tuple[float, ...]:
        """The feature values in name order: the one order every encoding uses, whatever order the mapping was built
        in (a task described live lists them in :data:`raydgp.space.workloads.FEATURE_NAMES` order, one read back from
        JSON in the file's sorted order; encoding either by its own order put a live target's features in the wrong
        columns relative to its history)."""
        return tuple(float(self.features[k]) for k in sorted(self.features))

    def to_json(self) -> dict:
        return {"key": self.key, "name": self.name, "op": self.op, "features": dict(self.features)}

    @classmethod
    def from_json(cls, d: Mapping) -> "Workload":
        return cls(key=str(d["key"]), name=str(d["name"]), op=str(d["op"]),
                   features={str(k): float(v) for k, v in dict(d["features"]).items()})


@dataclass(frozen=True)
class Config:
    """One point of a design space: which sketch, and a decision for each of its sampling instructions (knobs).

    Attributes:
        sketch: index of the sketch in the design space.
        decisions: one entry per knob, in trace order: a tuple of ints for a tile split, an int for a categorical choice
            or a compute location.
    """

    sketch: int
    decisions: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "decisions", _freeze(self.decisions))
        object.__setattr__(self, "_hash", hash((self.sketch, self.decisions)))

    def __hash__(self) -> int:  # cached: searchers hash thousands of candidates per proposal
        return self._hash

    @classmethod
    def _of_frozen(cls, sketch: int, decisions: tuple) -> "Config":
        """A configuration from decisions known to be frozen already (a tuple of ints and tuples of ints, as a design
        space's sampler builds them): the same object as ``Config(sketch, decisions)`` without re-checking every
        decision (a proposal samples hundreds)."""
        c = object.__new__(cls)
        object.__setattr__(c, "sketch", sketch)
        object.__setattr__(c, "decisions", decisions)
        object.__setattr__(c, "_hash", hash((sketch, decisions)))
        return c

    def to_json(self) -> dict:
        return {"sketch": int(self.sketch), "decisions": _thaw(self.decisions)}

    @classmethod
    def from_json(cls, d: Mapping) -> "Config":
        return cls(sketch=int(d["sketch"]), decisions=_freeze(d["decisions"]))


@dataclass(frozen=True)
class MeasureResult:
    """The outcome of building and timing one configuration.

    Attributes:
        status: one of :data:`STATUSES`.
        latencies_ms: every timed repeat, in milliseconds (empty unless ``status == "ok"``).
        message: what went wrong (empty when ok), one line.
        build_s: seconds spent applying the schedule and compiling.
        run_s: seconds spent checking correctness and timing (0 if never run).
    """

    status: str
    latencies_ms: tuple = ()
    message: str = ""
    build_s: float = 0.0
    run_s: float = 0.0

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"unknown measurement status {self.status!r}; expected one of {STATUSES}")
        object.__setattr__(self, "latencies_ms", tuple(float(x) for x in self.latencies_ms))

    @property
    def ok(self) -> bool:
        return self.status == "ok" and len(self.latencies_ms) > 0

    @property
    def median_ms(self) -> float:
        """Median latency in ms; ``inf`` for a failed measurement (never mistaken for fast)."""
        return statistics.median(self.latencies_ms) if self.ok else math.inf

    def to_json(self) -> dict:
        return {"status": self.status, "latencies_ms": list(self.latencies_ms), "message": self.message,
                "build_s": round(self.build_s, 4), "run_s": round(self.run_s, 4)}

    @classmethod
    def from_json(cls, d: Mapping) -> "MeasureResult":
        return cls(status=str(d["status"]), latencies_ms=tuple(d.get("latencies_ms", ())),
                   message=str(d.get("message", "")), build_s=float(d.get("build_s", 0.0)),
                   run_s=float(d.get("run_s", 0.0)))


@dataclass(frozen=True)
class Record:
    """One measurement, as stored: one JSON line in ``records.jsonl``.

    Attributes:
        workload: the task measured.
        target: the TVM target in its dict form, e.g. ``{"kind": "llvm", "mcpu": "rocketlake", "num-cores": 2}``.
        config: the configuration as applied (decisions read back from TVM, not the ones proposed).
        result: the measurement outcome.
        trace: the applied schedule's trace as MetaSchedule JSON ``[insts, decisions]``, or None when it never applied;
            used to export to MetaSchedule's database.
        time: Unix time in seconds when the measurement finished.
        host: hostname of the node that measured it.
        tag: free-form origin label, e.g. the searcher or the experiment name.
    """

    workload: Workload
    target: Mapping[str, Any]
    config: Config
    result: MeasureResult
    trace: Any = None
    time: float = 0.0
    host: str = ""
    tag: str = ""

    def to_json(self) -> dict:
        return {"v": SCHEMA_VERSION, "workload": self.workload.to_json(), "target": dict(self.target),
                "config": self.config.to_json(), "result": self.result.to_json(), "trace": self.trace,
                "time": self.time, "host": self.host, "tag": self.tag}

    @classmethod
    def from_json(cls, d: Mapping) -> "Record":
        if d.get("v") != SCHEMA_VERSION:
            raise ValueError(f"schema version {d.get('v')!r}, this raydgp reads version {SCHEMA_VERSION}")
        return cls(workload=Workload.from_json(d["workload"]), target=dict(d["target"]),
                   config=Config.from_json(d["config"]), result=MeasureResult.from_json(d["result"]),
                   trace=d.get("trace"), time=float(d.get("time", 0.0)), host=str(d.get("host", "")),
                   tag=str(d.get("tag", "")))

    @staticmethod
    def now(workload: Workload, target: Mapping, config: Config, result: MeasureResult, trace: Any = None,
            tag: str = "", host: str | None = None) -> "Record":
        """A record stamped with the current time and this host (or the given one)."""
        return Record(workload, dict(target), config, result, trace, time.time(), host or socket.gethostname(), tag)


#: The tag of the quiet re-timings taken after tuning (:mod:`raydgp.pipeline.retime`); the build prefers them.
RETIME_TAG = "retime"


def dumps_line(obj: Mapping) -> str:
    """One compact JSON line (no newline). NaN/inf are refused: records must stay standard JSON."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, allow_nan=False)


class JsonLinesFile:
    """An append-only JSON-lines file with a lock, fsync, torn-tail handling and line-exact corruption errors."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = FileLock(str(self.path) + ".lock")

    # Picklable by path (Ray ships callbacks holding a store); the lock is recreated on the other side.
    def __getstate__(self):
        return {"path": str(self.path)}

    def __setstate__(self, state):
        self.__init__(state["path"])

    def append(self, objs: Iterable[Mapping]) -> int:
        """Append objects as lines, durably. Returns the number written."""
        lines = [dumps_line(o) + "\n" for o in objs]
        if not lines:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            with open(self.path, "a+b") as f:
                self._move_torn_tail(f)
                f.write("".join(lines).encode())
                f.flush()
                os.fsync(f.fileno())
        return len(lines)

    def _move_torn_tail(self, f) -> None:
        """If the file ends mid-line (a killed writer), move that fragment to ``<file>.torn`` and cut it off."""
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        # Find the start of the torn line (after the last newline).
        block = 1 << 16
        pos = size
        start = 0
        while pos > 0:
            lo = max(0, pos - block)
            f.seek(lo)
            chunk = f.read(pos - lo)
            i = chunk.rfind(b"\n")
            if i >= 0:
                start = lo + i + 1
                break
            pos = lo
        f.seek(start)
        fragment = f.read()
        with open(str(self.path) + ".torn", "ab") as t:
            t.write(fragment + b"\n")
            t.flush()
            os.fsync(t.fileno())
        f.truncate(start)
        f.seek(0, os.SEEK_END)

    def _read_bytes(self) -> tuple[bytes, bool]:
        """The file's bytes, read under the writers' lock so that no line a live writer is completing is seen
        half-written. Returns ``(data, live_writer)``: ``live_writer`` is True when the lock could not be taken (a
        writer held it throughout), and then an unterminated last line is a write in progress, not a torn one.
        A store whose directory cannot hold a lock file (read-only package data) is read without it."""
        try:
            with self._lock.acquire(timeout=5.0):
                return self.path.read_bytes(), False
        except Timeout:
            return self.path.read_bytes(), True
        except OSError:
            return self.path.read_bytes(), False

    def read(self) -> Iterator[tuple[int, dict]]:
        """Yield ``(line_number, object)`` for every complete line (lines of a ``<file>.gz`` part first, numbered
        negatively).

        Raises:
            RecordsCorruptError: a line other than a torn last one is not valid JSON.
        """
        gz = Path(str(self.path) + ".gz")
        if gz.exists():
            # A compressed, read-only part (shipped datasets) comes first; its lines must all be complete.
            import gzip

            for i, raw in enumerate(gzip.decompress(gz.read_bytes()).split(b"\n")):
                if raw.strip():
                    try:
                        yield -(i + 1), json.loads(raw)
                    except ValueError as e:
                        raise RecordsCorruptError(str(gz), i + 1, f"invalid JSON: {e}") from None
        if not self.path.exists():
            return
        data, live_writer = self._read_bytes()
        lines = data.split(b"\n")
        torn_tail = not data.endswith(b"\n")
        last = len(lines) - 1
        for i, raw in enumerate(lines):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
                if not isinstance(obj, dict):
                    raise ValueError("not a JSON object")
            except (ValueError, UnicodeDecodeError) as e:
                if i == last and torn_tail and live_writer:
                    return  # a writer is completing this line right now: not torn, just not there yet
                if i == last and torn_tail:
                    warnings.warn(f"{self.path}:{i + 1}: skipping a torn last line (a writer was killed mid-write)",
                                  stacklevel=2)
                    return
                raise RecordsCorruptError(str(self.path), i + 1, f"invalid JSON: {e}") from None
            if i == last and torn_tail and live_writer:
                return
            if i == last and torn_tail:
                # Parsed but unterminated: the writer died before the newline; the fsync never completed either.
                warnings.warn(f"{self.path}:{i + 1}: skipping an unterminated last line", stacklevel=2)
                return
            yield i + 1, obj


class RecordStore:
    """The record store: a directory with ``records.jsonl`` and ``workloads.jsonl`` (see the module docstring).

    Args:
        path: the directory; created on first write.
    """

    RECORDS = "records.jsonl"
    WORKLOADS = "workloads.jsonl"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._records = JsonLinesFile(self.path / self.RECORDS)
        self._workloads = JsonLinesFile(self.path / self.WORKLOADS)
        self._known_modules: set[str] | None = None

    def __repr__(self) -> str:
        return f"RecordStore({str(self.path)!r})"

    # -- writing ------------------------------------------------------------------------------------------------------
    def append(self, records: Record | Sequence[Record]) -> int:
        """Append one or more records durably (lock + flush + fsync). Returns how many were written."""
        if isinstance(records, Record):
            records = [records]
        return self._records.append(r.to_json() for r in records)

    def add_workload(self, key: str, mod_json: str, space_json: Mapping | None = None) -> None:
        """Store a workload's IRModule (TVM JSON text) and design space (JSON) once per key, for MetaSchedule export."""
        if self._known_modules is None:
            self._known_modules = set(self.workload_entries())
        if key in self._known_modules:
            return
        self._workloads.append([{"v": SCHEMA_VERSION, "key": key, "mod": mod_json, "space": space_json}])
        self._known_modules.add(key)

    # -- reading ------------------------------------------------------------------------------------------------------
    def records(self) -> list[Record]:
        """Every complete record, in write order.

        Raises:
            RecordsCorruptError: a line that is not a valid record (other than a torn last line).
        """
        out = []
        for lineno, obj in self._records.read():
            try:
                out.append(Record.from_json(obj))
            except (KeyError, TypeError, ValueError) as e:
                raise RecordsCorruptError(str(self._records.path), lineno, f"not a record: {e}") from None
        return out

    def workload_entries(self) -> dict[str, dict]:
        """Workload key -> ``{"mod": IRModule JSON text, "space": design space JSON or None}``."""
        out = {}
        for lineno, obj in self._workloads.read():
            try:
                out[str(obj["key"])] = {"mod": str(obj["mod"]), "space": obj.get("space")}
            except KeyError as e:
                raise RecordsCorruptError(str(self._workloads.path), lineno, f"missing field {e}") from None
        return out

    def best(self, workload_key: str, prefer_tag: str | None = None) -> Record | None:
        """The fastest ``ok`` record of a workload, or None; with ``prefer_tag``, the fastest among the records with
        that tag where there are any (e.g. the quiet re-timings of :mod:`raydgp.pipeline.retime`)."""
        ok = [r for r in self.records() if r.workload.key == workload_key and r.result.ok]
        if prefer_tag is not None and any(r.tag == prefer_tag for r in ok):
            ok = [r for r in ok if r.tag == prefer_tag]
        return min(ok, key=lambda r: r.result.median_ms, default=None)

    def __len__(self) -> int:
        return len(self.records())


__all__ = ["SCHEMA_VERSION", "STATUSES", "RETIME_TAG", "Workload", "Config", "MeasureResult", "Record", "RecordStore",
           "JsonLinesFile", "dumps_line"]
