"""The node's practical fp32 peak, measured once and cached: what the budget's headroom term compares layers with.

The peak is the median GFLOP/s of a large single-precision matrix product through numpy's BLAS (OpenBLAS, tuned kernels
for this CPU) on the given number of threads, in a fresh process (so the thread count is what it says, and nothing of
the caller's state interferes), under the node's timing lock (so no build or other timing overlaps it). Cached per host,
CPU and thread count in ``<cache>/peak-<host>-<cpu>-<threads>.json``.

OpenBLAS's run-time CPU detection does not know every CPU: on AMD Zen 5 (AVX-512) the wheel's ``DYNAMIC_ARCH`` build
picks its AVX2 ``Haswell`` kernels and reaches about half of what the machine can do (measured on a 2-core EPYC,
``mcpu=znver5``: 217 GFLOP/s with the detected kernel, 408 with ``OPENBLAS_CORETYPE=SkylakeX``, while tuned TVM convs
reached 337). Where the CPU reports ``avx512f`` the micro-benchmark therefore also runs with the AVX-512 kernel forced,
and the peak is the better of the two: a peak that is too low makes every layer look near it and switches the
budget's headroom term off.
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


METHOD = "numpy float32 matmul 2048^3, median of 5; best of the detected and (avx512f) the SkylakeX kernel"


def cpu_flags() -> set[str]:
    """The CPU's feature flags (from /proc/cpuinfo; empty where it does not exist)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def coretypes(flags: set[str] | None = None) -> list[str | None]:
    """The OpenBLAS kernels to try: the detected one (None) and, on AVX-512 CPUs, ``SkylakeX`` forced."""
    flags = cpu_flags() if flags is None else flags
    return [None, "SkylakeX"] if "avx512f" in flags else [None]


def _cache_file(cache_dir: Path, threads: int) -> Path:
    cpu = "".join(c if c.isalnum() else "_" for c in cpu_name())[:60]
    return cache_dir / f"peak-{socket.gethostname()}-{cpu}-{threads}.json"


def measure_peak_gflops(threads: int, n: int = 2048, lock_path: str | None = None, timeout_s: float = 120.0) -> float:
    """Measure the sgemm rate (GFLOP/s) on ``threads`` threads (a fresh process per OpenBLAS kernel tried, under the
    node's timing lock): the best of the kernels :func:`coretypes` names."""
    from raydgp.measure.node_locks import TimingLock

    rates = []
    for coretype in coretypes():
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
                   MKL_NUM_THREADS=str(threads))
        env.pop("OPENBLAS_CORETYPE", None)
        if coretype:
            env["OPENBLAS_CORETYPE"] = coretype
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
            if coretype:  # the forced kernel is an extra try: the detected one still gives a peak
                continue
            raise RuntimeError(f"the peak micro-benchmark failed: {(p.stderr or p.stdout).strip()[-300:]}")
        rates.append(float(json.loads(p.stdout.strip().splitlines()[-1])["gflops"]))
    return max(rates)


def node_peak_gflops(threads: int, cache_dir: str | os.PathLike, lock_path: str | None = None) -> float:
    """The cached peak of this node for ``threads`` threads, measured on first use (GFLOP/s)."""
    f = _cache_file(Path(cache_dir), int(threads))
    try:
        d = json.loads(f.read_text())
        if float(d["gflops"]) > 0 and d.get("method") == METHOD:  # an older method's figure is measured again
            return float(d["gflops"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent or unreadable: measure again
    g = measure_peak_gflops(int(threads), lock_path=lock_path)
    f.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(f, {"gflops": g, "threads": int(threads), "cpu": cpu_name(), "host": socket.gethostname(),
                          "method": METHOD})
    return g
