"""What a hub holds for one stream: its order, its local readers and its pending work."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from notifications.backstop import Filler, LagTracker
from notifications.replay import SharedReads
from notifications.stream_order import StreamOrder

if TYPE_CHECKING:
    from notifications.conf import LiveSettings
    from notifications.connection import Connection, StreamEvent
    from notifications.streams import StreamKey


class StreamState:
    """One stream of one hub. ``closed`` once its last local reader left (a new state replaces it)."""

    def __init__(
        self,
        key: StreamKey,
        *,
        group: str,
        conf: LiveSettings,
        load: Callable[[int, int], Awaitable[list[StreamEvent]]],
        land: Callable[[StreamState, list[StreamEvent], int], None],
    ) -> None:
        self.key = key
        self.group = group  # its channel-layer group
        self.closed = False
        self.order = StreamOrder(name=str(key), recent_events=conf.recent_events)
        self.members: set[Connection] = set()  # every attached reader
        self.live: set[Connection] = set()  # readers that receive live events
        # Live events that arrived within live_coalesce of the previous delivery, and their timer.
        self.incoming: list[StreamEvent] = []
        self.incoming_timer: asyncio.TimerHandle | None = None
        self.delivered_at = 0.0
        # Signals that follow an event not delivered yet (after_seq), and the timer bounding their wait.
        self.signals: list[tuple[int, StreamEvent]] = []
        self.signal_timer: asyncio.TimerHandle | None = None
        self.lag = LagTracker(conf.lag_grace)
        self.reads = SharedReads(load=load, land=lambda events, after: land(self, events, after), batch_size=conf.batch_size)
        self.filler = Filler(
            order=self.order, fetch=self.reads.fetch, batch_size=conf.batch_size, active=lambda: not self.closed
        )
        self.opened: asyncio.Future[None] | None = None  # group joined and cursor read

    def close(self) -> None:
        """Stop everything pending: the stream has no local reader any more."""
        self.closed = True
        for timer in (self.incoming_timer, self.signal_timer):
            if timer is not None:
                timer.cancel()
        self.incoming_timer = self.signal_timer = None
        self.filler.cancel()
        if self.opened is not None and not self.opened.done():
            self.opened.cancel()
