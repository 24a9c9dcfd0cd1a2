"""The whole model job on the fake toolchain: real Ray, real searchers, real records and budget, no TVM. Seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import ROOT

RUN = textwrap.dedent("""
    import json, logging, sys
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")  # the job's log lines, as the CLI shows
    from raydgp.pipeline.model_job import run_model
    from raydgp.pipeline.settings import ModelRun
    from raydgp.testing import FakeToolchain
    args = json.loads(sys.argv[1])
    tc = FakeToolchain(layers=args.pop("layers", 3), crash_library=args.pop("crash", False),
                       delay_s=args.pop("delay", 0.0), log_path=args.pop("log", None),
                       siblings=args.pop("siblings", False))
    s = run_model(ModelRun(model="fake", compare_reference=False, default_history=False, **args), toolchain=tc)
    print("RESULT " + json.dumps({"summary": s, "tvm_imported": "tvm" in sys.modules}))
""")


def run_fake(out, **kw):
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAYDGP_HOME=str(out.parent / "home"),
               RAYDGP_CACHE=str(out.parent / "cache"))
    p = subprocess.run([sys.executable, "-c", RUN, json.dumps({"out": str(out), **kw})], capture_output=True,
                       text=True, timeout=600, cwd=ROOT, env=env)
    lines = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
    assert p.returncode == 0 and lines, p.stderr[-3000:]
    return json.loads(lines[-1][7:]), p


def test_whole_model_on_the_fake_toolchain_with_the_dgp(tmp_path):
    out = tmp_path / "run"
    got, p = run_fake(out, trials=20, searcher="dgp", chunk=4, warmup=4, seed=1)
    s = got["summary"]
    assert not got["tvm_imported"]  # the pipeline itself needs no TVM
    assert s["verified"] and s["trials_total"] == 20 and len(s["layers"]) == 3
    assert all(l["trials"] >= 4 and l["best_ms"] < l["untuned_ms"] for l in s["layers"])
    # Where every proposal came from is shown; the DGP must not have fallen back (a test fails if it did).
    assert s["proposals"]["fallback"] == 0 and s["proposals"]["refit_failures"] == 0, s["proposals"]
    assert s["proposals"]["total"] == 20
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["trials_total"] == 20
    recs = [json.loads(l) for l in (out / "records" / "records.jsonl").read_text().splitlines()]
    assert sum(r.get("tag") != "retime" for r in recs) == 20  # the budget's trials
    assert s["retimed_layers"] >= 1 and any(r.get("tag") == "retime" for r in recs)  # then the quiet re-timing
    assert (out / "tuning_curves.png").stat().st_size > 10_000
    assert json.loads((out / "untuned.json").read_text())  # cached baselines
    chunks = json.loads((out / "chunks.json").read_text())  # every chunk's costs, its trials adding up to the budget
    assert sum(c["trials"] for c in chunks) == 20 and all(c["wall_s"] > 0 for c in chunks)


def test_whole_model_with_history_reports_the_trust_in_it(tmp_path):
    """With history the searcher keeps trust members and reports their accuracies (a dict among the counts): the
    summary still adds the counts up (it did not: a whole-model run crashed after building its library)."""
    first, _ = run_fake(tmp_path / "first", trials=16, searcher="random", chunk=4, warmup=4, seed=2)
    assert first["summary"]["trials_total"] == 16
    # 3 layers: a warm-up of 8 each, then one chunk of 8 proposed by the model with its trust members
    got, p = run_fake(tmp_path / "run", trials=32, searcher="dgp", chunk=8, warmup=8, seed=1,
                      history=[str(tmp_path / "first" / "records")])
    # stage 1 runs alone on the driver before any layer starts: on the node's cores (SearchSettings.pretrain_threads)
    assert f"({os.cpu_count()} torch threads)" in p.stderr, p.stderr[-2000:]
    s = got["summary"]
    assert s["verified"] and s["trials_total"] == 32 and s["proposals"]["total"] == 32, s["proposals"]
    trusts = [l["proposals"]["trust"] for l in s["layers"] if "trust" in l["proposals"]]
    assert trusts and all(set(t) >= {"transfer", "cold"} for t in trusts), [l["proposals"] for l in s["layers"]]
    assert not any(isinstance(v, dict) for v in s["proposals"].values())  # the totals are counts only


def test_a_crashing_library_is_unverified_with_a_summary(tmp_path):
    out = tmp_path / "run"
    got, _ = run_fake(out, trials=6, searcher="random", chunk=2, warmup=2, crash=True)
    s = json.loads((out / "summary.json").read_text())
    assert s["verified"] is False and s["end_to_end_ms"] is None and "did not run" in s["verify_message"]
    assert got["summary"]["verified"] is False


def test_a_torn_untuned_cache_from_an_older_writer_does_not_stop_a_resume(tmp_path):
    out = tmp_path / "run"
    run_fake(out, trials=6, searcher="random", chunk=2, warmup=2)
    (out / "untuned.json").write_text('{"fake-0": 12.5, "fak')  # what a kill during a plain write_text left
    got, p = run_fake(out, trials=9, searcher="random", chunk=3, warmup=2)
    assert got["summary"]["trials_total"] == 9  # the 6 earlier measurements count, 3 new ones
    assert "unreadable" in p.stderr
    assert json.loads((out / "untuned.json").read_text())["fake-0"] > 0


@pytest.mark.slow
def test_sigkill_at_any_moment_then_the_same_command_resumes(tmp_path):
    """Kill the fake run at several moments (set-up, untuned timing, mid-tuning); the same command then finishes with
    every finished measurement kept and the budget exact."""
    import signal
    import time

    out = tmp_path / "run"
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAYDGP_HOME=str(tmp_path / "home"),
               RAYDGP_CACHE=str(tmp_path / "cache"))
    args = json.dumps({"out": str(out), "trials": 12, "searcher": "random", "chunk": 2, "warmup": 2})
    for delay in (1.0, 4.0, 8.0):
        proc = subprocess.Popen([sys.executable, "-c", RUN, args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    got, _ = run_fake(out, trials=12, searcher="random", chunk=2, warmup=2)
    s = got["summary"]
    assert s["trials_total"] == 12 and s["verified"]
    recs = [json.loads(l) for l in (out / "records" / "records.jsonl").read_text().splitlines() if l.strip()]
    recs = [r for r in recs if r.get("tag") != "retime"]  # the quiet re-timings re-measure the best on purpose
    assert len(recs) >= 12
    keys = [(r["workload"]["key"], json.dumps(r["config"], sort_keys=True)) for r in recs]
    assert len(set(keys)) == len(keys)  # no trial measured twice


def test_retime_takes_own_and_sibling_candidates_and_the_build_prefers_them(tmp_path):
    import math

    from raydgp.models.base import ModelLayer
    from raydgp.measure.protocol import MeasureSettings, TaskPayload
    from raydgp.pipeline.retime import candidates, retime_best
    from raydgp.records import RETIME_TAG, MeasureResult, Record, RecordStore
    from raydgp.testing import FakeMeasurer, fake_space

    import numpy as np

    sa, sb = fake_space("a", (64, 56)), fake_space("b", (64, 56))
    la = ModelLayer("a", TaskPayload("a", "{}", {"kind": "llvm"}), sa, group="g")
    lb = ModelLayer("b", TaskPayload("b", "{}", {"kind": "llvm"}), sb, group="g")
    store = RecordStore(tmp_path / "r")
    rng = np.random.default_rng(0)
    ca, cb = sa.sample_many(5, rng), sb.sample_many(5, rng)
    # noisy tuning-phase timings: "a" has a lucky 0.01 ms record, "b"'s best are what matter for "a" too
    store.append([Record.now(sa.workload, sa.target, c, MeasureResult("ok", (0.01 if i == 0 else 5.0 + i,)))
                  for i, c in enumerate(ca)])
    store.append([Record.now(sb.workload, sb.target, c, MeasureResult("ok", (1.0 + i,))) for i, c in enumerate(cb)])
    got = candidates(la, store.records(), [lb], own_k=3, group_k=2)
    assert got[:3] == ca[:3] and got[3:] == cb[:2]
    asked = []  # the settings the measurers are made with: the re-timing asks workers to keep what they build
    out = retime_best([la, lb], store, lambda s: asked.append(s) or FakeMeasurer(), MeasureSettings(),
                      {"kind": "llvm"})
    assert asked and all(s.keep_built >= 5 for s in asked)
    assert set(out) == {"a", "b"} and all(math.isfinite(v) for v in out.values())
    re_a = [r for r in store.records() if r.workload.key == "a" and r.tag == RETIME_TAG]
    assert len(re_a) == 5 + 2  # five candidates, the first round's two fastest timed again
    assert store.best("a", prefer_tag=RETIME_TAG).tag == RETIME_TAG  # the lucky 0.01 ms no longer decides
    assert store.best("a").result.median_ms == 0.01


def _overlaps(log_path) -> dict[str, int]:
    """Per layer (task key), how many of its measurements started while another of the same layer was running."""
    spans = [json.loads(l) for l in open(log_path).read().splitlines()]
    n: dict[str, int] = {}
    for key, a0, a1 in spans:
        n.setdefault(key, 0)
        n[key] += any(k == key and b0 < a0 < b1 for k, b0, b1 in spans)
    return n


@pytest.mark.parametrize("in_flight", [2, 1])
def test_each_layer_experiment_runs_its_trials_in_flight(tmp_path, in_flight):
    """With in_flight 2 each layer's searcher proposes from its queue (it learnt the width from Tune) and trials of
    one layer overlap inside its own experiment (how many depends on how fast the proposals come: at least one
    layer's, asserted); with 1 they never do. One layer experiment at a time, so any overlap is within an experiment.
    No configuration is measured twice either way."""
    out, log = tmp_path / "run", tmp_path / "spans.jsonl"
    got, _ = run_fake(out, trials=12, searcher="dgp", chunk=6, warmup=6, seed=3, layers=2, delay=0.6, log=str(log),
                      in_flight=in_flight, max_concurrent_layers=1)
    s = got["summary"]
    assert s["trials_total"] == 12 and s["in_flight_per_layer"] == in_flight and s["layer_experiments_at_once"] == 1
    overlaps = _overlaps(log)
    assert len(overlaps) == 2
    if in_flight == 2:
        assert all("queue" in l["proposals"] for l in s["layers"]), [l["proposals"] for l in s["layers"]]
        assert max(overlaps.values()) >= 2, overlaps
    else:
        assert not any(overlaps.values()), overlaps
    recs = [json.loads(l) for l in (out / "records" / "records.jsonl").read_text().splitlines()]
    trials = [(r["workload"]["key"], json.dumps(r["config"], sort_keys=True)) for r in recs if r.get("tag") != "retime"]
    assert len(trials) == 12 and len(set(trials)) == 12  # no configuration measured twice


def test_retime_times_each_layers_fastest_again_later_and_counts_the_faster_timing(tmp_path):
    """A slow phase of the host during a layer's first round (every timing x3) misjudges that layer; the second
    round (layers in reverse order, each layer's two fastest) meets it elsewhere, and the faster timing counts, in the
    returned best and in what the build takes."""
    import threading
    from dataclasses import replace

    from raydgp.measure.base import Outcome
    from raydgp.models.base import ModelLayer
    from raydgp.measure.protocol import MeasureSettings, TaskPayload
    from raydgp.pipeline.retime import retime_best
    from raydgp.records import RETIME_TAG, MeasureResult, Record, RecordStore
    from raydgp.testing import FakeMeasurer, fake_latency_ms, fake_space

    import numpy as np

    order, lock = [], threading.Lock()

    class SlowFirstRoundOfA(FakeMeasurer):
        def measure(self, task, trace):
            out = super().measure(task, trace)
            with lock:
                order.append(task.key)
                slow = task.key == "a" and order.count("a") <= 5
            if slow:
                return Outcome(replace(out.result, latencies_ms=tuple(3 * x for x in out.result.latencies_ms)),
                               out.applied)
            return out

    layers, store = [], RecordStore(tmp_path / "r")
    rng = np.random.default_rng(1)
    for k in ("a", "b"):
        sp = fake_space(k, (64, 56))
        layers.append(ModelLayer(k, TaskPayload(k, "{}", {"kind": "llvm"}), sp))
        store.append([Record.now(sp.workload, sp.target, c, MeasureResult("ok", (1.0 + i,)))
                      for i, c in enumerate(sp.sample_many(5, rng))])
    out = retime_best(layers, store, lambda s: SlowFirstRoundOfA(), MeasureSettings(), {"kind": "llvm"}, own_k=5,
                      workers=1)
    # round one: a's five, b's five; round two: b's two fastest, then a's two fastest
    assert order == ["a"] * 5 + ["b"] * 5 + ["b"] * 2 + ["a"] * 2
    sa = layers[0].space
    true_a = min(fake_latency_ms("a", sa.trace_json(r.config)) for r in store.records()
                 if r.workload.key == "a" and r.tag == RETIME_TAG)
    assert out["a"] == pytest.approx(true_a) and store.best("a", prefer_tag=RETIME_TAG).result.median_ms == out["a"]
    one = RecordStore(tmp_path / "one")
    one.append([r for r in store.records() if r.tag != RETIME_TAG])
    order.clear()
    single = retime_best(layers, one, lambda s: SlowFirstRoundOfA(), MeasureSettings(), {"kind": "llvm"}, own_k=5,
                         workers=1, confirm_k=0)
    assert single["a"] > 2.5 * true_a and len(order) == 10  # one round: a is judged by its slow phase


def test_a_followers_syncs_are_measured_without_an_experiment(tmp_path):
    """Layers 0 and 1 are siblings: the follower gets its leader's best configurations, measured directly in a Ray
    task (no Tune experiment, no trial actor), recorded like trials, and counted in the budget. One layer at a time,
    so that the leader's warm-up is over before the follower's starts (with two at once the order is a race)."""
    out = tmp_path / "run"
    got, p = run_fake(out, trials=24, searcher="random", chunk=4, warmup=4, seed=3, siblings=True,
                      max_concurrent_layers=1)
    s = got["summary"]
    n = s["trials_total"]  # the budget spends every trial (its last syncs share what is left)
    assert s["verified"] and n == 24
    chunks = json.loads((out / "chunks.json").read_text())
    direct = [c for c in chunks if c["direct"]]
    assert direct and sum(c["trials"] for c in chunks) == n
    # one Tune experiment directory per searched chunk, none for a direct one
    assert len([d for d in (out / "ray").iterdir() if d.is_dir()]) == len(chunks) - len(direct)
    recs = [json.loads(l) for l in (out / "records" / "records.jsonl").read_text().splitlines()]
    trials = [r for r in recs if r.get("tag") != "retime"]
    assert len(trials) == n
    by_layer = {}
    for r in trials:
        by_layer.setdefault(r["tag"], []).append(json.dumps(r["config"], sort_keys=True))
    followers = {c["layer"] for c in direct}
    assert followers <= {"fused_fake_0", "fused_fake_1"}
    for f in followers:  # what a sync measured is its leader's: the sibling's configurations
        leader = ({"fused_fake_0", "fused_fake_1"} - {f}).pop()
        synced = by_layer[f][-sum(c["trials"] for c in direct if c["layer"] == f):]
        assert set(synced) <= set(by_layer[leader])
        assert all(r["result"]["status"] == "ok" for r in trials if r["tag"] == f)


def test_a_chunk_that_covers_a_tiny_space_is_given_its_points():
    import numpy as np

    from raydgp.pipeline.model_job import _cover_tiny_space
    from raydgp.records import Workload
    from raydgp.space.design_space import DesignSpace, Sketch
    from raydgp.testing import fake_space

    one = DesignSpace(Workload("r", "reshape", "other", {}), {"kind": "llvm"}, (Sketch([], ()),))  # one point
    got = _cover_tiny_space(one, set(), [], 1, seed=0)
    assert len(got) == 1 and one.from_params(got[0]) in set(one.sample_many(1, np.random.default_rng(0)))
    big = fake_space("k")
    assert _cover_tiny_space(big, set(), [], 4, seed=0) == []  # a real search space is searched, not enumerated
    seeds = [big.to_params(c) for c in big.sample_many(2, np.random.default_rng(1))]
    assert _cover_tiny_space(big, set(), seeds, 2, seed=0) == seeds


def test_with_a_tracker_every_chunk_stays_an_experiment(tmp_path):
    """MLflow (a tracker) sees Tune trials only: a sync is then an experiment too, and every trial is logged."""
    pytest.importorskip("mlflow")
    out = tmp_path / "run"
    got, p = run_fake(out, trials=12, searcher="random", chunk=4, warmup=4, seed=3, siblings=True,
                      max_concurrent_layers=1, trackers=["mlflow"])
    n = got["summary"]["trials_total"]
    chunks = json.loads((out / "chunks.json").read_text())
    assert n >= 10 and not any(c["direct"] for c in chunks)
    assert len(list((out / "mlruns").glob("*/*/metrics/latency_ms"))) == n
