"""Bounds on WebSockets: open sockets per client address, and paths that are no stream.

- ``WebSocketsPerClient``: one client address (as the rate limit computes it, behind
  trusted proxies too; an IPv6 client counts per /64) may hold ``settings.WS_MAX_PER_CLIENT``
  open WebSockets in this process. One more is accepted and closed at once with 4429, so the
  client can tell "too many" from a refused handshake (403). Counted per process: with N
  instances behind a balancer a client may hold up to N times as many.
- ``refuse_unrouted``: the last route under ``/ws/``; a handshake to any other path is refused
  (HTTP 403) instead of failing in the router (a 500 with a logged traceback).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import MutableMapping
from types import SimpleNamespace
from typing import Any

from django.conf import settings

from feed.ratelimit import client_bucket, client_ip
from livefeed.ws_origin import refuse_handshake

Scope = MutableMapping[str, Any]
CLOSE_TOO_MANY_SOCKETS = 4429  # the same code as too many resumes: "too many, back off"


def scope_client_address(scope: Scope) -> str:
    """Return the client address of a scope by feed.ratelimit.client_ip's rule."""
    client = scope.get("client") or ("", 0)
    forwarded = b",".join(value for name, value in scope.get("headers", []) if name.lower() == b"x-forwarded-for")
    meta = {"REMOTE_ADDR": client[0] or "", "HTTP_X_FORWARDED_FOR": forwarded.decode("latin-1")}
    return client_bucket(client_ip(SimpleNamespace(META=meta)))  # type: ignore[arg-type]


class WebSocketsPerClient:
    """This process's count of open WebSockets per client address, bounded by WS_MAX_PER_CLIENT
    (livefeed.ws_stack.WebSocketStack counts each handshake in and out)."""

    def __init__(self) -> None:
        self.open: Counter[str] = Counter()

    def enter(self, scope: Scope) -> tuple[bool, str | None]:
        """Count a new WebSocket of the scope's client: (False, None) if it is one too many, else
        (True, the key to give leave()), the key None when there is no limit."""
        limit = settings.WS_MAX_PER_CLIENT
        if limit <= 0:
            return True, None
        address = scope_client_address(scope)
        if self.open[address] >= limit:
            return False, None
        self.open[address] += 1
        return True, address

    def leave(self, address: str | None) -> None:
        """Uncount a WebSocket that enter() counted."""
        if address is None:
            return
        self.open[address] -= 1
        if self.open[address] <= 0:
            del self.open[address]


async def refuse_too_many(receive: Any, send: Any) -> None:
    """Accept the handshake and close at once with 4429 (too many sockets from this client)."""
    message = await receive()
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": CLOSE_TOO_MANY_SOCKETS})


async def refuse_unrouted(scope: Scope, receive: Any, send: Any) -> None:
    """Refuse a WebSocket handshake to a path that is no stream (HTTP 403), quietly."""
    await refuse_handshake(receive, send)
