"""What /ops/ shows: the instances' heartbeats from the cache, and one query for the feeds."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.core.cache import cache
from django.db.models import F, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from feed.models import Comment, Feed
from ops.heartbeat import delivery_bounds, heartbeat, slot_keys
from ops.sparkline import Sparkline, sparkline

logger = logging.getLogger(__name__)

WINDOW = 60.0  # seconds: "the last minute"
MAX_FEEDS = 50


@dataclass
class InstanceRow:
    instance: str
    uptime: float
    connections: int
    draining: bool
    seen_ago: float

    @property
    def uptime_text(self) -> str:
        minutes, seconds = divmod(int(self.uptime), 60)
        hours, minutes = divmod(minutes, 60)
        days, hours = divmod(hours, 24)
        return f"{days}d {hours}h" if days else f"{hours}h {minutes}m" if hours else f"{minutes}m {seconds}s"


@dataclass
class FeedRow:
    slug: str
    title: str
    watching: int
    last_minute: int
    last_seq: int


@dataclass
class OpsSummary:
    instances: list[InstanceRow]
    feeds: list[FeedRow]
    connections: int
    events_per_second: float
    delivery_p99: float | None  # seconds; None without live deliveries in the window
    gaps_filled: int
    publish_failures: int
    cache_ok: bool = True
    charts: dict[str, Sparkline | None] = field(default_factory=dict)


def heartbeats() -> tuple[list[dict[str, Any]], bool]:
    """Return every live instance's latest heartbeat (this process's own, the others' from the
    cache), and whether the cache answered: with Redis away the page shows this process only."""
    own = heartbeat.payload()
    try:
        found = cache.get_many(slot_keys())
    except Exception:
        logger.warning("Could not read the heartbeats from the cache", exc_info=True)
        return [own], False
    others = [entry for entry in found.values() if entry.get("instance") != own["instance"]]
    return sorted([own, *others], key=lambda entry: entry["instance"]), True


def _window(samples: list[dict[str, Any]], now: float) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Return the oldest sample within the window and the newest, or None with fewer than two."""
    recent = [sample for sample in samples if now - sample["t"] <= WINDOW + 1]
    return (recent[0], recent[-1]) if len(recent) >= 2 else None


def quantile(buckets: list[float], q: float) -> float | None:
    """Return the upper bound of the bucket holding the q-quantile (cumulative counts, +Inf last)."""
    total = buckets[-1] if buckets else 0
    if total <= 0:
        return None
    bounds = delivery_bounds()
    for bound, count in zip(bounds, buckets):
        if count >= q * total:
            return bound
    return bounds[-1]


def _delta(first: dict[str, Any], last: dict[str, Any], key: str) -> float:
    # A counter lower than before means the process restarted (a new instance id makes a new row).
    return max(0.0, float(last[key]) - float(first[key]))


def _bucket_delta(first: dict[str, Any], last: dict[str, Any]) -> list[float]:
    if len(first["delivery"]) != len(last["delivery"]):
        return []
    return [max(0.0, b - a) for a, b in zip(first["delivery"], last["delivery"])]


def _series(beats: list[dict[str, Any]], metric: str) -> list[float]:
    """Return a per-interval series summed over instances, aligned from the newest sample back."""
    per_instance = []
    for beat in beats:
        samples = beat["samples"]
        values = []
        for older, newer in zip(samples, samples[1:]):
            dt = max(newer["t"] - older["t"], 1e-6)
            if metric == "connections":
                values.append(float(newer["connections"]))
            elif metric == "delivery_p99":
                p99 = quantile(_bucket_delta(older, newer), 0.99)
                values.append((p99 or 0.0) * 1000)
            else:
                change = _delta(older, newer, metric)
                values.append(change / dt if metric == "comments" else change)
        per_instance.append(values)
    length = max((len(values) for values in per_instance), default=0)
    combined = [0.0] * length
    for values in per_instance:
        for index, value in enumerate(values):
            position = length - len(values) + index
            if metric == "delivery_p99":  # the slowest instance's p99, not a sum
                combined[position] = max(combined[position], value)
            else:
                combined[position] += value
    return combined


def feed_rows(watching: dict[str, int]) -> list[FeedRow]:
    """Return the busiest feeds: one query, counting the last minute's comments back from last_seq.

    The newest comment older than the window is found by walking the (feed, seq) index
    backwards, so only the last minute's rows are read.
    """
    since = timezone.now() - timedelta(seconds=WINDOW)
    before_window = Comment.objects.filter(feed=OuterRef("pk"), created_at__lt=since).order_by("-seq").values("seq")[:1]
    feeds = (
        Feed.objects.annotate(last_minute=F("last_seq") - Coalesce(Subquery(before_window), Value(0)))
        .order_by("-last_minute", "-last_seq", "slug")
        .values("pk", "slug", "title", "last_seq", "last_minute")[:MAX_FEEDS]
    )
    rows = [
        FeedRow(
            slug=feed["slug"],
            title=feed["title"],
            watching=watching.get(str(feed["pk"]), 0),
            last_minute=max(0, feed["last_minute"]),
            last_seq=feed["last_seq"],
        )
        for feed in feeds
    ]
    return sorted(rows, key=lambda row: (-row.watching, -row.last_minute, row.slug))


def ops_summary() -> OpsSummary:
    """Return everything /ops/ shows, from the heartbeats and one database query."""
    now = time.time()
    beats, cache_ok = heartbeats()
    instances: list[Any] = []
    watching: dict[str, int] = {}
    fills = failures = 0.0
    buckets: list[float] = []
    for beat in beats:
        samples = beat["samples"]
        latest = samples[-1] if samples else {"t": now, "connections": 0}
        instances.append(
            InstanceRow(
                instance=beat["instance"],
                uptime=now - beat["started_at"],
                connections=latest["connections"],
                draining=beat.get("draining", False),
                seen_ago=max(0.0, now - latest["t"]),
            )
        )
        for feed_id, readers in beat["feeds"].items():
            watching[feed_id] = watching.get(feed_id, 0) + readers
        window = _window(samples, now)
        if window is not None:
            first, last = window
            fills += _delta(first, last, "fills")
            failures += _delta(first, last, "publish_failures")
            delta = _bucket_delta(first, last)
            buckets = [a + b for a, b in zip(buckets, delta)] if buckets else delta
    feeds = feed_rows(watching)
    return OpsSummary(
        instances=instances,
        feeds=feeds,
        connections=sum(row.connections for row in instances),
        events_per_second=sum(row.last_minute for row in feeds) / WINDOW,
        delivery_p99=quantile(buckets, 0.99),
        gaps_filled=int(fills),
        publish_failures=int(failures),
        cache_ok=cache_ok,
        charts={
            "connections": sparkline(_series(beats, "connections"), label="Open connections over the last minute"),
            "events": sparkline(
                _series(beats, "comments"), label="Comments per second over the last minute", unit="per second"
            ),
            "delivery": sparkline(_series(beats, "delivery_p99"), label="Delivery p99 over the last minute", unit="ms"),
            "fills": sparkline(_series(beats, "fills"), label="Events filled from the database per interval"),
            "failures": sparkline(_series(beats, "publish_failures"), label="Publish failures per interval"),
        },
    )
