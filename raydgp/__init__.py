"""raydgp: tune DNN layers with TVM MetaSchedule design spaces, deep-GP transfer learning and Ray Tune.

Heavy dependencies (TVM, Ray, torch) are imported lazily by the submodules that need them.
"""

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy: importing raydgp must not import Ray, TVM or torch.
    if name == "DGPSearcher":
        from raydgp.raytune.dgp_searcher import DGPSearcher

        return DGPSearcher
    if name == "RandomSearcher":
        from raydgp.raytune.random_searcher import RandomSearcher

        return RandomSearcher
    if name == "tune_model":
        from raydgp.pipeline.model_job import tune_model

        return tune_model
    raise AttributeError(f"module 'raydgp' has no attribute {name!r}")
