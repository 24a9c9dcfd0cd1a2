"""Export records to, and import them from, MetaSchedule's JSONDatabase.

The exported directory holds ``database_workload.json`` and ``database_tuning_record.json`` exactly as MetaSchedule writes
them, so ``ms.tir_integration.compile_tir`` and ``ms.relax_integration.compile_relax`` apply the best schedules directly.
A record's trace is rebuilt from its configuration (sketch + decisions) and the target's postprocessors, the same way the
measurement worker applied it.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from raydgp.errors import ConfigError
from raydgp.records import Config, MeasureResult, Record, RecordStore
from raydgp.space.design_space import DesignSpace
from raydgp.space.metaschedule import apply_config, build_space, make_target, trace_as_json, tune_context
from raydgp.space.workloads import make_task
from raydgp.tvm_loader import import_tvm


def export_to_metaschedule(store: RecordStore, work_dir: str | os.PathLike, top_k: int = 8,
                           keys: set | None = None, prefer_tag: str | None = None) -> int:
    """Write the ``top_k`` fastest ``ok`` records of every workload (or of those in ``keys``) to a MetaSchedule
    JSONDatabase; with ``prefer_tag``, a workload that has records with that tag is exported from those only.

    Each record's ``run_secs`` is its median latency (one value, seconds), so MetaSchedule, which ranks by the mean of
    ``run_secs``, picks the same best as :meth:`RecordStore.best`.

    Returns:
        The number of tuning records written.
    """
    tvm = import_tvm()
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    Path(work_dir).mkdir(parents=True, exist_ok=True)
    db = ms.database.JSONDatabase(work_dir=str(work_dir))
    entries = store.workload_entries()
    by_key: dict[str, list[Record]] = defaultdict(list)
    for r in store.records():
        if r.result.ok and (keys is None or r.workload.key in keys):
            by_key[r.workload.key].append(r)
    n = 0
    for key, recs in by_key.items():
        if prefer_tag is not None and any(r.tag == prefer_tag for r in recs):
            recs = [r for r in recs if r.tag == prefer_tag]
        entry = entries.get(key)
        if entry is None:
            continue  # measured elsewhere without its module: nothing to attach the schedule to
        mod = tvm.ir.load_json(entry["mod"])
        workload = db.commit_workload(mod)
        space = DesignSpace.from_json(entry["space"]) if entry.get("space") else None
        seen = set()
        for r in sorted(recs, key=lambda r: r.result.median_ms):
            if len(seen) >= top_k:
                break
            if (r.config, r.target.get("kind")) in seen:
                continue
            if r.trace is not None:
                trace_json = r.trace
                sch = tvm.s_tir.Schedule(mod)
                tvm.s_tir.Trace.apply_json_to_schedule(trace_json, sch)
            elif space is not None and r.config.sketch >= 0:
                postprocs = tune_context(mod, r.target).space_generator.postprocs
                sch, _ = apply_config(mod, space.trace_json(r.config), postprocs)
            else:
                continue
            seen.add((r.config, r.target.get("kind")))
            # MetaSchedule ranks a workload's records by the *mean* of run_secs, raydgp by the median (one preempted
            # repeat must not hide the fastest schedule). The raw repeats would let compile_tir / compile_relax apply
            # a record other than the one raydgp reports as best, so the median is what is written.
            db.commit_tuning_record(ms.database.TuningRecord(
                trace=sch.trace, workload=workload, run_secs=[r.result.median_ms / 1e3],
                target=make_target(r.target), args_info=ArgInfo.from_prim_func(mod["main"])))
            n += 1
    return n


def import_from_metaschedule(work_dir: str | os.PathLike, store: RecordStore, tag: str = "metaschedule") -> int:
    """Append the tuning records of a MetaSchedule JSONDatabase to a record store.

    A record whose trace matches a sketch of raydgp's design space gets that configuration; otherwise it keeps its full
    trace (sketch ``-1``), which export and ``compile_tir`` still use. Failed MetaSchedule runs (run time 1e10 s or none)
    are imported as ``run_error``.

    Returns:
        The number of records imported.
    """
    import_tvm()
    from tvm.s_tir import meta_schedule as ms

    wd = Path(work_dir)
    if not (wd / "database_workload.json").exists() or not (wd / "database_tuning_record.json").exists():
        raise ConfigError(f"{wd} is not a MetaSchedule database (database_workload.json and "
                          "database_tuning_record.json expected)")
    db = ms.database.JSONDatabase(work_dir=str(wd), allow_missing=False)
    spaces: dict[int, tuple] = {}
    out = []
    for tr in db.get_all_tuning_records():
        mod = tr.workload.mod
        target = _target_dict(tr.target)
        h = int(tr.workload.shash) if hasattr(tr.workload, "shash") else id(mod)
        if h not in spaces:
            task = make_task(mod, target)
            space = build_space(task)
            store.add_workload(task.workload.key, task.mod_json, space.to_json())
            spaces[h] = (task, space)
        task, space = spaces[h]
        insts, decisions = trace_as_json(tr.trace)
        cfg = _match_sketch(space, insts, decisions)
        secs = [float(x) for x in (tr.run_secs or [])]
        if secs and all(s < 1e9 for s in secs):
            res = MeasureResult("ok", tuple(s * 1e3 for s in secs))
        else:
            res = MeasureResult("run_error", message="failed in MetaSchedule")
        out.append(Record.now(task.workload, target, cfg, res, trace=None if cfg.sketch >= 0 else [insts, decisions],
                              tag=tag))
    store.append(out)
    return len(out)


def _target_dict(target) -> dict:
    d = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in dict(target.export()).items()
         if k in ("kind", "mcpu", "num-cores", "arch", "max_threads_per_block", "max_shared_memory_per_block",
                  "thread_warp_size")}
    if "num-cores" in d:
        d["num-cores"] = int(d["num-cores"])
    return d


def _match_sketch(space: DesignSpace, insts: list, decisions: list) -> Config:
    # A measured trace is a sketch's instructions followed by the postprocessors' own.
    dec = {int(i): d for i, d in decisions}
    for s, sk in enumerate(space.sketches):
        if insts[:len(sk.insts)] == sk.insts:
            cfg = Config(s, tuple(dec.get(k.inst) for k in sk.knobs))
            if space.is_valid(cfg):
                return cfg
    return Config(-1, ())
