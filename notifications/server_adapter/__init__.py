"""The one place that knows daphne's, Twisted's, autobahn's and asgiref's private parts.

The hub, the connections and the consumer ask it ("how many bytes are unsent?", "write this
now", "close with 1012"); nothing else of the project reads those libraries' attributes.

- ``sockets``: per-socket operations on the live path (no checks per frame).
- ``daphne``: the hooks installed at start-up (scope hook, SIGTERM drain, 4413 refusal).
- ``requests``: daphne's HTTP side (body limit, request deadline, 503 while draining).
- ``checks``: the start-up check that every name exists (``livefeed.E101``/``W101``/``W102``).
"""
from __future__ import annotations

import asyncio
import os

from notifications.server_adapter.socket_memory import forget_frame, forget_handshake
from notifications.server_adapter.sockets import (
    PROTOCOL_SCOPE_KEY,
    close_with,
    frame_bytes,
    is_closed,
    is_open,
    prepare,
    send_prepared,
    socket_of,
    takes_raw_frames,
    transport_unsent_bytes,
    unsent_bytes,
    write_now,
)

__all__ = [
    "PROTOCOL_SCOPE_KEY",
    "close_with",
    "forget_frame",
    "forget_handshake",
    "frame_bytes",
    "is_closed",
    "is_open",
    "prepare",
    "send_prepared",
    "server_event_loop",
    "socket_of",
    "takes_raw_frames",
    "transport_unsent_bytes",
    "unsent_bytes",
    "write_now",
]


def server_event_loop() -> asyncio.AbstractEventLoop | None:
    """Return the running event loop of the ASGI server this code runs in (or serves), if any."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        pass
    # A sync view runs in a thread that asgiref's SyncToAsync marks with the server's loop.
    from asgiref.sync import SyncToAsync

    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    if loop is None or getattr(SyncToAsync.threadlocal, "main_event_loop_pid", None) != os.getpid():
        return None
    return loop if loop.is_running() and not loop.is_closed() else None
