"""Ray set-up: an embedded local Ray, or joining ``address`` / ``RAY_ADDRESS``, with a quiet console; the address is
checked first, so a wrong one fails in seconds with one line instead of a traceback after the expensive work."""

from __future__ import annotations

import logging
import os
import re
import socket

from raydgp.errors import ConfigError


def quiet_ray_env() -> None:
    """Environment for a quiet console: Ray's old, silent reporter path; no usage stats prompt."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")


def resolve_address(address: str | None) -> str | None:
    """The cluster to join: ``address``, else ``RAY_ADDRESS``, else None (embedded local Ray)."""
    return address or os.environ.get("RAY_ADDRESS") or None


def check_address(address: str | None, timeout_s: float = 3.0) -> None:
    """Fail fast on a cluster address nothing answers at.

    Raises:
        ConfigError: ``host:port`` (or ``ray://host:port``) with no listener within ``timeout_s``, or a malformed one.
    """
    address = resolve_address(address)
    if address is None or address in ("auto", "local"):
        return
    m = re.fullmatch(r"(?:ray://)?\[?([^\]/]+?)\]?:(\d+)", address.strip())
    if not m:
        raise ConfigError(f"Ray address {address!r}: expected host:port (e.g. 127.0.0.1:6379), ray://host:port or "
                          "auto; unset it (and RAY_ADDRESS) to run an embedded local Ray")
    host, port = m.group(1), int(m.group(2))
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as e:
        raise ConfigError(f"Ray address {address!r}: nothing answers there ({e.strerror or e}); start the cluster "
                          "(ray start --head) or fix --address / RAY_ADDRESS, or unset both for a local Ray") from None


def init_ray(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None):
    """Start an embedded local Ray (no address and no ``RAY_ADDRESS``) or connect to a running cluster.

    Raises:
        ConfigError: the address is unreachable or Ray refuses to connect to it.
    """
    quiet_ray_env()
    import ray

    if ray.is_initialized():
        return ray
    address = resolve_address(address)
    check_address(address)
    kwargs = dict(logging_level=logging.ERROR, log_to_driver=False, include_dashboard=False,
                  configure_logging=True)
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus, num_gpus=num_gpus, **kwargs)
    except ConnectionError as e:
        msg = (str(e).strip().splitlines() or [""])[0][:200]
        raise ConfigError(f"Ray address {address!r}: cannot connect ({msg}); fix --address / RAY_ADDRESS or unset "
                          "both for a local Ray") from None
    return ray
