"""raydgp.dgp.fast_shapes: the same results as torch's own broadcast_shapes, and installed by the DGP package."""

import numpy as np
import pytest
import torch

from raydgp.dgp import fast_shapes


def test_installed_by_the_dgp_package():
    import raydgp.dgp.model  # noqa: F401

    assert fast_shapes.installed()
    assert torch.broadcast_shapes((3, 1), (1, 4)) == torch.Size([3, 4])


def test_same_shapes_as_torch_on_random_inputs():
    rng = np.random.default_rng(0)
    agree = errors = 0
    for _ in range(3000):
        k = int(rng.integers(0, 4))
        shapes = []
        for _ in range(k):
            if rng.random() < 0.15:
                shapes.append(int(rng.integers(0, 4)))
                continue
            n = int(rng.integers(0, 5))
            dims = [int(rng.choice([0, 1, 1, 2, 3])) for _ in range(n)]
            shapes.append(torch.Size(dims) if rng.random() < 0.5 else tuple(dims))
        try:
            want = fast_shapes._ORIGINAL(*shapes)
        except Exception as e:  # noqa: BLE001
            with pytest.raises(type(e)):
                fast_shapes.broadcast_shapes(*shapes)
            errors += 1
            continue
        got = fast_shapes.broadcast_shapes(*shapes)
        assert type(got) is torch.Size and got == want, shapes
        agree += 1
    assert agree > 1000 and errors > 100  # both paths exercised


def test_odd_inputs_go_to_torch():
    with pytest.raises((RuntimeError, ValueError)):
        fast_shapes.broadcast_shapes((2, 3), (4, 3))
    with pytest.raises((RuntimeError, ValueError)):
        fast_shapes.broadcast_shapes((-1,), (3,))
    assert fast_shapes.broadcast_shapes() == torch.Size([])
    assert fast_shapes.broadcast_shapes(None, (2,)) == torch.Size([2])
    assert fast_shapes.broadcast_shapes([2, 1], (3,)) == torch.Size([2, 3])


def test_uninstall_restores_torch():
    try:
        fast_shapes.uninstall()
        assert torch.broadcast_shapes is fast_shapes._ORIGINAL
    finally:
        fast_shapes.install()
    assert fast_shapes.installed()
