"""The three-stage search over any :class:`~raydgp.space.base.SearchSpace` (no Ray, no TVM).

``settings`` (frozen settings), ``history`` (stage-1 data), ``candidates`` (pool and neighbours), ``tuning_set``
(stage 2's first picks), ``loop`` (:class:`DGPSearch`: pre-train, transfer, search).
"""

from raydgp.search.history import History, history_from_records
from raydgp.search.loop import DGPSearch
from raydgp.search.settings import INIT_MODES, SearchSettings

__all__ = ["DGPSearch", "History", "SearchSettings", "INIT_MODES", "history_from_records"]
