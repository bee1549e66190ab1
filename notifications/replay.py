"""Resume and catch-up: replaying a stream to a reader from its point, then making it live.

A reader that resumes (``{"type": "resume", "after": N}``) is replayed N+1.. from the
stream's recent events in memory or from the database, then joins the live readers once it
has caught up with the cursor; the hand-over happens without an await in between, so
nothing slips through. A new reader that sends no resume within ``RESUME_WAIT`` starts at
the cursor it was attached at.

Database reads are shared (``SharedReads``): readers that resume at the same point, and gap
fills, wait on one read, and every read lands through the stream's ordering first, so the
live readers get what it found too.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from notifications import live_metrics
from notifications.fanout import send_replay
from notifications.frames import CLOSE_TRY_AGAIN_LATER
from notifications.cancellation import raise_if_cancelled

if TYPE_CHECKING:
    from notifications.connection import Connection, StreamEvent
    from notifications.stream_state import StreamState

logger = logging.getLogger(__name__)

# How long a new reader waits for its resume message before it goes live without one.
RESUME_WAIT = 0.5


class SharedReads:
    """Read a stream's events after a seq once, however many readers and fills ask at the same time.

    ``load(after, limit)`` reads the database; ``land(events, after)`` hands every read to the
    stream's ordering before the askers get it.
    """

    def __init__(
        self,
        *,
        load: Callable[[int, int], Awaitable[list[StreamEvent]]],
        land: Callable[[list[StreamEvent], int], None],
        batch_size: int,
    ) -> None:
        self._load = load
        self._land = land
        self.batch_size = batch_size
        self.pending: dict[int, asyncio.Future[list[StreamEvent]]] = {}

    async def fetch(self, after: int, limit: int | None = None) -> list[StreamEvent]:
        future = self.pending.get(after)
        if future is None:
            future = self.pending[after] = asyncio.ensure_future(self._read(after, limit or self.batch_size))
            future.add_done_callback(consume_exception)
        return await asyncio.shield(future)

    async def _read(self, after: int, limit: int) -> list[StreamEvent]:
        try:
            events = await self._load(after, limit)
        finally:
            self.pending.pop(after, None)
        self._land(events, after)
        return events


def start_replay(state: StreamState, conn: Connection, after: int) -> None:
    """Restart the reader's stream at ``after``: replay after+1.. to it, then make it live again."""
    if conn.catch_up is not None:
        conn.catch_up.cancel()
    state.live.discard(conn)
    conn.sent_seq = after
    conn.backed_up_since = None
    conn.catch_up = asyncio.ensure_future(catch_up(state, conn))
    live_metrics.replayed(state.key)


async def start_without_resume(state: StreamState, conn: Connection, wait: float = RESUME_WAIT) -> None:
    """Make a new reader live from its current point unless a resume replaces this within ``wait``."""
    await asyncio.sleep(wait)
    await catch_up(state, conn)


async def catch_up(state: StreamState, conn: Connection) -> None:
    """Send the reader what it lacks up to the stream's cursor, then add it to the live readers."""
    me = asyncio.current_task()
    order = state.order
    try:
        while not conn.closed:
            assert order.cursor is not None
            if conn.sent_seq >= order.cursor:
                state.live.add(conn)  # no await since the check: nothing can slip in between
                return
            events = order.recent_after(conn.sent_seq)
            if events is None:
                events = await state.reads.fetch(conn.sent_seq)
                raise_if_cancelled()
                if conn.closed or state.closed:
                    return
                if not events:
                    # The database has nothing after sent_seq: skip to the cursor. A feed's event
                    # log has no gaps; a person's stream hides notifications of feeds they
                    # can no longer read, and a row deleted outright leaves a gap too.
                    conn.sent_seq = max(conn.sent_seq, order.cursor)
                    continue
            if not send_replay(conn, events):
                return
            live_metrics.replay_frames(len(events), state.key)
            if not await conn.drained():
                return
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("Replay to a reader of %s failed; closing it so it resumes", state.key)
        conn.close(CLOSE_TRY_AGAIN_LATER)
    finally:
        if conn.catch_up is me:
            conn.catch_up = None


def consume_exception(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as retrieved (it is handled by whoever awaits it, if anyone)."""
    if not future.cancelled():
        future.exception()
