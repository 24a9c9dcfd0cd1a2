"""Torch's intra-op thread count, set for a block and restored after it."""

from __future__ import annotations

import torch


class torch_threads:
    """Temporarily set torch's intra-op threads (restored on exit).

    Small GP algebra runs fastest on one thread, and on a tuning node the other cores are building and timing kernels.

    Args:
        n: threads inside the block (0 or None: leave the current setting).
    """

    def __init__(self, n: int | None):
        self.n = n

    def __enter__(self):
        self.old = torch.get_num_threads()
        if self.n and self.n != self.old:
            torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        if torch.get_num_threads() != self.old:
            torch.set_num_threads(self.old)
