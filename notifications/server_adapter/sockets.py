"""One open WebSocket as the hub and the consumer see it, on daphne (Twisted and autobahn).

The only code of the live path that reads daphne's, autobahn's or Twisted's attributes;
``checks.py`` verifies at start-up that every name used here exists. These functions run per
frame and per reader: they check nothing themselves.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Where daphne's protocol object is put in a WebSocket scope (see daphne.install).
PROTOCOL_SCOPE_KEY = "livefeed.daphne_protocol"

# Flipped off at start-up when a name below is missing (checks.py says which, loudly).
fast_path = {"raw_writes": True, "unsent_bytes": True, "slim_sockets": True}


def socket_of(scope: Mapping[str, Any]) -> Any | None:
    """Return the server's protocol object for a WebSocket scope, None under another server."""
    return scope.get(PROTOCOL_SCOPE_KEY)


def is_open(sock: Any) -> bool:
    return sock.state == sock.STATE_OPEN


def is_closed(sock: Any) -> bool:
    return sock.state == sock.STATE_CLOSED


def prepare(sock: Any, payload: bytes) -> Any:
    """Return the text frame framed once (an autobahn PreparedMessage), shareable by every socket."""
    return sock.factory.prepareMessage(payload)


def frame_bytes(prepared: Any) -> bytes:
    """Return the wire bytes of a prepared frame."""
    return prepared.payloadHybi


def takes_raw_frames(sock: Any) -> bool:
    """Return whether frames may be written as raw bytes now: open, uncompressed, nothing queued."""
    return (
        fast_path["raw_writes"]
        and sock._perMessageCompress is None
        and not sock.send_queue
        and sock.state == sock.STATE_OPEN
    )


def send_prepared(sock: Any, prepared: Any) -> None:
    """Send a prepared frame: raw when possible, else through autobahn."""
    if fast_path["raw_writes"] and sock._perMessageCompress is None and not sock.send_queue:
        # What sendPreparedMessage does, minus autobahn's debug log call, whose arguments
        # are formatted eagerly: about 5 us per frame and reader.
        write_now(sock, prepared.payloadHybi)
    else:
        sock.sendPreparedMessage(prepared)


def write_now(sock: Any, data: bytes) -> None:
    """Write raw frame bytes, straight to the socket when nothing is queued before them.

    Twisted's write() always queues and registers the socket for writing (two epoll changes
    and a loop turn per frame on the asyncio reactor: about 40 us per frame and reader).
    Like asyncio's own transports, try a non-blocking send first; what the kernel does not
    take, and every error, goes through transport.write() as usual. A TLS transport (no
    ``socket`` of its own) always goes through write(), which encrypts.
    """
    transport = sock.transport
    # TLS is a ProtocolWrapper, which forwards unknown attributes (``socket`` too) to the TCP
    # transport under it: never write there, the bytes must be encrypted first.
    raw = None if _is_wrapper(type(transport)) else getattr(transport, "socket", None)
    if (
        raw is not None
        and transport.connected
        and not transport.disconnecting
        and not getattr(transport, "_writeDisconnected", False)
        and not transport._tempDataLen
        and transport.offset == len(transport.dataBuffer)
    ):
        try:
            sent = raw.send(data)
        except OSError:  # EAGAIN, or an error Twisted's write path reports as usual
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


_WRAPPER_TYPES: dict[type, bool] = {}


def _is_wrapper(cls: type) -> bool:
    """Return whether a transport class wraps another transport (TLS), cached per class."""
    wrapper = _WRAPPER_TYPES.get(cls)
    if wrapper is None:
        from twisted.protocols.policies import ProtocolWrapper

        wrapper = _WRAPPER_TYPES[cls] = issubclass(cls, ProtocolWrapper)
    return wrapper


def ws_scheme(sock: Any) -> str:
    """Return "wss" when the socket runs over TLS (daphne's own test: a wrapping transport), else "ws"."""
    return "wss" if _is_wrapper(type(sock.transport)) else "ws"


def unsent_bytes(sock: Any) -> int:
    """Return how many bytes written to this socket the peer has not taken yet."""
    return transport_unsent_bytes(sock.transport)


def transport_unsent_bytes(transport: Any) -> int:
    """Return the bytes a Twisted transport holds for the peer: TCP, or TLS over TCP.

    TCP (FileDescriptor): its write buffer (``dataBuffer`` past ``offset``, plus the small
    writes not yet joined, ``_tempDataLen``). TLS (TLSMemoryBIOProtocol): the cleartext it
    holds back until the handshake is done (``_appSendBuffer``) plus the TCP buffer under it,
    where the encrypted bytes wait (slightly more than the cleartext: a few % of framing).
    """
    if _is_wrapper(type(transport)):
        return sum(map(len, transport._appSendBuffer)) + transport_unsent_bytes(transport.transport)
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


def close_with(sock: Any, code: int, *, grace: float, reason: bytes | None = None) -> bool:
    """Send a close frame with any code (autobahn's sendClose refuses 1012 and 1013).

    What is queued stays queued, so a reader that wakes up still gets the close code;
    autobahn drops the TCP connection if the peer does not answer within ``grace`` seconds.
    Return False when the socket was no longer open.
    """
    if sock.state != sock.STATE_OPEN:
        return False
    sock.closeHandshakeTimeout = grace
    if reason is None:
        sock.sendCloseFrame(code=code)
    else:
        sock.sendCloseFrame(code=code, reasonUtf8=reason)
    return True
