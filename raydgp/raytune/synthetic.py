"""Ray Tune trainables over known functions, for tests, demos and the searcher benchmark (``scripts/bench.py``).

Each benchmark problem is a Ray Tune param space with a known optimum, so a searcher's quality is its *regret*
(best loss found minus the optimum, lower is better) after a number of trials.
"""

from __future__ import annotations

import math
import time

from raydgp.testing import synthetic_loss


def synthetic_trainable(config: dict) -> None:
    """Ray Tune function trainable reporting :func:`raydgp.testing.synthetic_loss` as ``loss``."""
    from ray import tune

    tune.report({"loss": synthetic_loss(config)})


_ACT = {"relu": 0.0, "gelu": 0.1, "tanh": 0.2}
_OFFSET = {"a": 0.0, "b": 1.0, "c": 2.0}
_H6_A = [[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]]
_H6_P = [[0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886], [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
         [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650], [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381]]
_H6_ALPHA = [1.0, 1.2, 3.0, 3.2]


def mixed6(c: dict) -> float:
    """Six mixed parameters (uniform, uniform, log-uniform, integer, quantised integer, categorical); optimum 0 at
    x=0.3, y=-0.5, lr=1e-2, k=0, q=32, act=relu."""
    return ((c["x"] - 0.3) ** 2 + (c["y"] + 0.5) ** 2 / 2 + (math.log10(c["lr"]) + 2) ** 2 / 4 + 0.05 * c["k"]
            + abs(c["q"] - 32) / 100 + _ACT[c["act"]])


def branin_mixed(c: dict) -> float:
    """Branin on (x1, x2) plus a categorical offset and an integer penalty; optimum 0.397887."""
    x1, x2 = c["x1"], c["x2"]
    b = (x2 - 5.1 / (4 * math.pi ** 2) * x1 ** 2 + 5 / math.pi * x1 - 6) ** 2 + 10 * (1 - 1 / (8 * math.pi)) \
        * math.cos(x1) + 10
    return b + _OFFSET[c["c"]] + 0.5 * abs(c["n"] - 2)


def hartmann6(c: dict) -> float:
    """The six-dimensional Hartmann function on the unit cube; optimum -3.32237."""
    x = [c[f"x{i}"] for i in range(6)]
    return -sum(a * math.exp(-sum(A * (xi - P) ** 2 for A, xi, P in zip(row, x, prow)))
                for a, row, prow in zip(_H6_ALPHA, _H6_A, _H6_P))


#: name -> (function, known optimum)
PROBLEMS = {"mixed6": (mixed6, 0.0), "branin_mixed": (branin_mixed, 0.397887), "hartmann6": (hartmann6, -3.32237)}


def problem_space(name: str) -> dict:
    """The Ray Tune param space of a benchmark problem."""
    from ray import tune

    if name == "mixed6":
        return {"x": tune.uniform(0, 1), "y": tune.uniform(-1, 1), "lr": tune.loguniform(1e-4, 1e-1),
                "k": tune.randint(0, 8), "q": tune.qrandint(8, 64, 8), "act": tune.choice(["relu", "tanh", "gelu"])}
    if name == "branin_mixed":
        return {"x1": tune.uniform(-5, 10), "x2": tune.uniform(0, 15), "c": tune.choice(["a", "b", "c"]),
                "n": tune.randint(0, 5)}
    if name == "hartmann6":
        return {f"x{i}": tune.uniform(0, 1) for i in range(6)}
    raise KeyError(f"unknown problem {name!r}; choose one of {sorted(PROBLEMS)}")


def problem_trainable(config: dict) -> None:
    """Ray Tune trainable of the benchmark problems: ``config["problem"]`` names the function, ``config["sleep_s"]``
    how long the trial takes (a stand-in for a build and a timing); reports ``loss`` and ``regret``."""
    from ray import tune

    fn, opt = PROBLEMS[config["problem"]]
    if config.get("sleep_s"):
        time.sleep(float(config["sleep_s"]))
    loss = fn(config)
    tune.report({"loss": loss, "regret": loss - opt})
