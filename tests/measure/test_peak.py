"""The node's sgemm peak: the kernels tried, the cache and its method key, and one real (small) measurement."""

import json

from raydgp.measure import peak


def test_avx512_cpus_also_try_the_forced_avx512_kernel():
    assert peak.coretypes({"avx2", "fma"}) == [None]
    assert peak.coretypes({"avx2", "avx512f", "avx512bw"}) == [None, "SkylakeX"]


def test_a_cached_peak_of_an_older_method_is_measured_again(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(peak, "measure_peak_gflops", lambda threads, lock_path=None: calls.append(threads) or 400.0)
    f = peak._cache_file(tmp_path, 2)
    f.write_text(json.dumps({"gflops": 217.0, "method": "numpy float32 matmul 2048^3, median of 5"}))
    assert peak.node_peak_gflops(2, tmp_path) == 400.0 and calls == [2]
    assert json.loads(f.read_text())["method"] == peak.METHOD
    assert peak.node_peak_gflops(2, tmp_path) == 400.0 and calls == [2]  # now cached: not measured again


def test_a_real_small_measurement_is_the_best_of_the_kernels_tried():
    g = peak.measure_peak_gflops(1, n=256)
    assert 0.5 < g < 10_000
