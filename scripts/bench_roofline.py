#!/usr/bin/env python
"""Why the big convs stay under 60% of the sgemm peak (issue 10): each layer's best schedule timed with cold caches
(how tuning times it: weights flushed from every cache level before each run, as a model's other layers evict them)
and warm (the weights still in cache), against the node's fp32 peak and its memory bandwidth.

For every conv task of a finished run's record store (or the ``--min-mflop`` largest), the best re-timed configuration
(else the best measured) is measured ``--rounds`` times in each mode, modes interleaved, one measurer each (the node's
timing lock keeps them exclusive). The memory bandwidth is the read rate of two processes at once (one per core), each
summing its own 512 MiB float32 array with numpy, median of 5. Each round measures the sgemm peak (the node-peak
micro-benchmark of :mod:`raydgp.measure.peak`, the better OpenBLAS kernel) right before the layer's two timings, since
the host's speed drifts by tens of percent within minutes. Reported per layer: GFLOP/s cold and warm, their
fractions of the peak (the median over rounds of each timing against its round's peak), the weights' bytes and the
layer's arithmetic intensity over its weights (FLOP per weight byte), and the cold roofline bound
``min(peak, intensity x bandwidth)`` with the cold rate's fraction of it.

    python scripts/bench_roofline.py --store bench/resnet18-300-114600/records --out bench/bench_roofline.json
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_MiB = 1 << 20


def _read_rate(n_bytes: int, q) -> None:
    import numpy as np

    a = np.ones(n_bytes // 4, dtype=np.float32)
    a.sum()
    rates = []
    for _ in range(5):
        t = time.perf_counter()
        a.sum()
        rates.append(n_bytes / (time.perf_counter() - t) / 1e9)
    q.put(statistics.median(rates))


def memory_bandwidth_gbs(procs: int = 2, mib: int = 512) -> dict:
    """Aggregate read bandwidth (GB/s) of ``procs`` processes each summing ``mib`` MiB at once (medians of 5)."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    ps = [ctx.Process(target=_read_rate, args=(mib * _MiB, q)) for _ in range(procs)]
    for p in ps:
        p.start()
    rates = [q.get(timeout=300) for _ in ps]
    for p in ps:
        p.join()
    return {"aggregate_gbs": round(sum(rates), 2), "per_process_gbs": [round(r, 2) for r in rates],
            "method": f"{procs} processes at once, each numpy float32 sum over {mib} MiB, median of 5"}


def sgemm_gflops(threads: int, coretype: str | None, n: int = 2048) -> float:
    """One sgemm peak reading (:mod:`raydgp.measure.peak`'s micro-benchmark, fresh process, that OpenBLAS kernel)."""
    import os

    from raydgp.measure.peak import _SNIPPET

    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    env.pop("OPENBLAS_CORETYPE", None)
    if coretype:
        env["OPENBLAS_CORETYPE"] = coretype
    p = subprocess.run([sys.executable, "-c", _SNIPPET, str(n)], capture_output=True, text=True, env=env, timeout=120,
                       check=True)
    return float(json.loads(p.stdout.strip().splitlines()[-1])["gflops"])


def best_coretype(threads: int) -> str | None:
    """The OpenBLAS kernel (:func:`raydgp.measure.peak.coretypes`) with the higher sgemm rate here."""
    from raydgp.measure.peak import coretypes

    rates = {}
    for c in coretypes():
        try:
            rates[c] = sgemm_gflops(threads, c)
        except subprocess.SubprocessError:
            continue
    return max(rates, key=rates.get)


def weight_bytes(mod_json: str) -> int:
    """Bytes of the task's layout-free (weight) arguments; every argument but the first and the last if unmarked."""
    from raydgp.tvm_loader import import_tvm

    tvm = import_tvm()
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    mod = tvm.ir.load_json(mod_json)
    func = mod["main"]
    infos = ArgInfo.from_prim_func(func)
    idx = [int(i) for i in (func.attrs.get("layout_free_buffers", []) if func.attrs else [])] or \
        list(range(1, len(infos) - 1))
    total = 0
    for i in idx:
        n = 1
        for x in infos[i].shape:
            n *= int(x)
        total += n * tvm.runtime.DataType(str(infos[i].dtype)).bits // 8
    return total


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True, help="a run's record store (e.g. <out>/records of raydgp tune)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-mflop", type=float, default=100.0, help="only conv tasks of at least this many MFLOP")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)

    from raydgp.measure.local import LocalMeasurer
    from raydgp.measure.protocol import MeasureSettings, TaskPayload
    from raydgp.records import RETIME_TAG, RecordStore
    from raydgp.space.metaschedule import host_target

    store = RecordStore(a.store)
    recs = store.records()
    entries = store.workload_entries()
    target = host_target("llvm", a.threads)
    layers = {}
    for r in recs:
        w = r.workload
        if w.op != "conv2d" or not r.result.ok or r.config.sketch < 0 or w.key not in entries:
            continue
        mflop = 2 ** w.features["log2_flops"] / 1e6
        if mflop < a.min_mflop:
            continue
        cur = layers.get(w.key)
        rank = (r.tag != RETIME_TAG, r.result.median_ms)  # a re-timed best first
        if cur is None or rank < cur["rank"]:
            layers[w.key] = {"rank": rank, "name": w.name, "mflop": mflop, "config": r.config,
                             "recorded_ms": r.result.median_ms, "retimed": r.tag == RETIME_TAG}
    if not layers:
        print(f"no conv task of at least {a.min_mflop} MFLOP with a measured configuration in {a.store}",
              file=sys.stderr)
        return 2
    from raydgp.space.design_space import DesignSpace

    kernel = best_coretype(a.threads)
    bw = memory_bandwidth_gbs(a.threads)
    print(f"sgemm kernel {kernel or 'detected'}; memory read bandwidth {bw['aggregate_gbs']} GB/s", flush=True)
    modes = {"cold": MeasureSettings(flush_cache=True, num_threads=a.threads),
             "warm": MeasureSettings(flush_cache=False, num_threads=a.threads)}
    meas = {k: LocalMeasurer(s) for k, s in modes.items()}
    rows = []
    try:
        for key, L in sorted(layers.items(), key=lambda t: -t[1]["mflop"]):
            payload = TaskPayload(key, entries[key]["mod"], target)
            space = DesignSpace.from_json(entries[key]["space"])
            trace = space.trace_json(L["config"])
            got = {k: [] for k in modes}
            peaks = []
            for i in range(a.rounds):
                # each round: the sgemm peak, then the layer cold and warm (order alternating), so that every timing
                # has a peak measured within seconds of it: the host's speed drifts by tens of percent
                peaks.append(sgemm_gflops(a.threads, kernel))
                for k in (("cold", "warm") if i % 2 == 0 else ("warm", "cold")):
                    res = meas[k].measure(payload, trace).result
                    got[k].append((res.median_ms if res.ok else math.nan, peaks[-1]))
            wb = weight_bytes(entries[key]["mod"])
            intensity = L["mflop"] * 1e6 / wb
            peak = statistics.median(peaks)
            bound = min(peak, intensity * bw["aggregate_gbs"])
            row = {"layer": L["name"], "key": key, "mflop": round(L["mflop"], 1), "weight_mib": round(wb / _MiB, 2),
                   "flop_per_weight_byte": round(intensity, 1), "recorded_ms": round(L["recorded_ms"], 4),
                   "retimed": L["retimed"], "peaks_gflops": [round(x, 1) for x in peaks],
                   "peak_gflops": round(peak, 1)}
            for k, v in got.items():
                ok = [(ms, pk) for ms, pk in v if math.isfinite(ms)]
                ms = statistics.median([x for x, _ in ok]) if ok else math.nan
                g = L["mflop"] / ms if ok else math.nan  # MFLOP / ms = GFLOP/s
                frac = statistics.median([L["mflop"] / x / pk for x, pk in ok]) if ok else math.nan
                row.update({f"{k}_ms": round(ms, 4), f"{k}_gflops": round(g, 1), f"{k}_of_peak": round(frac, 3)})
            row["cold_bound_gflops"] = round(bound, 1)
            row["cold_of_bound"] = round(row["cold_gflops"] / bound, 3) if bound > 0 else None
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        for m in meas.values():
            m.close()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    out = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "commit": commit, "store": a.store, "target": target,
           "machine": {"cpu": platform.processor() or platform.machine(), "mcpu": target.get("mcpu")},
           "peak_method": f"numpy float32 matmul 2048^3, median of 5, OpenBLAS kernel {kernel or 'detected'}, "
                          f"before each round", "memory": bw, "rounds": a.rounds, "layers": rows}
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1))
    print("| layer | MFLOP | weights MiB | FLOP/weight byte | peak GFLOP/s | cold ms | cold GFLOP/s (of peak) | "
          "warm ms | warm GFLOP/s (of peak) | cold bound GFLOP/s | cold of bound |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['layer']} | {r['mflop']} | {r['weight_mib']} | {r['flop_per_weight_byte']} | {r['peak_gflops']} | "
              f"{r['cold_ms']} | "
              f"{r['cold_gflops']} ({r['cold_of_peak']:.0%}) | {r['warm_ms']} | {r['warm_gflops']} "
              f"({r['warm_of_peak']:.0%}) | {r['cold_bound_gflops']} | {r['cold_of_bound']:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
