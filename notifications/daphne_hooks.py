"""Two small hooks into daphne, installed from livefeed/asgi.py.

1. Each WebSocket scope gets daphne's protocol object under PROTOCOL_SCOPE_KEY
   (``daphne.server.Server.create_application`` is wrapped). With it the hub writes frames
   straight to the socket, sees how many bytes a reader has not taken yet (slow readers are
   closed with 1013) and can send close codes autobahn's ``sendClose`` refuses (1012, 1013).
2. On shutdown (SIGTERM) every open feed socket is sent a close frame with code 1012 before
   daphne cancels the applications, and the reactor waits up to ``shutdown_grace`` seconds
   for the closes to complete. Without it daphne cancels the consumers and sends no close
   frame at all, so clients only notice when the TCP connection drops.

Both do nothing when the application runs under another server.
"""
from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any

logger = logging.getLogger(__name__)

PROTOCOL_SCOPE_KEY = "livefeed.daphne_protocol"
_WRAPPED = "_livefeed_protocol_in_scope"


def install() -> None:
    """Install both hooks if this process is (or will be) a daphne server. Idempotent."""
    server_module = sys.modules.get("daphne.server")
    if server_module is None:
        return
    server_class = server_module.Server
    if getattr(server_class.create_application, _WRAPPED, False):
        return
    original = server_class.create_application

    def create_application(self: Any, protocol: Any, scope: dict[str, Any]) -> Any:
        if scope.get("type") == "websocket":
            scope[PROTOCOL_SCOPE_KEY] = protocol
        return original(self, protocol, scope)

    setattr(create_application, _WRAPPED, True)
    server_class.create_application = create_application

    # Added before daphne's own trigger (Server.run adds it after importing the application),
    # so the close frames go out before daphne cancels the consumers.
    from twisted.internet import reactor

    reactor.addSystemEventTrigger("before", "shutdown", _close_sockets_for_shutdown)


def forget_handshake(protocol: Any) -> None:
    """Drop what an open WebSocket keeps from its HTTP handshake (a few KB per idle socket).

    The upgraded connection's HTTP channel stays registered as the transport's producer and
    with it the whole HTTP request; autobahn keeps the raw request and its parsed headers.
    None of it is used once the socket is open.
    """
    transport = getattr(protocol, "transport", None)
    producer = getattr(transport, "producer", None)
    if producer is not None and producer is not protocol:
        # Its idle timer (12 h) holds it too, and would abort the socket when it fires.
        if hasattr(producer, "setTimeout"):
            producer.setTimeout(None)
        transport.unregisterProducer()
    protocol.http_request_data = None
    protocol.http_headers = None
    request = getattr(protocol, "request", None)
    if request is not None:
        request.headers = None


def _close_sockets_for_shutdown() -> Any:
    from twisted.internet import defer

    from notifications.conf import live_settings
    from notifications.frames import CLOSE_SERVICE_RESTART
    from notifications.hub import all_hubs

    conf = live_settings()
    protocols = []
    for hub in all_hubs():
        logger.info(
            "Events delivered since start: %(live)d received live, %(database)d read from the database",
            hub.delivered,
        )
        for conn in hub.close_all(CLOSE_SERVICE_RESTART, grace=conf.shutdown_grace):
            if conn.protocol is not None:
                protocols.append(conn.protocol)
    if not protocols:
        return None
    logger.info("Shutting down: closing %d WebSocket(s) with code %d", len(protocols), CLOSE_SERVICE_RESTART)
    return defer.Deferred.fromFuture(asyncio.ensure_future(_wait_closed(protocols, all_hubs(), conf.shutdown_grace)))


async def _wait_closed(protocols: list[Any], hubs: list[Any], grace: float) -> None:
    deadline = time.monotonic() + grace
    # Closing the readers emptied the hubs: leave their groups so no member stays behind.
    try:
        await asyncio.wait_for(asyncio.gather(*(hub.left() for hub in hubs)), grace)
    except TimeoutError:
        logger.info("Shutdown: leaving the feed groups took too long; the memberships expire")
    while time.monotonic() < deadline:
        if all(protocol.state == protocol.STATE_CLOSED for protocol in protocols):
            return
        await asyncio.sleep(0.05)
    left = sum(protocol.state != protocol.STATE_CLOSED for protocol in protocols)
    logger.info("Shutdown grace over; %d WebSocket(s) did not finish closing", left)
