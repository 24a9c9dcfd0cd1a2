"""Experiment trackers for ``--callbacks``: Ray Tune's own logger callbacks (MLflow, W&B, TensorBoard)."""

from __future__ import annotations

import os

from raydgp.errors import ConfigError

#: Tracking integrations ``--callbacks`` accepts (Ray's own logger callbacks).
TRACKERS = ("mlflow", "wandb", "tensorboard")

def tracker_env(names, out_dir: str) -> dict[str, str]:
    """Environment variables the trackers need in every Ray worker (file store allowed, default locations under
    ``out_dir``, W&B offline unless the user chose a mode)."""
    env: dict[str, str] = {}
    if "mlflow" in names:
        env["MLFLOW_ALLOW_FILE_STORE"] = "true"
        env["MLFLOW_TRACKING_URI"] = os.environ.get("MLFLOW_TRACKING_URI") or f"file:{os.path.join(out_dir, 'mlruns')}"
    if "wandb" in names:
        env["WANDB_MODE"] = os.environ.get("WANDB_MODE", "offline")
        env["WANDB_DIR"] = os.environ.get("WANDB_DIR") or out_dir
        env["WANDB_SILENT"] = "true"
    return env


def check_trackers(names) -> list[str]:
    """Validate ``--callbacks`` names and that their packages are installed.

    Raises:
        ConfigError: an unknown name, or a tracker whose package is missing (with the pip command).
    """
    pkgs = {"mlflow": "mlflow", "wandb": "wandb", "tensorboard": "tensorboardX"}
    out = []
    for n in names or ():
        n = n.strip().lower()
        if not n:
            continue
        if n not in TRACKERS:
            raise ConfigError(f"--callbacks {n!r}: choose from {', '.join(TRACKERS)}")
        try:
            __import__(pkgs[n])
        except ImportError:
            raise ConfigError(f"--callbacks {n} needs the {pkgs[n]} package: pip install {pkgs[n]}") from None
        out.append(n)
    return out


def tracker_callbacks(names, experiment: str, tags: dict | None = None) -> list:
    """Ray Tune's own logger callbacks for ``names`` (built where the experiment runs: they do not pickle)."""
    cbs = []
    for n in names or ():
        if n == "mlflow":
            from ray.air.integrations.mlflow import MLflowLoggerCallback

            cbs.append(MLflowLoggerCallback(tracking_uri=os.environ.get("MLFLOW_TRACKING_URI"),
                                            experiment_name=experiment, tags=tags or {}))
        elif n == "wandb":
            from ray.air.integrations.wandb import WandbLoggerCallback

            cbs.append(WandbLoggerCallback(project=os.environ.get("WANDB_PROJECT", "raydgp"), group=experiment,
                                           mode=os.environ.get("WANDB_MODE", "offline"),
                                           dir=os.environ.get("WANDB_DIR")))
        elif n == "tensorboard":
            from ray.tune.logger import TBXLoggerCallback

            cbs.append(TBXLoggerCallback())
    return cbs
