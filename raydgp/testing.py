"""Fixtures shipped with the package: tiny real TVM kernels that misbehave on purpose, for tests and demos.

Each is an IRModule with the same signature as :func:`copy_task_module` (``B = 2 * A`` over 64 floats), so it can be
measured as a *candidate* of that task: the worker checks its output against the task's reference.
"""

from __future__ import annotations

from raydgp.tvm_loader import import_tvm

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


def synthetic_trainable(config: dict) -> None:
    """Ray Tune function trainable reporting :func:`synthetic_loss` as ``loss``."""
    from ray import tune

    tune.report({"loss": synthetic_loss(config)})
