"""The Measurer contract, run against every implementation: the fake (no TVM) and the real local worker."""

from __future__ import annotations

import math

import pytest

from raydgp.measure.base import Measurer, Outcome
from raydgp.records import STATUSES


@pytest.fixture(params=["fake", "local"])
def measurer_and_task(request, tmp_path_factory):
    if request.param == "fake":
        from raydgp.measure.protocol import TaskPayload
        from raydgp.testing import FakeMeasurer, fake_space

        sp = fake_space("fake-contract")
        yield FakeMeasurer(), TaskPayload("fake-contract", "{}", {"kind": "llvm"}), sp
        return
    request.getfixturevalue("cpu_target")
    yield (request.getfixturevalue("measurer"), request.getfixturevalue("small_payload"),
           request.getfixturevalue("small_space"))


def test_untuned_and_a_configuration_give_outcomes(measurer_and_task):
    import numpy as np

    m, task, space = measurer_and_task
    assert isinstance(m, Measurer)
    base = m.measure(task, None)
    assert isinstance(base, Outcome) and base.result.status == "ok" and base.result.median_ms > 0
    cfg = space.sample_many(1, np.random.default_rng(0))[0]
    o = m.measure(task, space.trace_json(cfg))
    assert o.result.status in STATUSES
    if o.result.ok:
        assert all(v > 0 and math.isfinite(v) for v in o.result.latencies_ms)
        assert o.applied is not None  # what was really applied comes back, for the record


def test_a_fake_build_error_is_a_result_not_an_exception():
    import numpy as np

    from raydgp.measure.protocol import TaskPayload
    from raydgp.testing import FakeMeasurer, fake_space

    sp = fake_space("fails")
    m = FakeMeasurer(fail_every=1)
    o = m.measure(TaskPayload("fails", "{}", {}), sp.trace_json(sp.sample_many(1, np.random.default_rng(0))[0]))
    assert o.result.status == "build_error" and not o.result.ok
