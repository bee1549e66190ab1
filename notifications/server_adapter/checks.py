"""Start-up check that every private name the adapter relies on exists in the installed versions.

Reported through Django's system-check framework (tag ``server_adapter``), so ``manage.py
check`` and daphne's start (livefeed/asgi.py) both say it:

- ``livefeed.E101``: a name the server cannot work without (the scope hook, the shutdown
  drain, the slow-reader byte count, the request limits): daphne refuses to start.
- ``livefeed.W101``: a name only the fast path (raw writes of prepared frames) needs: the
  fast path is turned off and frames go through autobahn's public ``sendPreparedMessage``.
- ``livefeed.W103``: a name only the slimming of open sockets needs (autobahn's
  ``CONFIG_ATTRS``): sockets keep their handshake state and option copies (more memory each).
- ``livefeed.W102``: daphne runs without ``--websocket-max-message-size`` /
  ``--websocket-max-frame-size`` at or below ``MAX_CLIENT_PAYLOAD_BYTES``.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from django.core.checks import CheckMessage, Error, Warning, register

from notifications.server_adapter.sockets import fast_path

TAG = "server_adapter"


def _has(obj: Any, *names: str) -> list[str]:
    return [name for name in names if not hasattr(obj, name)]


def _assigned_in(function: Any, *names: str) -> list[str]:
    """Return the instance attributes not assigned anywhere in the function's source."""
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return list(names)
    return [name for name in names if f"self.{name} =" not in source]


def _source(function: Any) -> str:
    try:
        return inspect.getsource(function)
    except (OSError, TypeError):
        return ""


def _required() -> list[str]:
    from asgiref.sync import SyncToAsync
    from daphne import http_protocol, server, ws_protocol
    from twisted.internet.abstract import FileDescriptor
    from twisted.protocols.tls import TLSMemoryBIOProtocol
    from twisted.web import http

    missing = [
        f"daphne.server.Server.{name}"
        for name in _has(server.Server, "create_application", "kill_all_applications", "run", "handle_reply")
    ]
    # daphne.install replaces create_application for WebSockets with its own body (a ReceiveQueue).
    missing += [
        f"daphne.server.Server.create_application making {what}"
        for what in ("asyncio.Queue()", 'self.connections[protocol]["application_instance"]')
        if what not in _source(server.Server.create_application)
    ]
    missing += [f"daphne.server.Server.{name}" for name in _assigned_in(server.Server.run, "connections")]
    missing += [f"daphne.server.{name}" for name in _has(server, "HTTPFactory")]
    missing += [f"daphne.http_protocol.{name}" for name in _has(http_protocol, "WebRequest", "HTTPFactory")]
    missing += [
        f"daphne.http_protocol.WebRequest.{name}"
        for name in _has(http_protocol.WebRequest, "process", "finish", "gotLength", "handleContentChunk", "connectionLost")
    ]
    missing += [
        f"daphne.ws_protocol.WebSocketProtocol.{name}"
        for name in _has(ws_protocol.WebSocketProtocol, "_max_message_size_exceeded", "sendCloseFrame", "STATE_OPEN", "STATE_CLOSED")
    ]
    missing += [f"FileDescriptor.{name}" for name in _has(FileDescriptor, "dataBuffer", "offset")]
    missing += [f"FileDescriptor.{name}" for name in _assigned_in(FileDescriptor.__init__, "_tempDataLen")]
    missing += [
        f"TLSMemoryBIOProtocol.{name}" for name in _assigned_in(TLSMemoryBIOProtocol.makeConnection, "_appSendBuffer")
    ]
    channel = http.HTTPFactory().buildProtocol(None)
    missing += [f"twisted.web.http HTTPFactory protocol.{name}" for name in _has(channel, "_channel")]
    missing += [f"twisted.web.http.HTTPChannel.{name}" for name in _has(http.HTTPChannel, "persistent", "requestDone")]
    missing += [f"asgiref SyncToAsync.{name}" for name in _has(SyncToAsync, "threadlocal")]
    missing += _channels_consumer()
    return missing


def _channels_consumer() -> list[str]:
    """What notifications.consumers.FeedConsumer.__call__ relies on when it replaces Channels' own."""
    from channels import consumer
    from channels.generic.websocket import AsyncWebsocketConsumer

    missing = [f"channels.consumer.{name}" for name in _has(consumer, "get_handler_name")]
    missing += [
        f"channels AsyncWebsocketConsumer.{name}"
        for name in _has(AsyncWebsocketConsumer, "websocket_connect", "websocket_receive", "websocket_disconnect")
    ]
    if "self.base_send" not in _source(consumer.AsyncConsumer.send):
        missing.append("channels AsyncConsumer.send through self.base_send")
    # livefeed.ws_stack hands the consumer daphne's send, not SessionMiddleware's wrapper: right
    # only while the wrapper acts on HTTP responses alone.
    from channels.sessions import InstanceSessionWrapper

    for name in ("save_message_types", "cookie_response_message_types"):
        if getattr(InstanceSessionWrapper, name, None) != ["http.response.start"]:
            missing.append(f"channels InstanceSessionWrapper.{name} == ['http.response.start']")
    return missing


def _slim_sockets() -> list[str]:
    """What notifications.server_adapter.socket_memory needs to slim open sockets (optional)."""
    from autobahn.websocket.protocol import WebSocketServerProtocol
    from daphne.ws_protocol import WebSocketFactory

    missing = [f"autobahn WebSocketServerProtocol.{name}" for name in _has(WebSocketServerProtocol, "CONFIG_ATTRS")]
    missing += [f"daphne.ws_protocol.WebSocketFactory.{name}" for name in _has(WebSocketFactory, "buildProtocol")]
    return missing


def _fast_path() -> list[str]:
    from autobahn.twisted.websocket import WebSocketServerFactory
    from autobahn.websocket.protocol import WebSocketProtocol

    missing = [f"autobahn WebSocketProtocol.{name}" for name in _has(WebSocketProtocol, "sendPreparedMessage")]
    missing += [
        f"autobahn WebSocketProtocol.{name}"
        for name in _assigned_in(WebSocketProtocol._connectionMade, "_perMessageCompress", "send_queue")
    ]
    try:
        prepared = WebSocketServerFactory().prepareMessage(b"{}")
    except Exception:  # noqa: BLE001 (any failure means the name is unusable)
        return [*missing, "autobahn WebSocketServerFactory.prepareMessage"]
    return missing + [f"autobahn PreparedMessage.{name}" for name in _has(prepared, "payloadHybi")]


def _safely(probe: Callable[[], list[str]]) -> list[str]:
    try:
        return probe()
    except ImportError as error:
        return [f"import failed: {error}"]


@register(TAG)
def check_server_internals(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Report the private names of daphne, Twisted, autobahn and asgiref that are missing."""
    messages: list[CheckMessage] = []
    required = _safely(_required)
    if required:
        messages.append(
            Error(
                f"daphne/Twisted/autobahn/asgiref lack names the live path needs: {', '.join(required)}",
                hint="Install the versions pinned in requirements.txt, or adapt notifications/server_adapter.",
                id="livefeed.E101",
            )
        )
    messages += _optional(
        _fast_path, "raw_writes", "Fast path OFF (frames go through autobahn's sendPreparedMessage)",
        hint="Install the versions pinned in requirements.txt to write prepared frames straight to sockets.",
        id="livefeed.W101",
    )
    messages += _optional(
        _slim_sockets, "slim_sockets", "Open WebSockets keep their handshake state (more memory per socket)",
        hint="Install the versions pinned in requirements.txt.",
        id="livefeed.W103",
    )
    messages.extend(daphne_option_messages())
    return messages


def _optional(probe: Callable[[], list[str]], switch: str, off: str, *, hint: str, id: str) -> list[CheckMessage]:
    """Turn an optional part (``fast_path[switch]``) on if its probe finds every name, else off with a warning."""
    missing = _safely(probe)
    fast_path[switch] = not missing
    if not missing:
        return []
    return [Warning(f"{off}: missing {', '.join(missing)}", hint=hint, id=id)]


# The daphne options the process was started with (set by daphne.py when Server.run starts).
started_options: dict[str, int] = {}


def daphne_option_messages() -> list[CheckMessage]:
    from notifications.server_adapter.daphne import MAX_CLIENT_PAYLOAD_BYTES

    too_large = [
        f"--{name.replace('_', '-')}={value}"
        for name, value in started_options.items()
        if not 0 < value <= MAX_CLIENT_PAYLOAD_BYTES
    ]
    if not too_large:
        return []
    return [
        Warning(
            f"daphne runs with {', '.join(too_large)}: client frames up to that size are buffered before "
            "being refused with 4413",
            hint=f"Start daphne with --websocket-max-message-size {MAX_CLIENT_PAYLOAD_BYTES} "
            f"--websocket-max-frame-size {MAX_CLIENT_PAYLOAD_BYTES} (see the Makefile).",
            id="livefeed.W102",
        )
    ]
