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
    assert f"regret@{row['budgets'][-1]}" in row["methods"]["tpe"] or "skipped" in row["methods"]["tpe"]
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


def test_the_e2e_section_states_ratios_and_table_1_from_the_runs(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_script", ROOT / "scripts" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    runs = [{"model": "resnet18", "method": "raydgp", "trials": 300, "trials_total": 300, "tuning_wall_s": 200.0,
             "wall_s": 300.0, "tuned_ms": 20.0, "verified": True, "pytorch_ms": 25.0, "onnxruntime_ms": 10.0,
             "untuned_ms": 1600.0},
            {"model": "resnet18", "method": "metaschedule", "trials": 300, "tuning_wall_s": 2000.0, "wall_s": 2100.0,
             "tuned_ms": 22.0, "verified": True, "pytorch_ms": 24.0, "onnxruntime_ms": 10.5},
            {"model": "vgg16", "method": "raydgp", "trials": 300, "exit": 1, "verified": None}]
    text = bench.render({"e2e": {"config": {"trials": 300}, "runs": runs}}, tmp_path / "B.md", tmp_path)
    assert "### 7.4" in text and "| resnet18 | raydgp | 300 |" in text
    assert "| 0.8 | 2 |" in text  # tuned / PyTorch and tuned / ORT of the raydgp row, from that row's own references
    assert "failed (exit 1)" in text  # a failed run is shown as failed, not dropped
    assert "| resnet18 | +90% | +9% | +107% |" in text  # 1 - 200/2000; 1 - 20/22; 1.9 x 1.0909 - 1 = 1.07


def test_a_second_machine_kind_gets_its_own_results_file_and_section(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_script", ROOT / "scripts" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    first = {"mcpu": "rocketlake", "cores": 2}
    assert bench.results_file(tmp_path, False, "znver3-2c") == tmp_path / "bench.json"  # nothing recorded yet
    (tmp_path / "bench.json").write_text(json.dumps({"machine": first}))
    assert bench.results_file(tmp_path, False, "rocketlake-2c") == tmp_path / "bench.json"
    other = bench.results_file(tmp_path, False, "znver3-2c")
    assert other == tmp_path / "bench_znver3-2c.json" and bench.file_suffix(other) == "_znver3-2c"
    assert bench.file_suffix(tmp_path / "bench.json") == "" and bench.results_file(tmp_path, True, "x") .name == \
        "bench_quick.json"
    md = tmp_path / "B.md"
    runs = [{"model": "resnet18", "method": "raydgp", "trials": 300, "tuning_wall_s": 200.0, "wall_s": 300.0,
             "tuned_ms": 20.0, "verified": True, "pytorch_ms": 25.0, "onnxruntime_ms": 10.0}]
    bench.render({"machine": first, "e2e": {"config": {"trials": 300}, "runs": runs}}, md, tmp_path)
    runs2 = [dict(runs[0], tuned_ms=30.0)]
    bench.render({"machine": {"mcpu": "znver3", "cores": 2}, "e2e": {"config": {"trials": 300}, "runs": runs2}}, md,
                 tmp_path, "_znver3-2c")
    text = md.read_text()
    a, b = text.index("<!-- bench:begin -->"), text.index("<!-- bench_znver3-2c:begin -->")
    assert text.index("<!-- bench:end -->") < b  # two sections, neither inside the other
    assert "| 0.8 |" in text[a:b] and "| 1.2 |" in text[b:] and "| 1.2 |" not in text[a:b]
    # rendering the first again leaves the second in place
    bench.render({"machine": first, "e2e": {"config": {"trials": 300}, "runs": runs}}, md, tmp_path)
    assert md.read_text().count("<!-- bench_znver3-2c:begin -->") == 1 and "| 1.2 |" in md.read_text()


def test_the_layers_part_in_nhwc_has_its_own_specs_file_and_section(tmp_path):
    """``--layout NHWC``: the layers part's specs in their NHWC spelling, refused outside ``run --parts layers``; its
    section is named for the layout and its command, beside the machine kind's NCHW one."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_script", ROOT / "scripts" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.nhwc_spec("conv2d:1,160,14,14,320,3,1,1") == "conv2d_nhwc:1,160,14,14,320,3,1,1"
    assert bench.nhwc_spec("depthwise:1,32,112,112,3,1,1") == "depthwise_nhwc:1,32,112,112,3,1,1"
    assert bench.nhwc_spec("dense:1,512,1000") == "dense:1,512,1000"
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--layout", "NHWC", "--parts", "e2e",
                        "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "--layout NHWC is for `run --parts layers`" in p.stderr
    md = tmp_path / "B.md"
    mach = {"mcpu": "emeraldrapids", "cores": 2}
    runs = [{"model": "resnet18", "method": "raydgp", "trials": 300, "tuning_wall_s": 200.0, "wall_s": 300.0,
             "tuned_ms": 20.0, "verified": True, "pytorch_ms": 25.0, "onnxruntime_ms": 10.0}]
    bench.render({"machine": mach, "e2e": {"config": {"trials": 300}, "runs": runs}}, md, tmp_path,
                 "_emeraldrapids-2c-nhwc")
    text = md.read_text()
    assert "<!-- bench_emeraldrapids-2c-nhwc:begin -->" in text and "Evidence in NHWC" in text
    assert "`python scripts/bench.py --parts layers --layout NHWC`" in text


def test_layers_part_workloads_option_adds_layers_and_refuses_a_bad_spec(tmp_path, monkeypatch):
    """``--workloads``: the layers part tunes the given specs and its stored config names them beside the layers the
    results already hold; a malformed spec is refused with the spec grammar before anything runs."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_script", ROOT / "scripts" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    ran = []
    monkeypatch.setattr(bench, "_run_layer", lambda s, seed, *a: ran.append((s, seed)))
    monkeypatch.setattr(bench, "_shipped_kinds", lambda: "x")
    results = {"layers": {"config": {}, "runs": [{"workload": "conv2d:1,8,8,8,8,3,1,1", "seed": 0}]}}
    cfg = {"workloads": ["dense:1,64,32"], "seeds": [1], "trials": 4, "methods": ["random"]}
    bench.run_layers(cfg, tmp_path / "bench.json", results)
    assert ran == [("dense:1,64,32", 1)]
    assert results["layers"]["config"]["workloads"] == ["conv2d:1,8,8,8,8,3,1,1", "dense:1,64,32"]
    assert results["layers"]["config"]["seeds"] == [0, 1]
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--parts", "layers", "--workloads",
                        "conv2d:1,2,3", "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "--workloads" in p.stderr and "conv2d:N,C,H,W,K,R,stride,pad" in p.stderr
    assert not (tmp_path / "bench.json").exists()


def test_the_layers_targets_table_counts_each_target_per_seed():
    """Issue 12's live targets, read off the layers part: trials for `dgp` to reach MetaSchedule's re-timed best,
    wins over the peers at 32 trials, and the re-timed ratio to the cold DGP, each counted per seed."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_script", ROOT / "scripts" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    fast = [5.0] * 3 + [1.0] * 61  # reaches 1.0 ms at trial 4
    slow = [5.0] * 40 + [1.0] * 24  # at trial 41
    runs = [{"workload": "L", "seed": s, "methods": {
                "dgp": {"curve_ms": c, "exit": 0}, "random": {"curve_ms": [2.0] * 64, "exit": 0},
                "tpe": {"curve_ms": [0.5] * 64, "exit": 0}, "cold": {"curve_ms": [3.0] * 64, "exit": 0},
                "metaschedule": {"curve_ms": [1.0] * 64, "exit": 0}},
             "retimed": {"dgp": {"median_ms": 1.0}, "cold": {"median_ms": cold}, "metaschedule": {"median_ms": 1.0}}}
            for s, c, cold in ((0, fast, 1.2), (1, slow, 0.9))]
    lines = bench._targets_table({"runs": runs})
    row = next(x for x in lines if x.startswith("| L |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # reach within 16: seed 0 (4 trials) yes, seed 1 (41) no; random beaten in seed 0 only (seed 1 is at 5 ms at
    # trial 32), TPE in none, HEBO not run
    assert cells[1] == "1/2 (4, 41)" and cells[2] == "1/2" and cells[3] == "0/2" and cells[4] == "-"
    assert cells[5] == "0.83, 1.11" and cells[6] == "1/2"


def test_fresh_stage1_gives_every_layer_run_its_own_empty_cache(tmp_path, monkeypatch):
    """``--fresh-stage1``: each ``raydgp layer`` run of the layers part gets its own stage-1 cache folder
    (``RAYDGP_CACHE``), as a user's first run of a layer; without it the runs inherit the caller's cache."""
    import importlib.util
    import types

    spec = importlib.util.spec_from_file_location("bench_script", ROOT / "scripts" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    envs = []

    def fake_run(cmd, **kw):
        envs.append(kw["env"])
        return types.SimpleNamespace(returncode=0, stdout="", stderr="")

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    monkeypatch.setattr(bench, "_retime", lambda *a: {})
    monkeypatch.setattr(bench, "commit", lambda: "abc")
    monkeypatch.delenv("RAYDGP_CACHE", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    for fresh in (True, False):
        cfg = {"trials": 4, "methods": ["dgp", "cold"], "fresh_stage1": fresh}
        bench._run_layer("dense:1,64,32", 0, cfg, {"runs": []}, work, tmp_path / "b.json", {})
    a, b, c, d = envs
    assert a["RAYDGP_CACHE"] != b["RAYDGP_CACHE"] and a["RAYDGP_CACHE"].startswith(str(work / "cache"))
    assert "RAYDGP_CACHE" not in c and "RAYDGP_CACHE" not in d


def test_bench_fast_table_1_pairs_each_metaschedule_run_with_the_latest_raydgp_run_of_its_kind():
    """``scripts/bench_fast.py``'s Table 1: a MetaSchedule ``tune_relax`` run beside the latest verified raydgp run of
    the same model, trial count, layout and ``mcpu``; other machine kinds, other budgets and unverified runs never
    pair; the ratios come from the two rows."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_fast_script", ROOT / "scripts" / "bench_fast.py")
    bf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bf)

    def row(model, trials, mcpu, tuned, wall, tuning, pt, commit, verified=True, layout="NHWC"):
        return {"model": model, "trials": trials, "machine": {"mcpu": mcpu}, "layout": layout, "tuned_ms": tuned,
                "wall_s": wall, "tuning_wall_s": tuning, "pytorch_ms": pt, "verified": verified, "commit": commit,
                "date": "2026-12-07 10:00"}

    rows = [row("resnet18", "300", "znver3", 50.0, 500.0, 400.0, 50.0, "old"),
            row("resnet18", "300", "znver3", 40.0, 400.0, 320.0, 40.0, "new"),
            row("resnet18", "300", "znver3", 30.0, 100.0, 90.0, 40.0, "bad", verified=False),
            row("resnet18", "300", "emeraldrapids", 10.0, 100.0, 80.0, 20.0, "other kind"),
            row("resnet18", "default", "znver3", 30.0, 450.0, 400.0, 40.0, "other budget"),
            row("resnet18 (MetaSchedule tune_relax)", 300, "znver3", 50.0, 1600.0, 1600.0, 40.0, "ms")]
    lines = bf._table1(rows)
    body = [l for l in lines if l.startswith("| resnet18 |")]
    assert len(body) == 1, lines
    # 1 - 400/1600 = +75% all in, 1 - 320/1600 = +80% tuning; 1 - 40/50 = +20%; own-PyTorch ratios 1.00x / 1.25x
    # -> +20%; HV = 1.75 x 1.2 - 1 = +110%
    assert "| 400 s (new," in body[0] and "| +75% | +80% | 40.00 / 50.00 ms | +20% | 1.00x / 1.25x | +20% | +110% |" \
        in body[0], body[0]
    assert bf._table1(rows[:-1]) == []  # no MetaSchedule run: no table


def test_bench_fast_ort_nodes_profiles_onnx_runtime_per_node_and_renders_the_latest_profile(tmp_path):
    """``scripts/bench_fast.py ort-nodes``: ONNX Runtime's profiler, for real, on the small depthwise net: one row per
    graph node with its median kernel time; the render shows the latest profile of that model on that machine kind."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_fast_script", ROOT / "scripts" / "bench_fast.py")
    bf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bf)
    assert bf.main(["ort-nodes", "--model", "depthwise_small", "--runs", "5", "--rounds", "2", "--pause", "0",
                    "--out", str(tmp_path)]) == 0
    (row,) = json.loads((tmp_path / "bench_fast.json").read_text())["ort_nodes"]
    convs = [n for n in row["nodes"] if n["op"] == "Conv"]
    assert len(convs) == 7 and all(n["median_ms"] > 0 for n in convs)  # the stem and three depthwise + pointwise pairs
    assert row["sum_ms"] >= sum(n["median_ms"] for n in convs) and row["runs"] == 5 and len(row["round_sums_ms"]) == 2
    old = dict(row, date="2026-01-01 00:00", sum_ms=99.0)
    lines = bf._ort_nodes([old, row], "depthwise_small.onnx", row["machine"]["mcpu"])
    assert f"sum {row['sum_ms']:.3f} ms" in "\n".join(lines) and sum(l.endswith("|") for l in lines) == 2 + len(
        row["nodes"])
    assert bf._ort_nodes([row], "depthwise_small.onnx", "another-cpu") == []


def test_bench_wide_renders_a_machine_kinds_own_section_with_each_batch_rule(tmp_path):
    """``bench_wide.py --section`` writes its own section 8 beside the main one (which it leaves alone), with one
    emulated row per batch rule and width, medians over the seeds."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import bench_wide

    md = tmp_path / "B.md"
    md.write_text("# Benchmarks\n\n<!-- wide:begin -->\nmain section\n<!-- wide:end -->\n")

    def run(rule, seed, r256):
        return {"method": f"dgp_emulated_{rule}", "width": 64, "seed": seed, "batch_rule": rule, "trials": 256,
                "regret": {"32": 2.0, "64": 1.0, "128": 0.5, "256": r256}, "batch_s": {"median": 1.0, "n": 12}}
    results = {"machine": {"cpu": "X", "mcpu": "znver3", "cores": 2, "platform": "p"}, "commit": "abc",
               "emulated": {"problem": "hartmann6", "trials": 256, "seeds": 3, "commit": "abc",
                            "runs": [run("believer", s, v) for s, v in enumerate((0.4, 0.3, 0.5))]
                            + [run("thompson", s, v) for s, v in enumerate((0.2, 0.1, 0.3))]}}
    text = bench_wide.render(results, md, "znver3-2c")
    out = md.read_text()
    assert "main section" in out and "<!-- wide_znver3-2c:begin -->" in out and text in out
    assert "## 8 (`znver3-2c`)" in text and "--section znver3-2c" in text and "bench/bench_wide_znver3-2c.json" in text
    rows = {ln.split("|")[1].strip(): ln for ln in text.splitlines() if ln.startswith("| dgp_emulated")}
    assert set(rows) == {"dgp_emulated_believer", "dgp_emulated_thompson"}
    assert "| 0.400 | 0.400, 0.300, 0.500 |" in rows["dgp_emulated_believer"]
    assert "| 0.200 | 0.200, 0.100, 0.300 |" in rows["dgp_emulated_thompson"]
    bench_wide.render(results, md, "znver3-2c")  # again: replaced, not appended
    assert md.read_text().count("wide_znver3-2c:begin") == 1


@pytest.mark.slow
def test_bench_sampling_times_three_samplers_interleaved_for_real(tmp_path):
    """``scripts/bench_sampling.py`` on a small conv: raydgp's draws, TVM's own and MetaSchedule's first evolutionary
    batch, each built and timed; the run lands in the JSON with every row and a summary per sampler."""
    out = tmp_path / "sampling.json"
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_sampling.py"), "--workload",
                        "conv2d_nhwc:1,16,14,14,16,3,1,1", "--configs", "2", "--out", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    (run,) = json.loads(out.read_text())
    assert len(run["rows"]) == 6 and set(run["summary"]) == {"raydgp", "tvm", "ms_evolutionary"}
    assert run["summary"]["raydgp"]["in_space"] == 2 and run["summary"]["ms_evolutionary"]["ok"] >= 1
    assert all(r["ms"] > 0 for r in run["rows"] if r["status"] == "ok")
