"""The order of one stream as a process delivers it: cursor, held events, recent events.

Pure bookkeeping (no I/O, no event loop), shared by every kind of stream. ``StreamOrder``
decides, for events offered from any source (the channel layer, a gap fill, a replay read),
which ones are delivered now and in what order:

- seq == cursor + 1: delivered, and the cursor advances (then any held event that now
  continues the cursor follows it);
- seq <= cursor: a duplicate, dropped;
- seq > cursor + 1: held (up to ``max_held``) until the missing seqs arrive; ``missing_until``
  tells the caller which range to read from the database.

Before ``open`` (the cursor is not known yet) everything offered is held.
"""
from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from notifications.connection import StreamEvent

logger = logging.getLogger(__name__)

# Out-of-order events held per stream while a gap is filled; beyond this the database provides them.
MAX_HELD_EVENTS = 1000


class StreamOrder:
    """One stream's cursor (the last seq delivered), held events and recently delivered events."""

    __slots__ = ("name", "cursor", "held", "recent", "max_held")

    def __init__(self, *, name: str = "stream", recent_events: int = 256, max_held: int = MAX_HELD_EVENTS) -> None:
        self.name = name  # for log lines
        self.cursor: int | None = None
        self.held: dict[int, StreamEvent] = {}
        self.recent: deque[StreamEvent] = deque(maxlen=recent_events)
        self.max_held = max_held

    def open(self, cursor: int) -> list[StreamEvent]:
        """Start at this cursor (the database's last seq); return the held events that now follow it."""
        self.cursor = cursor
        return self._take_held([])

    def offer(self, events: list[StreamEvent], *, db_after: int | None = None) -> list[StreamEvent]:
        """Return the events to deliver now, in seq order; hold what is ahead, drop what is behind.

        ``db_after``: the events are a database read of everything after that seq, so a seq
        they skip does not exist and the cursor may jump over it. A feed's event log has no
        gaps (a removal is an event of its own); a person's stream skips the notifications of
        feeds they can no longer read, and a row deleted outright leaves a gap in any stream.
        """
        if self.cursor is None:
            for event in events:
                if len(self.held) < self.max_held:
                    self.held[event.seq] = event
            return []
        cursor = self.cursor
        if db_after is not None and db_after == cursor and events and events[0].seq > cursor + 1:
            logger.warning("%s has no events %d..%d; skipping them", self.name, cursor + 1, events[0].seq - 1)
            self.cursor = events[0].seq - 1
        batch: list[StreamEvent] = []
        for event in events:
            if event.seq == self.cursor + 1:
                self._advance(event, batch)
            elif event.seq > self.cursor + 1 and len(self.held) < self.max_held:
                self.held.setdefault(event.seq, event)
        return self._take_held(batch)

    def missing_until(self) -> int | None:
        """Return the last seq of the gap before the held events (to read from the database), or None."""
        if not self.held:
            return None
        return max(self.held) - 1

    def recent_after(self, after: int) -> list[StreamEvent] | None:
        """Return the delivered events after a seq from memory, or None if memory does not reach back."""
        recent = self.recent
        if not recent or recent[0].seq > after + 1:
            return None
        return [event for event in recent if event.seq > after]

    def _take_held(self, batch: list[StreamEvent]) -> list[StreamEvent]:
        held = self.held
        while held:
            event = held.pop(self.cursor + 1, None)  # type: ignore[operator]
            if event is None:
                break
            self._advance(event, batch)
        if held:
            for seq in [seq for seq in held if seq <= self.cursor]:  # type: ignore[operator]
                del held[seq]
        return batch

    def _advance(self, event: StreamEvent, batch: list[StreamEvent]) -> None:
        self.cursor = event.seq
        self.recent.append(event)
        batch.append(event)
