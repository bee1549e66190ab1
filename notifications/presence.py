"""Presence: how many open live connections each feed has, across every instance.

Each process counts its own feed readers (the hub calls ``add`` once a handshake is accepted
and ``remove`` when the reader closes). About once a second one Lua script (one round trip)
writes the counts, when changed and as a heartbeat every third of ``PRESENCE_TTL``, to the
hash ``presence:<instance id>`` -> ``{feed id: count}`` with that TTL, and reads the totals of
the local feeds summed over every live instance's hash. A dead instance's hash expires; Redis
restarted empty is refilled by the next heartbeat. Without Redis a process counts alone.
Each reader gets a ``feed.presence`` frame (no seq: the fan-out's unsequenced path) when its
feed's total differs from the last value it got, at most one per tick, ticks at least
``interval`` (1 s) apart. README "Presence" has the details and the limits.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from django.conf import settings
from django.utils.html import escape

from livefeed import redis_config
from notifications.cancellation import raise_if_cancelled
from notifications.connection import StreamEvent
from notifications.fanout import fan_out_signal

if TYPE_CHECKING:
    from notifications.connection import Connection

logger = logging.getLogger(__name__)

PREFIX = "presence:"
CHUNK = 1000  # feed ids per script call (Lua's unpack has a stack limit)

# Writes this instance's counts and returns the totals of some feeds (ARGV: see the file).
EXCHANGE_SCRIPT = (Path(__file__).parent / "presence.lua").read_text()


class PresenceStore(Protocol):
    async def exchange(self, counts: dict[int, int] | None, feed_ids: list[int]) -> dict[int, int]:
        """Write this instance's counts (None: write nothing) and return the feeds' totals."""


def _script_args(instance_id: str, ttl: int, counts: dict[int, int] | None, feed_ids: list[int]) -> list[Any]:
    pairs = [] if counts is None else [value for item in counts.items() if item[1] > 0 for value in item]
    return [PREFIX, instance_id, ttl, -1 if counts is None else len(pairs) // 2, *pairs, *feed_ids]


def _chunks(feed_ids: list[int]) -> list[list[int]]:
    return [feed_ids[start : start + CHUNK] for start in range(0, len(feed_ids), CHUNK)] or [[]]


class RedisPresenceStore:
    """This instance's counts in Redis (redis-py's asyncio client, bounded by the Redis timeouts)."""

    def __init__(self, client: Any, *, instance_id: str, ttl: int) -> None:
        self.instance_id = instance_id
        self.ttl = ttl
        self.bound = settings.REDIS_CONNECT_TIMEOUT + settings.REDIS_SOCKET_TIMEOUT
        self.client = client
        self.script = self.client.register_script(EXCHANGE_SCRIPT)

    async def exchange(self, counts: dict[int, int] | None, feed_ids: list[int]) -> dict[int, int]:
        totals: dict[int, int] = {}
        for chunk in _chunks(feed_ids):
            args = _script_args(self.instance_id, self.ttl, counts, chunk)
            counts = None  # written with the first chunk
            values = await asyncio.wait_for(self.script(args=args), self.bound * 2)
            totals.update(zip(chunk, (int(value) for value in values), strict=True))
        return totals


class Presence:
    """One process's (one hub's) presence: local counts, the exchange with the store, the frames."""

    def __init__(
        self, *, store: PresenceStore | None = None, interval: float = 1.0, ttl: float = 15.0, debounce: float = 0.05
    ) -> None:
        self.store = store
        self.interval = interval
        self.heartbeat = ttl / 3
        self.debounce = debounce
        # feed id -> {reader: the watching value last sent to it (None: nothing yet)}
        self.readers: dict[int, dict[Connection, int | None]] = {}
        self.slugs: dict[int, str] = {}
        self.totals: dict[int, int] = {}
        self.frames_sent = 0
        self._lock = threading.Lock()  # local_counts() is read from request threads (the API)
        self._dirty = False
        self._written_at = -float("inf")
        self._ticked_at = -float("inf")
        self._failing = False
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    # --- the hub's hooks ---------------------------------------------------------------

    def add(self, conn: Connection, slug: str) -> None:
        """Count a reader of a feed (its handshake was accepted)."""
        with self._lock:
            self.readers.setdefault(conn.stream.id, {})[conn] = None
            self.slugs[conn.stream.id] = slug
        self._changed()

    def remove(self, conn: Connection) -> None:
        """Stop counting a reader (closed); nothing happens for one never added."""
        feed_id = conn.stream.id
        readers = self.readers.get(feed_id)
        if readers is None or conn not in readers:
            return
        with self._lock:
            del readers[conn]
            if not readers:
                del self.readers[feed_id]
                self.slugs.pop(feed_id, None)
                self.totals.pop(feed_id, None)
        self._changed()

    def local_counts(self) -> dict[int, int]:
        with self._lock:
            return {feed_id: len(readers) for feed_id, readers in self.readers.items()}

    # --- the loop ------------------------------------------------------------------------

    def _changed(self) -> None:
        self._dirty = True
        if self._wake is None:
            self._wake = asyncio.Event()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except asyncio.TimeoutError:
                pass
            # Debounce, and keep ticks `interval` apart: one frame per reader per tick.
            await asyncio.sleep(max(self.debounce, self._ticked_at + self.interval - loop.time()))
            self._wake.clear()
            self._ticked_at = loop.time()
            try:
                await self.tick()
                raise_if_cancelled()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("Presence: a tick failed")
            if not self.readers and not self._dirty:
                self._task = None
                return

    async def tick(self) -> None:
        """Write the local counts if due, read the totals of the local feeds, send changed values."""
        now = time.monotonic()
        write = self._dirty or now - self._written_at >= self.heartbeat
        self._dirty = False
        counts = self.local_counts()
        if self.store is None:
            totals = counts
        else:
            try:
                totals = await self.store.exchange(counts if write else None, list(counts))
            except Exception as exc:
                self._dirty = self._dirty or write
                if not self._failing:
                    self._failing = True
                    logger.warning("Presence: Redis unavailable (%s); watching counts are not updated", exc or type(exc).__name__)
                self.push(self.totals)  # new readers still get a count: the last known one
                return
            if self._failing:
                self._failing = False
                logger.info("Presence: Redis answers again; watching counts are rebuilt")
        if write:
            self._written_at = now
        self.totals = totals
        self.push(totals)

    def push(self, totals: dict[int, int]) -> None:
        """Send each reader whose value differs the feed's total (one frame per feed and value)."""
        for feed_id, readers in list(self.readers.items()):
            # A total read before a local change may lag it; never show fewer than this process holds.
            watching = max(totals.get(feed_id, 0), len(readers))
            stale = {conn for conn, sent in readers.items() if sent != watching}
            if not stale:
                continue
            for conn in stale:
                readers[conn] = watching
            self.frames_sent += len(stale)
            fan_out_signal(stale, presence_frame(self.slugs.get(feed_id, ""), watching))

    def stop(self) -> None:
        """Stop the loop (tests); the counts stay as they are."""
        if self._task is not None:
            self._task.cancel()
            self._task = None


def presence_frame(slug: str, watching: int) -> StreamEvent:
    """The frame of a feed's watching count: the contract's JSON, or the page's out-of-band swap."""
    data = json.dumps({"type": "feed.presence", "v": 1, "feed": slug, "watching": watching}, separators=(",", ":"))
    label = f"{watching} watching"
    html = (
        f'<span id="feed-watching" class="watching" aria-live="off" hx-swap-oob="true" data-watching="{watching}">'
        f'<span aria-hidden="true">·</span> {escape(label)}</span>'
    )
    return StreamEvent(seq=0, html=html, json=data)


def presence_ttl() -> int:
    return int(getattr(settings, "PRESENCE_TTL", 15))


def presence_from_settings() -> Presence:
    """The hub's presence: counted in Redis (the shared-state server: the first of REDIS_URL, or
    Sentinel's master) when Redis is configured, else by this process alone."""
    client = redis_config.shared_async_client()
    ttl = presence_ttl()
    store = None
    if client is not None:
        instance_id = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        store = RedisPresenceStore(client, instance_id=instance_id, ttl=ttl)
    return Presence(store=store, ttl=ttl)


# --- totals for requests (the API), from any thread ------------------------------------------

_sync_lock = threading.Lock()
_sync_script: Any = None
_sync_failing = False
_sync_retry_at = 0.0  # after a failure, requests skip Redis for a second (a hung Redis costs each 1 s)


def _sync_exchange(feed_ids: list[int]) -> dict[int, int]:
    global _sync_script

    with _sync_lock:
        if _sync_script is None:
            client = redis_config.shared_sync_client()
            assert client is not None  # called only when Redis is configured
            _sync_script = client.register_script(EXCHANGE_SCRIPT)
        script = _sync_script
    totals: dict[int, int] = {}
    for chunk in _chunks(feed_ids):
        values = script(args=_script_args("-", presence_ttl(), None, chunk))
        totals.update(zip(chunk, (int(value) for value in values), strict=True))
    return totals


def watching_counts(feed_ids: Iterable[int]) -> dict[int, int]:
    """Return {feed id: open live connections} across instances (this process's, without Redis).

    With Redis away the answer is this process's own count (logged once per outage).
    """
    global _sync_failing, _sync_retry_at
    ids = list(feed_ids)
    if redis_config.redis_configured() and time.monotonic() >= _sync_retry_at:
        try:
            totals = _sync_exchange(ids)
        except Exception as exc:
            _sync_retry_at = time.monotonic() + 1.0
            if not _sync_failing:
                _sync_failing = True
                logger.warning("Presence: Redis unavailable (%s); answering this process's counts", exc)
        else:
            _sync_failing = False
            return {feed_id: totals.get(feed_id, 0) for feed_id in ids}
    from notifications.hub import all_hubs

    local: dict[int, int] = {}
    for hub in all_hubs():
        if hub.presence is not None:
            for feed_id, count in hub.presence.local_counts().items():
                local[feed_id] = local.get(feed_id, 0) + count
    return {feed_id: local.get(feed_id, 0) for feed_id in ids}
