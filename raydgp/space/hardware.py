"""What a target's hardware looks like to the model: a few numbers from the target dict (no TVM here).

The records of the shipped history and of users' stores carry their target (``{"kind": "llvm", "mcpu": "znver3",
"num-cores": 2}``); the encoding appends :func:`hardware_features` of the target a record was *measured* on, so a model
trained on AMD Zen 3 (AVX2) records can tell them from Intel AVX-512 ones, and per-task standardisation and "the same
task" both go by ``(workload key, hardware_tag)``: a layer measured on other hardware is another task.
"""

from __future__ import annotations

import math
from typing import Mapping

#: LLVM CPU names with 512-bit vectors (AVX-512).
AVX512_CPUS = frozenset({
    "skylake-avx512", "cascadelake", "cooperlake", "cannonlake", "icelake-client", "icelake-server", "tigerlake",
    "rocketlake", "sapphirerapids", "emeraldrapids", "graniterapids", "graniterapids-d", "diamondrapids", "znver4",
    "znver5", "x86-64-v4", "knl", "knm"})
#: LLVM CPU names with 256-bit vectors (AVX2 / FMA) as their widest.
AVX2_CPUS = frozenset({
    "haswell", "broadwell", "skylake", "alderlake", "raptorlake", "meteorlake", "arrowlake", "arrowlake-s", "lunarlake",
    "gracemont", "sierraforest", "grandridge", "clearwaterforest", "znver1", "znver2", "znver3", "bdver4",
    "x86-64-v3"})

#: Names of the hardware features, in encoding order.
HARDWARE_FEATURES = ("hw_log2_vector_bits", "hw_amd")


def vector_bits(target: Mapping) -> int:
    """Widest SIMD register of the target's CPU, bits (128 when the CPU is unknown; 0 for a GPU)."""
    if str(target.get("kind", "llvm")) != "llvm":
        return 0
    mcpu = str(target.get("mcpu", "")).lower()
    if mcpu in AVX512_CPUS:
        return 512
    if mcpu in AVX2_CPUS:
        return 256
    return 128


def hardware_features(target: Mapping) -> tuple[float, ...]:
    """The :data:`HARDWARE_FEATURES` of a target: ``log2`` of its vector width (0 for a GPU) and whether it is an
    AMD (``znver*``/``bdver*``) CPU."""
    bits = vector_bits(target)
    mcpu = str(target.get("mcpu", "")).lower()
    return (math.log2(bits) if bits else 0.0, 1.0 if mcpu.startswith(("znver", "bdver")) else 0.0)


def hardware_tag(target: Mapping) -> str:
    """A short name of the hardware a record was measured on: ``kind:mcpu-or-arch:cores``."""
    kind = str(target.get("kind", "llvm"))
    what = target.get("mcpu") if kind == "llvm" else target.get("arch")
    return f"{kind}:{what or '?'}:{target.get('num-cores', '?')}"
