"""What an open WebSocket keeps in memory on daphne (Twisted and autobahn), and keeps no longer.

An idle socket is mostly Python objects: autobahn's protocol with ~100 attributes (copies of its
factory's options, handshake data, idle state), daphne's upgraded HTTP request and its receive
queue. This module trims them once the handshake is over, and gives daphne lighter queues,
without changing what any of their readers sees (tests/test_conn_memory.py). Like
``sockets.py`` it reads private names that ``checks.py`` verifies at start-up; with one missing
the trimming is off (``fast_path["slim_sockets"]``, livefeed.W103) and sockets stay as daphne
builds them.
"""
from __future__ import annotations

import asyncio
import inspect
import weakref
from collections import deque
from typing import Any

from notifications.server_adapter.sockets import fast_path


# What autobahn and daphne keep on an open socket that only its handshake read: after it, each
# reads as None from the socket's class (``_slim_class``) instead of taking room in every socket.
HANDSHAKE_ONLY = (
    # autobahn's WebSocketServerProtocol.processHandshake / succeedHandshake / _onOpen (is_open:
    # resolved by succeedHandshake; only autobahn's client side waits on it)
    "_transport_details", "is_open", "http_request_data", "http_headers", "http_status_line", "http_request_uri", "http_request_path",
    "http_request_params", "http_request_host", "http_response_data", "websocket_origin",
    "websocket_protocols", "websocket_extensions", "_wskey",
    # daphne's WebSocketProtocol.onConnect (the scope has its own references to what it needs)
    "clean_headers", "application_deferred", "protocol_to_accept", "root_path",
)

# autobahn's per-socket state that every open socket has, with the value it keeps while the
# socket is idle (set in _connectionMade, processHandshake and onMessageBegin): an idle socket
# reads these from its class; the first write gives the socket its own value again.
IDLE_STATE: dict[str, Any] = {
    **dict.fromkeys(
        (
            "_perMessageCompress", "trackedTimings", "wasNotCleanReason", "localCloseCode", "localCloseReason",
            "remoteCloseCode", "remoteCloseReason", "openHandshakeTimeoutCall", "closeHandshakeTimeoutCall",
            "autoPingTimeoutCall", "autoPingPending", "autoPingPendingCall", "autoPingPendingSent",
            "websocket_protocol_in_use", "current_frame", "message_data", "frame_data",
        )
    ),
    **dict.fromkeys(
        (
            "triggered", "wasMaxFramePayloadSizeExceeded", "wasMaxMessagePayloadSizeExceeded", "closedByMe",
            "failedByMe", "droppedByMe", "wasClean", "wasServerConnectionDropTimeout", "wasOpenHandshakeTimeout",
            "wasCloseHandshakeTimeout", "wasServingFlashSocketPolicyFile", "inside_message", "_isMessageCompressed",
            "message_is_binary",
        ),
        False,
    ),
    "utf8validateIncomingCurrentMessage": True,
    "send_state": 0,
    "autoPingPendingSeq": 0,
    "data": b"",
}


def forget_handshake(sock: Any) -> None:
    """Drop what an open WebSocket keeps from its HTTP handshake (about 4 KB per idle socket).

    The upgraded connection's HTTP channel stays registered as the transport's producer and
    with it the whole HTTP request; autobahn keeps the raw request, its parsed headers and the
    response, and copies its factory's ~30 options into every socket. None of it is used
    once the socket is open.
    """
    transport: Any = getattr(sock, "transport", None)
    producer = getattr(transport, "producer", None)
    if producer is not None and producer is not sock:
        # Its idle timer holds it too, and would abort the socket when it fires.
        if hasattr(producer, "setTimeout"):
            producer.setTimeout(None)
        transport.unregisterProducer()
    request = getattr(sock, "request", None)
    if request is not None:
        # daphne reads only its path after the handshake (the access log).
        for name in ("headers", "params", "protocols", "extensions", "origin", "host"):
            if hasattr(request, name):
                setattr(request, name, None)
    if fast_path["slim_sockets"] and getattr(sock, "factory", None) is not None:
        _slim(sock)
    else:
        sock.http_request_data = None
        sock.http_headers = None


def slim_from_start(sock: Any, factory: Any) -> None:
    """Give a socket its factory's slim class before it connects, so autobahn does not copy the
    factory's options into it (it copies only what the socket lacks): its __dict__ stays half
    the size through the handshake too."""
    if fast_path["slim_sockets"]:
        sock.__class__ = _slim_class(type(sock), factory)


def _slim(sock: Any) -> None:
    """Move the socket's copies of its factory's options, its idle state and its handshake-only
    attributes to a subclass shared by the sockets of that factory, and rebuild its __dict__ at
    its new size (a dict never shrinks by itself: 108 attributes take 3.3 KB, the ~30 left 0.8 KB).

    Reads are unchanged (a value moved to the class is the value the socket had, or None for
    what only the handshake read); writes set the socket's own attribute as before."""
    cls = type(sock)
    if "livefeed_options" not in vars(cls):  # not given one at the start (slim_from_start)
        cls = _slim_class(cls, sock.factory)
    attributes = sock.__dict__
    for name, value in cls.livefeed_options.items():
        if name in attributes and attributes[name] is value:
            del attributes[name]
    for name, value in IDLE_STATE.items():
        if name in attributes and attributes[name] is value:
            del attributes[name]
    for name in HANDSHAKE_ONLY:
        attributes.pop(name, None)
    _light_send_queue(attributes)
    sock.__class__ = cls
    sock.__dict__ = dict(attributes)


class SendQueue(list[Any]):
    """autobahn's send queue (frames held back for a synchronous or chopped send) as a list:
    its deque takes 760 bytes even empty, and it stays empty on this server's sockets."""

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)


def light_send_queue(sock: Any) -> None:
    """Give a socket whose send queue is empty a SendQueue (as early as its handshake starts)."""
    if fast_path["slim_sockets"]:
        _light_send_queue(sock.__dict__)


def _light_send_queue(attributes: dict[str, Any]) -> None:
    if type(attributes.get("send_queue")) is deque and not attributes["send_queue"]:
        attributes["send_queue"] = SendQueue()


def forget_frame(sock: Any) -> None:
    """Drop the unmasker autobahn keeps from the last client frame, once no frame is being read."""
    if getattr(sock, "current_frame", True) is None and getattr(sock, "current_frame_masker", None) is not None:
        sock.current_frame_masker = None


_SLIM_CLASSES: weakref.WeakKeyDictionary[Any, dict[type, type]] = weakref.WeakKeyDictionary()


def _slim_class(base: type, factory: Any) -> type:
    per_factory = _SLIM_CLASSES.setdefault(factory, {})
    cls = per_factory.get(base)
    if cls is not None and any(getattr(factory, name, None) is not value for name, value in cls.livefeed_options.items()):  # type: ignore[attr-defined]
        cls = None  # the factory's options changed since: a class with the new ones
    if cls is None:
        # The options as the factory has them now; a socket whose own value differs keeps it.
        options = {name: getattr(factory, name) for name in base.CONFIG_ATTRS if hasattr(factory, name)}  # type: ignore[attr-defined]
        # A function stored on a class would read as a method of the socket: keep it plain.
        as_class_attributes = {
            name: staticmethod(value) if inspect.isfunction(value) else value for name, value in options.items()
        }
        namespace = {**dict.fromkeys(HANDSHAKE_ONLY), **IDLE_STATE, **as_class_attributes, "livefeed_options": options}
        cls = per_factory[base] = type(
            base.__name__, (base,), {**namespace, "__module__": base.__module__, "__qualname__": base.__qualname__}
        )
    return cls


class ReceiveQueue:
    """What daphne's asyncio.Queue does for one WebSocket (``put_nowait`` by daphne, ``get`` by
    the application), without its four deques (760 bytes each, even empty).

    Unbounded and in order, like daphne's; one reader (the application instance) at a time.
    Waiting messages are kept in a list read from ``_head`` on, dropped once all are read.
    """

    __slots__ = ("_items", "_head", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] | None = None
        self._head = 0
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        if self._items is None:
            self._items = []
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Any:
        while self._items is None:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        items = self._items
        item, items[self._head] = items[self._head], None
        self._head += 1
        if self._head == len(items):
            self._items, self._head = None, 0
        return item

    def qsize(self) -> int:
        return 0 if self._items is None else len(self._items) - self._head
