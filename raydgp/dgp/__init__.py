"""The deep GP core (GPyTorch; imports neither Ray nor TVM).

Importing it installs :func:`raydgp.dgp.fast_shapes.broadcast_shapes` for ``torch.broadcast_shapes`` (the same
results, a quarter less time per DGP fit; see that module).
"""

from raydgp.dgp import fast_shapes as _fast_shapes

_fast_shapes.install()
