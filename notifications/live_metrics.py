"""The live path's Prometheus counting, one call per place that counts.

HTTP middleware never sees WebSocket traffic, so the consumer and the hub call these
functions themselves. They cost a few attribute lookups each and are called once per
connection, per fan-out or per batch, never once per frame and reader. ``stream`` is a
StreamKey (or a kind's name); its kind's ``metric_label`` (``feed``, ``notifications``)
is the metrics' ``stream`` label.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from livefeed import metrics

# Close codes get a series each; any other code a client sends is "other", so clients cannot
# make up thousands of series.
KNOWN_CLOSE_CODES = frozenset({1000, 1001, 1005, 1006, 1011, 1012, 1013, 4400, 4401, 4413, 4429})

# The attribute a consumer carries while its connection is counted as open.
_OPEN_STREAM = "_live_metrics_stream"


@lru_cache(maxsize=16)
def _children(kind: str) -> tuple[Any, Any, Any, Any, Any, str]:
    """Return the label children of a stream kind (bound once: .labels() locks on every call)."""
    from notifications.streams import stream_kinds

    found = stream_kinds().get(kind)
    label = found.metric_label if found is not None else kind
    return (
        metrics.WS_CONNECTIONS.labels(label),
        metrics.WS_CONNECTIONS_TOTAL.labels(label),
        metrics.FRAMES_SENT_TOTAL.labels(label),
        metrics.DB_FILLS_TOTAL.labels(label),
        metrics.REPLAYS_TOTAL.labels(label),
        label,
    )


def _kind(stream: Any) -> str:
    return stream if isinstance(stream, str) else stream.kind


def ws_opened(consumer: Any, stream: Any) -> None:
    """Count an accepted WebSocket connection of this stream as open."""
    children = _children(_kind(stream))
    setattr(consumer, _OPEN_STREAM, children)
    children[0].inc()
    children[1].inc()


def ws_closed(consumer: Any, code: int | None) -> None:
    """Count the connection's close by code, once, if it was counted as open."""
    children = getattr(consumer, _OPEN_STREAM, None)
    if children is None:
        return
    setattr(consumer, _OPEN_STREAM, None)
    children[0].dec()
    code = 1006 if code is None else code
    metrics.WS_CLOSED_TOTAL.labels(str(code) if code in KNOWN_CLOSE_CODES else "other").inc()


def delivered(events: Sequence[Any], readers: int, stream: Any) -> None:
    """Count a fan-out of consecutive events to the live readers of one stream.

    Frames are counted per reader; the delivery time (commit to socket write, measured once
    the frames are written to every local reader) per live event; database reads per event.
    """
    children = _children(_kind(stream))
    if readers:
        children[2].inc(len(events) * readers)
    now = time.time()
    filled = 0
    for event in events:
        if event.from_db:
            filled += 1
        elif readers and event.committed_at is not None:
            metrics.DELIVERY_SECONDS.observe(max(0.0, now - event.committed_at))
    if filled:
        children[3].inc(filled)


def replayed(stream: Any) -> None:
    """Count a resume answered (its frames are counted by replay_frames)."""
    _children(_kind(stream))[4].inc()


def replay_frames(frames: int, stream: Any) -> None:
    """Count the frames of one replay batch (a replay may take several)."""
    _children(_kind(stream))[2].inc(frames)


def slow_reader_closed() -> None:
    """Count a reader closed with 1013 because it stopped reading."""
    metrics.SLOW_READER_CLOSES_TOTAL.inc()


def bind_labels() -> None:
    """Create every stream kind's labelled series, so /metrics shows them from 0."""
    from notifications.streams import stream_kinds

    for kind in stream_kinds():
        _children(kind)
