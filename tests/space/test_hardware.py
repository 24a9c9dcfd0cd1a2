"""History that knows its hardware: the encoding carries the measuring target's hardware, and a layer measured on
other hardware is another task (kept in the history, standardised on its own)."""

from __future__ import annotations

import numpy as np

from raydgp.space.hardware import HARDWARE_FEATURES, hardware_features, hardware_tag, vector_bits

ZEN3 = {"kind": "llvm", "mcpu": "znver3", "num-cores": 2}
AVX512 = {"kind": "llvm", "mcpu": "rocketlake", "num-cores": 2}


def test_vector_widths_and_tags():
    assert vector_bits(ZEN3) == 256 and vector_bits(AVX512) == 512
    assert vector_bits({"kind": "llvm", "mcpu": "some-future-cpu"}) == 128
    assert vector_bits({"kind": "cuda", "arch": "sm_90"}) == 0
    assert hardware_features(ZEN3) != hardware_features(AVX512)
    assert hardware_tag(ZEN3) == "llvm:znver3:2" and hardware_tag({"kind": "cuda", "arch": "sm_90"}).startswith("cuda")


def test_encoding_ends_with_the_hardware():
    from raydgp.space.design_space import DesignSpace
    from raydgp.testing import fake_space

    sp = fake_space("hw")
    sp_avx = DesignSpace(sp.workload, dict(AVX512), sp.sketches)
    c = sp.sample(np.random.default_rng(0))
    a, b = sp.encode(c), sp_avx.encode(c)
    h = len(HARDWARE_FEATURES)
    assert a.shape == b.shape == (sp.dim,)
    np.testing.assert_array_equal(a[:-h], b[:-h])
    np.testing.assert_array_equal(b[-h:], hardware_features(AVX512))


def test_other_hardware_records_of_the_target_layer_are_another_task():
    from raydgp.records import MeasureResult, Record
    from raydgp.search.history import history_from_records
    from raydgp.testing import fake_space

    sp = fake_space("layer")
    rng = np.random.default_rng(0)
    cfgs = sp.sample_many(10, rng)
    recs = [Record(sp.workload, dict(ZEN3), c, MeasureResult("ok", latencies_ms=(1.0 + i,))) for i, c in enumerate(cfgs)]
    recs += [Record(sp.workload, dict(AVX512), c, MeasureResult("ok", latencies_ms=(100.0 + 10 * i,)))
             for i, c in enumerate(cfgs)]
    h = history_from_records(recs, {sp.workload.key: sp}, exclude_workload=sp.workload.key,
                             exclude_hardware=hardware_tag(AVX512))
    assert len(h) == 10  # this machine's own records of the layer are target data; the Zen 3 ones stay as history
    np.testing.assert_array_equal(h.X[:, -len(HARDWARE_FEATURES):], np.tile(hardware_features(ZEN3), (10, 1)))
    both = history_from_records(recs, {sp.workload.key: sp})
    assert len(both) == 20
    # standardised per (workload, hardware): both halves are centred on their own, despite a 100x latency gap
    zen, avx = both.y[both.X[:, -2] == 8.0], both.y[both.X[:, -2] == 9.0]
    assert abs(zen.mean()) < 1e-6 and abs(avx.mean()) < 1e-6
