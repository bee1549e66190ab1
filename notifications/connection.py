"""One reader's socket: its position in its stream, and a bounded way to write to it.

Frames are written straight to daphne's WebSocket protocol when the server adapter put it in
the scope (notifications.server_adapter, the only code that knows its attributes), so a fan-out is a loop of synchronous writes: no task,
no consumer dispatch and no re-encoding per reader. Any other ASGI server gets the same
frames through the ASGI ``send`` callable, in order, from a small per-connection outbox.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from notifications import live_metrics, server_adapter
from notifications.frames import CLOSE_TRY_AGAIN_LATER, MAX_RESUMES, RESUME_WINDOW

if TYPE_CHECKING:
    from notifications.conf import LiveSettings
    from notifications.streams import StreamKey

logger = logging.getLogger(__name__)

# Without daphne's protocol the outbox is the buffer: frames queued beyond this close the reader.
MAX_OUTBOX_FRAMES = 1000


class StreamEvent:
    """An event of a stream as every reader receives it: seq and both frames, rendered once."""

    __slots__ = ("seq", "html", "json", "from_db", "committed_at", "_prepared")

    def __init__(self, *, seq: int, html: str, json: str, from_db: bool = False) -> None:
        self.seq = seq
        self.html = html
        self.json = json
        self.from_db = from_db  # read from the database (fill, replay), not received live
        self.committed_at: float | None = None  # time.time() of the commit, for live events (metrics)
        self._prepared: list[Any] | None = None

    def text(self, json_mode: bool) -> str:
        return self.json if json_mode else self.html

    def prepared(self, json_mode: bool, sock: Any) -> Any:
        """Return the frame framed once for every daphne reader of this mode (see server_adapter.prepare)."""
        if self._prepared is None:
            self._prepared = [None, None]
        index = 1 if json_mode else 0
        message = self._prepared[index]
        if message is None:
            message = self._prepared[index] = server_adapter.prepare(sock, self.text(json_mode).encode("utf-8"))
        return message


class EventBatch:
    """Consecutive events for the readers of one stream: each reader gets them in one socket write.

    Frames stay one comment per frame; only their bytes are joined, once per mode for every
    reader that has none of them yet.
    """

    __slots__ = ("events", "_joined")

    def __init__(self, events: list[StreamEvent]) -> None:
        self.events = events
        self._joined: list[bytes | None] = [None, None]

    def joined(self, json_mode: bool, sock: Any) -> bytes:
        index = 1 if json_mode else 0
        data = self._joined[index]
        if data is None:
            data = self._joined[index] = b"".join(
                server_adapter.frame_bytes(event.prepared(json_mode, sock)) for event in self.events
            )
        return data


# The byte count of a Twisted transport, for tests that stand in for one.
pending_bytes = server_adapter.transport_unsent_bytes


class Connection:
    """A reader of one stream. ``sent_seq`` is the seq of the last event frame it was sent.

    ``write`` drops anything at or below ``sent_seq``: frames reach a reader in strictly
    increasing seq, whatever path (live, gap fill, replay) offers them.
    """

    __slots__ = (
        "stream",
        "json_mode",
        "sent_seq",
        "closed",
        "catch_up",
        "backed_up_since",
        "_protocol",
        "_send",
        "_conf",
        "_on_close",
        "_outbox",
        "_flusher",
        "_close_code",
        "_resumes",
    )

    def __init__(
        self,
        *,
        stream: StreamKey,
        json_mode: bool,
        send: Callable[[Any], Awaitable[None]],  # ASGI send (asgiref's event types make optional keys required)
        protocol: Any | None,
        conf: LiveSettings,
    ) -> None:
        self.stream = stream
        self.json_mode = json_mode
        self.sent_seq = 0
        self.closed = False
        self.catch_up: asyncio.Task[None] | None = None
        self.backed_up_since: float | None = None
        self._protocol = protocol
        self._send = send
        self._conf = conf
        self._on_close: Callable[[Connection], None] | None = None
        self._outbox: deque[str] | None = None if protocol is not None else deque()
        self._flusher: asyncio.Task[None] | None = None
        self._close_code: int | None = None
        self._resumes: list[float] | None = None

    @property
    def protocol(self) -> Any | None:
        return self._protocol

    def on_close(self, callback: Callable[[Connection], None]) -> None:
        self._on_close = callback

    def write(self, event: StreamEvent) -> None:
        """Send the event's frame unless the reader already has it; close a reader that stopped reading."""
        if self.closed or event.seq <= self.sent_seq:
            return
        protocol = self._protocol
        if protocol is not None:
            if not server_adapter.is_open(protocol):
                # Closing or closed: the disconnect reaches the consumer, which detaches us.
                self.closed = True
                return
            server_adapter.send_prepared(protocol, event.prepared(self.json_mode, protocol))
            self.sent_seq = event.seq
            self._check_backlog()
            return
        assert self._outbox is not None
        self._outbox.append(event.text(self.json_mode))
        self.sent_seq = event.seq
        if len(self._outbox) > MAX_OUTBOX_FRAMES:
            self.close(CLOSE_TRY_AGAIN_LATER)
            live_metrics.slow_reader_closed()
        elif self._flusher is None:
            self._flusher = asyncio.ensure_future(self._flush())

    def write_unsequenced(self, frame: StreamEvent) -> None:
        """Send a frame outside the seq order (a signal such as notifications.read); sent_seq is kept."""
        sent_seq, self.sent_seq = self.sent_seq, frame.seq - 1
        try:
            self.write(frame)  # the one write path, with its slow-reader checks
        finally:
            self.sent_seq = sent_seq

    def write_batch(self, batch: EventBatch) -> None:
        """Send the events this reader lacks, in order, as one socket write (daphne) or one by one."""
        events = batch.events
        protocol = self._protocol
        if self.closed or protocol is None or not server_adapter.takes_raw_frames(protocol):
            for event in events:
                self.write(event)
            return
        if events[-1].seq <= self.sent_seq:
            return
        if events[0].seq > self.sent_seq:
            data = batch.joined(self.json_mode, protocol)
        else:
            data = b"".join(
                server_adapter.frame_bytes(event.prepared(self.json_mode, protocol))
                for event in events
                if event.seq > self.sent_seq
            )
        server_adapter.write_now(protocol, data)
        self.sent_seq = events[-1].seq
        self._check_backlog()

    def backlog(self) -> int:
        """Return the bytes (daphne) or frames (other servers) written but not yet taken by the peer."""
        if self._protocol is not None:
            return server_adapter.unsent_bytes(self._protocol)
        assert self._outbox is not None
        return len(self._outbox) + (1 if self._flusher is not None else 0)

    def _check_backlog(self) -> None:
        pending = server_adapter.unsent_bytes(self._protocol)
        if pending > self._conf.slow_reader_max_bytes:
            logger.info("Closing a slow reader of %s: %d bytes unsent", self.stream, pending)
            self.close(CLOSE_TRY_AGAIN_LATER)
            live_metrics.slow_reader_closed()
        elif pending > self._conf.slow_reader_soft_bytes:
            if self.backed_up_since is None:
                self.backed_up_since = time.monotonic()
        else:
            self.backed_up_since = None

    def is_stalled(self, now: float) -> bool:
        """Return whether the reader has been backed up for longer than the slow-reader timeout."""
        if self._protocol is not None:
            self._check_backlog()
        return (
            not self.closed
            and self.backed_up_since is not None
            and now - self.backed_up_since > self._conf.slow_reader_timeout
        )

    async def drained(self) -> bool:
        """Wait until the peer has taken most of what was written; return False if the reader closed.

        A reader that stays backed up longer than the slow-reader timeout is closed with 1013.
        """
        soft = self._conf.slow_reader_soft_bytes if self._protocol is not None else 0
        deadline = time.monotonic() + self._conf.slow_reader_timeout
        while not self.closed and self.backlog() > soft:
            if time.monotonic() > deadline:
                self.close(CLOSE_TRY_AGAIN_LATER)
                live_metrics.slow_reader_closed()
                break
            await asyncio.sleep(0.02)
        return not self.closed

    def allow_resume(self) -> bool:
        """Count a resume request; return False when the client sends them too often."""
        now = time.monotonic()
        if self._resumes is None:
            self._resumes = []
        if len(self._resumes) == MAX_RESUMES and now - self._resumes[0] < RESUME_WINDOW:
            return False
        self._resumes = [*self._resumes[-(MAX_RESUMES - 1) :], now]
        return True

    def close(self, code: int, *, grace: float | None = None) -> None:
        """Stop writing and close the socket with this code; the reader is detached at once.

        ``grace``: how long the peer has to complete the close (default ``close_grace``).
        """
        if self.closed:
            return
        self.closed = True
        self.release()
        protocol = self._protocol
        if protocol is not None:
            # What is queued stays queued (bounded by slow_reader_max_bytes), so a reader that
            # wakes up still gets the close code.
            server_adapter.close_with(protocol, code, grace=self._conf.close_grace if grace is None else grace)
            return
        assert self._outbox is not None
        self._outbox.clear()
        self._close_code = code
        if self._flusher is None:
            self._flusher = asyncio.ensure_future(self._flush())

    def release(self) -> None:
        """Detach from the hub and stop any replay; the socket itself is left alone."""
        if self.catch_up is not None and self.catch_up is not _current_task():
            self.catch_up.cancel()
        self.catch_up = None
        callback, self._on_close = self._on_close, None
        if callback is not None:
            callback(self)

    async def _flush(self) -> None:
        assert self._outbox is not None
        try:
            while self._outbox:
                await self._send({"type": "websocket.send", "text": self._outbox.popleft()})
            if self._close_code is not None:
                await self._send({"type": "websocket.close", "code": self._close_code})
        except Exception:
            logger.debug("Writing to a closed socket of %s", self.stream, exc_info=True)
            self.closed = True
            self.release()
        finally:
            self._flusher = None


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None
