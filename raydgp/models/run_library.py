"""Run an exported Relax library in this (fresh) process: ``python -m raydgp.models.run_library LIB IN.npz OUT.npz
REPEAT MIN_REPEAT_MS DEVICE``. Writes the outputs to OUT.npz and one JSON line ``{"latencies_ms": [...]}`` to stdout.
Set ``TVM_NUM_THREADS`` in the environment before starting it."""

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
    lib, inp, outp, repeat, min_ms, device = argv
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
    timer = vm.time_evaluator("main", dev, number=1, repeat=int(repeat), min_repeat_ms=int(min_ms))
    res = timer(*args)
    print(json.dumps({"latencies_ms": [float(r) * 1e3 for r in res.results]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
