"""The fan-out: one channel-layer channel per process, and every local reader fed from it.

A FeedHub (one per event loop, i.e. per daphne process) joins the group of each feed that
has a local reader and runs one receive loop. Per feed it keeps a cursor, the seq of the
last comment it delivered, and delivers strictly in seq order:

- seq == cursor + 1: delivered to every live reader of the feed, at once (or, when it
  arrives within ``live_coalesce`` of the previous delivery, together with the events that
  follow it in that window: one socket write per reader);
- seq <= cursor: a duplicate, dropped;
- seq > cursor + 1: held, and the missing range is read from the database (after
  ``gap_grace``) and delivered first.

Every ``check_interval`` one query (``feed_last_seqs``) compares all cursors with the
database. A seq the database reported at least ``lag_grace`` ago (by default: at the
previous check) that is still undelivered means the live path is stalled for that feed, and
it is read from the database: a lost event, a channel layer that dropped messages or a
Redis outage is filled within about ``2 * check_interval`` seconds. Events merely in flight
are left to the live path, which stays the main one; the database is the backstop.

A reader that resumes (``{"type": "resume", "after": N}``) is replayed N+1.. from the
feed's recent events in memory or from the database (reads shared between readers that
resume at the same point), then joins the live readers once it has caught up with the
cursor; the hand-over happens without an await in between, so nothing slips through.
"""
from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import deque
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from notifications import live_metrics
from notifications.conf import LiveSettings, live_settings
from notifications.connection import Connection, EventBatch, FeedEvent
from notifications.events import comment_created_event, feed_group_name
from notifications.frames import CLOSE_TRY_AGAIN_LATER

logger = logging.getLogger(__name__)

# Out-of-order events held per feed while a gap is filled; beyond this the database provides them.
MAX_HELD_EVENTS = 1000
# How long a new reader waits for its resume message before it goes live without one.
RESUME_WAIT = 0.5


@database_sync_to_async
def load_events_after(feed_id: int, after_seq: int, limit: int) -> list[FeedEvent]:
    """Return the feed's comments after a seq as events, rendered like published ones."""
    from feed.selectors import comments_after

    events = []
    for comment in comments_after(feed=feed_id, after_seq=after_seq, limit=limit):
        event = FeedEvent.from_message(comment_created_event(comment))
        if event is not None:
            event.from_db = True
            events.append(event)
    return events


@database_sync_to_async
def load_last_seqs(feed_ids: list[int]) -> dict[int, int]:
    from feed.selectors import feed_last_seqs

    return feed_last_seqs(feed_ids=feed_ids)


class FeedState:
    """What a hub knows about one feed: its cursor, its readers, recent and held events."""

    def __init__(self, feed_id: int, recent_events: int) -> None:
        self.feed_id = feed_id
        self.cursor: int | None = None  # None until opened (group joined, cursor read)
        self.members: set[Connection] = set()  # every attached reader
        self.live: set[Connection] = set()  # readers that receive live events
        self.held: dict[int, FeedEvent] = {}
        self.recent: deque[FeedEvent] = deque(maxlen=recent_events)
        self.fill_target = 0
        # Live events that arrived within live_coalesce of the previous delivery, and their timer.
        self.incoming: list[FeedEvent] = []
        self.incoming_timer: asyncio.TimerHandle | None = None
        self.delivered_at = 0.0
        # (time.monotonic(), the database's last seq) of recent checks, oldest first.
        self.reported: deque[tuple[float, int]] = deque(maxlen=16)
        self.fill_task: asyncio.Task[None] | None = None
        self.fetches: dict[int, asyncio.Future[list[FeedEvent]]] = {}
        self.opened: asyncio.Future[None] | None = None

    def recent_after(self, after: int) -> list[FeedEvent] | None:
        """Return the delivered events after a seq from memory, or None if memory does not reach back."""
        if not self.recent or self.recent[0].seq > after + 1:
            return None
        return [event for event in self.recent if event.seq > after]


class FeedHub:
    """The process's fan-out. Get it with get_hub(); see the module docstring."""

    def __init__(self, conf: LiveSettings, layer_alias: str = "default") -> None:
        self.conf = conf
        self.layer_alias = layer_alias
        self.feeds: dict[int, FeedState] = {}
        self.channel_name: str | None = None
        self._layer: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._membership_lock = asyncio.Lock()
        self._need_rejoin = False
        self._last_rejoin = 0.0
        self._layer_ok = True
        self._leaving: set[asyncio.Task[None]] = set()
        # Events delivered to the live readers, by where the hub got them (logged at shutdown).
        self.delivered = {"live": 0, "database": 0}

    # --- readers -----------------------------------------------------------------

    async def attach(self, conn: Connection) -> None:
        """Add a reader; it receives live events from the feed's current cursor on."""
        state = self.feeds.get(conn.feed_id)
        if state is None:
            state = self.feeds[conn.feed_id] = FeedState(conn.feed_id, self.conf.recent_events)
            state.opened = asyncio.ensure_future(self._open_feed(state))
            state.opened.add_done_callback(_consume_exception)
            self._start()
        state.members.add(conn)
        conn.on_close(self.detach)
        assert state.opened is not None
        try:
            await asyncio.shield(state.opened)
        except BaseException:
            conn.release()
            raise
        if conn.closed or conn not in state.members:
            return
        assert state.cursor is not None
        conn.sent_seq = state.cursor
        # A reconnecting client's first frame is resume; live frames sent before it arrives
        # would repeat what the client already has. So a new reader waits for its resume,
        # or starts at this cursor (missing nothing) when none comes within RESUME_WAIT.
        if conn.catch_up is None:
            conn.catch_up = asyncio.ensure_future(self._start_without_resume(state, conn))

    def detach(self, conn: Connection) -> None:
        """Remove a reader; the feed's group is left when its last local reader goes."""
        state = self.feeds.get(conn.feed_id)
        if state is None:
            return
        state.live.discard(conn)
        state.members.discard(conn)
        if state.members:
            return
        del self.feeds[conn.feed_id]
        if state.incoming_timer is not None:
            state.incoming_timer.cancel()
        for task in (state.fill_task, state.opened):
            if task is not None and not task.done():
                task.cancel()
        leave = asyncio.ensure_future(self._leave(conn.feed_id))
        self._leaving.add(leave)
        leave.add_done_callback(self._leaving.discard)
        if not self.feeds:
            self._stop()

    def resume(self, conn: Connection, after: int) -> None:
        """Replay the feed to a reader from after+1, then make it live again."""
        state = self.feeds.get(conn.feed_id)
        if state is None or conn.closed or conn not in state.members:
            return
        if conn.catch_up is not None:
            conn.catch_up.cancel()
        state.live.discard(conn)
        conn.sent_seq = after
        conn.backed_up_since = None
        conn.catch_up = asyncio.ensure_future(self._catch_up(state, conn))
        live_metrics.replayed("feed")

    def connections(self) -> list[Connection]:
        return [conn for state in self.feeds.values() for conn in state.members]

    def close_all(self, code: int, *, grace: float | None = None) -> list[Connection]:
        """Close every reader with this code (shutdown); return them."""
        closing = self.connections()
        for conn in closing:
            conn.close(code, grace=grace)
        return closing

    async def _start_without_resume(self, state: FeedState, conn: Connection) -> None:
        await asyncio.sleep(RESUME_WAIT)
        await self._catch_up(state, conn)

    async def left(self) -> None:
        """Wait until the groups of feeds without readers have been left (shutdown)."""
        if self._leaving:
            await asyncio.wait(set(self._leaving))

    async def _catch_up(self, state: FeedState, conn: Connection) -> None:
        me = asyncio.current_task()
        try:
            while not conn.closed:
                assert state.cursor is not None
                if conn.sent_seq >= state.cursor:
                    state.live.add(conn)  # no await since the check: nothing can slip in between
                    return
                events = state.recent_after(conn.sent_seq)
                if events is None:
                    events = await self._fetch(state, conn.sent_seq)
                    if conn.closed or self.feeds.get(conn.feed_id) is not state:
                        return
                    if not events:
                        # The database has nothing after sent_seq (deleted comments): skip to the cursor.
                        conn.sent_seq = max(conn.sent_seq, state.cursor)
                        continue
                conn.write_batch(EventBatch(events))
                live_metrics.replay_frames(len(events), "feed")
                if not await conn.drained():
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("Replay to a reader of feed %s failed; closing it so it resumes", state.feed_id)
            conn.close(CLOSE_TRY_AGAIN_LATER)
        finally:
            if conn.catch_up is me:
                conn.catch_up = None

    # --- events --------------------------------------------------------------------

    def _on_message(self, message: dict[str, Any]) -> None:
        if message.get("type") != "comment.created":
            return
        event = FeedEvent.from_message(message)
        if event is None:
            logger.warning("Dropping a malformed live event: %r", {k: message.get(k) for k in ("feed_id", "seq")})
            return
        state = self.feeds.get(event.feed_id)
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

    def _offer_incoming(self, state: FeedState) -> None:
        state.incoming_timer = None
        events, state.incoming = state.incoming, []
        if self.feeds.get(state.feed_id) is not state:
            return
        try:
            self._offer(state, events)
        except Exception:
            logger.exception("Delivering live events of feed %s failed", state.feed_id)

    def _offer(self, state: FeedState, events: list[FeedEvent], *, db_after: int | None = None) -> None:
        """Deliver what continues the cursor, hold what is ahead, drop what is behind.

        ``db_after``: the events are a database read of everything after that seq, so a seq
        they skip does not exist (a deleted comment) and the cursor may jump over it.
        """
        if state.cursor is None:
            for event in events:
                if len(state.held) < MAX_HELD_EVENTS:
                    state.held[event.seq] = event
            return
        if db_after is not None and db_after == state.cursor and events and events[0].seq > state.cursor + 1:
            logger.warning(
                "Feed %s has no comments %d..%d; skipping them", state.feed_id, state.cursor + 1, events[0].seq - 1
            )
            state.cursor = events[0].seq - 1
        batch: list[FeedEvent] = []
        for event in events:
            if event.seq == state.cursor + 1:
                self._advance(state, event, batch)
            elif event.seq > state.cursor + 1 and len(state.held) < MAX_HELD_EVENTS:
                state.held.setdefault(event.seq, event)
        self._deliver_held(state, batch)

    def _deliver_held(self, state: FeedState, batch: list[FeedEvent] | None = None) -> None:
        """Deliver the held events that now continue the cursor, together with ``batch``."""
        assert state.cursor is not None
        batch = [] if batch is None else batch
        held = state.held
        while held:
            event = held.pop(state.cursor + 1, None)
            if event is None:
                break
            self._advance(state, event, batch)
        self._deliver(state, batch)
        if held:
            for seq in [seq for seq in held if seq <= state.cursor]:
                del held[seq]
        if held:
            self._request_fill(state, max(held) - 1, self.conf.gap_grace)

    def _advance(self, state: FeedState, event: FeedEvent, batch: list[FeedEvent]) -> None:
        state.cursor = event.seq
        state.recent.append(event)
        self.delivered["database" if event.from_db else "live"] += 1
        batch.append(event)

    def _deliver(self, state: FeedState, events: list[FeedEvent]) -> None:
        """Write consecutive events to every live reader: one socket write per reader."""
        if not events:
            return
        if len(events) == 1:
            event = events[0]
            for conn in tuple(state.live):
                conn.write(event)
        else:
            batch = EventBatch(events)
            for conn in tuple(state.live):
                conn.write_batch(batch)
        live_metrics.delivered(events, len(state.live), "feed")
        state.delivered_at = time.monotonic()

    # --- filling from the database -------------------------------------------------------

    def _request_fill(self, state: FeedState, target: int, delay: float) -> None:
        if target > state.fill_target:
            state.fill_target = target
        if state.fill_task is None and self.feeds.get(state.feed_id) is state:
            state.fill_task = asyncio.ensure_future(self._fill(state, delay))

    async def _fill(self, state: FeedState, delay: float) -> None:
        try:
            if delay > 0:
                await asyncio.sleep(delay)
            while (
                state.cursor is not None
                and state.cursor < state.fill_target
                and self.feeds.get(state.feed_id) is state
            ):
                before = state.cursor
                # Read only up to the target: what is newer is likely in flight on the live path.
                await self._fetch(state, state.cursor, limit=min(self.conf.batch_size, state.fill_target - before))
                if state.cursor == before:
                    break
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.warning(
                "Filling feed %s from the database failed; the next check retries", state.feed_id, exc_info=True
            )
        finally:
            state.fill_task = None

    async def _fetch(self, state: FeedState, after: int, *, limit: int | None = None) -> list[FeedEvent]:
        """Read the comments after a seq once, however many readers and fills ask at the same time."""
        future = state.fetches.get(after)
        if future is None:
            load = self._load(state, after, limit or self.conf.batch_size)
            future = state.fetches[after] = asyncio.ensure_future(load)
            future.add_done_callback(_consume_exception)
        return await asyncio.shield(future)

    async def _load(self, state: FeedState, after: int, limit: int) -> list[FeedEvent]:
        try:
            events = await load_events_after(state.feed_id, after, limit)
        finally:
            state.fetches.pop(after, None)
        if self.feeds.get(state.feed_id) is state:
            self._offer(state, events, db_after=after)
        return events

    # --- the channel layer and the periodic check ------------------------------------------

    def _start(self) -> None:
        if self._tasks:
            return
        if self._layer is None:
            self._layer = get_channel_layer(self.layer_alias)
        self._tasks = [asyncio.ensure_future(self._check_loop())]
        if self._layer is not None:
            self._tasks.append(asyncio.ensure_future(self._receive_loop()))

    def _stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()

    async def _open_feed(self, state: FeedState) -> None:
        # Join first, then read the cursor: an event published in between is held and then
        # dropped as a duplicate or delivered, never missed.
        await self._join(state.feed_id)
        seqs = await load_last_seqs([state.feed_id])
        state.cursor = seqs.get(state.feed_id, 0)
        self._deliver_held(state)

    async def _ensure_channel(self) -> str:
        if self.channel_name is None:
            self.channel_name = await self._layer.new_channel()
        return self.channel_name

    async def _join(self, feed_id: int) -> None:
        if self._layer is None:
            return
        async with self._membership_lock:
            if feed_id not in self.feeds:
                return
            try:
                channel = await self._ensure_channel()
                await asyncio.wait_for(
                    self._layer.group_add(feed_group_name(feed_id), channel), self.conf.layer_timeout
                )
            except Exception:
                self._layer_failed(f"joining feed {feed_id}")

    async def _leave(self, feed_id: int) -> None:
        if self._layer is None or self.channel_name is None:
            return
        async with self._membership_lock:
            if feed_id in self.feeds:  # a reader came back meanwhile
                return
            try:
                await asyncio.wait_for(
                    self._layer.group_discard(feed_group_name(feed_id), self.channel_name), self.conf.layer_timeout
                )
            except Exception:
                logger.debug("Could not leave the group of feed %s; it expires", feed_id, exc_info=True)

    async def _rejoin(self) -> None:
        async with self._membership_lock:
            self._need_rejoin = False
            self._last_rejoin = time.monotonic()
            try:
                channel = await self._ensure_channel()
                for feed_id in list(self.feeds):
                    await asyncio.wait_for(
                        self._layer.group_add(feed_group_name(feed_id), channel), self.conf.layer_timeout
                    )
            except Exception:
                self._layer_failed("re-joining feed groups")
                return
        self._layer_recovered()

    def _layer_failed(self, doing: str) -> None:
        self._need_rejoin = True
        if self._layer_ok:
            self._layer_ok = False
            logger.warning(
                "Channel layer failed while %s; live events come from the database until it is back",
                doing,
                exc_info=True,
            )

    def _layer_recovered(self) -> None:
        if not self._layer_ok:
            self._layer_ok = True
            logger.info("Channel layer is back; feed groups re-joined")

    async def _receive_loop(self) -> None:
        failures = 0
        while True:
            try:
                channel = await self._ensure_channel()
                message = await self._layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                # One failed read (a dropped connection the pool replaces) is retried at once;
                # only repeated failures count as an outage.
                if failures > 1:
                    self._layer_failed("receiving")
                    await asyncio.sleep(min(0.1 * 2 ** (failures - 2), 1.0))
                else:
                    logger.debug("Channel layer receive failed once; retrying", exc_info=True)
                    self._need_rejoin = True
                continue
            failures = 0
            try:
                self._on_message(message)
            except Exception:
                logger.exception("Delivering a live event failed")

    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(self.conf.check_interval)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("The periodic feed check failed; retrying", exc_info=True)

    async def check(self) -> None:
        """Fill what the database has and the cursors lack; close stalled readers; refresh groups."""
        now = time.monotonic()
        for conn in self.connections():
            if conn.is_stalled(now):
                logger.info("Closing a reader of feed %s that stopped reading", conn.feed_id)
                conn.close(CLOSE_TRY_AGAIN_LATER)
                live_metrics.slow_reader_closed()
        opened = [state for state in self.feeds.values() if state.cursor is not None]
        if opened:
            last_seqs = await load_last_seqs([state.feed_id for state in opened])
            for state in opened:
                self._fill_if_stalled(state, last_seqs.get(state.feed_id, 0), now)
        if self._layer is not None and self.feeds and (
            self._need_rejoin or now - self._last_rejoin > self.conf.membership_refresh
        ):
            await self._rejoin()


    def _fill_if_stalled(self, state: FeedState, last: int, now: float) -> None:
        """Fill what the database reported at least lag_grace ago and the cursor still lacks."""
        reported = state.reported
        reported.append((now, last))
        due = 0
        while reported and now - reported[0][0] >= self.conf.lag_grace:
            due = max(due, reported.popleft()[1])
        if state.cursor is not None and due > state.cursor:
            self._request_fill(state, due, 0)


def _consume_exception(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, FeedHub] = weakref.WeakKeyDictionary()


def get_hub() -> FeedHub:
    """Return the running event loop's hub (one per daphne process), creating it on first use."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = FeedHub(live_settings())
    return hub


def all_hubs() -> list[FeedHub]:
    return list(_hubs.values())
