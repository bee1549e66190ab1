"""The fan-out: one channel-layer channel per process, and every local reader fed from it.

A StreamHub (one per event loop, i.e. per daphne process) serves every kind of stream (a
feed's comments, a person's notifications: notifications.streams) with one machinery. It
ties the parts, each of which does one job:

- ``notifications.membership``: the process's one layer channel, joining the group of each
  stream with a local reader, and the receive loop;
- ``notifications.stream_order``: per stream, the cursor (the last seq delivered); an event
  with the next seq is delivered, a duplicate dropped, one from the future held while the
  missing seqs are read from the database;
- ``notifications.fanout``: writing to the readers, one socket write per reader per batch,
  each write guarded so one failing reader cannot hurt the others;
- ``notifications.backstop``: gap fills and the periodic check of every cursor against the
  database (a lost event is filled within about ``2 * check_interval``);
- ``notifications.replay``: resume and catch-up, then the hand-over to the live readers.

Live events arriving within ``live_coalesce`` of the previous delivery to a stream are
delivered together, so each reader gets them in one socket write.

Where events reach readers (and where metrics are counted): ``StreamHub._write_live``, the
one place live frames are written (every event that advances a cursor, to the live readers;
those with ``from_db`` were filled from the database); ``StreamHub._land_from_db``, where
every database read (gap fill, stall fill, replay read) lands first; and
``notifications.replay.start_replay`` / ``notifications.fanout.send_replay``, where resumes
are answered and replayed, one reader at a time.
"""
from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from channels.layers import get_channel_layer

from notifications import live_metrics, replay
from notifications.backstop import LiveDelay, check_streams, stretched
from notifications.cancellation import raise_if_cancelled
from notifications.conf import CHECK_HISTORY, LiveSettings, live_settings
from notifications.connection import Connection, StreamEvent
from notifications.fanout import close_stalled, fan_out, fan_out_signal
from notifications.membership import Membership
from notifications.presence import Presence, presence_from_settings
from notifications.stream_state import StreamState
from notifications.streams import BATCH_TYPE, StreamKey, StreamKind, StreamStore, stream_kinds

logger = logging.getLogger(__name__)

# The longest a signal waits for the event it follows (after_seq): a read reaches every open
# connection of its user within the 2 s docs/CONTRACT.md promises, even if that event was lost.
SIGNAL_WAIT_MAX = 1.0


class StreamHub:
    """The process's fan-out. Get it with get_hub(); see the module docstring."""

    def __init__(
        self,
        conf: LiveSettings,
        *,
        kinds: Mapping[str, StreamKind] | None = None,
        store: StreamStore | None = None,
        get_layer: Callable[[], Any] | None = None,
        presence: Presence | None = None,
    ) -> None:
        self.conf = conf
        self.kinds = stream_kinds() if kinds is None else kinds
        self.store = StreamStore(self.kinds) if store is None else store
        self._kind_of_type = {type_: kind for kind in self.kinds.values() for type_ in kind.event_types}
        self._kind_of_signal = {type_: kind for kind in self.kinds.values() for type_ in kind.signal_types}
        self._get_layer = get_layer or (lambda: get_channel_layer("default"))
        self.streams: dict[StreamKey, StreamState] = {}
        self.membership = Membership(None, conf)
        self.presence = presence or Presence()  # counts feed readers (notifications.presence)
        self._tasks: list[asyncio.Task[None]] = []
        self._leaving: set[asyncio.Task[None]] = set()
        # Events delivered to the live readers, by where the hub got them (logged at shutdown).
        self.delivered = {"live": 0, "database": 0}
        # How late live events arrive now: the backstop's graces stretch by it (notifications.backstop).
        self.live_delay = LiveDelay()
        # How many open streams each joined group carries (a kind's streams may share one group).
        self._group_streams: dict[str, int] = {}

    # --- readers -----------------------------------------------------------------

    async def attach(self, conn: Connection, *, presence_name: str | None = None) -> None:
        """Add a reader; it receives live events from the cursor on. presence_name: count it (a feed's slug)."""
        state = self.streams.get(conn.stream)
        if state is None:
            state = self.streams[conn.stream] = self._new_state(conn.stream)
            state.opened = asyncio.ensure_future(self._open(state))
            state.opened.add_done_callback(replay.consume_exception)
            self._start()
        state.members.add(conn)
        conn.on_close(self.detach)
        if presence_name is not None:
            self.presence.add(conn, presence_name)
        assert state.opened is not None
        try:
            await asyncio.shield(state.opened)
        except BaseException:
            conn.release()
            raise
        if conn.closed or conn not in state.members:
            return
        assert state.order.cursor is not None
        conn.sent_seq = state.order.cursor
        # A reconnecting client's first frame is resume; live frames sent before it arrives
        # would repeat what the client already has. So a new reader waits for its resume,
        # or starts at this cursor (missing nothing) when none comes within RESUME_WAIT.
        if conn.catch_up is None:
            conn.catch_up = asyncio.ensure_future(replay.start_without_resume(state, conn))

    def detach(self, conn: Connection) -> None:
        """Remove a reader; the stream's group is left when its last local reader goes."""
        self.presence.remove(conn)
        state = self.streams.get(conn.stream)
        if state is None:
            return
        state.live.discard(conn)
        state.members.discard(conn)
        if state.members:
            return
        del self.streams[conn.stream]
        state.close()
        group = state.group
        self._group_streams[group] -= 1
        if self._group_streams[group] > 0:
            return  # a group several streams share (every person's notifications): still needed
        del self._group_streams[group]
        leave = asyncio.ensure_future(self.membership.leave(group, unwanted=lambda: group not in self._group_streams))
        self._leaving.add(leave)
        leave.add_done_callback(self._leaving.discard)
        if not self.streams:
            self._stop()

    def resume(self, conn: Connection, after: int) -> None:
        """Replay the stream to a reader from after+1, then make it live again."""
        state = self.streams.get(conn.stream)
        if state is None or conn.closed or conn not in state.members:
            return
        replay.start_replay(state, conn, after)

    def is_open(self, key: StreamKey) -> bool:
        """Return whether the stream has local readers and is open (group joined, cursor read)."""
        state = self.streams.get(key)
        return state is not None and state.order.cursor is not None

    def connections(self) -> list[Connection]:
        return [conn for state in self.streams.values() for conn in state.members]

    def close_all(self, code: int, *, grace: float | None = None) -> list[Connection]:
        """Close every reader with this code (shutdown); return them."""
        closing = self.connections()
        for conn in closing:
            try:
                conn.close(code, grace=grace)
            except Exception:  # one broken socket must not keep the others open
                logger.warning("Closing a reader of %s failed", conn.stream, exc_info=True)
                conn.release()
        return closing

    async def left(self) -> None:
        """Wait until the groups of streams without readers have been left (shutdown)."""
        if self._leaving:
            await asyncio.wait(set(self._leaving))

    # --- events --------------------------------------------------------------------

    def _on_message(self, message: dict[str, Any]) -> None:
        if message.get("type") == BATCH_TYPE:
            # Several events in one layer message (a comment's notifications, one per person).
            events = message.get("events")
            for one in events if isinstance(events, list) else ():
                if isinstance(one, dict) and one.get("type") != BATCH_TYPE:
                    self._on_message(one)
            return
        kind = self._kind_of_type.get(message.get("type"))  # type: ignore[arg-type]
        if kind is None:
            self._on_signal(message)
            return
        parsed = kind.parse(message)
        if parsed is None:
            logger.warning("Dropping a malformed live event: %r", {k: message.get(k) for k in ("type", "seq")})
            return
        key, event = parsed
        if event.committed_at is not None:
            self.live_delay.observe(time.time() - event.committed_at, time.monotonic())
        state = self.streams.get(key)
        if state is None:
            return
        if state.incoming_timer is None:
            wait = state.delivered_at + self.conf.live_coalesce - time.monotonic()
            if wait <= 0:
                self._offer(state, [event])
                return
            # Under load, events that arrive in quick succession (one per channel-layer read)
            # reach each reader in one socket write instead of one write each.
            state.incoming_timer = asyncio.get_running_loop().call_later(wait, self._offer_incoming, state)
        state.incoming.append(event)

    def _on_signal(self, message: dict[str, Any]) -> None:
        """Write an unsequenced frame to every open connection of its stream (no order, no replay)."""
        kind = self._kind_of_signal.get(message.get("type"))  # type: ignore[arg-type]
        if kind is None:
            return
        parsed = kind.parse_signal(message)
        if parsed is None:
            logger.warning("Dropping a malformed signal: %r", message.get("type"))
            return
        key, frame = parsed
        state = self.streams.get(key)
        if state is None:
            return
        after_seq = message.get("after_seq")
        cursor = state.order.cursor
        if type(after_seq) is int and cursor is not None and cursor < after_seq:
            # Its content (an unread count) was taken after that event's: sent before it, it would
            # be overwritten by the older one. It waits for it, at most SIGNAL_WAIT_MAX.
            state.signals.append((after_seq, frame))
            if state.signal_timer is None:
                state.signal_timer = asyncio.get_running_loop().call_later(
                    SIGNAL_WAIT_MAX, self._release_signals, state, True
                )
            return
        fan_out_signal(state.members, frame)

    def _release_signals(self, state: StreamState, timed_out: bool = False) -> None:
        """Send the held signals whose event has been delivered (all of them once their wait is over)."""
        cursor = state.order.cursor or 0
        due = [frame for after_seq, frame in state.signals if timed_out or after_seq <= cursor]
        state.signals = [] if timed_out else [(a, f) for a, f in state.signals if a > cursor]
        if not state.signals and state.signal_timer is not None:
            state.signal_timer.cancel()  # a no-op when it is the timer that fired
            state.signal_timer = None
        for frame in due:
            fan_out_signal(state.members, frame)

    def _offer_incoming(self, state: StreamState) -> None:
        state.incoming_timer = None
        events, state.incoming = state.incoming, []
        if state.closed:
            return
        try:
            self._offer(state, events)
        except Exception:
            logger.exception("Delivering live events of %s failed", state.key)

    def _offer(self, state: StreamState, events: list[StreamEvent], *, db_after: int | None = None) -> None:
        """Deliver what continues the cursor, hold what is ahead (and fill the gap), drop what is behind."""
        self._write_live(state, state.order.offer(events, db_after=db_after))
        self._fill_gap(state)

    def _fill_gap(self, state: StreamState) -> None:
        missing_until = state.order.missing_until()
        if missing_until is not None:
            state.filler.request(missing_until, self.gap_grace())

    def gap_grace(self) -> float:
        """Return how long a gap may stay open now: gap_grace, stretched while live events are late."""
        conf = self.conf
        return stretched(conf.gap_grace, self.live_delay.current(time.monotonic()), conf.late_grace_max)

    def lag_grace(self) -> float:
        """Return how long a seq the database showed may stay undelivered now: lag_grace, stretched
        while live events are late, and always within the checks the streams remember."""
        conf = self.conf
        horizon = (CHECK_HISTORY - 2) * conf.check_interval
        most = min(conf.late_grace_max, horizon)
        return stretched(conf.lag_grace, self.live_delay.current(time.monotonic()), most)

    def _write_live(self, state: StreamState, events: list[StreamEvent]) -> None:
        """Write events that continue the cursor to the stream's live readers (received live or filled)."""
        if not events:
            return
        fan_out(state.live, events)
        if state.signals:
            self._release_signals(state)
        live_metrics.delivered(events, len(state.live), state.key)
        state.delivered_at = time.monotonic()
        from_db = sum(1 for event in events if event.from_db)
        self.delivered["database"] += from_db
        self.delivered["live"] += len(events) - from_db

    def _land_from_db(self, state: StreamState, events: list[StreamEvent], after: int) -> None:
        """Take a database read of the stream's events after a seq (gap fill, stall fill or replay read)."""
        if not state.closed:
            self._offer(state, events, db_after=after)

    # --- streams, the layer and the periodic check --------------------------------------

    def _new_state(self, key: StreamKey) -> StreamState:
        kind = self.kinds[key.kind]
        store = self.store
        group = kind.group(key.id)
        self._group_streams[group] = self._group_streams.get(group, 0) + 1
        return StreamState(
            key,
            group=group,
            conf=self.conf,
            load=lambda after, limit: store.load_after(key, after, limit),
            land=self._land_from_db,
        )

    async def _open(self, state: StreamState) -> None:
        # Join first, then read the cursor: an event published in between is held and then
        # dropped as a duplicate or delivered, never missed.
        await self.membership.join(state.group, wanted=lambda: self.streams.get(state.key) is state)
        seqs = await self.store.last_seqs([state.key])
        self._write_live(state, state.order.open(seqs.get(state.key, 0)))
        self._fill_gap(state)

    def _start(self) -> None:
        if self._tasks:
            return
        if self.membership.layer is None:
            self.membership.layer = self._get_layer()
        self._tasks = [asyncio.ensure_future(self._check_loop())]
        if self.membership.layer is not None:
            self._tasks.append(asyncio.ensure_future(self._receive_loop()))

    def _stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()

    async def _receive_loop(self) -> None:
        async for message in self.membership.messages():
            try:
                self._on_message(message)
            except Exception:
                logger.exception("Delivering a live event failed")

    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(self.conf.check_interval)
            try:
                await self.check()
                raise_if_cancelled()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("The periodic stream check failed; retrying", exc_info=True)

    async def check(self) -> None:
        """Close stalled readers; fill what the database has and the cursors lack; refresh groups."""
        now = time.monotonic()
        close_stalled(self.connections(), now)
        await check_streams(list(self.streams.values()), self.store, now, lag_grace=self.lag_grace())
        if self.streams and self.membership.rejoin_due(now):
            await self.membership.rejoin(lambda: list(self._group_streams))


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, StreamHub] = weakref.WeakKeyDictionary()


def get_hub() -> StreamHub:
    """Return the running event loop's hub (one per daphne process), creating it on first use."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = StreamHub(live_settings(), presence=presence_from_settings())
    return hub


def all_hubs() -> list[StreamHub]:
    return list(_hubs.values())
