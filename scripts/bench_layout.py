#!/usr/bin/env python
"""Layout benchmark: the same convolutions in NCHW and in NHWC, random configurations of each layout's MetaSchedule
design space, built and timed by raydgp's own measurer (prepacked weights, cold caches, every result checked), the two
layouts interleaved configuration by configuration. It measures how good each layout's *space* is, before any search.

    python scripts/bench_layout.py --samples 30            # runs, appends to bench/bench_layout.json, renders
    python scripts/bench_layout.py render                  # (re)writes the BENCHMARKS.md section only

Why it exists: ``raydgp tune`` converts a model's convolutions to NHWC on CPU (``--layout auto``); this is the evidence
that decided it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BEGIN, END = "<!-- bench_layout:begin -->", "<!-- bench_layout:end -->"
RESULTS = ROOT / "bench" / "bench_layout.json"

#: name -> (N, C, H, W, K, R, stride, pad): ResNet-18's stem, a stride-2 3x3, a 64- and a 512-channel 3x3.
SHAPES = {
    "stem 3->64 7x7 s2 @224": (1, 3, 224, 224, 64, 7, 2, 3),
    "3x3 128->256 s2 @28": (1, 128, 28, 28, 256, 3, 2, 1),
    "3x3 64->64 s1 @56": (1, 64, 56, 56, 64, 3, 1, 1),
    "3x3 512->512 s1 @7": (1, 512, 7, 7, 512, 3, 1, 1),
}


def conv_module(layout: str, n, c, h, w, k, r, s, p):
    """conv2d + bias + ReLU in ``layout`` (weights OIHW for NCHW, HWIO for NHWC), weight and bias layout-free."""
    from raydgp.space.workloads import mark_layout_free
    from raydgp.tvm_loader import import_tvm

    tvm = import_tvm()
    from tvm import te, topi

    if layout == "NCHW":
        data, weight = te.placeholder((n, c, h, w), name="data"), te.placeholder((k, c, r, r), name="weight")
        bias = te.placeholder((1, k, 1, 1), name="bias")
        conv = topi.nn.conv2d_nchw(data, weight, s, p, 1)
    else:
        data, weight = te.placeholder((n, h, w, c), name="data"), te.placeholder((r, r, c, k), name="weight")
        bias = te.placeholder((1, 1, 1, k), name="bias")
        conv = topi.nn.conv2d_nhwc(data, weight, s, p, 1)
    out = topi.nn.relu(topi.add(conv, bias))
    return mark_layout_free(tvm.IRModule({"main": te.create_prim_func([data, weight, bias, out])}))


def run(args) -> None:
    import numpy as np

    from raydgp.measure.local import LocalMeasurer
    from raydgp.measure.protocol import MeasureSettings, TaskPayload
    from raydgp.space.metaschedule import build_space, host_target
    from raydgp.space.workloads import make_task

    target = host_target("llvm", os.cpu_count())
    rows = []
    with LocalMeasurer(MeasureSettings(num_threads=os.cpu_count())) as m:
        for name, shp in SHAPES.items():
            n, c, h, w, k, r, s, p = shp
            oh, ow = (h + 2 * p - r) // s + 1, (w + 2 * p - r) // s + 1
            flops = 2.0 * n * k * oh * ow * c * r * r
            setups = {}
            for layout in ("NCHW", "NHWC"):
                task = make_task(conv_module(layout, *shp), target, name=f"{layout}")
                setups[layout] = (build_space(task), TaskPayload(task.workload.key, task.mod_json, target),
                                  np.random.default_rng(args.seed))
            lat = {lay: [] for lay in setups}
            t0 = time.monotonic()
            for _ in range(args.samples):  # interleaved: load drift falls on both layouts
                for lay, (space, payload, rng) in setups.items():
                    res = m.measure(payload, space.trace_json(space.sample(rng))).result
                    lat[lay].append(res.median_ms if res.ok else None)
            for lay, xs in lat.items():
                ok = sorted(x for x in xs if x is not None)
                rows.append({"shape": name, "layout": lay, "samples": args.samples, "valid": len(ok),
                             "best_ms": ok[0] if ok else None, "top3_ms": ok[:3],
                             "median_ms": statistics.median(ok) if ok else None,
                             "best_gflops": flops / ok[0] / 1e6 if ok else None})
                print(f"{name:26s} {lay}: {len(ok)}/{args.samples} valid, best {ok[0] if ok else None} ms, "
                      f"median {rows[-1]['median_ms']} ms", flush=True)
            print(f"  ({time.monotonic() - t0:.0f} s)", flush=True)
    from bench_fast import commit, machine  # the same machine record as the other fast-schedule benchmarks

    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": []}
    data["runs"].append({"date": time.strftime("%Y-%m-%d %H:%M"), "commit": commit(), "machine": machine(),
                         "seed": args.seed, "samples": args.samples, "rows": rows,
                         "command": "python scripts/bench_layout.py --samples %d --seed %d" % (args.samples,
                                                                                               args.seed)})
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")
    render()


def render() -> None:
    data = json.loads(RESULTS.read_text())
    lines = [BEGIN, "## 6b. Layouts: NCHW vs NHWC design spaces (issue 10), `scripts/bench_layout.py`", "",
             "The same conv2d + bias + ReLU in both layouts; random configurations of each layout's MetaSchedule "
             "space, the layouts interleaved configuration by configuration, each built and timed by raydgp's "
             "measurer (prepacked weights, cold caches, checked against the reference). Raw: "
             "`bench/bench_layout.json`.", ""]
    for r in data["runs"]:
        mc = r["machine"]
        lines += [f"{r['date']}, commit {r['commit']}, {mc['cpu']} (LLVM mcpu `{mc['mcpu']}`), {mc['cores']} cores; "
                  f"`{r['command']}`", "",
                  "| conv | NCHW best ms | NHWC best ms | NCHW/NHWC (best) | NCHW median ms | NHWC median ms | "
                  "NHWC best GFLOP/s | valid NCHW / NHWC |", "|---|---|---|---|---|---|---|---|"]
        by = {}
        for row in r["rows"]:
            by.setdefault(row["shape"], {})[row["layout"]] = row
        for shape, d in by.items():
            a, b = d.get("NCHW", {}), d.get("NHWC", {})

            def f(x, nd=3):
                return "-" if x is None else f"{x:.{nd}f}"

            ratio = a.get("best_ms") / b["best_ms"] if a.get("best_ms") and b.get("best_ms") else None
            lines.append(f"| {shape} | {f(a.get('best_ms'))} | {f(b.get('best_ms'))} | {f(ratio, 2)} | "
                         f"{f(a.get('median_ms'))} | {f(b.get('median_ms'))} | {f(b.get('best_gflops'), 0)} | "
                         f"{a.get('valid')}/{r['samples']} / {b.get('valid')}/{r['samples']} |")
        lines.append("")
    lines.append(END)
    from bench import write_section  # the other benchmark scripts' section writer (scripts/ is on sys.path)

    write_section(ROOT / "BENCHMARKS.md", BEGIN, END, "\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("command", nargs="?", default="run", choices=["run", "render"])
    p.add_argument("--samples", type=int, default=30, help="random configurations per layout and conv (default 30)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    run(args) if args.command == "run" else render()


if __name__ == "__main__":
    main()
