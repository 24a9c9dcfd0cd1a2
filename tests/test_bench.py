"""``scripts/bench.py --quick``: every part it runs produces well-formed results and a BENCHMARKS.md section
(structure, not speed: the quick mode is far too small for its numbers to mean anything)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_bench_writes_json_tables_and_plots(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\nkept text\n")
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--out", str(tmp_path),
                        "--benchmarks", str(md)], cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads((tmp_path / "bench_quick.json").read_text())
    assert res["mode"] == "quick" and res["machine"]["cores"] >= 1 and "mcpu" in res["machine"]
    (row,) = res["searchers"]["summary"]
    for m in ("dgp", "random"):
        r = row["methods"][m]
        assert r["seeds"] == 2 and all(r[f"regret@{b}"] >= 0 for b in row["budgets"])
    assert row["methods"]["dgp"]["suggest_ms_median"] > 0
    assert "regret@12" in row["methods"]["tpe"] or "skipped" in row["methods"]["tpe"]
    loto = res["replay"]["loto"]
    assert loto["targets"] == 2 and set(loto["median_over_targets"]) == {"random", "cold", "dgp", "sgp", "rgpe"}
    text = md.read_text()
    assert "kept text" in text and "<!-- bench:begin -->" in text and "### 7.1" in text and "### 7.2" in text
    assert (tmp_path / "searchers.png").stat().st_size > 1000 and (tmp_path / "replay_loto.png").exists()
    # render alone rewrites the same section in place (no duplicate)
    q = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "render", "--quick", "--out",
                        str(tmp_path), "--benchmarks", str(md)], cwd=ROOT, capture_output=True, text=True)
    assert q.returncode == 0, q.stderr[-2000:]
    assert md.read_text().count("<!-- bench:begin -->") == 1
