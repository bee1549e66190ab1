"""What a stream is: a sequence of events with a seq per stream, e.g. a feed's comments.

Every kind of stream (a feed; a person's notifications) is delivered by the same machinery
(notifications.hub and its parts). What differs between kinds is only here, in a
``StreamKind``:

- the channel-layer group that carries a stream's live events (``group``);
- which layer messages carry its events, and how to read one (``event_types``, ``parse``);
- how to read its events after a seq from the database (``load_after``) and the last seq of
  many streams in one query (``last_seqs``): the database is the source of truth.

A stream is named by a ``StreamKey``, e.g. ``StreamKey("feed", 12)``. ``StreamStore`` runs
the database reads of every kind in a worker thread.
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from importlib import import_module
from typing import Any, ClassVar, NamedTuple

from channels.db import database_sync_to_async

from notifications.connection import StreamEvent

logger = logging.getLogger(__name__)


# A layer message carrying several events (``"events": [message, ...]``), e.g. the notifications
# of one comment: one channel-layer send and one receive per process instead of one per person.
BATCH_TYPE = "events.batch"


class StreamKey(NamedTuple):
    """A stream: its kind's name and the id of what it belongs to (a feed, a user)."""

    kind: str
    id: int

    def __str__(self) -> str:
        return f"{self.kind} {self.id}"


def feed_stream(feed_id: int) -> StreamKey:
    """Return the key of a feed's comment stream."""
    return StreamKey(FeedKind.name, feed_id)


def event_from_message(message: dict[str, Any], *, from_db: bool = False) -> StreamEvent | None:
    """Return the event of a layer message with a positive int ``seq`` and both frames, else None."""
    seq, html, json_text = message.get("seq"), message.get("html"), message.get("json")
    if type(seq) is not int or seq < 1 or not isinstance(html, str) or not isinstance(json_text, str):
        return None
    event = StreamEvent(seq=seq, html=html, json=json_text, from_db=from_db)
    committed_at = message.get("committed_at")
    if not from_db and type(committed_at) is float:
        event.committed_at = committed_at  # for the delivery-time metric (notifications.live_metrics)
    return event


def events_from_rows(rows: Iterable[Any], render: Callable[[Any], dict[str, Any]]) -> list[StreamEvent]:
    """Return database rows as events (from_db), each rendered to the message its publish sends."""
    events = []
    for row in rows:
        event = event_from_message(render(row), from_db=True)
        if event is not None:
            events.append(event)
    return events


class StreamKind(ABC):
    """How one kind of stream is named, carried, parsed and read from the database."""

    # The StreamKey.kind of its streams, and the `stream` label of its metrics.
    name: ClassVar[str]
    metric_label: ClassVar[str]
    # Layer message types that carry a sequenced event of this kind.
    event_types: ClassVar[frozenset[str]]
    # Layer message types that carry a frame outside the seq order (e.g. notifications.read),
    # written to every open connection of the stream.
    signal_types: ClassVar[frozenset[str]] = frozenset()
    # The message field that holds the stream's id.
    id_field: ClassVar[str]

    @abstractmethod
    def group(self, stream_id: int) -> str:
        """Return the channel-layer group that carries the stream's live events."""

    def parse(self, message: dict[str, Any]) -> tuple[StreamKey, StreamEvent] | None:
        """Return the stream and event a layer message carries, or None if it is malformed."""
        stream_id = message.get(self.id_field)
        event = event_from_message(message)
        if type(stream_id) is not int or event is None:
            return None
        return StreamKey(self.name, stream_id), event

    def parse_signal(self, message: dict[str, Any]) -> tuple[StreamKey, StreamEvent] | None:
        """Return the stream and the unsequenced frame (seq 0) a signal message carries, or None."""
        stream_id = message.get(self.id_field)
        html, json_text = message.get("html"), message.get("json")
        if type(stream_id) is not int or not isinstance(html, str) or not isinstance(json_text, str):
            return None
        return StreamKey(self.name, stream_id), StreamEvent(seq=0, html=html, json=json_text)

    @abstractmethod
    def load_after(self, stream_id: int, after: int, limit: int) -> list[StreamEvent]:
        """Return up to `limit` events with seq > after, ascending, rendered like published ones (sync)."""

    @abstractmethod
    def last_seqs(self, stream_ids: list[int]) -> dict[int, int]:
        """Return {stream id: last committed seq} in one query (sync); unknown ids may be left out."""


class FeedKind(StreamKind):
    """A feed's events: group ``feed.<id>``, ``comment.created`` and ``comment.deleted`` in one
    sequence, read from the feed's event log (feed.models.Event), last seqs from Feed.last_seq."""

    name = "feed"
    metric_label = "feed"
    event_types = frozenset({"comment.created", "comment.deleted"})
    id_field = "feed_id"

    def group(self, stream_id: int) -> str:
        from notifications.events import feed_group_name

        return feed_group_name(stream_id)

    def load_after(self, stream_id: int, after: int, limit: int) -> list[StreamEvent]:
        from feed.selectors import events_after
        from notifications.events import feed_event_message

        return events_from_rows(events_after(feed=stream_id, after_seq=after, limit=limit), feed_event_message)

    def last_seqs(self, stream_ids: list[int]) -> dict[int, int]:
        from feed.selectors import feed_last_seqs

        return feed_last_seqs(feed_ids=stream_ids)


class UserKind(StreamKind):
    """A person's notifications: ``notification.created`` events (seq per user), and
    ``notifications.read`` signals to every open connection of the user.

    Every person's events travel in one group (``notifications.events.user_group_name``), which
    each process with a notification stream joins and whose events it sorts by ``user_id``: a
    comment notifying ten people is one layer send (an ``events.batch``) and one receive per
    process, not ten of each (each a few Redis round trips).

    The notification model provides, in ``selectors_module``:
    ``notification_stream_after(*, user_id, after_seq, limit)`` (ascending by seq) and
    ``notification_last_seqs(*, user_ids) -> {user id: last seq}``; and
    ``notifications.events.notification_created_events(notifications)`` renders them to their
    layer messages (``type``, ``user_id``, ``seq``, ``html``, ``json``), as published on commit:
    a fill is rendered in one batch (one unread-count query, not one per row).
    Until they exist, ``available()`` is False and the notification socket refuses handshakes.
    """

    name = "user"
    metric_label = "notifications"
    event_types = frozenset({"notification.created"})
    signal_types = frozenset({"notifications.read"})
    id_field = "user_id"
    selectors_module = "notifications.selectors"

    def group(self, stream_id: int) -> str:
        from notifications.events import user_group_name

        return user_group_name(stream_id)

    def interface(self) -> tuple[Callable[..., Any], Callable[..., dict[int, int]], Callable[..., Any]]:
        """Return (notification_stream_after, notification_last_seqs, notification_created_events); raise ImportError."""
        from notifications import events

        selectors = import_module(self.selectors_module)
        try:
            return (
                selectors.notification_stream_after,
                selectors.notification_last_seqs,
                events.notification_created_events,
            )
        except AttributeError as exc:
            raise ImportError(str(exc)) from exc

    def available(self) -> bool:
        try:
            self.interface()
        except ImportError:
            return False
        return True

    def load_after(self, stream_id: int, after: int, limit: int) -> list[StreamEvent]:
        notifications_after, _, render_all = self.interface()
        rows = notifications_after(user_id=stream_id, after_seq=after, limit=limit)
        events = []
        for message in render_all(rows) if rows else []:
            event = event_from_message(message, from_db=True)
            if event is not None:
                events.append(event)
        return events

    def last_seqs(self, stream_ids: list[int]) -> dict[int, int]:
        _, notification_last_seqs, _ = self.interface()
        return notification_last_seqs(user_ids=stream_ids)


def user_stream(user_id: int) -> StreamKey:
    """Return the key of a person's notification stream."""
    return StreamKey(UserKind.name, user_id)


def stream_kinds() -> dict[str, StreamKind]:
    """Return every kind of stream this process serves, by name."""
    return {kind.name: kind for kind in (FeedKind(), UserKind())}


class StreamStore:
    """The database side of every stream; each call is one thread hop.

    Must not be called with keys of kinds it does not know.
    """

    def __init__(self, kinds: Mapping[str, StreamKind]) -> None:
        self.kinds = kinds

    async def load_after(self, key: StreamKey, after: int, limit: int) -> list[StreamEvent]:
        """Return the stream's events after a seq from the database, ascending, marked from_db."""
        return await database_sync_to_async(self.kinds[key.kind].load_after)(key.id, after, limit)

    async def last_seqs(self, keys: Iterable[StreamKey]) -> dict[StreamKey, int]:
        """Return {key: last committed seq}: one query per kind, all in one thread hop."""
        by_kind: dict[str, list[int]] = {}
        for key in keys:
            by_kind.setdefault(key.kind, []).append(key.id)
        return await database_sync_to_async(self._last_seqs)(by_kind)

    def _last_seqs(self, by_kind: dict[str, list[int]]) -> dict[StreamKey, int]:
        seqs: dict[StreamKey, int] = {}
        for kind_name, ids in by_kind.items():
            for stream_id, seq in self.kinds[kind_name].last_seqs(ids).items():
                seqs[StreamKey(kind_name, stream_id)] = seq
        return seqs
