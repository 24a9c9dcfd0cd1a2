"""Whole ``raydgp tune`` runs of two checkouts, interleaved, and where the search phase's CPU goes in each.

    python scripts/bench_model_ab.py --roots /path/to/base,/path/to/this --pairs 2 --trials 150 --out runs/ab
    python scripts/bench_model_ab.py --analyze runs/ab          # the table again from what is there

Each pair runs ``raydgp tune --model M --trials N`` once per checkout (in ``--roots`` order, ``PYTHONPATH`` set to
it), each in a fresh process with nothing else running, and each from a fresh copy of the same user record store
(``RAYDGP_HOME``; the one at ``--home``, default ``~/.raydgp``), so that no run learns from the one before it. A sampler
beside each run reads every process's CPU time once a second and files it by what the process is (the measurement
workers that build and time, Ray worker processes starting or idle, the chunk tasks where the searchers propose, trial
actors, Ray's own daemons, the driver) and the machine's idle time; the search phase's window comes from the run's
``phases_s``. The sampler costs a few percent of a core, alike for both sides.

Writes ``OUT/ab.json`` (one entry per run: commit, ``mcpu``, phases, trials, chunks and how many were direct, tuned /
PyTorch / ONNX Runtime ms, the search phase's CPU by category) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_deploy import _commit  # noqa: E402  (a checkout's commit, "(uncommitted changes)" marked)

ORDER = ["load", "ray", "stage1", "untuned", "peak", "search", "retime", "deploy"]


def category(cmdline: str) -> str:
    """What a process is, from its command line (Ray sets worker titles to ``ray::<what they run>``)."""
    if "raydgp.measure.worker" in cmdline or "measure/worker" in cmdline:
        return "measure workers (builds, timings)"
    if cmdline.startswith("ray::IDLE") or "default_worker.py" in cmdline:
        return "Ray workers starting or idle"
    if cmdline.startswith("ray::run_chunk") or cmdline.startswith("ray::run_direct_chunk"):
        return "chunk tasks (searchers)"
    if cmdline.startswith("ray::measure_given"):
        return "direct measurements (tasks)"
    if cmdline.startswith("ray::ImplicitFunc"):
        return "trial actors"
    if cmdline.startswith("ray::MeasureService"):
        return "measurement service"
    if cmdline.startswith("ray::") or any(k in cmdline for k in ("raylet", "gcs_server", "dashboard", "log_monitor",
                                                                 "runtime_env", "monitor.py")):
        return "Ray daemons"
    if "raydgp" in cmdline:
        return "driver"
    return "other"


def sample(out: Path) -> None:
    """The sampler (a child process): once a second until SIGTERM, CPU seconds per category, and the idle time."""
    import psutil

    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    prev: dict = {}
    timeline = []
    t_prev = psutil.cpu_times()
    while not stop:
        time.sleep(1.0)
        row: dict = {}
        for p in psutil.process_iter():
            try:
                key = (p.pid, p.create_time())
                ct = p.cpu_times()
                cpu = ct.user + ct.system
                cat = category(" ".join(p.cmdline())[:300])
            except (psutil.Error, OSError):
                continue
            if key not in prev and not timeline:
                prev[key] = cpu  # running before the first sample: its earlier CPU is not this run's
                continue
            row[cat] = row.get(cat, 0.0) + max(cpu - prev.get(key, 0.0), 0.0)
            prev[key] = cpu
        t = psutil.cpu_times()
        row["idle"] = (t.idle - t_prev.idle) + (t.iowait - t_prev.iowait)
        t_prev = t
        timeline.append([time.time(), row])
    out.write_text(json.dumps(timeline))


def summarise(run_dir: Path, cpu_file: Path) -> dict:
    """One run's entry: its summary's figures, its chunks, and the search phase's CPU by category (core-seconds).
    The phases start ``wall_s`` (their sum) before the summary was written, at its end."""
    s = json.loads((run_dir / "summary.json").read_text())
    chunks = json.loads((run_dir / "chunks.json").read_text()) if (run_dir / "chunks.json").exists() else []
    ph = s.get("phases_s", {})
    t = (run_dir / "summary.json").stat().st_mtime - sum(ph.values())
    window = None
    for k in ORDER:
        if k == "search":
            window = (t, t + ph.get(k, 0.0))
        t += ph.get(k, 0.0)
    cpu: dict = {}
    seconds = 0
    if cpu_file.exists() and window:
        for ts, row in json.loads(cpu_file.read_text()):
            if window[0] <= ts <= window[1]:
                seconds += 1
                for c, v in row.items():
                    cpu[c] = cpu.get(c, 0.0) + v
    return {"trials": s.get("trials_total"), "phases_s": ph, "wall_s": s.get("wall_s"),
            "tuned_ms": s.get("end_to_end_ms"), "pytorch_ms": s.get("pytorch_ms"),
            "onnxruntime_ms": s.get("onnxruntime_ms"), "verified": s.get("verified"),
            "chunks": len(chunks), "direct_chunks": sum(1 for c in chunks if c.get("direct")),
            "search_cpu_s": {k: round(v, 1) for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])},
            "search_sampled_s": seconds, "target": s.get("target")}


def table(rows: list) -> str:
    cats = []
    for r in rows:
        cats += [c for c in r["search_cpu_s"] if c not in cats and c != "other"]
    head = ("| run | commit | trials | chunks (direct) | search s | wall s | tuned ms | PyTorch ms | ORT ms | "
            "tuned/ORT | " + " | ".join(f"{c} core-s" for c in cats) + " |")
    lines = [head, "|" + "---|" * (10 + len(cats))]
    f2 = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731  (an ONNX model has no PyTorch timing)
    for r in rows:
        ph = r["phases_s"]
        lines.append(f"| {r['side']} {r['pair']} | {r['commit']} | {r['trials']} | {r['chunks']} ({r['direct_chunks']}) "
                     f"| {ph.get('search', 0):.1f} | {r['wall_s']:.0f} | {f2(r['tuned_ms'])} | {f2(r['pytorch_ms'])} | "
                     f"{f2(r['onnxruntime_ms'])} | {f2(_ratio(r))} | "
                     + " | ".join(f"{r['search_cpu_s'].get(c, 0):.1f}" for c in cats) + " |")
    by = {}
    for r in rows:
        by.setdefault(r["side"], []).append(r)
    lines.append("")
    for side, rs in by.items():
        med = lambda f: statistics.median(f(r) for r in rs)  # noqa: E731
        lines.append(f"median {side}: search {med(lambda r: r['phases_s'].get('search', 0)):.1f} s, "
                     f"{med(lambda r: r['phases_s'].get('search', 0) / max(r['trials'], 1)):.2f} s per trial, "
                     f"chunks {med(lambda r: r['chunks']):.0f}, tuned {med(lambda r: r['tuned_ms']):.2f} ms"
                     + (f", tuned/ORT {med(_ratio):.2f}" if all(_ratio(r) for r in rs) else ""))
    return "\n".join(lines)


def _ratio(r: dict) -> float | None:
    """The run's tuned latency over its own ONNX Runtime timing (None where either is missing)."""
    return r["tuned_ms"] / r["onnxruntime_ms"] if r.get("tuned_ms") and r.get("onnxruntime_ms") else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--roots", help="comma-separated checkouts, run in this order in each pair")
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--trials", type=int, default=150)
    ap.add_argument("--home", type=Path, default=Path.home() / ".raydgp")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "ab")
    ap.add_argument("--analyze", type=Path, help="print the table of an earlier --out")
    ap.add_argument("--_sample", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._sample:
        sample(a._sample)
        return 0
    if a.analyze:
        print(table(json.loads((a.analyze / "ab.json").read_text())))
        return 0
    roots = [Path(r).resolve() for r in a.roots.split(",")]
    a.out.mkdir(parents=True, exist_ok=True)
    from raydgp.space.metaschedule import host_target

    mcpu = host_target("llvm", os.cpu_count() or 1).get("mcpu")
    rows = []
    for pair in range(a.pairs):
        for i, root in enumerate(roots):
            side = f"{i}:{root.name}"
            tag = f"{i}-{pair}"
            home = a.out / f"home-{tag}"
            shutil.rmtree(home, ignore_errors=True)
            if a.home.exists():
                shutil.copytree(a.home, home)
            run_dir, cpu_file = a.out / f"run-{tag}", a.out / f"cpu-{tag}.json"
            shutil.rmtree(run_dir, ignore_errors=True)
            sampler = subprocess.Popen([sys.executable, __file__, "--_sample", str(cpu_file)])
            time.sleep(1.5)
            env = dict(os.environ, PYTHONPATH=str(root), RAYDGP_HOME=str(home))
            with open(a.out / f"log-{tag}.txt", "w") as log:
                p = subprocess.run([sys.executable, "-m", "raydgp.cli", "tune", "--model", a.model, "--trials",
                                    str(a.trials), "--out", str(run_dir)], cwd=root, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
            sampler.send_signal(signal.SIGTERM)
            sampler.wait(timeout=60)
            if p.returncode != 0:
                print(f"{side} pair {pair}: exit {p.returncode}, see {a.out / f'log-{tag}.txt'}", flush=True)
                continue
            row = {"side": side, "pair": pair, "commit": _commit(root), "mcpu": mcpu,
                   "date": time.strftime("%Y-%m-%d %H:%M"), **summarise(run_dir, cpu_file)}
            rows.append(row)
            (a.out / "ab.json").write_text(json.dumps(rows, indent=1))
            print(json.dumps({k: row[k] for k in ("side", "pair", "trials", "chunks", "direct_chunks", "wall_s")}),
                  flush=True)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
