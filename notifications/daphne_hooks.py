"""Three small hooks into daphne, installed from livefeed/asgi.py.

1. Each WebSocket scope gets daphne's protocol object under PROTOCOL_SCOPE_KEY
   (``daphne.server.Server.create_application`` is wrapped). With it the hub writes frames
   straight to the socket, sees how many bytes a reader has not taken yet (slow readers are
   closed with 1013) and can send close codes autobahn's ``sendClose`` refuses (1012, 1013).
2. On shutdown (SIGTERM) every open feed socket is sent a close frame with code 1012 before
   daphne cancels the applications, and the reactor waits up to ``shutdown_grace`` seconds
   for the closes to complete. Without it daphne cancels the consumers and sends no close
   frame at all, so clients only notice when the TCP connection drops.
3. Client messages are limited in autobahn itself to ``MAX_CLIENT_PAYLOAD_BYTES``, and one
   over it is refused with a 4413 close frame (see ``_refuse_oversized_message``).

All do nothing when the application runs under another server.
"""
from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any

from notifications.frames import CLOSE_FRAME_TOO_LARGE, MAX_CLIENT_FRAME_BYTES

logger = logging.getLogger(__name__)

PROTOCOL_SCOPE_KEY = "livefeed.daphne_protocol"
_WRAPPED = "_livefeed_protocol_in_scope"

# The largest client message payload autobahn accepts. Slightly above the consumer's limit,
# so the consumer (which counts characters and UTF-8 bytes) stays the one that decides near
# the boundary; autobahn only has to stop the large ones before they are buffered.
MAX_CLIENT_PAYLOAD_BYTES = MAX_CLIENT_FRAME_BYTES + 1024


def install() -> None:
    """Install the hooks if this process is (or will be) a daphne server. Idempotent."""
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

    # daphne's defaults let autobahn collect a client message of up to 1 MiB before the
    # consumer sees it and refuses anything over 4 KiB, and autobahn drops the TCP connection
    # (no close frame: 1006) on a larger one. Server.run passes these two attributes to the
    # WebSocket factory's setProtocolOptions (maxMessagePayloadSize, maxFramePayloadSize),
    # where autobahn checks each frame's declared length before reading its payload.
    original_run = server_class.run

    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        for name in ("websocket_max_message_size", "websocket_max_frame_size"):
            value = getattr(self, name, 0) or 0
            setattr(self, name, min(value, MAX_CLIENT_PAYLOAD_BYTES) if value > 0 else MAX_CLIENT_PAYLOAD_BYTES)
        return original_run(self, *args, **kwargs)

    server_class.run = run
    from daphne.ws_protocol import WebSocketProtocol

    WebSocketProtocol._max_message_size_exceeded = _refuse_oversized_message

    # Added before daphne's own trigger (Server.run adds it after importing the application),
    # so the close frames go out before daphne cancels the consumers.
    from twisted.internet import reactor

    reactor.addSystemEventTrigger("before", "shutdown", _close_sockets_for_shutdown)


def _refuse_oversized_message(self: Any, msg_size: int, max_msg_size: int, reason: str) -> None:
    """Close with 4413, the consumer's code for a frame over the limit (autobahn's hook).

    autobahn calls this as soon as a frame header makes the message too large. Its own
    version fails the connection, which with daphne's settings (failByDrop) aborts the TCP
    connection: the client sees 1006, not why. Here the client gets a close frame with the
    contract's code instead. ``failedByMe`` makes autobahn discard the rest of the message
    as it arrives (nothing of it is buffered or delivered) while the close handshake runs.
    """
    if self.state == self.STATE_CLOSED:
        return
    self.failedByMe = True
    if self.state == self.STATE_OPEN:
        logger.debug("Closing a WebSocket with %d: %s", CLOSE_FRAME_TOO_LARGE, reason)
        from notifications.conf import live_settings

        self.closeHandshakeTimeout = live_settings().close_grace
        # sendCloseFrame: what autobahn's failure path sends, here with our code.
        self.sendCloseFrame(code=CLOSE_FRAME_TOO_LARGE, reasonUtf8=b"frame too large")


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
