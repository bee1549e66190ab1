"""The hooks into daphne, installed once at start-up from livefeed/asgi.py.

1. Each WebSocket scope gets daphne's protocol object (``sockets.PROTOCOL_SCOPE_KEY``;
   ``Server.create_application`` is wrapped), so the hub writes frames straight to it, and
   its ``scheme`` ("wss" under TLS), which daphne leaves out. Its messages wait in a
   ``socket_memory.ReceiveQueue`` instead of an ``asyncio.Queue`` (four deques, ~3 KB an idle socket).
2. SIGTERM drains the instance (``Server.kill_all_applications`` is wrapped, it is the first
   thing daphne does on shutdown): ``livefeed.lifecycle.start_draining()``, new HTTP requests
   and handshakes get 503, open feed sockets get a 1012 close, requests in flight finish; only
   then, or after ``shutdown_grace``, daphne cancels what is left. A watchdog ends the process
   if a worker thread still holds it ``EXIT_MARGIN`` seconds later.
3. A client message over the limit daphne enforces (``--websocket-max-message-size``) is
   refused with a 4413 close frame instead of autobahn's silent TCP drop.
4. Requests: bodies over the limit are refused while they arrive, and a request (or
   WebSocket upgrade) must arrive whole within ``HTTP_REQUEST_TIMEOUT`` (see ``requests.py``).
5. autobahn pretty-prints every new socket's options for a debug line, also when nothing logs
   at debug (8 % of a handshake's CPU in a profile of 6,000 sockets connecting): its
   module's ``pformat`` formats only while autobahn logs at debug level.

All do nothing when the application runs under another server.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import pprint
import sys
import threading
import time
from typing import Any

import txaio

from notifications.frames import CLOSE_FRAME_TOO_LARGE, MAX_CLIENT_FRAME_BYTES
from notifications.server_adapter import socket_memory, sockets

logger = logging.getLogger("notifications.server_adapter")

_WRAPPED = "_livefeed_adapter"
# The largest client message payload autobahn accepts (daphne's --websocket-max-message-size and
# --websocket-max-frame-size). Slightly above the consumer's limit, so the consumer (which
# counts characters and UTF-8 bytes) decides near the boundary; autobahn only has to stop the
# large ones before they are buffered.
MAX_CLIENT_PAYLOAD_BYTES = MAX_CLIENT_FRAME_BYTES + 1024
# After the shutdown grace, how long the process may take to exit before the watchdog ends it.
EXIT_MARGIN = 3.0


def install() -> None:
    """Install the hooks if this process is (or will be) a daphne server. Idempotent."""
    server_module = sys.modules.get("daphne.server")
    if server_module is None:
        return
    server_class = server_module.Server
    if getattr(server_class.create_application, _WRAPPED, False):
        return
    original_create = server_class.create_application
    original_kill = server_class.kill_all_applications
    original_run = server_class.run

    @functools.wraps(original_create)
    def create_application(self: Any, protocol: Any, scope: dict[str, Any]) -> Any:
        if scope.get("type") != "websocket":
            return original_create(self, protocol, scope)
        scope[sockets.PROTOCOL_SCOPE_KEY] = protocol
        socket_memory.light_send_queue(protocol)  # nothing is sent before the handshake's answer
        # daphne leaves the optional ASGI "scheme" out; the Origin check needs it under TLS.
        scope.setdefault("scheme", sockets.ws_scheme(protocol))
        # daphne's own create_application, with a ReceiveQueue for its asyncio.Queue.
        assert "application_instance" not in self.connections[protocol]
        input_queue = socket_memory.ReceiveQueue()
        scope.setdefault("asgi", {"version": "3.0"})
        application_instance = self.application(
            scope=scope, receive=input_queue.get, send=functools.partial(self.handle_reply, protocol)
        )
        if protocol not in self.connections:
            application_instance.close()
            return None
        self.connections[protocol]["application_instance"] = asyncio.ensure_future(application_instance)
        return input_queue

    @functools.wraps(original_kill)
    def kill_all_applications(self: Any) -> Any:
        from twisted.internet import defer

        waiting = defer.Deferred.fromFuture(asyncio.ensure_future(_drain(self)))
        waiting.addErrback(lambda failure: logger.warning("Shutdown drain failed: %s", failure.getErrorMessage()))
        waiting.addCallback(lambda _: original_kill(self))
        return waiting

    @functools.wraps(original_run)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        # Only read: the options themselves are daphne's (see the Makefile), checked here.
        from notifications.server_adapter import checks

        for name in ("websocket_max_message_size", "websocket_max_frame_size"):
            checks.started_options[name] = int(getattr(self, name, 0) or 0)
        for message in checks.daphne_option_messages():
            logger.warning("%s: %s (%s)", message.id, message.msg, message.hint)
        return original_run(self, *args, **kwargs)

    setattr(create_application, _WRAPPED, True)
    server_class.create_application = create_application
    server_class.kill_all_applications = kill_all_applications
    server_class.run = run

    from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol

    WebSocketProtocol._max_message_size_exceeded = _refuse_oversized_message
    original_build = WebSocketFactory.buildProtocol

    @functools.wraps(original_build)
    def build_protocol(self: Any, addr: Any) -> Any:
        protocol = original_build(self, addr)
        if protocol is not None:
            socket_memory.slim_from_start(protocol, self)
        return protocol

    WebSocketFactory.buildProtocol = build_protocol

    from autobahn.websocket import protocol as autobahn_protocol

    if hasattr(autobahn_protocol, "pformat"):
        autobahn_protocol.pformat = _pformat_when_debugging

    from notifications.server_adapter.requests import install_request_limits

    install_request_limits(server_module)


def _pformat_when_debugging(obj: Any, *args: Any, **kwargs: Any) -> str:
    """autobahn's pformat: its texts are debug log lines, so they are made only at debug level.

    (Its one other use, ``Timings.__str__``, reads as "" otherwise; daphne never turns timings on.)
    """
    if txaio.get_global_log_level() in ("debug", "trace"):  # type: ignore[attr-defined]
        return pprint.pformat(obj, *args, **kwargs)
    return ""


def _refuse_oversized_message(self: Any, msg_size: int, max_msg_size: int, reason: str) -> None:
    """Close with 4413 instead of autobahn's protocol violation (a TCP drop, 1006 at the client).

    autobahn calls this as soon as a frame header (or the running total of a fragmented
    message) passes the limit, before the payload is read; it discards the rest of the message
    as it arrives (nothing of it is buffered or delivered) while the close handshake runs.
    """
    if self.state == self.STATE_CLOSED:
        return
    self.failedByMe = True
    if self.state == self.STATE_OPEN:
        logger.debug("Closing a WebSocket with %d: %s", CLOSE_FRAME_TOO_LARGE, reason)
        from notifications.conf import live_settings

        sockets.close_with(self, CLOSE_FRAME_TOO_LARGE, grace=live_settings().close_grace, reason=b"frame too large")


def _http_in_flight(server: Any) -> list[Any]:
    from twisted.web import http

    return [
        details["application_instance"]
        for protocol, details in list(server.connections.items())
        if isinstance(protocol, http.Request)
        and "application_instance" in details
        and not details["application_instance"].done()
    ]


async def _drain(server: Any) -> None:
    """Stop taking work, close the feed sockets with 1012 and let HTTP requests in flight finish."""
    from livefeed.lifecycle import start_draining
    from notifications.conf import live_settings

    start_draining()
    grace = live_settings().shutdown_grace
    _start_exit_watchdog(grace + EXIT_MARGIN)
    deadline = time.monotonic() + grace
    sockets_closing = asyncio.ensure_future(_close_feed_sockets(grace))
    while _http_in_flight(server) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    left = len(_http_in_flight(server))
    if left:
        logger.warning("Shutdown grace over: cancelling %d HTTP request(s) still in flight", left)
    await sockets_closing


def _start_exit_watchdog(delay: float) -> None:
    """End the process if it is still alive `delay` s from now (a worker thread holding it)."""

    def force_exit() -> None:
        busy = [thread.name for thread in threading.enumerate() if thread.is_alive() and not thread.daemon]
        logger.error("Shutdown: still running %.0f s after SIGTERM (threads %s); exiting now", delay, busy)
        logging.shutdown()
        os._exit(0)

    timer = threading.Timer(delay, force_exit)
    timer.daemon = True
    timer.start()


async def _close_feed_sockets(grace: float) -> None:
    from notifications.frames import CLOSE_SERVICE_RESTART
    from notifications.hub import all_hubs

    socks = []
    hubs = all_hubs()
    for hub in hubs:
        logger.info(
            "Events delivered since start: %(live)d received live, %(database)d read from the database",
            hub.delivered,
        )
        for conn in hub.close_all(CLOSE_SERVICE_RESTART, grace=grace):
            if conn.protocol is not None:
                socks.append(conn.protocol)
    if socks:
        logger.info("Shutting down: closing %d WebSocket(s) with code %d", len(socks), CLOSE_SERVICE_RESTART)
    deadline = time.monotonic() + grace
    # Closing the readers emptied the hubs: leave their groups so no member stays behind.
    try:
        await asyncio.wait_for(asyncio.gather(*(hub.left() for hub in hubs)), grace)
    except TimeoutError:
        logger.info("Shutdown: leaving the feed groups took too long; the memberships expire")
    while socks and time.monotonic() < deadline:
        if all(sockets.is_closed(sock) for sock in socks):
            return
        await asyncio.sleep(0.05)
    left = sum(not sockets.is_closed(sock) for sock in socks)
    if left:
        logger.info("Shutdown grace over; %d WebSocket(s) did not finish closing", left)
