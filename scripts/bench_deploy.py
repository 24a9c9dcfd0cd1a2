"""What the deploy step of ``raydgp tune`` costs (build the tuned and untuned libraries, verify, time them beside the
framework reference), A/B against another checkout, interleaved.

    python scripts/bench_deploy.py --run runs/r18 --base /path/to/other/checkout --pairs 2

``--run`` is a finished ``raydgp tune`` output directory (its records are deployed again, into ``RUN/bench_deploy_*``;
the run itself is untouched). Each pair runs the deploy step once with this checkout's code and once with ``--base``'s
(``PYTHONPATH``; base first), each in a fresh process, nothing else running. Appends one entry per deploy to
``bench/bench_deploy.json``: the step's wall time (s) and what it measured (tuned, PyTorch, ONNX Runtime and untuned
ms), with commit and ``mcpu``; prints the medians per side.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
from pathlib import Path
from raydgp.models.toolchain import TVMToolchain
from raydgp.records import RecordStore
run, model, tag = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
tc = TVMToolchain()
m = tc.load(model, None, 0, "llvm", 2, layout="auto")
t0 = time.monotonic()
dep = tc.deploy(m, RecordStore(run / "records"), {l.key for l in m.layers}, run / f"bench_deploy_{tag}", 2, True,
                lambda *_: None)
print(json.dumps({"deploy_s": round(time.monotonic() - t0, 2), "verified": dep.verified,
                  "tuned_ms": dep.end_to_end_ms, "untuned_ms": dep.untuned_ms, "reference_ms": dep.reference_ms,
                  "timing": dep.timing, "target": m.target}))
"""


def _commit(tree: Path) -> str:
    try:
        c = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                           check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return c + (" (uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, type=Path)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--base", type=Path, help="the other checkout (default: none, this checkout only)")
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "bench_deploy.json")
    a = ap.parse_args()
    if not (a.run / "records").is_dir():
        print(f"error: {a.run} has no records/: give a finished raydgp tune output directory", file=sys.stderr)
        return 2
    sides = ([("base", a.base.resolve())] if a.base else []) + [("this", ROOT)]
    entries = json.loads(a.json.read_text()) if a.json.exists() else []
    got: dict[str, list] = {}
    for i in range(a.pairs):
        for side, tree in sides:
            env = dict(os.environ, PYTHONPATH=str(tree))
            p = subprocess.run([sys.executable, "-c", CHILD, str(a.run.resolve()), a.model, f"{side}{i}"],
                               capture_output=True, text=True, env=env, cwd=str(tree))
            if p.returncode != 0:
                print(f"error: the {side} deploy failed: {(p.stderr.strip().splitlines() or ['?'])[-1]}",
                      file=sys.stderr)
                return 1
            r = json.loads(p.stdout.strip().splitlines()[-1])
            r.update(side=side, commit=_commit(tree), pair=i, model=a.model, run=str(a.run),
                     mcpu=r["target"].get("mcpu"), date=time.strftime("%Y-%m-%d %H:%M"))
            got.setdefault(side, []).append(r)
            entries.append(r)
            a.json.write_text(json.dumps(entries, indent=1))
            print(f"{side} ({r['commit']}): deploy {r['deploy_s']} s, tuned {r['tuned_ms']} ms, reference "
                  f"{r['reference_ms']}, untuned {r['untuned_ms']} ms", flush=True)
    for side, rs in got.items():
        print(f"{side}: median deploy {statistics.median(r['deploy_s'] for r in rs):.1f} s over {len(rs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
