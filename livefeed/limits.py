"""Request-body size limit, enforced before Django reads (or daphne spools) a body.

Django's ASGIHandler reads the whole body into a spooled file before any view runs, and
daphne (through Twisted) buffers the whole body before it even calls the application. So
the limit is enforced twice, at the two places a body arrives:

- ``RequestBodyLimitMiddleware`` wraps the HTTP application: it answers 413 from the
  ``Content-Length`` header without reading the body, and cuts off a streamed (chunked)
  body as soon as it passes the limit. Any ASGI server that streams bodies needs only this.
- daphne's request object does the same while the bytes arrive, so daphne neither waits
  for nor stores an oversized body (``notifications.server_adapter.requests``).

The limit is ``settings.DATA_UPLOAD_MAX_MEMORY_SIZE`` (None disables it).
"""
from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from django.conf import settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def max_body_size() -> int | None:
    """Return the largest request body accepted, in bytes (None: no limit)."""
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def too_large_detail(limit: int) -> str:
    """Return the explanation of a 413, the same whichever layer refuses the body."""
    return f"The request body is larger than {limit} bytes."


def too_large_response(path: str, limit: int) -> tuple[bytes, bytes]:
    """Return (content type, body) of the 413 answer: the API's error shape, plain text elsewhere."""
    detail = too_large_detail(limit)
    if path.startswith("/api/"):
        return b"application/json", json.dumps({"error": "too_large", "detail": detail}).encode()
    return b"text/plain; charset=utf-8", f"413 Payload Too Large: {detail}\n".encode()


def _declared_length(scope: Scope) -> int | None:
    """Return the Content-Length header's value, None if absent, -1 if malformed."""
    values = [value for name, value in scope.get("headers", []) if name.lower() == b"content-length"]
    if not values:
        return None
    if len(set(values)) != 1 or not values[0].strip().isdigit():
        return -1
    return int(values[0])


async def _answer(send: Send, status: int, content_type: bytes, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                (b"x-content-type-options", b"nosniff"),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestBodyLimitMiddleware:
    """ASGI middleware: 413 for request bodies over the limit, without reading them whole."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = max_body_size()
        if scope["type"] != "http" or limit is None:
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared == -1:
            await _answer(send, 400, b"text/plain; charset=utf-8", b"400 Bad Request: invalid Content-Length\n")
            return
        if declared is not None and declared > limit:
            await _answer(send, 413, *too_large_response(scope.get("path", ""), limit))
            return

        received = 0
        refused = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    await _answer(send, 413, *too_large_response(scope.get("path", ""), limit))
                    # Django treats a disconnect while reading the body as an aborted request
                    # and answers nothing; the 413 above is the only response.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)
