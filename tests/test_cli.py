"""The command line: clear one-line errors, and a real (small) one-layer run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def run(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "raydgp", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


@pytest.mark.parametrize("spec", ["conv9d:1,2", "conv2d:1,64,56,56,64,3,1", "dense:1,-4,8"])
def test_bad_workload_is_one_line_and_nonzero(tmp_path, spec):
    p = run("layer", "--workload", spec, "--trials", "2", "--out", str(tmp_path / "o"), timeout=120)
    assert p.returncode == 2
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("raydgp: error:") and "Traceback" not in p.stderr
    assert "conv2d:N,C,H,W,K,R,stride,pad" in lines[0] or "positive" in lines[0]


def test_zero_trials_is_refused(tmp_path):
    p = run("layer", "--trials", "0", "--out", str(tmp_path / "o"), timeout=120)
    assert p.returncode == 2 and "trials must be an integer >= 1, got 0" in p.stderr


@pytest.mark.slow
def test_layer_command_end_to_end(tmp_path):
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "scripts/tune.py", "layer", "--workload", "conv2d:1,16,14,14,16,3,1,1",
                        "--trials", "4", "--out", str(out)], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["trials"] == 4 and s["untuned_ms"] > 0
    assert s["in_flight"] == 2  # the CPU default: one trial timed while the next builds
    assert list(s["phases_s"]) == ["space", "history", "ray", "untuned", "search", "export"]
    assert all(v >= 0 for v in s["phases_s"].values()) and s["phases_s"]["search"] > 0
    from raydgp.records import RecordStore

    recs = RecordStore(out / "records").records()
    assert len(recs) == 4 and len({r.config for r in recs}) == 4  # two in flight, no configuration twice
    if s["ok"]:
        assert s["best_ms"] == min(r.result.median_ms for r in recs)
        assert (out / "ms_database" / "database_tuning_record.json").stat().st_size > 0
        assert "faster than the untuned" in p.stdout
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("cmd,opt,msg", [
    ("layer", "bogus=1", "unknown search option 'bogus'; choose from"),
    ("layer", "random_interleave=1.5", "random_interleave=1.5: must be in [0, 1)"),
    ("tune", "n_init", "write KEY=VALUE"),
    ("tune", "seed=4", "set by the command's own flags"),
    ("tune", "prefetch=on", "prefetch=on is for `raydgp layer`"),
])
def test_a_bad_search_option_is_one_line(tmp_path, cmd, opt, msg):
    extra = ["--searcher", "dgp"] if cmd == "layer" else []
    p = run(cmd, *extra, "--search-option", opt, "--out", str(tmp_path / "o"), timeout=120)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1 and msg in lines[0], p.stderr[-1500:]


def test_trials_in_flight_default_and_bad_values():
    from raydgp.errors import ConfigError
    from raydgp.pipeline.settings import CPU_IN_FLIGHT, LayerRun

    assert LayerRun(workload="dense:1,8,8", out="o").width == CPU_IN_FLIGHT == 2
    assert LayerRun(workload="dense:1,8,8", out="o", target_kind="cuda").width is None  # one per GPU of the cluster
    assert LayerRun(workload="dense:1,8,8", out="o", in_flight=1).width == 1
    for bad in (0, -1, 1.5):
        with pytest.raises(ConfigError, match="in_flight"):
            LayerRun(workload="dense:1,8,8", out="o", in_flight=bad)
    assert LayerRun(workload="dense:1,8,8", out="o").seed_trials == 4
    for bad in (-1, 2.0):
        with pytest.raises(ConfigError, match="seed_trials"):
            LayerRun(workload="dense:1,8,8", out="o", seed_trials=bad)


def test_model_runs_trials_in_flight_per_layer_default_and_bad_values():
    from raydgp.errors import ConfigError
    from raydgp.pipeline.settings import MODEL_CPU_IN_FLIGHT, ModelRun

    r = ModelRun(model="resnet18", out="o")
    assert r.chunk_width == MODEL_CPU_IN_FLIGHT == 1 and r.chunk_cpus_per_trial == 1.0
    two = ModelRun(model="resnet18", out="o", in_flight=2)
    # two layers at once (2 CPUs / 1 per layer), each with two trials in flight sharing its CPU
    assert two.chunk_width == 2 and two.chunk_cpus_per_trial == 0.5
    gpu = ModelRun(model="resnet18", out="o", target_kind="cuda")
    assert gpu.chunk_width is None and gpu.chunk_cpus_per_trial == 1.0  # one GPU per trial, the cluster's width
    for bad in (0, -2, 1.5):
        with pytest.raises(ConfigError, match="in_flight"):
            ModelRun(model="resnet18", out="o", in_flight=bad)


@pytest.mark.parametrize("cmd", ["layer", "tune"])
def test_bad_in_flight_is_one_line(tmp_path, cmd):
    p = run(cmd, "--in-flight", "0", "--out", str(tmp_path / "o"), timeout=120)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1 and "--in-flight" in lines[0], p.stderr[-1500:]


def test_search_options_reach_the_dgp_searchers_settings():
    from raydgp.pipeline.settings import LayerRun, ModelRun
    from raydgp.raytune.searchers import make_searcher
    from raydgp.search.settings import parse_search_options
    from raydgp.testing import fake_space

    assert parse_search_options(["cold-start=off", "queue_staleness=none", "n_init=4", "pool_refresh=0.5"]) == {
        "cold_start": False, "queue_staleness": None, "n_init": 4, "pool_refresh": 0.5}
    run = LayerRun(workload="dense:1,8,8", out="o", searcher="dgp",
                   search_options=("random_interleave=0.2", "cold_start=off"))
    assert run.search_options == (("cold_start", False), ("random_interleave", 0.2))
    assert ModelRun(model="resnet18", out="o", search_options={"n_init": 4}).search_options == (("n_init", 4),)
    s = make_searcher("dgp", fake_space("opts", (8, 8)), seed=5, search_options=run.search_options)
    assert s._settings.random_interleave == 0.2 and not s._settings.cold_start and s._settings.seed == 5
    with pytest.raises(Exception, match="takes none"):
        LayerRun(workload="dense:1,8,8", out="o", searcher="random", search_options=("n_init=4",))
