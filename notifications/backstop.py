"""The database backstop: what the live path lost, the database provides, in seq order.

Two ways a stream falls behind the database, both filled by a ``Filler`` (one database read
at a time, up to a target seq, each read landing through the stream's ordering):

- a gap: an event arrived ahead of the cursor; after ``gap_grace`` the missing seqs are read
  (``StreamHub`` requests it when ``StreamOrder.missing_until`` is set);
- a stall: every ``check_interval`` one query per kind (``StreamStore.last_seqs``) compares
  every cursor with the database (``check_streams``). A seq the database reported at least
  ``lag_grace`` ago (by default: at the previous check) and still undelivered means the live
  path lost it (a dropped message, a Redis outage): it is read from the database. Events
  merely in flight are left to the live path, which stays the main one.

Both graces stretch by the live path's current delay (``LiveDelay``: how long live events
now take from their commit to this process), up to ``late_grace_max``: under load, events
that are merely late are not read again from the database, which would add work to the
loaded process and so more delay.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

from notifications.conf import CHECK_HISTORY
from notifications.cancellation import raise_if_cancelled

if TYPE_CHECKING:
    from notifications.connection import StreamEvent
    from notifications.stream_order import StreamOrder
    from notifications.stream_state import StreamState
    from notifications.streams import StreamStore

logger = logging.getLogger(__name__)


class LiveDelay:
    """How late live events reach this process now: the longest commit-to-receipt time seen in
    the current and the previous ``window`` seconds (so one slow event counts for 1-2 windows)."""

    __slots__ = ("window", "_started", "_current", "_previous")

    def __init__(self, window: float = 1.0) -> None:
        self.window = window
        self._started = 0.0
        self._current = 0.0
        self._previous = 0.0

    def _roll(self, now: float) -> None:
        if now - self._started >= self.window:
            # A whole window without events forgets the previous one too.
            self._previous = self._current if now - self._started < 2 * self.window else 0.0
            self._current = 0.0
            self._started = now

    def observe(self, delay: float, now: float) -> None:
        """Record a live event that took ``delay`` seconds from its commit to here (``now``: time.monotonic())."""
        self._roll(now)
        if delay > self._current:
            self._current = delay

    def current(self, now: float) -> float:
        self._roll(now)
        return max(self._current, self._previous)


def stretched(grace: float, delay: float, most: float) -> float:
    """Return ``grace`` stretched by the live path's ``delay``, to at most ``most`` (never below ``grace``)."""
    return max(grace, min(grace + delay, most))


class LagTracker:
    """Remember the database's last seq at recent checks; say which one is overdue."""

    __slots__ = ("lag_grace", "reported")

    def __init__(self, lag_grace: float) -> None:
        self.lag_grace = lag_grace
        # (time.monotonic(), the database's last seq) of recent checks, oldest first.
        self.reported: deque[tuple[float, int]] = deque(maxlen=CHECK_HISTORY)

    def due(self, now: float, last: int, grace: float | None = None) -> int:
        """Record the database's last seq now; return the newest seq reported at least lag_grace
        (or ``grace``, the stretched one) ago."""
        reported = self.reported
        reported.append((now, last))
        grace = self.lag_grace if grace is None else grace
        due = 0
        while reported and now - reported[0][0] >= grace:
            due = max(due, reported.popleft()[1])
        return due


class Filler:
    """Read one stream's missing events from the database up to a target seq, one read at a time.

    ``fetch(after, limit)`` reads and lands the events (advancing ``order``'s cursor);
    ``active()`` says whether the stream is still served.
    """

    def __init__(
        self,
        *,
        order: StreamOrder,
        fetch: Callable[[int, int], Awaitable[list[StreamEvent]]],
        batch_size: int,
        active: Callable[[], bool],
    ) -> None:
        self.order = order
        self.fetch = fetch
        self.batch_size = batch_size
        self.active = active
        self.target = 0
        self.task: asyncio.Task[None] | None = None

    def request(self, target: int, delay: float) -> None:
        """Fill up to ``target`` after ``delay`` seconds (at once if a fill is running)."""
        if target > self.target:
            self.target = target
        if self.task is None and self.active():
            self.task = asyncio.ensure_future(self._run(delay))

    def cancel(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()

    async def _run(self, delay: float) -> None:
        order = self.order
        try:
            if delay > 0:
                await asyncio.sleep(delay)
            while order.cursor is not None and order.cursor < self.target and self.active():
                before = order.cursor
                # Read only up to the target: what is newer is likely in flight on the live path.
                await self.fetch(before, min(self.batch_size, self.target - before))
                raise_if_cancelled()
                if order.cursor == before:
                    break
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.warning("Filling %s from the database failed; the next check retries", order.name, exc_info=True)
        finally:
            self.task = None


async def check_streams(
    states: Iterable[StreamState], store: StreamStore, now: float, *, lag_grace: float | None = None
) -> None:
    """Compare the open streams' cursors with the database (one query per kind); fill the stalled ones.

    ``lag_grace``: instead of each stream's own (the stretched one, while live events are late).
    """
    opened = [state for state in states if state.order.cursor is not None]
    if not opened:
        return
    last_seqs = await store.last_seqs([state.key for state in opened])
    for state in opened:
        due = state.lag.due(now, last_seqs.get(state.key, 0), lag_grace)
        cursor = state.order.cursor
        if cursor is not None and due > cursor:
            state.filler.request(due, 0)
