"""Model out: compile a prepared Relax module with the tuned schedules, export it, and check and time the library.

The tuned build goes through MetaSchedule's own ``compile_relax`` with a JSONDatabase exported from the records; the
untuned build is TVM's default pipeline (which schedules nothing on CPU). The exported library is then loaded in a fresh
process (``tvm.runtime.load_module`` + the Relax VM), exactly as a deployment would, to produce its outputs and its
end-to-end latency (:mod:`raydgp.models.run_library`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from raydgp.errors import RayDGPError
from raydgp.models.rounds import RoundsTimer
from raydgp.tvm_loader import import_tvm


def compile_tuned(prepared_mod, target: Mapping, ms_db_dir: str | os.PathLike):
    """Build with the records exported to ``ms_db_dir``: every layer with a record gets its best schedule.

    The pipeline is ``compile_relax``'s (the same fusion as extraction, so the database's workloads match, then
    ``MetaScheduleApplyDatabase`` and the VM lowering), plus, on CPU, the weight prepacking of
    ``static_shape_tuning_pipeline(cpu_weight_prepack=True)``: ``SplitLayoutRewritePreproc`` moves each schedule's
    layout-rewrite block into its own function and ``FoldConstant`` runs it on the constant weights, so the library
    holds the weights already packed and never packs them per call.
    """
    tvm = import_tvm()
    from tvm import relax
    from tvm.relax import build as relax_build
    from tvm.relax import pipeline as relax_pipeline
    from tvm.s_tir import dlight as dl

    from raydgp.space.metaschedule import make_target

    t = make_target(target)
    try:
        lower = [*relax_pipeline.dataflow_lower_passes(t), *relax_pipeline.finalize_passes(t)]
    except (ValueError, AttributeError):  # as compile_relax: targets without a registered pipeline
        lower = [relax.transform.RewriteDataflowReshape(), relax.transform.ToNonDataflow(),
                 relax.transform.RemovePurityChecking(), relax.transform.CallTIRRewrite(),
                 relax.transform.StaticPlanBlockMemory(), relax.transform.LowerAllocTensor(),
                 relax.transform.KillAfterLastUse(), relax.transform.LowerRuntimeBuiltin(),
                 relax.transform.ComputePrimValue(), relax.transform.VMShapeLower(),
                 relax.transform.AttachGlobalSymbol()]
    gpu = relax_pipeline.BackendDispatcher.is_gpu_target(t)
    if gpu:
        lower = [dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(),
                                         dl.gpu.GeneralReduction(), dl.gpu.Fallback()), *lower]
    mod = tuned_module(prepared_mod, target, ms_db_dir)
    with t, tvm.transform.PassContext(opt_level=3):
        return relax_build(mod, target=t, relax_pipeline=tvm.transform.Sequential(lower))


def tuned_module(prepared_mod, target: Mapping, ms_db_dir: str | os.PathLike):
    """The Relax module with the database's schedules applied (and, on CPU, the weights packed at build), before the
    VM lowering: what :func:`compile_tuned` builds."""
    tvm = import_tvm()
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    from raydgp.models.tasks import fuse
    from raydgp.space.metaschedule import make_target
    from raydgp.space.workloads import prepacks

    Path(ms_db_dir).mkdir(parents=True, exist_ok=True)
    db = ms.database.JSONDatabase(work_dir=str(ms_db_dir))
    prepack = [relax.transform.SplitLayoutRewritePreproc(), relax.transform.FoldConstant(),
               relax.transform.DeadCodeElimination()] if prepacks(target) else []
    with make_target(target), db, tvm.transform.PassContext(opt_level=3):
        mod = relax.transform.MetaScheduleApplyDatabase()(fuse(prepared_mod, target))
        return tvm.transform.Sequential(prepack)(mod)


def compile_untuned(prepared_mod, target: Mapping):
    """TVM's default build, no tuning: the baseline."""
    tvm = import_tvm()
    from raydgp.space.metaschedule import make_target

    return tvm.compile(prepared_mod, target=make_target(target))


def export(executable, path: str | os.PathLike) -> Path:
    """Export a built module as a shared library that ``tvm.runtime.load_module`` reads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    executable.export_library(str(tmp))
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class LibraryRun:
    """Outputs and timing of a library run in a fresh process."""

    outputs: list
    latencies_ms: list

    @property
    def median_ms(self) -> float:
        return float(np.median(self.latencies_ms)) if self.latencies_ms else float("nan")


def _library_cmd(lib, inp: Path, out: Path, repeat: int, min_repeat_ms: float, device: str) -> list[str]:
    return [sys.executable, "-m", "raydgp.models.run_library", str(lib), str(inp), str(out), str(int(repeat)),
            str(int(min_repeat_ms)), device]


def _read_outputs(out: Path) -> list:
    with np.load(out) as z:
        return [z[f"arr_{i}"] for i in range(len(z.files))]


def run_library(lib: str | os.PathLike, inputs: Mapping[str, np.ndarray], *, threads: int, repeat: int = 10,
                min_repeat_ms: int = 50, device: str = "cpu", timeout_s: float = 600.0,
                workdir: str | os.PathLike | None = None) -> LibraryRun:
    """Load ``lib`` in a fresh Python process, run it on ``inputs`` and time it (``repeat`` medians of >= ``min_repeat_ms``;
    ``repeat=1, min_repeat_ms=0``: one call, after the call that produced the outputs).

    Raises:
        RayDGPError: the library failed to load or run, or did not finish within ``timeout_s``.
    """
    workdir = Path(workdir or Path(lib).parent)
    inp = workdir / ".run_inputs.npz"
    out = workdir / ".run_outputs.npz"
    np.savez(inp, *[np.ascontiguousarray(v) for v in inputs.values()])
    env = dict(os.environ, TVM_NUM_THREADS=str(int(threads)))
    try:
        p = subprocess.run(_library_cmd(lib, inp, out, repeat, min_repeat_ms, device), capture_output=True, text=True,
                           timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        raise RayDGPError(f"running {lib} took longer than {timeout_s:.0f} s") from None
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or [f"exit status {p.returncode}"]
        raise RayDGPError(f"running {lib} failed: {tail[0]}")
    info = json.loads(p.stdout.strip().splitlines()[-1])
    outputs = _read_outputs(out)
    inp.unlink(missing_ok=True)
    out.unlink(missing_ok=True)
    return LibraryRun(outputs=outputs, latencies_ms=info["latencies_ms"])


class LibraryTimer(RoundsTimer):
    """``lib`` loaded once in a fresh process (:mod:`raydgp.models.rounds`): its ``outputs`` on the inputs, then a
    timing round (``repeat`` medians of >= ``min_repeat_ms``) each time :meth:`round` is called. Use as a context
    manager, or :meth:`close` it.

    Raises:
        RayDGPError: (at the start or any round) the library failed to load or run, or a step took longer than
            ``timeout_s``.
    """

    def __init__(self, lib: str | os.PathLike, inputs: Mapping[str, np.ndarray], *, threads: int, repeat: int = 10,
                 min_repeat_ms: int = 50, device: str = "cpu", timeout_s: float = 600.0,
                 workdir: str | os.PathLike | None = None):
        from raydgp.models.rounds import RoundsProcess

        workdir = Path(workdir or Path(lib).parent)
        inp, out = workdir / ".timer_inputs.npz", workdir / ".timer_outputs.npz"
        np.savez(inp, *[np.ascontiguousarray(v) for v in inputs.values()])
        try:
            self._proc = RoundsProcess(_library_cmd(lib, inp, out, repeat, min_repeat_ms, device) + ["rounds"],
                                       dict(os.environ, TVM_NUM_THREADS=str(int(threads))), timeout_s,
                                       what=f"running {lib}")
            try:
                self.outputs: list = _read_outputs(out)
            except (OSError, ValueError, KeyError) as e:
                self._proc.close()
                raise RayDGPError(f"running {lib}: its outputs could not be read ({e})") from None
        finally:
            inp.unlink(missing_ok=True)
            out.unlink(missing_ok=True)

    def round(self) -> list[float]:
        """One timing round's latencies (ms)."""
        return [float(v) for v in self._proc.round()["latencies_ms"]]


def compare(outputs: list, reference: list, rtol: float = 1e-3, atol_rel: float = 1e-4) -> tuple[bool, float, str]:
    """Check outputs against the reference: ``|out - ref| <= atol + rtol * |ref|`` with ``atol = atol_rel * max|ref|``.

    Returns:
        ``(ok, max_abs_err, message)``.
    """
    if len(outputs) != len(reference):
        return False, float("inf"), f"{len(outputs)} outputs, the reference has {len(reference)}"
    worst = 0.0
    for i, (o, r) in enumerate(zip(outputs, reference)):
        o, r = np.asarray(o), np.asarray(r)
        if o.shape != r.shape:
            return False, float("inf"), f"output {i}: shape {o.shape}, reference {r.shape}"
        if not np.all(np.isfinite(o)):
            return False, float("inf"), f"output {i} has NaN/inf"
        err = np.abs(o.astype(np.float64) - r.astype(np.float64))
        worst = max(worst, float(err.max(initial=0.0)))
        atol = atol_rel * float(np.abs(r).max(initial=0.0))
        bad = err > atol + rtol * np.abs(r)
        if bad.any():
            return False, worst, f"output {i}: {int(bad.sum())} of {bad.size} elements off (max abs err {worst:.3g})"
    return True, worst, "ok"
