"""Searcher checkpoints as JSON: a checkpoint file may come from anywhere, so it is never unpickled."""

from __future__ import annotations

import json
import os


class JsonStateMixin:
    """``save``/``restore`` for a Ray Tune ``Searcher`` that implements ``get_state() -> dict`` and ``set_state``."""

    def save(self, checkpoint_path: str) -> None:
        tmp = checkpoint_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.get_state(), f)
        os.replace(tmp, checkpoint_path)  # atomic: a crash never leaves half a checkpoint

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as f:
            self.set_state(json.load(f))
