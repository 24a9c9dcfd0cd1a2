"""Fakes and fixtures shipped with the package (no Ray here; TVM only inside the kernel fixtures).

* :class:`FakeMeasurer` and :class:`FakeToolchain`: the whole pipeline (spaces, budget, Ray trials, records, summary)
  runs in seconds without TVM; latencies are a known, deterministic function of the configuration.
* Tiny real TVM kernels that misbehave on purpose. Each is an IRModule with the same signature as
  :func:`copy_task_module` (``B = 2 * A`` over 64 floats), so it can be measured as a *candidate* of that task: the
  worker checks its output against the task's reference.
* :func:`synthetic_loss`: a known-optimum function over a mixed Ray Tune space.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Callable

from raydgp.measure.base import Measurer, Outcome
from raydgp.measure.protocol import MeasureSettings, TaskPayload
from raydgp.models.base import Deployment, LoadedModel, ModelLayer, Toolchain
from raydgp.records import RETIME_TAG, MeasureResult, RecordStore, Workload
from raydgp.space.design_space import DesignSpace, Knob, Sketch
from raydgp.tvm_loader import import_tvm


def fake_latency_ms(task_key: str, trace: list | None) -> float:
    """A deterministic latency (ms) for a task and a configuration's trace (None: the untuned task, slowest).

    Smooth in the tile sizes (an innermost factor near 8 is best, as vector width would make it) plus a small
    hash-derived ripple, so searchers have something to learn and ties are rare."""
    base = 1.0 + (int(hashlib.sha1(task_key.encode()).hexdigest()[:6], 16) % 900) / 100.0
    if trace is None:
        return base * 20.0
    cost = 1.0
    for _, d in trace[1]:
        if isinstance(d, list) and d:
            cost += abs(math.log2(max(d[-1], 1)) - 3.0) / 3.0
        elif isinstance(d, int):
            cost += 0.05 * (d % 4)
    ripple = int(hashlib.sha1(json.dumps(trace[1]).encode()).hexdigest()[:6], 16) / 0xFFFFFF
    return base * cost * (1.0 + 0.1 * ripple)


class FakeMeasurer(Measurer):
    """Measures with :func:`fake_latency_ms` (no TVM, no worker process); picklable, so Ray trials can use it.

    Args:
        fail_every: every ``fail_every``-th distinct configuration (by hash) is a ``build_error`` (0: none).
        delay_s: seconds each measurement of a configuration takes (a sleep; 0: none).
        log_path: a file each measurement of a configuration appends ``task key, start, end`` (``time.time()``) to,
            as one JSON line (None: none): what tests read to see which trials overlapped.
    """

    def __init__(self, fail_every: int = 0, delay_s: float = 0.0, log_path: str | None = None):
        self.fail_every = int(fail_every)
        self.delay_s = float(delay_s)
        self.log_path = log_path
        self.calls = 0

    def measure(self, task: TaskPayload, trace: list | None) -> Outcome:
        self.calls += 1
        if trace is not None and (self.delay_s or self.log_path):
            import time

            t0 = time.time()
            time.sleep(self.delay_s)
            if self.log_path:
                with open(self.log_path, "a") as f:
                    f.write(json.dumps([task.key, t0, time.time()]) + "\n")
        if trace is not None and self.fail_every:
            h = int(hashlib.sha1(json.dumps(trace[1]).encode()).hexdigest()[:8], 16)
            if h % self.fail_every == 0:
                return Outcome(MeasureResult("build_error", message="fake build error"))
        ms = fake_latency_ms(task.key, trace)
        return Outcome(MeasureResult("ok", latencies_ms=(ms, ms * 1.01, ms * 0.99), build_s=0.001, run_s=0.001),
                       None if trace is None else trace[1])


def fake_space(key: str, extents: tuple[int, ...] = (64, 56), op: str = "conv2d") -> DesignSpace:
    """A small TVM-like design space without TVM: one sketch, a 4-way tile per extent and an unroll knob."""
    knobs = tuple(Knob("tile", i, extent=e, parts=4, max_innermost=64) for i, e in enumerate(extents))
    knobs += (Knob("categorical", len(extents), values=(0, 16, 64, 512)),)
    features = {f"extent_{i}": float(e) for i, e in enumerate(extents)}
    features["log2_flops"] = float(sum(math.log2(e) for e in extents) + 10)
    return DesignSpace(Workload(key, f"fake_{key}", op, features), {"kind": "llvm"}, (Sketch([], knobs),))


class FakeToolchain(Toolchain):
    """A model of ``layers`` fake layers: each a :func:`fake_space`, measured by :class:`FakeMeasurer`.

    ``deploy`` "builds" the model as the weighted sum of each layer's best fake latency (verified), or, with
    ``crash_library``, reports a library that did not run (``verified`` False), as the TVM toolchain does.
    With ``siblings``, layers 0 and 1 are one sibling group (the same loop nest, as a conv with two epilogues).
    """

    def __init__(self, layers: int = 3, crash_library: bool = False, fail_every: int = 0, delay_s: float = 0.0,
                 log_path: str | None = None, siblings: bool = False):
        self.n_layers = int(layers)
        self.siblings = siblings
        self.crash_library = crash_library
        self.fail_every = fail_every
        self.delay_s, self.log_path = delay_s, log_path

    def load(self, model: str, input_shape, seed: int, target_kind: str, threads: int,
             layout: str = "auto") -> LoadedModel:
        from raydgp.errors import ModelError

        if model != "fake":
            raise ModelError(f"unknown model {model!r}: the fake toolchain has one model, 'fake'")
        layers = []
        for i in range(self.n_layers):
            key = f"fake-{i}"
            sib = self.siblings and i < 2
            sp = fake_space(key, (64 * (1 if sib else i + 1), 56))
            layers.append(ModelLayer(name=f"fused_fake_{i}", task=TaskPayload(key, "{}", {"kind": "llvm"}), space=sp,
                                     weight=1 + i % 2, op="conv2d", flops=2.0 ** sp.workload.features["log2_flops"],
                                     group="fake-g0" if sib else ""))
        return LoadedModel("fake", "fake", "fake", {"kind": "llvm"}, layers)

    def measurer(self, settings: MeasureSettings) -> FakeMeasurer:
        return FakeMeasurer(self.fail_every)

    def trial_measurer(self) -> FakeMeasurer:
        return FakeMeasurer(self.fail_every, self.delay_s, self.log_path)

    def deploy(self, model: LoadedModel, store: RecordStore, tuned_keys: set, out, threads: int,
               compare_reference: bool, log: Callable[[str], Any]) -> Deployment:
        if self.crash_library:
            return Deployment(library=f"{out}/fake.so", verified=False,
                              verify_message="the tuned library did not run: killed by SIGSEGV (fake)")
        total = 0.0
        for l in model.layers:
            best = store.best(l.key, prefer_tag=RETIME_TAG) if l.key in tuned_keys else None
            total += l.weight * (best.result.median_ms if best else fake_latency_ms(l.key, None))
        return Deployment(library=f"{out}/fake.so", verified=True, verify_message="ok",
                          end_to_end_latencies_ms=[total], max_abs_err=0.0,
                          untuned_ms=sum(l.weight * fake_latency_ms(l.key, None) for l in model.layers))



N = 64


def _elementwise(scale: float):
    tvm = import_tvm()
    from tvm import te

    a = te.placeholder((N,), name="A")
    b = te.compute((N,), lambda i: a[i] * scale, name="B")
    return tvm.IRModule({"main": te.create_prim_func([a, b])})


def copy_task_module():
    """The reference task: ``B = 2 * A``."""
    return _elementwise(2.0)


def wrong_result_module():
    """Compiles and runs, but computes ``3 * A``."""
    return _elementwise(3.0)


def build_error_module():
    """Binds a loop to ``threadIdx.x``: TVM cannot compile that for a CPU."""
    import_tvm()
    from tvm import s_tir

    mod = copy_task_module()
    sch = s_tir.Schedule(mod)
    (loop,) = sch.get_loops(sch.get_sblock("B"))
    sch.bind(loop, "threadIdx.x")
    return sch.mod


def segfault_module():
    """Reads 16 TiB past its input: the process dies of SIGSEGV."""
    tvm = import_tvm()
    from tvm.script import tirx as T

    @T.prim_func
    def main(A: T.Buffer((N,), "float32"), B: T.Buffer((N,), "float32")):
        C = T.decl_buffer((1,), "float32", data=A.data)
        for i in range(N):
            B[i] = C[T.int64(1) << T.int64(44)]

    return tvm.IRModule({"main": main})


def hanging_module():
    """Loops forever (its inputs are in [-1, 1], the loop waits for A[0] <= -100)."""
    tvm = import_tvm()
    from tvm.script import tirx as T

    @T.prim_func
    def main(A: T.Buffer((N,), "float32"), B: T.Buffer((N,), "float32")):
        while A[0] > T.float32(-100):
            B[0] = B[0] + T.float32(1)

    return tvm.IRModule({"main": main})


def synthetic_loss(config: dict) -> float:
    """A known-optimum test function over a mixed space (0 at x=0.3, lr=1e-2, k=0, q=32, act=relu)."""
    import math

    return ((config["x"] - 0.3) ** 2 + (math.log10(config["nested"]["lr"]) + 2) ** 2 / 4 + 0.05 * config["k"]
            + (0.0 if config["act"] == "relu" else 0.2) + abs(config["q"] - 32) / 100)
