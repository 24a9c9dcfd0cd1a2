"""Sibling groups: tasks with the same anchor loop nest (the same conv with another epilogue) share a group."""

from __future__ import annotations

import collections


def test_resnet18_has_11_conv_groups_and_siblings_share_configurations(cpu_target):
    import numpy as np

    from raydgp.models.importer import load_model
    from raydgp.models.tasks import extract_layers, prepare
    from raydgp.space.metaschedule import build_space
    from raydgp.space.workloads import anchor_signature

    m = load_model("resnet18", None, seed=0)
    layers = extract_layers(prepare(m.mod, cpu_target), cpu_target)
    groups = collections.defaultdict(list)
    for l in layers:
        groups[(l.task.workload.op, anchor_signature(l.task.mod))].append(l)
    convs = [v for (op, _), v in groups.items() if op == "conv2d"]
    assert sum(1 for l in layers if l.task.workload.op == "conv2d") == 18
    assert len(convs) == 11
    multi = [v for v in convs if len(v) > 1]
    assert len(multi) == 4 and sorted(len(v) for v in multi) == [2, 3, 3, 3]
    # a configuration of one member is a valid configuration of its siblings
    a, b = multi[0][:2]
    sa, sb = build_space(a.task), build_space(b.task)
    cfgs = sa.sample_many(10, np.random.default_rng(0))
    assert all(sb.is_valid(c) for c in cfgs)
    assert a.task.workload.key != b.task.workload.key
