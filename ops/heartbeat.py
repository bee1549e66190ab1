"""Each process's heartbeat: what /ops/ shows about it, written to the shared cache.

Every ``OPS_HEARTBEAT_INTERVAL`` seconds a daemon thread takes a sample of this process
(open connections, readers per feed, and the Prometheus counters the page charts) into a
short ring, and writes the ring to the cache (Redis with ``REDIS_URL``) under a slot key
that expires after a few missed beats: a process that dies leaves the page by itself. With
the in-process cache only the local process is seen, which is all there is then.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from typing import Any

from django.conf import settings
from django.core.cache import cache

from livefeed import lifecycle, metrics

logger = logging.getLogger(__name__)

KEY_PREFIX = "livefeed:ops:heartbeat:"
MAX_INSTANCES = 64
SAMPLES = 31  # 30 intervals: a minute at the default 2 s

INSTANCE_ID = f"{socket.gethostname()}:{os.getpid()}"


def slot_keys() -> list[str]:
    return [f"{KEY_PREFIX}{slot}" for slot in range(MAX_INSTANCES)]


def _counter(metric: Any) -> float:
    """Return a counter's value summed over its labels."""
    total: float = sum(
        sample.value for family in metric.collect() for sample in family.samples if sample.name.endswith("_total")
    )
    return total


def _delivery_buckets() -> list[float]:
    """Return the delivery histogram's cumulative bucket counts (le ascending, +Inf last)."""
    return [
        sample.value
        for family in metrics.DELIVERY_SECONDS.collect()
        for sample in family.samples
        if sample.name.endswith("_bucket")
    ]


def delivery_bounds() -> list[float]:
    """Return the delivery histogram's bucket upper bounds, in the order of _delivery_buckets."""
    return [
        float(sample.labels["le"])
        for family in metrics.DELIVERY_SECONDS.collect()
        for sample in family.samples
        if sample.name.endswith("_bucket")
    ]


def readers_per_feed() -> dict[str, int]:
    """Return this process's open feed sockets per feed id (string keys: the cache may be JSON)."""
    from notifications.hub import all_hubs

    counts: dict[str, int] = {}
    for _ in range(3):  # the loop thread may change the dicts meanwhile; read again
        try:
            counts = {}
            for hub in all_hubs():
                for key, state in list(hub.streams.items()):
                    if key.kind == "feed":
                        counts[str(key.id)] = counts.get(str(key.id), 0) + len(state.members)
            return counts
        except RuntimeError:
            continue
    return counts


def _connections() -> int:
    return int(sum(sample.value for family in metrics.WS_CONNECTIONS.collect() for sample in family.samples))


class Heartbeat:
    """This process's ring of samples and its slot in the cache."""

    def __init__(self) -> None:
        self.samples: deque[dict[str, Any]] = deque(maxlen=SAMPLES)
        self.slot: str | None = None
        self.lock = threading.Lock()

    def sample(self) -> dict[str, Any]:
        """Take a sample now and return the heartbeat payload."""
        entry = {
            "t": time.time(),
            "connections": _connections(),
            "comments": _counter(metrics.COMMENTS_CREATED_TOTAL),
            "fills": _counter(metrics.DB_FILLS_TOTAL),
            "publish_failures": _counter(metrics.PUBLISH_FAILURES_TOTAL),
            "delivery": _delivery_buckets(),
        }
        with self.lock:
            self.samples.append(entry)
        return self._current()

    def payload(self) -> dict[str, Any]:
        """Return the latest heartbeat; without the thread (tests, commands) sample first."""
        return self.sample() if _thread is None or not self.samples else self._current()

    def _current(self) -> dict[str, Any]:
        with self.lock:
            samples = list(self.samples)
        return {
            "instance": INSTANCE_ID,
            "started_at": lifecycle.started_at(),
            "draining": lifecycle.is_draining(),
            "feeds": readers_per_feed(),
            "samples": samples,
        }

    def beat(self) -> None:
        """Sample, and write the heartbeat to this process's slot (claiming one if needed)."""
        payload = self.sample()
        timeout = max(5, int(settings.OPS_HEARTBEAT_INTERVAL * 3) + 1)
        if self.slot is not None:
            owner = cache.get(self.slot)
            if owner is None or owner.get("instance") == INSTANCE_ID:
                cache.set(self.slot, payload, timeout)
                return
            self.slot = None  # our slot expired (a long pause) and was taken: find another
        for key in slot_keys():
            if cache.add(key, payload, timeout):
                self.slot = key
                return
        logger.warning("No free ops heartbeat slot (more than %d instances); /ops/ leaves this one out", MAX_INSTANCES)


heartbeat = Heartbeat()
_thread: threading.Thread | None = None


def _run() -> None:
    failing = False
    while True:
        try:
            heartbeat.beat()
            if failing:
                logger.info("Ops heartbeat written again")
            failing = False
        except Exception:
            if not failing:
                logger.warning("Could not write the ops heartbeat; retrying", exc_info=True)
            failing = True
        time.sleep(settings.OPS_HEARTBEAT_INTERVAL)


def start_heartbeat() -> None:
    """Start this process's heartbeat thread (servers only: called from livefeed/asgi.py). Idempotent."""
    global _thread
    if _thread is None:
        _thread = threading.Thread(target=_run, name="ops-heartbeat", daemon=True)
        _thread.start()
