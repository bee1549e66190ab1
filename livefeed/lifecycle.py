"""The process's life cycle as the health checks and the balancer see it.

On SIGTERM the process starts draining: ``/readyz`` answers 503 at once so the load
balancer sends no new work, requests in flight finish, and WebSockets are closed with 1012.
"""
from __future__ import annotations

import time

_started_at = time.time()
_draining_since: float | None = None


def start_draining() -> None:
    """Mark the process as shutting down (called once SIGTERM arrives). Idempotent."""
    global _draining_since
    if _draining_since is None:
        _draining_since = time.time()


def is_draining() -> bool:
    """Return whether the process is shutting down and must get no new work."""
    return _draining_since is not None


def started_at() -> float:
    """Return when this process started (a Unix time)."""
    return _started_at
