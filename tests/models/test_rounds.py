"""Timing rounds in one fresh process (raydgp.models.rounds): the protocol, and what a crashing, hanging or chatty
child does to the parent (a clear error, never a hang)."""

from __future__ import annotations

import sys
import textwrap
import time

import pytest

from raydgp.errors import RayDGPError
from raydgp.models.rounds import RoundsProcess


def _child(tmp_path, body: str) -> list[str]:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(body))
    return [sys.executable, str(script)]


SERVING = """
    import sys
    from raydgp.models.rounds import serve
    n = [0]
    def time_round():
        n[0] += 1
        print("a library printing on stdout")  # not a message: skipped
        sys.stderr.write("x" * 200000)  # more than a pipe holds: must not block the child
        return {"latencies_ms": [float(n[0])]}
    sys.exit(serve(time_round, {"pid_note": "hi"}))
"""


def test_a_child_prepares_once_and_times_a_round_per_request(tmp_path):
    with RoundsProcess(_child(tmp_path, SERVING), timeout_s=60, what="the test child") as p:
        assert p.ready == {"ready": True, "pid_note": "hi"}
        assert [p.round()["latencies_ms"] for _ in range(3)] == [[1.0], [2.0], [3.0]]  # one process: its state lives
    assert p._p.poll() == 0  # closing ends it (end of its input)


def test_a_child_that_crashes_gives_its_last_error_line(tmp_path):
    body = """
        import sys
        from raydgp.models.rounds import serve
        def time_round():
            raise SystemExit("boom: the kernel segfaulted")
        serve(time_round)
    """
    p = RoundsProcess(_child(tmp_path, body), timeout_s=60, what="running lib.so")
    with pytest.raises(RayDGPError, match="running lib.so failed: boom: the kernel segfaulted"):
        p.round()
    with pytest.raises(RayDGPError, match="running lib.so failed"):  # a dead child keeps failing, it never hangs
        p.round()


def test_a_child_that_dies_before_ready_or_hangs_is_an_error_in_bounded_time(tmp_path):
    with pytest.raises(RayDGPError, match="failed: ImportError: no such library"):
        RoundsProcess(_child(tmp_path, "raise ImportError('no such library')"), timeout_s=60)
    body = """
        import time
        from raydgp.models.rounds import serve
        serve(lambda: time.sleep(600) or {})
    """
    p = RoundsProcess(_child(tmp_path, body), timeout_s=2, what="running slow.so")
    t0 = time.monotonic()
    with pytest.raises(RayDGPError, match="running slow.so took longer than 2 s"):
        p.round()
    assert time.monotonic() - t0 < 30 and p._p.poll() is not None  # killed, not left behind


def test_the_library_and_the_reference_timers_for_real(cpu_target, tmp_path):
    """The real children at small size: a TVM library (tiny_cnn, untuned build) loaded once gives outputs that match
    PyTorch and a round per request; the PyTorch reference (exported to ONNX once) gives PyTorch eager and ONNX
    Runtime latencies per round."""
    from raydgp.models.build import LibraryTimer, compare, compile_untuned, export
    from raydgp.models.importer import load_model
    from raydgp.models.run_reference import ReferenceTimer
    from raydgp.models.tasks import prepare

    m = load_model("tiny_cnn")
    lib = export(compile_untuned(prepare(m.mod, cpu_target), cpu_target), tmp_path / "tiny.so")
    with LibraryTimer(lib, m.inputs, threads=1, repeat=2, min_repeat_ms=1) as t:
        assert compare(t.outputs, m.reference(list(m.inputs.values())))[0]
        rounds = [t.round() for _ in range(3)]
    assert all(len(r) == 2 and all(v > 0 for v in r) for r in rounds), rounds
    assert not list(tmp_path.glob(".timer_*"))  # its input and output files are gone
    with ReferenceTimer("tiny_cnn", None, 0, threads=1, repeat=2, min_repeat_ms=1) as ref:
        got = [ref.round() for _ in range(2)]
    assert all(set(g) == {"pytorch", "onnxruntime"} and len(g["pytorch"]) == 2 for g in got), got
    with pytest.raises(RayDGPError, match="running .*missing.so failed"):
        LibraryTimer(tmp_path / "missing.so", m.inputs, threads=1)
