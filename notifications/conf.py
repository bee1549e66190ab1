"""Tunables of the live path, read from settings.LIVE_UPDATES when a hub starts."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

# The checks each feed remembers (notifications.backstop.LagTracker.reported): a stall is filled
# once a check older than lag_grace is among them, so lag_grace must stay below
# (CHECK_HISTORY - 1) * check_interval.
CHECK_HISTORY = 16
# lag_grace, when not set, is this fraction of check_interval: comments the database showed
# at one check and still undelivered at the next are filled.
LAG_GRACE_FRACTION = 0.75


@dataclass(frozen=True)
class LiveSettings:
    # How often each process compares its feeds' cursors with the database (one query).
    check_interval: float = 1.0
    # How long a seq missing behind a newer live event may stay missing before the database fills it,
    # when live events arrive at once. It stretches by the live path's current delay (how long
    # live events now take from commit to this process, notifications.backstop.LiveDelay), up to
    # late_grace_max: a merely late event is not read again from the database, which under load
    # would add work and so more delay, a feedback loop.
    gap_grace: float = 0.1
    # How long a comment the database showed may stay undelivered (in flight on the live path)
    # before it is read from the database: until the next check. Unless set, 3/4 of
    # check_interval (see live_settings); it must stay below what the hub remembers of its
    # checks, CHECK_HISTORY - 1 intervals, or the database never fills a stall.
    lag_grace: float = 0.75
    # The most gap_grace and lag_grace stretch with the live path's delay (see gap_grace): while
    # live events are late, one the live path lost is filled within about this (a stall: plus a
    # check_interval). While they are not, the graces and bounds above hold as they are.
    late_grace_max: float = 2.0
    # A live event arriving within this many seconds of the previous delivery to the feed's
    # readers waits for the rest of it, so events in quick succession reach each reader in one
    # socket write (0: each at once). Events further apart go out at once.
    live_coalesce: float = 0.01
    # Comments per database read, for replays and gap fills.
    batch_size: int = 200
    # Delivered events each process keeps per feed, so most resumes need no database read.
    recent_events: int = 256
    # A reader whose unsent bytes exceed this is closed with 1013.
    slow_reader_max_bytes: int = 1024 * 1024
    # Above this many unsent bytes a reader counts as backed up ...
    slow_reader_soft_bytes: int = 64 * 1024
    # ... and is closed with 1013 when it stays backed up this long.
    slow_reader_timeout: float = 10.0
    # After a close we start, how long the peer has to read what is queued and answer.
    close_grace: float = 15.0
    # On SIGTERM, how long open sockets get to complete the 1012 close.
    shutdown_grace: float = 3.0
    # Group memberships are re-added this often (an empty, restarted Redis forgets them).
    membership_refresh: float = 30.0
    # Bound on one channel-layer call (group_add, group_discard, publish).
    layer_timeout: float = 2.0
    # After a failed publish, skip publishing this long: readers fill from the database.
    publish_backoff: float = 1.0


def live_settings() -> LiveSettings:
    """Return the defaults overridden by the LIVE_UPDATES setting (a dict of field names).

    ``lag_grace`` follows ``check_interval`` unless it is set itself. The values are
    validated at start-up (livefeed.checks), not here.
    """
    from django.conf import settings

    overrides: dict[str, Any] = dict(getattr(settings, "LIVE_UPDATES", {}) or {})
    known = {field.name for field in fields(LiveSettings)}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"Unknown LIVE_UPDATES keys: {sorted(unknown)}")
    if "lag_grace" not in overrides and "check_interval" in overrides:
        try:
            overrides["lag_grace"] = LAG_GRACE_FRACTION * float(overrides["check_interval"])
        except (TypeError, ValueError):
            pass  # reported by the start-up check
    return replace(LiveSettings(), **overrides)
