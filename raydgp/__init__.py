"""raydgp: tune DNN layers with TVM MetaSchedule design spaces, deep-GP transfer learning and Ray Tune.

Heavy dependencies (TVM, Ray, torch) are imported lazily by the submodules that need them.
"""

__version__ = "0.1.0"
