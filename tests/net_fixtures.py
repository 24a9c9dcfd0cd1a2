"""PyTorch factories used by the whole-network tests (importable as ``tests.net_fixtures:...``)."""

import torch


class _I1e(torch.nn.Module):
    def forward(self, x):
        return torch.special.i1e(x)


def unsupported_op():
    return _I1e()
