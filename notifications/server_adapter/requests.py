"""daphne's HTTP side: body limit while bytes arrive, a deadline for a whole request, 503 while draining.

- Body limit: daphne buffers a whole body before it calls the application; the request class
  counts body bytes as Twisted hands them over and answers 413 at once (livefeed.limits has
  the limit and the answer, and the ASGI middleware for other servers).
- Deadline: Twisted's idle timeout restarts with every byte, so a client sending one byte
  every few seconds holds a connection forever. Each connection must deliver a complete
  request (headers and body, or a WebSocket upgrade's headers) within
  ``settings.HTTP_REQUEST_TIMEOUT`` seconds of connecting or of the previous response;
  otherwise it gets 408 and is closed. autobahn's handshake timeout (daphne's
  ``--websocket_connect_timeout``) bounds the rest of an upgrade.
- While draining (SIGTERM), a new request or handshake is answered 503 without reaching the
  application, so requests in flight can finish and the process can exit.
"""
from __future__ import annotations

import io
from typing import Any

from django.conf import settings

from livefeed.limits import max_body_size, too_large_response

# How long a refused or timed-out connection keeps discarding input after the answer, so the
# client reads it instead of a connection reset.
LINGER_SECONDS = 5.0


def install_request_limits(server_module: Any) -> None:
    """Make daphne build connections and requests with the limits above. Idempotent."""
    from daphne import http_protocol

    if getattr(http_protocol.WebRequest, "livefeed_limits", False):
        return
    http_protocol.WebRequest = _limited_request_class(http_protocol.WebRequest)
    server_module.HTTPFactory = _deadline_factory_class(server_module.HTTPFactory)


def _answer_and_close(transport: Any, status: bytes, content_type: bytes, body: bytes) -> Any:
    """Write a complete response, half-close, and drop the connection after LINGER_SECONDS."""
    from twisted.internet import reactor

    transport.write(
        b"HTTP/1.1 " + status + b"\r\nContent-Type: " + content_type + b"\r\nContent-Length: "
        + str(len(body)).encode() + b"\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n" + body
    )
    close_write = getattr(transport, "loseWriteConnection", None) or transport.loseConnection
    close_write()
    abort = getattr(transport, "abortConnection", None) or transport.loseConnection
    return reactor.callLater(LINGER_SECONDS, abort)


def _arm(channel: Any) -> None:
    from twisted.internet import reactor

    _disarm(channel)
    timeout = settings.HTTP_REQUEST_TIMEOUT
    if timeout:
        channel.livefeed_deadline = reactor.callLater(timeout, _request_too_slow, channel)


def _disarm(channel: Any) -> None:
    call = getattr(channel, "livefeed_deadline", None)
    if call is not None and call.active():
        call.cancel()
    channel.livefeed_deadline = None


def _request_too_slow(channel: Any) -> None:
    channel.livefeed_deadline = None
    transport = channel.transport
    if transport is None or not getattr(transport, "connected", False) or getattr(transport, "disconnecting", False):
        return
    channel.setTimeout(None)
    body = f"408 Request Timeout: a request must arrive within {settings.HTTP_REQUEST_TIMEOUT} s.\n".encode()
    _answer_and_close(transport, b"408 Request Timeout", b"text/plain; charset=utf-8", body)
    channel.persistent = False


def _deadline_factory_class(base: type) -> type:
    class DeadlineHTTPFactory(base):
        def buildProtocol(self, addr: Any) -> Any:  # noqa: N802 (Twisted's name)
            protocol = super().buildProtocol(addr)
            if protocol is not None:
                _arm(protocol._channel)
            return protocol

    return DeadlineHTTPFactory


def _release_upgraded(request: Any) -> None:
    """Let go of a request daphne has just upgraded to a WebSocket (it handed its transport over).

    daphne forgets it at its next application check (up to a second later) and the HTTP
    channel stays the socket's producer until the handshake is accepted: a burst of handshakes
    would keep hundreds of finished requests, their headers and channels alive meanwhile.
    """
    server: Any = getattr(request, "server", None)
    details = server.connections.get(request) if server is not None else None
    if details is not None and "disconnected" in details and "application_instance" not in details:
        del server.connections[request]
    channel = request.channel
    _disarm(channel)
    transport: Any = getattr(channel, "transport", None)
    producer = getattr(transport, "producer", None)
    if producer is not None and (producer is channel or getattr(producer, "_channel", None) is channel):
        # Its idle timer holds it too, and would abort the socket when it fires.
        if hasattr(producer, "setTimeout"):
            producer.setTimeout(None)
        channel.setTimeout(None)
        transport.unregisterProducer()


def _limited_request_class(base: type) -> type:
    class LimitedWebRequest(base):
        livefeed_limits = True
        _body_refused = False
        _body_received = 0
        _linger_call = None

        def gotLength(self, length: int | None) -> None:  # noqa: N802 (Twisted's name)
            limit = max_body_size()
            if limit is not None and length is not None and length > limit:
                self.content = io.BytesIO()
                self._refuse_body(limit)
                return
            super().gotLength(length)

        def handleContentChunk(self, data: bytes) -> None:  # noqa: N802
            if self._body_refused:
                return
            self._body_received += len(data)
            limit = max_body_size()
            if limit is not None and self._body_received > limit:
                self.content.close()
                self.content = io.BytesIO()
                self._refuse_body(limit)
                return
            super().handleContentChunk(data)

        def process(self) -> Any:
            _disarm(self.channel)
            if self._body_refused:
                return None
            from livefeed.lifecycle import is_draining

            if is_draining():
                self.channel.persistent = False
                self._linger_call = _answer_and_close(
                    self.channel.transport, b"503 Service Unavailable", b"text/plain; charset=utf-8",
                    b"503 Service Unavailable: this instance is shutting down; retry.\n",
                )
                return None
            result = super().process()
            if self.transport is None and self.channel is not None:
                _release_upgraded(self)
            return result

        def finish(self) -> Any:
            channel = self.channel
            result = super().finish()
            if channel is not None and channel.persistent and channel.transport is not None:
                _arm(channel)  # the next request on this connection gets its own deadline
            return result

        def connectionLost(self, reason: Any) -> None:  # noqa: N802
            if self._linger_call is not None and self._linger_call.active():
                self._linger_call.cancel()
            if self.channel is not None:
                _disarm(self.channel)
            super().connectionLost(reason)

        def _refuse_body(self, limit: int) -> None:
            self._body_refused = True
            _disarm(self.channel)
            path = getattr(self.channel, "_path", b"") or b""
            content_type, body = too_large_response(path.decode("latin-1").split("?", 1)[0], limit)
            self._linger_call = _answer_and_close(self.channel.transport, b"413 Payload Too Large", content_type, body)

    return LimitedWebRequest
