"""The record store: round trips, a writer killed mid-line, corruption named by line, the pinned format."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from raydgp.errors import RecordsCorruptError
from raydgp.records import Config, MeasureResult, Record, RecordStore, Workload

GOLDEN = Path(__file__).parent / "data" / "golden_record.jsonl"


def make_record(i: int = 0, status: str = "ok") -> Record:
    wl = Workload("conv-key", "conv", "conv2d", {"log2_flops": 20.0, "op_conv2d": 1.0})
    lat = (1.0 + i, 1.5 + i, 1.25 + i) if status == "ok" else ()
    return Record(wl, {"kind": "llvm", "mcpu": "znver3", "num-cores": 2}, Config(1, ((1, 2, 4, 2), 3, -1)),
                  MeasureResult(status, lat, "" if status == "ok" else "boom", 0.1, 0.2), None, 1700000000.0 + i,
                  "host-a", "random")


def test_round_trip_and_best(tmp_path):
    store = RecordStore(tmp_path / "s")
    recs = [make_record(i) for i in range(3)] + [make_record(9, "run_error")]
    assert store.append(recs) == 4
    back = store.records()
    assert back == recs
    assert back[0].config.decisions == ((1, 2, 4, 2), 3, -1)
    assert store.best("conv-key").result.median_ms == pytest.approx(1.25)
    assert math.isinf(back[3].result.median_ms)  # a failure is never fast


def test_golden_format_is_pinned():
    line = GOLDEN.read_text().strip()
    rec = Record.from_json(json.loads(line))
    assert rec == make_record(0)
    from raydgp.records import dumps_line

    assert dumps_line(rec.to_json()) == line


def test_corrupt_middle_line_names_file_and_line(tmp_path):
    store = RecordStore(tmp_path / "s")
    store.append([make_record(i) for i in range(3)])
    path = tmp_path / "s" / "records.jsonl"
    lines = path.read_text().splitlines()
    lines[1] = lines[1][: len(lines[1]) // 2] + "#garbage"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordsCorruptError) as ei:
        store.records()
    assert ei.value.line == 2 and str(path) in str(ei.value)


def test_valid_json_but_not_a_record_is_an_error(tmp_path):
    store = RecordStore(tmp_path / "s")
    store.append([make_record(0)])
    with open(tmp_path / "s" / "records.jsonl", "a") as f:
        f.write('{"v": 1, "hello": 2}\n')
    store.append([make_record(1)])
    with pytest.raises(RecordsCorruptError) as ei:
        store.records()
    assert ei.value.line == 2


WRITER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {tests!r})
    from test_records import make_record
    from raydgp.records import RecordStore, dumps_line
    store = RecordStore({path!r})
    for i in range(5):
        store.append(make_record(i))
    line = dumps_line(make_record(99).to_json())
    with open(os.path.join({path!r}, "records.jsonl"), "ab") as f:   # a write cut mid-line
        f.write(line[: len(line) // 2].encode()); f.flush(); os.fsync(f.fileno())
    print("ready", flush=True)
    time.sleep(60)
""")


def test_writer_killed_mid_line_loses_nothing(tmp_path):
    path = str(tmp_path / "s")
    proc = subprocess.Popen([sys.executable, "-c", WRITER.format(tests=str(Path(__file__).parent), path=path)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    store = RecordStore(path)
    with pytest.warns(UserWarning, match="torn last line"):
        recs = store.records()
    assert [r.time for r in recs] == [make_record(i).time for i in range(5)]
    # The next writer moves the fragment aside instead of gluing a record onto it.
    store.append(make_record(7))
    recs = store.records()
    assert len(recs) == 6 and recs[-1] == make_record(7)
    assert (Path(path) / "records.jsonl.torn").read_text().startswith('{"config"')


def test_records_with_nan_are_refused(tmp_path):
    rec = make_record(0)
    bad = Record(rec.workload, rec.target, rec.config, MeasureResult("ok", (float("nan"),)), None, 0.0, "h")
    with pytest.raises(ValueError):
        RecordStore(tmp_path / "s").append(bad)


def test_store_survives_pickling_by_path(tmp_path):
    import pickle

    store = RecordStore(tmp_path / "s")
    clone = pickle.loads(pickle.dumps(store))
    clone.append(make_record(0))
    assert store.records() == [make_record(0)]


def test_package_never_unpickles():
    root = Path(__file__).parent.parent / "raydgp"
    for f in root.rglob("*.py"):
        text = f.read_text()
        assert "pickle.load" not in text, f
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f


def test_a_compressed_part_is_read_first_then_appended_to(tmp_path):
    import gzip

    from raydgp.records import dumps_line

    d = tmp_path / "s"
    d.mkdir()
    lines = "".join(dumps_line(make_record(i).to_json()) + "\n" for i in range(3))
    (d / "records.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    store = RecordStore(d)
    assert store.records() == [make_record(i) for i in range(3)]
    store.append(make_record(5))
    assert store.records() == [make_record(i) for i in (0, 1, 2, 5)]
