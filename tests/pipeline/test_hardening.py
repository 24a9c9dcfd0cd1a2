"""Nothing lost, nothing silent: atomic files, live-writer reads, inputs checked before expensive work, crashing
libraries reported, progress that never goes backwards."""

from __future__ import annotations

import io
import json
import os
import threading
import time
import warnings

import pytest

from tests.helpers import _one_line_error, cli


def test_atomic_write_keeps_the_old_file_when_killed_before_the_rename(tmp_path, monkeypatch):
    from raydgp import atomic

    p = tmp_path / "untuned.json"
    atomic.write_json_atomic(p, {"a": 1.0})

    def boom(*a):
        raise KeyboardInterrupt  # stands for a kill between the write and the rename

    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic.write_json_atomic(p, {"a": 2.0, "b": 3.0})
    assert json.loads(p.read_text()) == {"a": 1.0}
    assert [f.name for f in tmp_path.iterdir()] == ["untuned.json"]  # no temporary left behind


def test_a_reader_never_reports_a_line_a_live_writer_is_completing(tmp_path):
    from raydgp.records import JsonLinesFile

    f = JsonLinesFile(tmp_path / "records.jsonl")
    f.append([{"n": 1}])
    holding, release = threading.Event(), threading.Event()

    def writer():
        with f._lock:  # a writer in the middle of its append: half a line on disk, lock held
            with open(f.path, "ab") as h:
                h.write(b'{"n": 2, "half')
                h.flush()
            holding.set()
            release.wait(10)
            with open(f.path, "ab") as h:
                h.write(b'": true}\n')

    t = threading.Thread(target=writer)
    t.start()
    holding.wait(5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning about a torn line would be a false alarm here
        got = [o for _, o in f.read()]
    release.set()
    t.join()
    assert got == [{"n": 1}]
    assert [o["n"] for _, o in f.read()] == [1, 2]


def test_a_torn_line_with_no_writer_is_still_reported(tmp_path):
    from raydgp.records import JsonLinesFile

    f = JsonLinesFile(tmp_path / "records.jsonl")
    f.append([{"n": 1}])
    with open(f.path, "ab") as h:
        h.write(b'{"n": 2, "to')
    with pytest.warns(UserWarning, match="torn"):
        assert [o for _, o in f.read()] == [{"n": 1}]


@pytest.mark.parametrize("args", [
    ("tune", "--model", "tiny_cnn", "--history", "/nonexistent/records"),
    ("layer", "--history", "/nonexistent/records"),
    ("tune", "--model", "tiny_cnn", "--address", "127.0.0.1:1"),
    ("layer", "--address", "127.0.0.1:1"),
    ("tune", "--model", "no_such_model"),
    ("tune", "--model", "tiny_cnn", "--trials", "0"),
])
def test_bad_inputs_fail_in_seconds_with_one_line(tmp_path, args):
    t0 = time.monotonic()
    p = cli(*args, "--out", str(tmp_path / "out"), timeout=120)
    _one_line_error(p)
    assert time.monotonic() - t0 < 60, "checked before any expensive work"


def test_a_non_record_history_dir_and_a_bad_ray_address_env(tmp_path):
    (tmp_path / "notrecords").mkdir()
    (tmp_path / "notrecords" / "x.txt").write_text("hello")
    _one_line_error(cli("tune", "--model", "tiny_cnn", "--history", str(tmp_path / "notrecords"),
                        "--out", str(tmp_path / "o")), "not a record store")
    p = cli("tune", "--model", "tiny_cnn", "--out", str(tmp_path / "o2"), env={"RAY_ADDRESS": "127.0.0.1:1"},
            timeout=120)
    _one_line_error(p)
    assert "Ray address" in p.stderr


def test_unverified_build_exits_3(monkeypatch, tmp_path):
    import raydgp.pipeline.model_job as job
    from raydgp import cli as cli_mod

    monkeypatch.setattr(job, "run_model", lambda run: {"verified": False})
    assert cli_mod.main(["tune", "--model", "tiny_cnn", "--out", str(tmp_path)]) == 3


def test_the_tvm_toolchain_reports_a_library_that_crashes(monkeypatch, tmp_path):
    """The real deploy step with its TVM calls replaced: a library whose run fails is ``verified: false``."""
    import numpy as np

    import raydgp.models.build as build
    import raydgp.models.run_reference as rr
    import raydgp.space.ms_database as msdb
    from raydgp.errors import RayDGPError
    from raydgp.models.toolchain import TVMToolchain
    from raydgp.models.base import LoadedModel

    class M:
        name, reference_name, inputs, extra = "m", "pytorch", {"x": np.zeros(2)}, {}

        @staticmethod
        def reference(xs):
            return [np.zeros(2)]

    def untuned(lib, inputs, **kw):
        assert "untuned" in str(lib)
        return build.LibraryRun(outputs=[np.zeros(2)], latencies_ms=[5.0])

    def crash(lib, inputs, **kw):
        raise RayDGPError(f"running {lib} failed: killed by SIGSEGV")

    class Ref:
        def __init__(self, *a, **k):
            pass

        def round(self):
            return {"pytorch": [1.0]}

        def close(self):
            pass

    monkeypatch.setattr(msdb, "export_to_metaschedule", lambda store, d, **kw: (os.makedirs(d, exist_ok=True), 1)[1])
    monkeypatch.setattr(build, "compile_tuned", lambda *a: None)
    monkeypatch.setattr(build, "compile_untuned", lambda *a: None)
    monkeypatch.setattr(build, "export", lambda ex, path: path)
    monkeypatch.setattr(build, "run_library", untuned)
    monkeypatch.setattr(build, "LibraryTimer", crash)
    monkeypatch.setattr(rr, "ReferenceTimer", Ref)
    lm = LoadedModel("m", "builtin", "pytorch", {"kind": "llvm"}, [],
                     handle={"imported": M, "prepared": None, "arg": "m", "input_shape": None, "seed": 0,
                             "device": "cpu"})
    dep = TVMToolchain().deploy(lm, None, set(), tmp_path, 2, True, lambda *_: None)
    assert dep.verified is False and dep.end_to_end_ms is None and "SIGSEGV" in dep.verify_message
    assert dep.untuned_ms == 5.0 and (tmp_path / "ms_database").is_dir()


def _fake_deploy(monkeypatch, tmp_path, order: list, tuned_fails_at: int | None = None, ref_fails: str = ""):
    """Run TVMToolchain.deploy with fake builds and fake timing processes that note what they do in ``order``: U
    (untuned run), T+ / R+ (a tuned / reference process started), T / R (a round), T- / R- (closed)."""
    import numpy as np

    import raydgp.models.build as build
    import raydgp.models.run_reference as rr
    import raydgp.space.ms_database as msdb
    from raydgp.errors import RayDGPError
    from raydgp.models.base import LoadedModel
    from raydgp.models.toolchain import TVMToolchain

    class M:
        name, reference_name, inputs, extra = "m", "pytorch", {"x": np.zeros(2)}, {}

        @staticmethod
        def reference(xs):
            return [np.zeros(2)]

    def untuned(lib, inputs, **kw):
        assert "untuned" in str(lib) and kw["repeat"] == 1 and kw["min_repeat_ms"] == 0  # one timed call
        order.append("U")
        return build.LibraryRun(outputs=[np.zeros(2)], latencies_ms=[50.0])

    class Tuned:
        def __init__(self, lib, inputs, **kw):
            order.append("T+")
            self.outputs = [np.zeros(2)]

        def round(self):
            order.append("T")
            if tuned_fails_at is not None and order.count("T") == tuned_fails_at:
                raise RayDGPError("running m.so failed: killed by SIGSEGV")
            return [10.0 + order.count("T")]

        def close(self):
            order.append("T-")

    class Ref:
        def __init__(self, *a, **k):
            if ref_fails == "start":
                raise RayDGPError("timing the reference of m failed: ModuleNotFoundError: torch")
            order.append("R+")

        def round(self):
            order.append("R")
            if ref_fails == "round" and order.count("R") == 2:
                raise RayDGPError("timing the reference of m failed: killed")
            return {"pytorch": [20.0 + order.count("R")], "onnxruntime": [5.0]}

        def close(self):
            order.append("R-")

    monkeypatch.setattr(msdb, "export_to_metaschedule", lambda store, d, **kw: (os.makedirs(d, exist_ok=True), 1)[1])
    monkeypatch.setattr(build, "compile_tuned", lambda *a: None)
    monkeypatch.setattr(build, "compile_untuned", lambda *a: "untuned")
    monkeypatch.setattr(build, "export", lambda ex, path: path)
    monkeypatch.setattr(build, "run_library", untuned)
    monkeypatch.setattr(build, "LibraryTimer", Tuned)
    monkeypatch.setattr(rr, "ReferenceTimer", Ref)
    lm = LoadedModel("m", "builtin", "pytorch", {"kind": "llvm"}, [],
                     handle={"imported": M, "prepared": None, "arg": "m", "input_shape": None, "seed": 0,
                             "device": "cpu"})
    logged: list = []
    return TVMToolchain().deploy(lm, None, set(), tmp_path, 2, True, logged.append), logged


def test_deploy_times_the_tuned_library_and_the_reference_in_alternation(monkeypatch, tmp_path):
    """Tuned and reference timings alternate (tuned, reference, tuned, ...), each side in one process started once and
    closed at the end, and the medians pool every round: a load change during the timing falls on both sides of the
    ratio."""
    import numpy as np

    from raydgp.models.toolchain import TIMING_ROUNDS

    order: list = []
    dep, _ = _fake_deploy(monkeypatch, tmp_path, order)
    assert TIMING_ROUNDS >= 2
    assert order == ["U", "T+", "R+"] + ["T", "R"] * TIMING_ROUNDS + ["T-", "R-"], order
    assert dep.verified and dep.end_to_end_latencies_ms == [10.0 + i for i in range(1, TIMING_ROUNDS + 1)]
    assert dep.reference_ms["pytorch"] == float(np.median([20.0 + i for i in range(1, TIMING_ROUNDS + 1)]))
    assert dep.reference_ms["onnxruntime"] == 5.0 and dep.untuned_ms == 50.0
    assert "one fresh process started once" in dep.timing


def test_deploy_when_a_timing_process_fails_midway(monkeypatch, tmp_path):
    """A tuned library that crashes on a later round is not verified (its rounds so far stay as the unverified
    latency); a reference that cannot start leaves one round of the tuned library, said in the log; a reference that
    dies midway keeps its rounds so far. Every process is closed."""
    from raydgp.models.toolchain import TIMING_ROUNDS

    order: list = []
    dep, logged = _fake_deploy(monkeypatch, tmp_path, order, tuned_fails_at=2)
    assert not dep.verified and dep.end_to_end_ms is None and "SIGSEGV" in dep.verify_message
    assert dep.unverified_ms == 11.0 and order.count("R") == TIMING_ROUNDS and order.count("T") == 2
    assert order[-2:] == ["T-", "R-"] and any("NOT VERIFIED" in m for m in logged)

    order = []
    dep, logged = _fake_deploy(monkeypatch, tmp_path, order, ref_fails="start")
    assert dep.verified and order == ["U", "T+", "T", "T-"] and dep.reference_ms == {}
    assert any("could not time the pytorch reference" in m and "torch" in m for m in logged)
    assert "no reference timed" in dep.timing

    order = []
    dep, logged = _fake_deploy(monkeypatch, tmp_path, order, ref_fails="round")
    assert dep.verified and order.count("R") == 2 and order.count("T") == TIMING_ROUNDS
    assert dep.reference_ms["pytorch"] == 21.0 and any("reference stopped" in m for m in logged)


def test_progress_layers_done_never_goes_backwards():
    from raydgp.pipeline.report import Progress

    s = io.StringIO()
    p = Progress(100, 5, stream=s)
    seen = []
    for done in (0, 2, 1, 3, 2, 5):
        p.show(10, done, 1.0, [], final=True)
        seen.append(p.layers_done)
    assert seen == sorted(seen) == [0, 2, 2, 3, 3, 5]


def test_the_default_tune_budget_is_a_time_budget(monkeypatch, tmp_path):
    """No --trials and no --time-budget: the default time budget (the README's main job, about 10 minutes all in);
    --trials alone: no time limit; both: both."""
    import raydgp.pipeline.model_job as job
    from raydgp import cli as cli_mod

    got = []
    monkeypatch.setattr(job, "run_model", lambda run: got.append(run) or {"verified": True})
    assert cli_mod.main(["tune", "--model", "tiny_cnn", "--out", str(tmp_path)]) == 0
    assert got[-1].time_budget_s == cli_mod.DEFAULT_TIME_BUDGET_S and got[-1].trials == cli_mod.DEFAULT_TRIALS
    assert cli_mod.main(["tune", "--model", "tiny_cnn", "--trials", "40", "--out", str(tmp_path)]) == 0
    assert got[-1].trials == 40 and got[-1].time_budget_s is None
    assert cli_mod.main(["tune", "--model", "tiny_cnn", "--trials", "40", "--time-budget", "60", "--out",
                         str(tmp_path)]) == 0
    assert got[-1].trials == 40 and got[-1].time_budget_s == 60
