"""Run an exported Relax library in this (fresh) process: ``python -m raydgp.models.run_library LIB IN.npz OUT.npz
REPEAT MIN_REPEAT_MS DEVICE [rounds]``. Writes the outputs to OUT.npz, then prints one JSON line
``{"latencies_ms": [...]}`` to stdout; with ``rounds`` it prints ``{"ready": true}`` after the outputs instead and
times a round per ``go`` line on stdin (:mod:`raydgp.models.rounds`). ``MIN_REPEAT_MS`` 0 with ``REPEAT`` 1 times one
call in Python after the outputs' call (a baseline of seconds per call: TVM's timer would add a warm-up call of its
own). Set ``TVM_NUM_THREADS`` in the environment before starting it."""

from __future__ import annotations

import json
import sys

import numpy as np


def _flatten(x) -> list:
    import tvm

    if isinstance(x, (list, tuple)) or type(x).__name__ in ("Array", "List", "Tuple"):
        out = []
        for v in x:
            out += _flatten(v)
        return out
    if hasattr(x, "numpy"):
        return [x.numpy()]
    return [np.asarray(x)]


def main(argv: list[str]) -> int:
    lib, inp, outp, repeat, min_ms, device = argv[:6]
    rounds = argv[6:7] == ["rounds"]
    import time

    from raydgp.tvm_loader import import_tvm

    tvm = import_tvm()
    from tvm import relax

    dev = tvm.cuda(0) if device == "cuda" else tvm.cpu(0)
    vm = relax.VirtualMachine(tvm.runtime.load_module(lib), dev)
    with np.load(inp) as z:
        arrays = [z[f"arr_{i}"] for i in range(len(z.files))]
    args = [tvm.runtime.tensor(a, dev) for a in arrays]
    outs = _flatten(vm["main"](*args))
    np.savez(outp, *outs)

    def time_round() -> dict:
        if int(repeat) == 1 and float(min_ms) <= 0:  # one call; the outputs' call above warmed it up
            t0 = time.perf_counter()
            vm["main"](*args)
            dev.sync()
            return {"latencies_ms": [(time.perf_counter() - t0) * 1e3]}
        timer = vm.time_evaluator("main", dev, number=1, repeat=int(repeat), min_repeat_ms=int(min_ms))
        return {"latencies_ms": [float(r) * 1e3 for r in timer(*args).results]}

    if rounds:
        from raydgp.models.rounds import serve

        return serve(time_round)
    print(json.dumps(time_round()))
    return 0

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
