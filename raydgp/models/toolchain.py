"""The TVM toolchain behind the pipeline: import and layer extraction, MetaSchedule design spaces, warm measurement
workers, and the tuned library (MetaSchedule database -> ``compile_relax`` -> exported, run in a fresh process,
verified against the framework, timed beside the untuned build and the framework itself)."""

from __future__ import annotations

import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any, Callable

from raydgp.errors import RayDGPError
from raydgp.measure.local import LocalMeasurer
from raydgp.measure.protocol import MeasureSettings, TaskPayload
from raydgp.models.base import Deployment, LoadedModel, ModelLayer, Toolchain
from raydgp.records import RETIME_TAG, RecordStore


TIMING_ROUNDS = 3  # alternating tuned / reference timing rounds in deploy
TIMING_REPEAT = 4  # medians of >= 50 ms per round


class TVMToolchain(Toolchain):
    """Apache TVM 0.27: Relax import, MetaSchedule spaces and databases, the Relax VM."""

    def load(self, model: str, input_shape, seed: int, target_kind: str, threads: int,
             layout: str = "auto") -> LoadedModel:
        from raydgp.models.importer import load_model
        from raydgp.models.tasks import extract_layers, prepare, resolve_layout
        from raydgp.space.metaschedule import host_target
        from raydgp.space.space_cache import cached_space
        from raydgp.space.workloads import anchor_signature

        target = host_target(target_kind, threads)
        m = load_model(model, input_shape, seed=seed)
        prepared = prepare(m.mod, target, layout)
        layers = []
        for l in extract_layers(prepared, target):
            sig = anchor_signature(l.task.mod)  # "none": no anchor loop nest (a transpose), so no siblings
            layers.append(ModelLayer(name=l.name, task=TaskPayload(l.task.workload.key, l.task.mod_json, target),
                                     space=cached_space(l.task), weight=l.weight, op=l.task.workload.op,
                                     flops=l.flops, group="" if sig == "none" else f"{l.task.workload.op}:{sig}"))
        if not layers:
            raise RayDGPError(f"model {m.name!r}: no tunable layers found")
        return LoadedModel(name=m.name, source=m.source, reference_name=m.reference_name, target=target,
                           layers=layers, handle={"imported": m, "prepared": prepared, "arg": model,
                                                  "input_shape": input_shape, "seed": seed,
                                                  "device": "cuda" if target_kind == "cuda" else "cpu",
                                                  "layout": resolve_layout(layout, target)})

    def measurer(self, settings: MeasureSettings) -> LocalMeasurer:
        return LocalMeasurer(settings)

    def peak_gflops(self, target_kind: str, threads: int, settings: MeasureSettings) -> float | None:
        """The CPU's sgemm rate on ``threads`` threads (:mod:`raydgp.measure.peak`, cached); None on GPU targets
        (no GPU peak micro-benchmark yet: the budget then runs without its headroom term)."""
        if target_kind != "llvm":
            return None
        from raydgp.dgp.train import default_cache_dir
        from raydgp.measure.peak import node_peak_gflops

        return node_peak_gflops(threads, default_cache_dir().parent, lock_path=settings.lock_path)

    def deploy(self, model: LoadedModel, store: RecordStore, tuned_keys: set, out, threads: int,
               compare_reference: bool, log: Callable[[str], Any]) -> Deployment:
        from raydgp.models.build import LibraryTimer, compare, compile_tuned, compile_untuned, export, run_library
        from raydgp.models.run_reference import ReferenceTimer
        from raydgp.space.ms_database import export_to_metaschedule

        h = model.handle
        m, prepared, device = h["imported"], h["prepared"], h["device"]
        out = Path(out)
        dbdir = out / "ms_database"
        tmp_db = out / ".ms_database.tmp"
        shutil.rmtree(tmp_db, ignore_errors=True)
        n_db = export_to_metaschedule(store, tmp_db, top_k=1, keys=tuned_keys, prefer_tag=RETIME_TAG)
        _replace_dir(tmp_db, dbdir)  # a kill leaves either the old database or the new one, never half of one
        reference = m.reference(list(m.inputs.values()))
        t0 = time.monotonic()
        lib = export(compile_tuned(prepared, model.target, dbdir), out / f"{m.name}.so")
        build_s = time.monotonic() - t0
        un_lib = export(compile_untuned(prepared, model.target), out / ".untuned" / f"{m.name}.so")
        try:
            # one timed call after the call that gives the outputs: the untuned build is a baseline two orders of
            # magnitude off, seconds per call
            untuned_ms = run_library(un_lib, m.inputs, threads=threads, repeat=1, min_repeat_ms=0,
                                     device=device).median_ms
        except RayDGPError as e:
            log(f"warning: the untuned library did not run ({e})")
            untuned_ms = None
        # The tuned library and the framework reference are timed in alternation (tuned, reference, tuned, ...;
        # ``TIMING_ROUNDS`` rounds of ``TIMING_REPEAT`` medians each, pooled), each side in a fresh process of its own
        # that starts once and waits idle while the other times (:mod:`raydgp.models.rounds`), so a change of the
        # machine's load during the timing falls on both sides of the ratio, not on one.
        timers: list = []
        raw: dict = {}
        lat: list = []
        try:
            try:
                tuned = LibraryTimer(lib, m.inputs, threads=threads, device=device, repeat=TIMING_REPEAT)
                timers.append(tuned)
                ok, err, msg = compare(tuned.outputs, reference)
            except RayDGPError as e:  # the tuned library crashed or hung: not verified, and said so
                tuned, ok, err, msg = None, False, float("inf"), f"the tuned library did not run: {e}"
            log(f"tuned library {lib} ({n_db} layer schedules, built in {build_s:.1f} s): "
                + (f"verified against {m.reference_name} (max abs err {err:.2e})" if ok
                   else f"VERIFICATION FAILED against {m.reference_name}: {msg}"))
            ref = None
            if compare_reference:
                try:
                    ref = ReferenceTimer(m.extra.get("path") or h["arg"], h["input_shape"], h["seed"], threads,
                                         repeat=TIMING_REPEAT)
                    timers.append(ref)
                except RayDGPError as e:
                    log(f"warning: could not time the {m.reference_name} reference ({e})")
                    compare_reference = False
            # Rounds alternate with the reference; without one, a single round of the tuned library is its timing.
            rounds = TIMING_ROUNDS if compare_reference else 1
            for _ in range(rounds):
                if tuned is not None:
                    try:
                        lat += tuned.round()
                    except RayDGPError as e:  # it ran and verified, then failed: not a deployable library
                        tuned, ok = None, False
                        msg = f"the tuned library failed on a timing run: {e}"
                        log(f"NOT VERIFIED: {msg}")
                if ref is not None:
                    try:
                        for k, v in ref.round().items():
                            raw.setdefault(k, []).extend(v)
                    except RayDGPError as e:
                        log(f"warning: the {m.reference_name} reference stopped ({e}); its rounds so far count")
                        ref = None
        finally:
            for t in timers:
                t.close()
        refs = {k: float(statistics.median(v)) for k, v in raw.items()}
        import math

        med = sorted(lat)[len(lat) // 2] if lat else None
        return Deployment(library=str(lib), verified=ok, verify_message=msg,
                          end_to_end_latencies_ms=lat if ok else [], unverified_ms=None if ok else med,
                          max_abs_err=err if math.isfinite(err) else None, untuned_ms=untuned_ms,
                          reference_ms=refs, schedules=n_db, build_s=build_s, ms_database=str(dbdir),
                          timing=(f"tuned library and {m.reference_name} in alternation, each in one fresh process "
                                  f"started once, {rounds} rounds of {TIMING_REPEAT} medians of >= 50 ms each, pooled")
                          if compare_reference else
                          f"tuned library alone (no reference timed), {rounds} round(s) of {TIMING_REPEAT} medians "
                          f"of >= 50 ms each")


def _replace_dir(new: Path, dst: Path) -> None:
    """Put directory ``new`` in place of ``dst`` (rename; the old one is removed after)."""
    old = dst.with_name(dst.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if dst.exists():
        os.replace(dst, old)
    os.replace(new, dst)
    shutil.rmtree(old, ignore_errors=True)
