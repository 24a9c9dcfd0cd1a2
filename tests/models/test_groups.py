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


def test_nhwc_specs_have_the_loop_nests_of_a_model_tuned_in_nhwc(cpu_target):
    """The ``conv2d_nhwc:`` specs (what the dataset of NHWC history is recorded from) give the same loop-nest shapes
    as the NHWC convs of the model itself, so a layer finds its shape in that history."""
    from raydgp.models.importer import load_model
    from raydgp.models.layer_specs import RESNET18
    from raydgp.models.tasks import extract_layers, prepare
    from raydgp.pipeline.history import shape_signature
    from raydgp.space.workloads import make_task

    layers = extract_layers(prepare(load_model("tiny_cnn").mod, cpu_target, "NHWC"), cpu_target)
    convs = {shape_signature(l.task.workload) for l in layers if l.task.workload.op == "conv2d"}
    assert len(convs) == 3
    # tiny_cnn (raydgp/models/networks.py) on 1x3x64x64: conv 3->16 3x3; depthwise 16 3x3 stride 2; conv 16->64 3x3
    for spec in ("conv2d_nhwc:1,3,64,64,16,3,1,1", "depthwise_nhwc:1,16,64,64,3,2,1", "conv2d_nhwc:1,16,32,32,64,3,1,1"):
        task = make_task(spec, cpu_target)
        assert "conv2d_nhwc" in str(task.mod["main"]) and shape_signature(task.workload) in convs, spec
    assert shape_signature(make_task(RESNET18[1], cpu_target).workload) != \
        shape_signature(make_task(RESNET18[1].replace("conv2d:", "conv2d_nhwc:"), cpu_target).workload)


def test_the_shipped_history_holds_every_conv_of_resnet18_in_the_cpu_default_layout(cpu_target):
    """A fresh install tunes ResNet-18's convs in NHWC on CPU: the shipped dataset must hold each of their loop nests,
    or every conv starts from a random tuning set and the history enters only through the trust mixture."""
    from raydgp.models.importer import load_model
    from raydgp.models.tasks import extract_layers, prepare, resolve_layout
    from raydgp.pipeline.history import donor_info, shipped_dataset, tuning_set_options
    from raydgp.records import RecordStore

    assert resolve_layout("auto", cpu_target) == "NHWC"
    info = donor_info(RecordStore(shipped_dataset()).records())
    layers = extract_layers(prepare(load_model("resnet18", None, seed=0).mod, cpu_target), cpu_target)
    convs = [l for l in layers if l.task.workload.op == "conv2d"]
    assert len(convs) == 18
    assert all(tuning_set_options((), l.task.workload, info) == () for l in convs)
