"""Model preparation: the NHWC global average pool as a matmul (``tasks.mean_as_matmul``)."""

from __future__ import annotations

import numpy as np


def _mean_module(shape, axis, keepdims):
    from raydgp.tvm_loader import import_tvm

    import_tvm()
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.mean(x, axis=axis, keepdims=keepdims))
        bb.emit_func_output(y)
    return bb.get()


def _run(mod, x):
    from raydgp.tvm_loader import import_tvm

    tvm = import_tvm()
    from tvm import relax

    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def test_a_global_average_pool_over_the_middle_axes_becomes_a_matmul_with_the_same_result():
    from raydgp.models.tasks import mean_as_matmul

    x = np.random.default_rng(0).standard_normal((2, 5, 7, 6)).astype("float32")
    for keepdims, out_shape in ((True, (2, 1, 1, 6)), (False, (2, 6))):
        mod = _mean_module((2, 5, 7, 6), [1, 2], keepdims)
        got = mean_as_matmul(mod)
        text = got.script()
        assert "R.matmul" in text and "R.mean" not in text
        out = _run(got, x)
        assert out.shape == out_shape
        np.testing.assert_allclose(out.reshape(2, 6), x.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)


def test_other_means_are_left_as_they_are():
    """A mean over the innermost axes (NCHW's pool: contiguous already) or over one axis is not rewritten."""
    from raydgp.models.tasks import mean_as_matmul

    for axis in ([2, 3], [1], [3]):
        mod = _mean_module((1, 4, 5, 6), axis, True)
        assert "R.mean" in mean_as_matmul(mod).script() and "R.matmul" not in mean_as_matmul(mod).script()
