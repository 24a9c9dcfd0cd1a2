"""The node's practical fp32 peak, measured once and cached: what the budget's headroom term compares layers with.

The peak is the median GFLOP/s of a large single-precision matrix product through numpy's BLAS (OpenBLAS, tuned kernels
for this CPU) on the given number of threads, in a fresh process (so the thread count is what it says, and nothing of
the caller's state interferes), under the node's timing lock (so no build or other timing overlaps it). Cached per host,
CPU and thread count in ``<cache>/peak-<host>-<cpu>-<threads>.json``.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

from raydgp.atomic import write_json_atomic

_SNIPPET = r"""
import json, sys, time
import numpy as np
n = int(sys.argv[1])
rng = np.random.default_rng(0)
a = rng.standard_normal((n, n), dtype=np.float32)
b = rng.standard_normal((n, n), dtype=np.float32)
a @ b
rates = []
for _ in range(5):
    t = time.perf_counter(); a @ b; dt = time.perf_counter() - t
    rates.append(2.0 * n ** 3 / dt / 1e9)
rates.sort()
print(json.dumps({"gflops": rates[len(rates) // 2], "all": rates}))
"""


def cpu_name() -> str:
    """A short name of this CPU model (from /proc/cpuinfo where it exists)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cache_file(cache_dir: Path, threads: int) -> Path:
    cpu = "".join(c if c.isalnum() else "_" for c in cpu_name())[:60]
    return cache_dir / f"peak-{socket.gethostname()}-{cpu}-{threads}.json"


def measure_peak_gflops(threads: int, n: int = 2048, lock_path: str | None = None, timeout_s: float = 120.0) -> float:
    """Measure the sgemm rate (GFLOP/s) on ``threads`` threads (a fresh process, under the node's timing lock)."""
    from raydgp.measure.node_locks import TimingLock

    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    lock = TimingLock(lock_path) if lock_path else None
    if lock:
        lock.acquire()
    try:
        p = subprocess.run([sys.executable, "-c", _SNIPPET, str(n)], capture_output=True, text=True, env=env,
                           timeout=timeout_s)
    finally:
        if lock:
            lock.release()
    if p.returncode != 0:
        raise RuntimeError(f"the peak micro-benchmark failed: {(p.stderr or p.stdout).strip()[-300:]}")
    return float(json.loads(p.stdout.strip().splitlines()[-1])["gflops"])


def node_peak_gflops(threads: int, cache_dir: str | os.PathLike, lock_path: str | None = None) -> float:
    """The cached peak of this node for ``threads`` threads, measured on first use (GFLOP/s)."""
    f = _cache_file(Path(cache_dir), int(threads))
    try:
        d = json.loads(f.read_text())
        if float(d["gflops"]) > 0:
            return float(d["gflops"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent or unreadable: measure again
    g = measure_peak_gflops(int(threads), lock_path=lock_path)
    f.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(f, {"gflops": g, "threads": int(threads), "cpu": cpu_name(), "host": socket.gethostname(),
                          "method": "numpy float32 matmul 2048^3, median of 5"})
    return g
