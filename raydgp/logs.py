"""raydgp's logging: every module logs to a ``raydgp.*`` logger; the command line shows INFO and above on stderr as
plain lines (the progress bar and the final table are the console's own output, through :func:`console`)."""

from __future__ import annotations

import logging
import sys

LOGGER = logging.getLogger("raydgp")


def setup_console(level: int = logging.INFO, stream=None) -> None:
    """Show raydgp's log records on ``stream`` (stderr) as ``raydgp: message`` lines; idempotent."""
    stream = stream or sys.stderr
    for h in LOGGER.handlers:
        if getattr(h, "_raydgp_console", False):
            return
    h = logging.StreamHandler(stream)
    h.setFormatter(logging.Formatter("raydgp: %(message)s"))
    h._raydgp_console = True  # type: ignore[attr-defined]
    LOGGER.addHandler(h)
    LOGGER.setLevel(level)


def console(line: str) -> None:
    """A line of the final report (stdout): the result a user asked for, not a log record."""
    print(line, flush=True)
