"""Import TVM the way raydgp needs it: threads fixed first, and without the 50 s tensor-intrinsic import.

``tvm.s_tir.meta_schedule.TuneContext`` imports ``tvm.s_tir.tensor_intrin``, whose ``__init__`` registers the tensor
intrinsics of every backend (CUDA, x86, ARM, ROCm, Hexagon, RISC-V): about 50 s on a 2-core machine, paid again in every
fresh worker. raydgp registers only the intrinsics of the target kind in use (x86: 0.5 s), by placing the package in
``sys.modules`` without running its ``__init__``. Everything else in TVM is untouched.

This is the only module that decides how TVM is imported; every TVM-using module calls :func:`import_tvm` first.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types

_INTRIN_PKG = "tvm.s_tir.tensor_intrin"
_loaded_intrins: set[str] = set()


def import_tvm(num_threads: int | None = None):
    """Import and return the ``tvm`` module.

    Args:
        num_threads: threads of TVM's CPU runtime. It only takes effect before TVM's runtime starts, so set it in fresh
            worker processes; None leaves ``TVM_NUM_THREADS`` as it is.
    """
    if num_threads is not None and "tvm" not in sys.modules:
        os.environ["TVM_NUM_THREADS"] = str(int(num_threads))
    import tvm  # noqa: F401
    import tvm.s_tir  # noqa: F401

    if _INTRIN_PKG not in sys.modules:
        spec = importlib.util.find_spec(_INTRIN_PKG)
        stub = types.ModuleType(_INTRIN_PKG)
        stub.__path__ = list(spec.submodule_search_locations)  # submodules stay importable
        stub.__package__ = _INTRIN_PKG
        sys.modules[_INTRIN_PKG] = stub
    return tvm


def load_intrinsics(target_kind: str) -> None:
    """Register the tensor intrinsics MetaSchedule's rules may look up for ``target_kind`` (``llvm`` or ``cuda``).

    CUDA's take about 25 s on this machine kind, so they are loaded only for cuda targets, once per process.
    """
    import_tvm()
    module = {"llvm": "x86", "cuda": "cuda"}.get(target_kind)
    if module is None or module in _loaded_intrins:
        return
    __import__(f"{_INTRIN_PKG}.{module}")
    _loaded_intrins.add(module)


def ms_pool_worker_init() -> None:
    """Initializer for MetaSchedule's own builder and runner pool workers (``LocalBuilder(initializer=...)``,
    ``LocalRunner(initializer=...)``): TVM imported as raydgp imports it, before the worker unpickles its first job.

    A stock worker imports ``tvm.s_tir.meta_schedule`` and with it every backend's tensor intrinsics (about 50 s on a
    2-core machine). MetaSchedule's builder kills a worker after 30 s and starts a fresh one, which imports again: on
    an Intel emeraldrapids 2-core VM every build of ``tune_tir`` / ``tune_relax`` timed out that way (a schedule that
    ``tvm.compile`` builds in 0.3 s in-process took 51 s through a stock ``LocalBuilder``). The benchmarks give
    MetaSchedule this initializer so that it is compared on its search, not on its workers' start-up.
    """
    import_tvm()
    load_intrinsics("llvm")
