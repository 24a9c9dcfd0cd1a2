#!/usr/bin/env python
"""Fast-schedules benchmark (issue 10): whole models through ``raydgp tune`` at stated budgets, and single layers
against MetaSchedule's ``tune_tir`` at equal trials; every figure measured in this run, on this machine.

    python scripts/bench_fast.py models --model resnet18 --trials 300 --out runs/bench_fast
    python scripts/bench_fast.py models --model depthwise_small --trials 120 --out runs/bench_fast   # ONNX vs ORT
    python scripts/bench_fast.py layers --workloads conv2d:1,160,14,14,320,3,1,1 --trials 64 --out runs/bench_fast
    python scripts/bench_fast.py ort-nodes --model depthwise_small --out runs/bench_fast  # ORT time per graph node
    python scripts/bench_fast.py render --out runs/bench_fast     # (re)writes the BENCHMARKS.md section

``models`` runs ``raydgp tune`` (its summary already holds the tuned library's latency, verified against the framework,
and PyTorch eager / ONNX Runtime / untuned TVM timed in fresh processes after tuning, on the same threads) and keeps, per
layer, trials, best ms, GFLOP/s and fraction of the node's sgemm peak, plus the sum of the layer bests next to the
built model's latency. ``layers`` runs, per workload and one after the other: ``raydgp layer`` (DGP with the shipped
history, the same layer excluded) and MetaSchedule ``tune_tir`` with the weight layout-free (its own builder, runner,
XGBoost cost model and evolutionary search), each timed end to end; then both best schedules are re-timed by the same
raydgp measurer, interleaved, so the comparison uses one measurement method. Results are appended to
``OUT/bench_fast.json`` (one entry per run, with ``mcpu``); ``render`` turns the JSON into tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- bench_fast:begin -->", "<!-- bench_fast:end -->"


def commit() -> str:
    p = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()  # results written by this script do not count
    return p.stdout.strip() + (" (uncommitted changes)" if dirty else "")


def machine() -> dict:
    from raydgp.measure.peak import cpu_name

    try:
        sys.path.insert(0, str(ROOT))
        from raydgp.space.metaschedule import host_target

        mcpu = host_target("llvm", os.cpu_count())["mcpu"]
    except Exception:  # noqa: BLE001
        mcpu = "?"
    return {"cpu": cpu_name(), "mcpu": mcpu, "cores": os.cpu_count(), "platform": platform.platform()}


def _load(out: Path) -> dict:
    f = out / "bench_fast.json"
    return json.loads(f.read_text()) if f.exists() else {"models": [], "layers": []}


def _save(out: Path, data: dict) -> None:
    from raydgp.atomic import write_json_atomic

    write_json_atomic(out / "bench_fast.json", data, indent=2)


def _begin(args) -> tuple[Path, dict, dict]:
    """The output folder (created), the results so far and this machine."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return out, _load(out), machine()


def run_models(args) -> None:
    out, data, mach = _begin(args)
    models = [str(make_depthwise_onnx(out / "depthwise_small.onnx")) if m == "depthwise_small" else m
              for m in args.model.split(",")]
    for model in models:
        for trials in str(args.trials).split(","):
            run = out / f"{Path(model).stem}-{trials}-{time.strftime('%H%M%S')}"
            env = dict(os.environ, RAYDGP_HOME=str(out / "home"))
            budget = [] if trials == "default" else ["--trials", trials]  # "default": the CLI's own defaults
            cmd = [sys.executable, "-m", "raydgp", "tune", "--model", model, *budget, "--out", str(run),
                   *args.extra.split()]
            t0 = time.monotonic()
            p = subprocess.run(cmd, cwd=ROOT, env=env, text=True, capture_output=True)
            wall = time.monotonic() - t0
            (run.parent / f"{run.name}.log").write_text(p.stdout + "\n--- stderr ---\n" + p.stderr)
            summ = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
            layers = [{k: l.get(k) for k in ("name", "op", "weight", "trials", "best_ms", "untuned_ms", "gflops",
                                              "peak_fraction", "group", "schedule")} for l in summ.get("layers", [])]
            est = sum(l["weight"] * l["best_ms"] for l in layers if l["best_ms"] and l.get("schedule") == "tuned") + \
                sum(l["weight"] * (l["untuned_ms"] or 0) for l in layers if l.get("schedule") != "tuned")
            hist = next((ln.split("history:", 1)[1].strip() for ln in p.stderr.splitlines() if "history:" in ln),
                        "none")
            row = {"model": model, "trials": trials, "command": " ".join(cmd[1:]), "exit": p.returncode,
                   "commit": commit(), "history": hist, "layout": summ.get("layout") or "NCHW",
                   "wall_s": round(wall, 1), "machine": mach, "date": time.strftime("%Y-%m-%d %H:%M"),
                   "tuned_ms": summ.get("end_to_end_ms"), "verified": summ.get("verified"),
                   "pytorch_ms": summ.get("pytorch_ms"), "onnxruntime_ms": summ.get("onnxruntime_ms"),
                   "untuned_ms": summ.get("untuned_end_to_end_ms"), "max_abs_err": summ.get("max_abs_err"),
                   "trials_total": summ.get("trials_total"), "tuning_wall_s": summ.get("tuning_wall_s"),
                   "peak_gflops": summ.get("peak_gflops"),
                   "layer_best_sum_ms": summ.get("layer_best_sum_ms") or round(est, 4),
                   "sibling_groups": summ.get("sibling_groups"), "proposals": summ.get("proposals"), "layers": layers,
                   "in_flight": summ.get("in_flight_per_layer"),
                   "layer_experiments": summ.get("layer_experiments_at_once")}
            data["models"].append(row)
            _save(out, data)
            print(f"{model} {trials} trials: tuned {row['tuned_ms']} ms (verified {row['verified']}), PyTorch "
                  f"{row['pytorch_ms']} ms, ORT {row['onnxruntime_ms']} ms, layer bests {row['layer_best_sum_ms']} ms, "
                  f"wall {row['wall_s']} s", flush=True)


def _time_all(spec: str, ours: list, theirs_db: Path, rounds: int = 5) -> tuple[list, list]:
    """Re-time raydgp's best configurations (one per run) and MetaSchedule's best schedule with one measurer,
    interleaved round by round; returns each raydgp run's latencies (ms, None where it failed) and MetaSchedule's."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from raydgp.measure.local import LocalMeasurer
    from raydgp.measure.protocol import MeasureSettings, TaskPayload
    from raydgp.space.metaschedule import host_target, make_target
    from raydgp.space.workloads import make_task

    target = host_target("llvm", os.cpu_count())
    task = make_task(spec, target)
    payload = TaskPayload(task.workload.key, task.mod_json, target)
    theirs_mod = None
    if theirs_db is not None:
        db = ms.database.JSONDatabase(work_dir=str(theirs_db))
        sch = ms.tir_integration.compile_tir(db, task.mod, make_target(target))
        theirs_mod = tvm.ir.save_json(sch.mod) if sch is not None else None
    a, b = [[] for _ in ours], []
    with LocalMeasurer(MeasureSettings(num_threads=os.cpu_count())) as m:
        for _ in range(rounds):
            for i, o in enumerate(ours):
                if o is not None:
                    ra = m.measure(payload, o["trace"]).result
                    a[i].append(ra.median_ms if ra.ok else None)
            if theirs_mod:
                rb = m.measure(payload, None, theirs_mod).result
                b.append(rb.median_ms if rb.ok else None)
    return a, b


def run_layers(args) -> None:
    """raydgp layer (DGP, shipped history; once per ``--in-flight`` value) and MetaSchedule tune_tir on each
    workload, one after the other, then every best schedule re-timed together."""
    import statistics

    out, data, mach = _begin(args)
    widths = [int(w) for w in str(args.in_flight).split(",") if w.strip()]
    med = lambda v: statistics.median([x for x in v if x]) if any(v) else None  # noqa: E731
    variants = [v.strip() for v in str(args.variants).split(";") if v.strip()] or ["default"]
    seeds = [int(x) for x in str(args.seeds).split(",") if x.strip()]
    for spec in args.workloads.split(";"):
        tag = spec.replace(":", "_").replace(",", "_")
        runs = []
        # seeds outermost, variants inner: the variants of one seed run back to back (interleaved over the seeds)
        for seed in seeds:
            for variant in variants:
                opts = [] if variant == "default" else [o for o in variant.split(",") if o.strip()]
                for width in widths:
                    # raydgp layer: DGP with the shipped history (the layer itself is never in it)
                    run = out / f"layer-{tag}-{time.strftime('%H%M%S')}"
                    env = dict(os.environ, RAYDGP_HOME=str(out / "home-layers"))
                    cmd = [sys.executable, "-m", "raydgp", "layer", "--workload", spec, "--trials", str(args.trials),
                           "--out", str(run), "--searcher", "dgp", "--history",
                           str(ROOT / "raydgp" / "datasets" / "shipped"), "--in-flight", str(width),
                           "--seed", str(seed)]
                    for o in opts:  # KEY=VALUE: a search option; --flag=VALUE: a raydgp layer flag
                        cmd += o.split("=", 1) if o.startswith("--") else ["--search-option", o]
                    t0 = time.monotonic()
                    p = subprocess.run(cmd, cwd=ROOT, env=env, text=True, capture_output=True)
                    wall = time.monotonic() - t0
                    (run.parent / f"{run.name}.log").write_text(p.stdout + "\n--- stderr ---\n" + p.stderr)
                    summ = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
                    runs.append((width, variant, seed, p.returncode, wall, summ, _best_record(run / "records")))
        ms_wall, q = None, None
        msdir = out / f"ms-{tag}-{time.strftime('%H%M%S')}"
        if not args.no_ms:
            # MetaSchedule tune_tir, weight layout-free, same trial count
            t0 = time.monotonic()
            q = subprocess.run([sys.executable, str(Path(__file__).resolve()), "_ms", spec, str(args.trials),
                                str(msdir)], cwd=ROOT, text=True, capture_output=True)
            ms_wall = time.monotonic() - t0
            (out / f"{msdir.name}.log").write_text(q.stdout + "\n--- stderr ---\n" + q.stderr)
        ours, theirs = _time_all(spec, [r[6] for r in runs], msdir if q is not None and q.returncode == 0 else None)
        for (width, variant, seed, rc, wall, summ, _), a in zip(runs, ours):
            queue = (summ.get("proposals") or {}).get("queue") or {}
            row = {"workload": spec, "trials": args.trials, "machine": mach, "date": time.strftime("%Y-%m-%d %H:%M"),
                   "commit": commit(), "in_flight": width, "variant": variant, "seed": seed,
                   "raydgp": {"best_ms_during_search": summ.get("best_ms"), "wall_s": round(wall, 1),
                              "search_wall_s": summ.get("search_wall_s"),
                              "median_trial_interval_s": summ.get("median_trial_interval_s"),
                              "batches": queue.get("batches"), "batch_s_median": queue.get("batch_s_median"),
                              "batch_s_total": queue.get("batch_s_total"),
                              "retimed_ms": a, "retimed_median_ms": med(a), "exit": rc},
                   "metaschedule": None if q is None else {
                       "wall_s": round(ms_wall, 1), "retimed_ms": theirs, "retimed_median_ms": med(theirs),
                       "exit": q.returncode}}
            data["layers"].append(row)
            print(json.dumps(row), flush=True)
        _save(out, data)


def _options(row: dict) -> str:
    """The run's ``--search-option`` flags (from its command), for the table's commit column."""
    words = str(row.get("command", "")).split()
    opts = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--search-option"]
    return f" + `{' '.join(opts)}`" if opts else ""


def _best_record(store_dir: Path) -> dict | None:
    """The fastest configuration of a layer run, as its MetaSchedule trace (rebuilt from the stored space)."""
    from raydgp.records import RecordStore
    from raydgp.space.design_space import DesignSpace

    store = RecordStore(store_dir)
    recs = [r for r in store.records() if r.result.ok and r.config.sketch >= 0]
    if not recs:
        return None
    r = min(recs, key=lambda r: r.result.median_ms)
    space = DesignSpace.from_json(store.workload_entries()[r.workload.key]["space"])
    return {"trace": space.trace_json(r.config), "ms": r.result.median_ms}


def _ms_pools(ms) -> dict:
    """MetaSchedule's stock local builder and runner (default timeouts and evaluator), whose pool workers import TVM
    as raydgp does (:func:`raydgp.tvm_loader.ms_pool_worker_init`): a stock worker spends about 50 s importing every
    backend's tensor intrinsics, longer than the builder's 30 s timeout on some 2-core machines, so every build
    failed there."""
    from raydgp.tvm_loader import ms_pool_worker_init

    return {"builder": ms.builder.LocalBuilder(initializer=ms_pool_worker_init),
            "runner": ms.runner.LocalRunner(initializer=ms_pool_worker_init)}


def _ms_main(spec: str, trials: int, work_dir: str, seed: int | None = None) -> int:
    """MetaSchedule's own tuning of one task (a subprocess: its builder/runner pools stay out of this process)."""
    from raydgp.space.metaschedule import host_target, make_target
    from raydgp.space.workloads import make_task
    from raydgp.tvm_loader import import_tvm, load_intrinsics

    import_tvm()
    load_intrinsics("llvm")
    from tvm.s_tir import meta_schedule as ms

    target = host_target("llvm", os.cpu_count())
    task = make_task(spec, target)  # the weight (and bias) layout-free, as raydgp's own task
    ms.tune_tir(task.mod, make_target(target), work_dir=work_dir, max_trials_global=trials,
                num_trials_per_iter=min(64, trials), seed=seed, **_ms_pools(ms))
    return 0


def make_depthwise_onnx(path: Path) -> Path:
    """A small MobileNet-like ONNX model (seeded weights, 1x3x112x112): a stride-2 3x3 conv, then three depthwise 3x3
    + pointwise 1x1 blocks (each conv + bias + ReLU), global average pool and a 10-way linear layer."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes = [], []

    def conv(x, cin, cout, k, stride, groups, name):
        w = (rng.standard_normal((cout, cin // groups, k, k)) * (2.0 / (cin // groups * k * k)) ** 0.5)
        inits.append(numpy_helper.from_array(w.astype(np.float32), f"{name}_w"))
        inits.append(numpy_helper.from_array((rng.standard_normal(cout) * 0.1).astype(np.float32), f"{name}_b"))
        nodes.append(helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [f"{name}_c"], pads=[k // 2] * 4,
                                      strides=[stride, stride], group=groups))
        nodes.append(helper.make_node("Relu", [f"{name}_c"], [f"{name}_r"]))
        return f"{name}_r"

    x = conv("x", 3, 32, 3, 2, 1, "stem")
    c = 32
    for i, (cout, stride) in enumerate([(64, 1), (128, 2), (128, 1)]):
        x = conv(x, c, c, 3, stride, c, f"dw{i}")
        x = conv(x, c, cout, 1, 1, 1, f"pw{i}")
        c = cout
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"]))
    inits.append(numpy_helper.from_array((rng.standard_normal((10, c)) * 0.1).astype(np.float32), "fc_w"))
    inits.append(numpy_helper.from_array(np.zeros(10, np.float32), "fc_b"))
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["y"], transB=1))
    g = helper.make_graph(nodes, "depthwise_small", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                   [1, 3, 112, 112])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def run_ort_nodes(args) -> None:
    """ONNX Runtime's own time per graph node (its profiler; ``intra_op_num_threads`` = the node's cores, as the
    reference timing of ``raydgp tune`` uses): where the runtime a user already has spends its time, to set beside
    raydgp's per-layer bests. ``--rounds`` rounds of ``--runs`` calls, each in a fresh session after 20 warm-up calls,
    ``--pause`` seconds apart (this host's speed drifts over seconds); per node the median over every call, and each
    round's sum of node medians (the spread)."""
    import statistics
    import tempfile

    import numpy as np
    import onnx
    import onnxruntime as ort

    out, data, mach = _begin(args)
    for model in args.model.split(","):
        path = str(make_depthwise_onnx(out / "depthwise_small.onnx")) if model == "depthwise_small" else model
        g = onnx.load(path).graph
        init = {i.name for i in g.initializer}
        inp = next(i for i in g.input if i.name not in init)
        shape = [d.dim_value or 1 for d in inp.type.tensor_type.shape.dim]
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        per: dict = {}
        round_sums = []
        for rnd in range(int(args.rounds)):
            if rnd:
                time.sleep(float(args.pause))
            so = ort.SessionOptions()
            so.intra_op_num_threads = int(mach["cores"])
            so.enable_profiling = True
            so.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
            sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            for _ in range(20 + int(args.runs)):
                sess.run(None, {inp.name: x})
            events = json.loads(Path(sess.end_profiling()).read_text())
            mine: dict = {}
            for e in events:
                if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                    key = (e["name"][:-len("_kernel_time")], e["args"].get("op_name", "?"))
                    mine.setdefault(key, []).append(e["dur"])
            for key, v in mine.items():  # the first 20 calls of the round are its warm-up: dropped
                per.setdefault(key, []).extend(v[20:] or v)
            round_sums.append(round(sum(statistics.median(v[20:] or v) for v in mine.values()) / 1e3, 4))
        nodes = [{"name": n, "op": op, "median_ms": round(statistics.median(v) / 1e3, 4)}
                 for (n, op), v in per.items()]
        row = {"model": path, "machine": mach, "date": time.strftime("%Y-%m-%d %H:%M"), "commit": commit(),
               "threads": int(mach["cores"]), "runs": int(args.runs), "rounds": int(args.rounds),
               "onnxruntime": ort.__version__, "nodes": nodes,
               "sum_ms": round(sum(n["median_ms"] for n in nodes), 4), "round_sums_ms": round_sums}
        data.setdefault("ort_nodes", []).append(row)
        print(json.dumps(row), flush=True)
    _save(out, data)


def _ort_nodes(rows: list, model: str, mcpu: str) -> list[str]:
    """ONNX Runtime's per-node table for ``model`` on ``mcpu`` (its latest profile)."""
    mine = [r for r in rows if Path(r["model"]).name == Path(model).name and r["machine"]["mcpu"] == mcpu]
    if not mine:
        return []
    r = mine[-1]
    spread = r.get("round_sums_ms") or []
    rounds = f"{r.get('rounds', 1)} rounds of {r['runs']} calls, each in a fresh session"
    out = ["", f"ONNX Runtime {r['onnxruntime']} per node, {Path(model).name} on {mcpu} ({r['date']}, "
           f"`python scripts/bench_fast.py ort-nodes --model ...`): its profiler's kernel time, median over "
           f"{rounds}, {r['threads']} threads; sum {r['sum_ms']:.3f} ms (kernels only: no session overhead)"
           + (f"; the rounds' sums {', '.join(f'{v:.3f}' for v in spread)} ms" if spread else "") + ":", "",
           "| node | op | ms |", "|---|---|---|"]
    out += [f"| {n['name']} | {n['op']} | {n['median_ms']:.3f} |" for n in r["nodes"]]
    return out


def _r(v, nd: int):
    return "-" if v is None else (f"{v:.{nd}f}")


def run_ms_model(args) -> None:
    """MetaSchedule's own ``tune_relax`` on the same prepared, fused, layout-free module raydgp tunes, built by the same
    pipeline (weights packed at build), verified and timed like raydgp's library, PyTorch / ORT in the same run."""
    out, data, mach = _begin(args)
    work = out / f"ms-{args.model}-{args.trials}-{time.strftime('%H%M%S')}"
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, str(Path(__file__).resolve()), "_ms_model", args.model, str(args.trials),
                        str(work)], cwd=ROOT, text=True, capture_output=True)
    (out / f"{work.name}.log").write_text(p.stdout + "\n--- stderr ---\n" + p.stderr)
    res = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else {}
    row = {"model": f"{args.model} (MetaSchedule tune_relax)", "trials": args.trials, "trials_total": args.trials,
           "command": f"bench_fast.py ms-model --model {args.model} --trials {args.trials}", "exit": p.returncode,
           "commit": commit(), "history": "none (MetaSchedule)", "wall_s": round(time.monotonic() - t0, 1),
           "machine": mach, "date": time.strftime("%Y-%m-%d %H:%M"), "layers": [], **res}
    data["models"].append(row)
    _save(out, data)
    print(json.dumps({k: v for k, v in row.items() if k != "layers"}), flush=True)


def _ms_model_main(model: str, trials: int, work_dir: str) -> int:
    from raydgp.models.build import compare, compile_tuned, export, run_library
    from raydgp.models.importer import load_model
    from raydgp.models.run_reference import time_reference
    from raydgp.models.tasks import fuse, prepare, resolve_layout
    from raydgp.space.metaschedule import host_target, make_target
    from raydgp.tvm_loader import import_tvm, load_intrinsics

    import_tvm()
    load_intrinsics("llvm")
    from tvm.s_tir import meta_schedule as ms

    threads = os.cpu_count() or 1
    target = host_target("llvm", threads)
    m = load_model(model, None, seed=0)
    prepared = prepare(m.mod, target)
    t0 = time.monotonic()
    ms.relax_integration.tune_relax(fuse(prepared, target), {}, make_target(target), work_dir=work_dir,
                                    max_trials_global=trials, num_trials_per_iter=8, **_ms_pools(ms))
    tune_s = time.monotonic() - t0
    lib = export(compile_tuned(prepared, target, work_dir), Path(work_dir) / f"{m.name}.so")
    run = run_library(lib, m.inputs, threads=threads)
    ok, err, msg = compare(run.outputs, m.reference(list(m.inputs.values())))
    refs = time_reference(model, None, 0, threads) or {}
    print(json.dumps({"tuned_ms": run.median_ms if ok else None, "verified": ok, "max_abs_err": err,
                      "verify_message": msg, "tuning_wall_s": round(tune_s, 1), "pytorch_ms": refs.get("pytorch"),
                      "onnxruntime_ms": refs.get("onnxruntime"), "layout": resolve_layout("auto", target)}))
    return 0


def _per_layer(rows: list, model: str, mcpu: str, peak: str, cores: int) -> list[str]:
    """Per-layer lines for ``model`` on ``mcpu``: its latest runs made back to back (each started within 5 minutes of
    the previous one's end, so the host was in about the same state; up to 3), side by side; and, where they are not
    among those, the last two runs of different layouts made back to back."""
    from datetime import datetime

    def end(r) -> float:
        return datetime.strptime(r["date"], "%Y-%m-%d %H:%M").timestamp()

    def back_to_back(a, b) -> bool:
        return end(b) - b["wall_s"] - end(a) <= 300

    mine = [r for r in rows if r["model"] == model and r["machine"]["mcpu"] == mcpu and r.get("layers")]
    if not mine:
        return []
    latest = [mine[-1]]
    for r in mine[-2::-1]:
        if len(latest) == 3 or not back_to_back(r, latest[0]):
            break
        latest.insert(0, r)
    tables = [(latest, "its latest runs, made back to back" if len(latest) > 1 else "its last run")]
    for a, b in zip(mine[-2::-1], mine[::-1]):  # (earlier, later) pairs, newest first
        if a.get("layout", "NCHW") != b.get("layout", "NCHW") and back_to_back(a, b):
            if not (any(a is r for r in latest) and any(b is r for r in latest)):
                tables.append(([a, b], "two runs of different layouts made back to back"))
            break
    out = []
    for runs, what in tables:
        out += _layer_table(runs, what, model, mcpu, peak, cores)
    return out


def _layer_table(runs: list, what: str, model: str, mcpu: str, peak: str, cores: int) -> list[str]:
    tag = lambda r: f"{r.get('layout', 'NCHW')} (ended {r['date']})"  # noqa: E731
    head = " | ".join(f"{tag(r)} trials | best ms | GFLOP/s | of peak" for r in runs)
    out = ["", f"Per layer, {Path(model).name} on {mcpu}, {what}: " +
           ", ".join(f"{tag(r)} at {r.get('commit', '?')}, {r['trials_total']} trials" for r in runs) +
           f"; peak {peak} GFLOP/s sgemm on {cores} cores; best = the quiet re-timing where there is one:", "",
           f"| layer | weight | {head} |", "|---|---|" + "---|" * (4 * len(runs))]
    names = list(dict.fromkeys(l["name"] for r in runs for l in r["layers"]))
    for name in names:
        cells, weight = [], "-"
        for r in runs:
            l = next((x for x in r["layers"] if x["name"] == name), None)
            if l is None:
                cells += ["-"] * 4
                continue
            weight = l["weight"]
            cells += [str(l["trials"]), f"{l['best_ms']:.3f}" if l.get("best_ms") else "-",
                      f"{l['gflops']:.0f}" if l.get("gflops") else "-",
                      f"{100 * l['peak_fraction']:.0f}%" if l.get("peak_fraction") else "-"]
        out.append(f"| {name} | {weight} | " + " | ".join(cells) + " |")
    return out


def _table1(rows: list) -> list[str]:
    """The seed paper's Table 1 from this file's whole-model runs: for each MetaSchedule ``tune_relax`` run, the latest
    ``raydgp tune`` run of the same model at the same trial count, layout and machine kind (``mcpu``).

    Search-time reduction = 1 - raydgp's wall / MetaSchedule's (whole command, all in; and the tuning alone);
    latency improvement = 1 - raydgp's tuned latency / MetaSchedule's; HV = (1 + reduction) x (1 + improvement) - 1.
    The two runs are separate runs on a shared host, so the table also gives each tuned latency over the PyTorch
    eager latency timed in the same run (the host's drift between runs cancels in that ratio) and the improvement
    computed from those ratios.
    """
    out = []
    for ms in rows:
        if "MetaSchedule" not in ms["model"] or not ms.get("tuned_ms") or not ms.get("verified"):
            continue
        model = ms["model"].split(" (")[0]
        mcpu, layout = ms["machine"]["mcpu"], ms.get("layout", "NCHW")
        ours = [r for r in rows if r["model"] == model and str(r["trials"]) == str(ms["trials"])
                and r["machine"]["mcpu"] == mcpu and r.get("layout", "NCHW") == layout and r.get("tuned_ms")
                and r.get("verified")]
        if not ours:
            continue
        r = ours[-1]
        red = 1 - r["wall_s"] / ms["wall_s"]
        red_t = 1 - r["tuning_wall_s"] / ms["tuning_wall_s"] if r.get("tuning_wall_s") and ms.get(
            "tuning_wall_s") else None
        imp = 1 - r["tuned_ms"] / ms["tuned_ms"]
        rel = (r["tuned_ms"] / r["pytorch_ms"], ms["tuned_ms"] / ms["pytorch_ms"]) if r.get("pytorch_ms") and \
            ms.get("pytorch_ms") else None
        imp_rel = 1 - rel[0] / rel[1] if rel else None
        pct = lambda v: f"{100 * v:+.0f}%" if v is not None else "-"  # noqa: E731
        out.append(f"| {model} | {mcpu} | {layout} | {ms['trials']} | {r['wall_s']:.0f} s ({r.get('commit', '?')}, "
                   f"{r['date']}) | {ms['wall_s']:.0f} s ({ms.get('commit', '?')}, {ms['date']}) | {pct(red)} | "
                   f"{pct(red_t)} | {r['tuned_ms']:.2f} / {ms['tuned_ms']:.2f} ms | {pct(imp)} | "
                   + (f"{rel[0]:.2f}x / {rel[1]:.2f}x" if rel else "-") + f" | {pct(imp_rel)} | "
                   f"{pct((1 + red) * (1 + imp) - 1)} |")
    if not out:
        return []
    return ["", "Table 1 (the seed's metrics) for whole models, raydgp against MetaSchedule `tune_relax` at equal "
            "trials on the same machine kind: each MetaSchedule run beside the latest `raydgp tune` run of the same "
            "model, trial count, layout and `mcpu` (separate runs, so each tuned latency is also given over the "
            "PyTorch eager latency timed in its own run, where the host's drift between runs cancels). Search-time "
            "reduction = 1 - raydgp's wall / MetaSchedule's (all in: the whole command; and the tuning alone); "
            "latency improvement = 1 - raydgp's tuned latency / MetaSchedule's; HV = (1 + reduction all in) x "
            "(1 + improvement) - 1. The issue's target: at least 66% less search time at equal or better latency.", "",
            "| model | mcpu | layout | trials | raydgp all in | MetaSchedule all in | reduction (all in) | "
            "reduction (tuning) | tuned raydgp / MS | latency improvement | tuned / own PyTorch (raydgp / MS) | "
            "improvement (vs own PyTorch) | HV |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"] + out


def render(args) -> None:
    out = Path(args.out)
    data = _load(out)
    lines = [BEGIN, "", "## 6. Fast schedules (issue 10): whole models and single layers, measured by "
             "`scripts/bench_fast.py`", ""]
    if data["models"]:
        lines += ["Whole models through `raydgp tune` (DGP, shipped history; batch 1, fp32, all cores). PyTorch eager, "
                  "ONNX Runtime and untuned TVM are timed in the same run, after tuning, in fresh processes.", "",
                  "Layout: the activation layout the convs were tuned in (`--layout`; every run before NHWC existed "
                  "is NCHW).", "",
                  "In flight: layer experiments at once x trials in flight in each (`--max-concurrent-layers`, "
                  "default the node's cores; `--in-flight`, 1 in every run before it existed).",
                  "",
                  "| model | layout | in flight | trials (done/asked) | mcpu | tuned ms | PyTorch ms | ONNX Runtime ms | "
                  "untuned ms | tuned/PyTorch | tuned/ORT | layer-best sum ms | wall (all in) | verified | history | "
                  "commit |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in data["models"]:
            t, pt, ort = (round(v, 2) if v else v for v in (r.get("tuned_ms"), r.get("pytorch_ms"),
                                                               r.get("onnxruntime_ms")))
            ratio = lambda a, b: f"{a / b:.2f}x" if a and b else "-"  # noqa: E731
            cmd = r.get("command", "").split()
            at_once = cmd[cmd.index("--max-concurrent-layers") + 1] if "--max-concurrent-layers" in cmd else \
                r.get("layer_experiments") or r["machine"].get("cores", 2)
            flight = "-" if "MetaSchedule" in r["model"] else f"{at_once} x {r.get('in_flight') or 1}"
            lines.append(f"| {Path(r['model']).name} | {r.get('layout', 'NCHW')} | {flight} | "
                         f"{r['trials_total']}/{r['trials']} | "
                         f"{r['machine']['mcpu']} | {t} | {pt} | "
                         f"{ort} | {_r(r.get('untuned_ms'), 0)} | {ratio(t, pt)} | {ratio(t, ort)} | "
                         f"{_r(r.get('layer_best_sum_ms'), 2)} | {r['wall_s']:.0f} s | {r.get('verified')} | "
                         f"{r.get('history', '?')} | {r.get('commit', '?')}{_options(r)} |")
        # per-layer tables of every machine kind, the one measured last first (each with its own last peak)
        for mcpu in dict.fromkeys(r["machine"]["mcpu"] for r in reversed(data["models"])):
            mine = [r for r in data["models"] if r["machine"]["mcpu"] == mcpu]
            last = ([r for r in mine if r.get("peak_gflops")] or mine)[-1]  # MetaSchedule's rows measure no peak
            pk = f"{last['peak_gflops']:.0f}" if last.get("peak_gflops") else "?"
            models = list(dict.fromkeys(r["model"] for r in data["models"] if r["machine"]["mcpu"] == mcpu))
            for model in models:
                lines += _per_layer(data["models"], model, mcpu, pk, last["machine"]["cores"])
                # ONNX Runtime's per-node profile once, after the model file's last per-layer tables
                if not any(Path(m).name == Path(model).name for m in models[models.index(model) + 1:]):
                    lines += _ort_nodes(data.get("ort_nodes", []), model, mcpu)
        lines += _table1(data["models"])
    if data["layers"]:
        lines += ["", "Single layers, equal trials, one after the other; both best schedules re-timed by raydgp's "
                  "measurer (cold caches), interleaved, 5 rounds, medians:", "",
                  "| workload | trials | mcpu | raydgp in flight | variant (seed) | raydgp ms | raydgp wall | "
                  "s per trial (median) | MetaSchedule ms | MetaSchedule wall | raydgp/MS latency | raydgp/MS wall | "
                  "commit |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in data["layers"]:
            ms_ = r.get("metaschedule") or {}
            a, b = r["raydgp"]["retimed_median_ms"], ms_.get("retimed_median_ms")
            wa, wb = r["raydgp"]["wall_s"], ms_.get("wall_s")
            iv = r["raydgp"].get("median_trial_interval_s")
            lines.append(f"| `{r['workload']}` | {r['trials']} | {r['machine']['mcpu']} | {r.get('in_flight', 1)} | "
                         f"{r.get('variant', 'default')} ({r.get('seed', 0)}) | "
                         + (f"{a:.3f}" if a else "-") + f" | {wa:.0f} s | " + (f"{iv:.2f}" if iv else "-") + " | "
                         + (f"{b:.3f}" if b else "-") + " | " + (f"{wb:.0f} s" if wb else "-") + " | "
                         + (f"{a / b:.2f}" if a and b else "-") + " | " + (f"{wa / wb:.2f}" if wb else "-")
                         + f" | {r.get('commit', '-')} |")
    lines += ["", "Raw results: `bench/bench_fast.json`.", "", END]
    bm = ROOT / "BENCHMARKS.md"
    text = bm.read_text()
    block = "\n".join(lines)
    if BEGIN in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    bm.write_text(text)
    print(block)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_ms":
        return _ms_main(argv[1], int(argv[2]), argv[3], int(argv[4]) if len(argv) > 4 else None)
    if argv and argv[0] == "_ms_model":
        return _ms_model_main(argv[1], int(argv[2]), argv[3])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("models")
    m.add_argument("--model", default="resnet18",
                   help="comma-separated; built-ins, .onnx paths, or depthwise_small (a small depthwise ONNX net "
                        "built by this script, compared with ONNX Runtime)")
    m.add_argument("--trials", default="300", help="comma-separated budgets; 'default': the CLI's defaults")
    m.add_argument("--extra", default="", help="extra raydgp tune arguments")
    m.add_argument("--out", default="bench")
    l = sub.add_parser("layers")
    l.add_argument("--workloads", default="conv2d:1,160,14,14,320,3,1,1", help="';'-separated specs")
    l.add_argument("--trials", type=int, default=64)
    l.add_argument("--in-flight", default="2", help="comma-separated raydgp layer --in-flight values, one run each "
                   "(default 2, the CLI's CPU default); e.g. 2,1")
    l.add_argument("--variants", default="default",
                   help="';'-separated raydgp variants, each a comma-separated list of search options (KEY=VALUE) "
                        "and raydgp layer flags (--flag=VALUE), or 'default', e.g. 'default;queue_refit_every=1' or "
                        "'default;--seed-trials=0': one run of each per seed, back to back")
    l.add_argument("--seeds", default="0", help="comma-separated raydgp layer seeds (default 0)")
    l.add_argument("--no-ms", action="store_true", help="skip MetaSchedule's run (raydgp variants only)")
    l.add_argument("--out", default="bench")
    mm = sub.add_parser("ms-model")
    mm.add_argument("--model", default="resnet18")
    mm.add_argument("--trials", type=int, default=300)
    mm.add_argument("--out", default="bench")
    on = sub.add_parser("ort-nodes")
    on.add_argument("--model", default="depthwise_small", help="comma-separated .onnx paths or depthwise_small")
    on.add_argument("--runs", type=int, default=100, help="calls per round (after 20 warm-up calls)")
    on.add_argument("--rounds", type=int, default=10)
    on.add_argument("--pause", type=float, default=3.0, help="seconds between rounds")
    on.add_argument("--out", default="bench")
    r = sub.add_parser("render")
    r.add_argument("--out", default="bench")
    args = ap.parse_args(argv)
    {"models": run_models, "layers": run_layers, "ms-model": run_ms_model, "ort-nodes": run_ort_nodes,
     "render": render}[args.cmd](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
