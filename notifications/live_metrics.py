"""The live path's Prometheus counting, one call per place that counts.

HTTP middleware never sees WebSocket traffic, so the consumer and the hub call these
functions themselves. They cost a few attribute lookups each and are called once per
connection, per fan-out or per batch, never once per frame and reader.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from livefeed import metrics

# Label children bound once: .labels() does a dict lookup under a lock on every call.
_CONNECTIONS = {stream: metrics.WS_CONNECTIONS.labels(stream) for stream in ("feed", "notifications")}
_CONNECTIONS_TOTAL = {stream: metrics.WS_CONNECTIONS_TOTAL.labels(stream) for stream in ("feed", "notifications")}
_FEED_FRAMES = metrics.FRAMES_SENT_TOTAL.labels("feed")
_FEED_DB_FILLS = metrics.DB_FILLS_TOTAL.labels("feed")
_FEED_REPLAYS = metrics.REPLAYS_TOTAL.labels("feed")
_DELIVERY = metrics.DELIVERY_SECONDS

# Close codes get a series each; any other code a client sends is "other", so clients cannot
# make up thousands of series.
KNOWN_CLOSE_CODES = frozenset({1000, 1001, 1005, 1006, 1011, 1012, 1013, 4400, 4401, 4413, 4429})

# The attribute a consumer carries while its connection is counted as open.
_OPEN_STREAM = "_live_metrics_stream"


def ws_opened(consumer: Any, stream: str = "feed") -> None:
    """Count an accepted WebSocket connection of this stream as open."""
    setattr(consumer, _OPEN_STREAM, stream)
    _CONNECTIONS[stream].inc()
    _CONNECTIONS_TOTAL[stream].inc()


def ws_closed(consumer: Any, code: int | None) -> None:
    """Count the connection's close by code, once, if it was counted as open."""
    stream = getattr(consumer, _OPEN_STREAM, None)
    if stream is None:
        return
    setattr(consumer, _OPEN_STREAM, None)
    _CONNECTIONS[stream].dec()
    code = 1006 if code is None else code
    metrics.WS_CLOSED_TOTAL.labels(str(code) if code in KNOWN_CLOSE_CODES else "other").inc()


def delivered(events: Sequence[Any], readers: int) -> None:
    """Count a fan-out of consecutive events to the live readers of one feed.

    Frames are counted per reader; the delivery time (commit to socket write, measured once
    the frames are written to every local reader) per live event; database reads per event.
    """
    if readers:
        _FEED_FRAMES.inc(len(events) * readers)
    now = time.time()
    filled = 0
    for event in events:
        if event.from_db:
            filled += 1
        elif readers:
            committed_at = getattr(event, "committed_at", None)
            if committed_at is not None:
                _DELIVERY.observe(max(0.0, now - committed_at))
    if filled:
        _FEED_DB_FILLS.inc(filled)


def replayed() -> None:
    """Count a resume answered (its frames are counted by replay_frames)."""
    _FEED_REPLAYS.inc()


def replay_frames(frames: int) -> None:
    """Count the frames of one replay batch (a replay may take several)."""
    _FEED_FRAMES.inc(frames)


def slow_reader_closed() -> None:
    """Count a reader closed with 1013 because it stopped reading."""
    metrics.SLOW_READER_CLOSES_TOTAL.inc()
