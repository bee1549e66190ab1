"""This process's Prometheus metrics (the names of the contract's Operations section).

Each daphne process is scraped on its own at ``/metrics``, so the default registry of
``prometheus_client`` is used as it is, without multiprocess mode. The live path counts
WebSocket metrics itself: HTTP middleware never sees WebSocket traffic.
"""
from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram

WS_CONNECTIONS = Gauge(
    "livefeed_ws_connections", "Open WebSocket connections of this process.", ["stream"]
)
# Registered below through _SharedFamilyName: a counter named X_total is the family X, which
# the gauge above already is, and the registry would refuse it (DuplicateTimeseries).
WS_CONNECTIONS_TOTAL = Counter(
    "livefeed_ws_connections_total", "WebSocket connections accepted by this process.", ["stream"], registry=None
)


class _SharedFamilyName:
    """Register a metric whose family name another one already uses.

    A counter's family name drops ``_total``, so ``livefeed_ws_connections_total`` is the family
    ``livefeed_ws_connections``, the gauge's name, and the registry refuses it (DuplicateTimeseries)
    although the text format keeps them apart (``livefeed_ws_connections`` and
    ``livefeed_ws_connections_total``). Describing no names skips that check; /metrics serves the
    text format only (livefeed/health.py), never OpenMetrics, where the names would clash.
    """

    def __init__(self, metric: Any) -> None:
        self.metric = metric

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        return self.metric.collect()


REGISTRY.register(_SharedFamilyName(WS_CONNECTIONS_TOTAL))
WS_CLOSED_TOTAL = Counter("livefeed_ws_closed_total", "WebSocket connections closed, by close code.", ["code"])
COMMENTS_CREATED_TOTAL = Counter("livefeed_comments_created_total", "Comments saved through this process.")
EVENTS_PUBLISHED_TOTAL = Counter(
    "livefeed_events_published_total", "Events sent to the channel layer by this process."
)
PUBLISH_FAILURES_TOTAL = Counter(
    "livefeed_publish_failures_total",
    "Events that could not be published after commit (readers get them from the database).",
)
FRAMES_SENT_TOTAL = Counter("livefeed_frames_sent_total", "Event frames written to WebSocket readers.", ["stream"])
DB_FILLS_TOTAL = Counter(
    "livefeed_db_fills_total", "Events read from the database to fill a gap or a stall of the live path.", ["stream"]
)
REPLAYS_TOTAL = Counter("livefeed_replays_total", "Resumes answered (replays from memory or the database).", ["stream"])
DELIVERY_SECONDS = Histogram(
    "livefeed_delivery_seconds",
    "From commit to the socket write of live frames.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
SLOW_READER_CLOSES_TOTAL = Counter(
    "livefeed_slow_reader_closes_total", "Readers closed with 1013 because they stopped reading."
)
RATE_LIMIT_FAILURES_TOTAL = Counter(
    "livefeed_rate_limit_backend_failures_total",
    "Posts let through without a rate-limit check because the shared cache (Redis) failed.",
)
