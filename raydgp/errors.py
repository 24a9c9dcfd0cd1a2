"""The project's exceptions.

Every exception raised at a public boundary says what was wrong and how to fix it, in one line, so the command-line
front end can print ``str(exc)`` and exit non-zero without a traceback.
"""

from __future__ import annotations


class RayDGPError(Exception):
    """Base class of every error raised on purpose by raydgp."""


class ConfigError(RayDGPError, ValueError):
    """A user-supplied setting, workload spec or configuration is malformed."""


class RecordsCorruptError(RayDGPError):
    """A record file is damaged somewhere other than a torn last line.

    Args:
        path: the file.
        line: 1-based line number of the first bad line.
        reason: what is wrong with it.
    """

    def __init__(self, path: str, line: int, reason: str):
        self.path = str(path)
        self.line = line
        self.reason = reason
        super().__init__(
            f"{self.path}:{line}: corrupt record ({reason}); fix or delete that line, the records before and after it are intact"
        )


class InvalidConfigurationError(RayDGPError):
    """A configuration is not a valid point of its design space (wrong sketch, inconsistent tile, unknown choice)."""


class SearchSpaceError(RayDGPError, ValueError):
    """A Ray Tune param space contains something the searcher cannot handle."""


class ModelError(RayDGPError):
    """A model cannot be loaded or imported: unknown name, bad file, unsupported operator."""
