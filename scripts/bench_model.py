#!/usr/bin/env python
"""Whole-network benchmark: tune a model with each searcher (same budget, same machine, one after the other) through
`raydgp tune`, then collect the summaries side by side: end-to-end latency of the tuned library (verified), untuned TVM,
PyTorch eager in a fresh process on the same threads, tuning wall time, per-layer bests.

    python scripts/bench_model.py --model resnet18 --trials 300 --searchers random,dgp --out runs/bench_r18

Writes OUT/bench_model.json. Each run gets its own --out (OUT/<searcher>) and RAYDGP_HOME (so one run's records do not
feed the next one's history), and the same shipped dataset as history for the DGP.
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--searchers", default="random,dgp")
    ap.add_argument("--out", default="runs/bench_model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--extra", default="", help="extra raydgp tune arguments, space separated")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for s in args.searchers.split(","):
        run = out / s
        env = dict(os.environ, RAYDGP_HOME=str(out / f"home-{s}"))
        cmd = [sys.executable, "-m", "raydgp", "tune", "--model", args.model, "--trials", str(args.trials),
               "--searcher", s, "--seed", str(args.seed), "--out", str(run), *args.extra.split()]
        t0 = time.monotonic()
        p = subprocess.run(cmd, cwd=ROOT, env=env, text=True, capture_output=True)
        (out / f"{s}.log").write_text(p.stdout + "\n--- stderr ---\n" + p.stderr)
        print(p.stdout[-2500:], flush=True)
        summ = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else None
        rows[s] = {"exit": p.returncode, "command_wall_s": round(time.monotonic() - t0, 1), "summary": summ}
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model_name = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if ln.startswith("Model name")), "?")
    res = {"model": args.model, "trials": args.trials, "machine": {"cpu": model_name, "cores": os.cpu_count(),
                                                                  "platform": platform.platform()},
           "date": time.strftime("%Y-%m-%d %H:%M"), "runs": rows}
    (out / "bench_model.json").write_text(json.dumps(res, indent=2))
    for s, r in rows.items():
        sm = r["summary"] or {}
        print(f"{s:>7}: tuned {sm.get('end_to_end_ms')} ms (verified {sm.get('verified')}), untuned "
              f"{sm.get('untuned_end_to_end_ms')} ms, PyTorch {sm.get('pytorch_ms')} ms, tuning "
              f"{sm.get('tuning_wall_s')} s, all in {r['command_wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
