"""Posting rate limit per client, counted in the shared cache (Redis when REDIS_URL is set).

The limit is ``settings.FEED_POST_RATE``: ``N/s``, ``N/m`` or ``N/h`` (``off`` disables it).
Counting uses a sliding window estimated from two fixed windows (the current and the
previous one, the latter weighted by how much of it still overlaps), so a client cannot
double its rate by posting at the end of one window and the start of the next. Each window
is one cache key, created with ``cache.add`` and counted with ``cache.incr``; both are atomic
in Redis, so every instance sharing the cache enforces one limit.

The limit fails open: when the cache (Redis) refuses, times out or errors, posts are let
through uncounted rather than refused or failed, since the database, not Redis, is what a
post needs. Each such post is counted in ``livefeed_rate_limit_backend_failures_total``;
one warning is logged per outage, and for ``BACKEND_RETRY`` seconds after a failure the
cache is not tried at all, so a Redis that never answers costs at most one cache timeout
(``REDIS_SOCKET_TIMEOUT``) per retry period, not one per post.

Written here rather than with django-ratelimit: that library's decorators and its client-IP
setting fit neither the ninja API nor the trusted-proxy rule below, and its system check
flags the local-memory cache used when Redis is not configured.
"""
from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured

from livefeed.metrics import RATE_LIMIT_FAILURES_TOTAL

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser, User
    from django.http import HttpRequest

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$", re.IGNORECASE)
_PERIODS = {"s": 1, "m": 60, "h": 3600}
_PORT_SUFFIX = re.compile(r"^(\d{1,3}(?:\.\d{1,3}){3}):\d+$")
# After a cache failure, posts skip the limit this many seconds before the cache is tried again.
BACKEND_RETRY = 5.0

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rate:
    limit: int
    period: int  # seconds


@dataclass(frozen=True)
class RateLimitDecision:
    allowed: bool
    retry_after: int = 0  # whole seconds to wait before the next post can succeed; 0 if allowed
    counted_key: str | None = None  # where an allowed action was counted (rate_limit_refund takes it back)


def parse_rate(value: str) -> Rate | None:
    """Return the rate `N/s|m|h` means, or None for `off`; raise ImproperlyConfigured otherwise."""
    if value.strip().lower() in {"off", "none", "0", ""}:
        return None
    match = _RATE.match(value)
    if not match or int(match.group(1)) < 1:
        raise ImproperlyConfigured(f"FEED_POST_RATE must look like 30/m, 5/s, 100/h or off, not {value!r}.")
    return Rate(limit=int(match.group(1)), period=_PERIODS[match.group(2)[0].lower()])


def _parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = value.strip().strip('"')
    if value.startswith("["):  # [v6]:port
        value = value[1:].split("]", 1)[0]
    elif match := _PORT_SUFFIX.match(value):  # v4:port
        value = match.group(1)
    try:
        address = ipaddress.ip_address(value.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(entry, strict=False) for entry in settings.TRUSTED_PROXIES]


def client_ip(request: HttpRequest) -> str:
    """Return the address of the client that sent the request, as far as it can be trusted.

    Without trusted proxies (the default) this is the socket peer, REMOTE_ADDR. Behind load
    balancers, each proxy appends the address it received the request from to
    X-Forwarded-For; entries on the left may be made up by the client. With
    ``TRUSTED_PROXIES`` (addresses or networks) the client is the right-most address in
    X-Forwarded-For + REMOTE_ADDR that is not a trusted proxy; with ``TRUSTED_PROXY_COUNT``
    = n it is the n-th entry from the right of X-Forwarded-For (REMOTE_ADDR if there are
    fewer, i.e. the request did not come through the proxies). An entry that is not an IP
    address counts as REMOTE_ADDR: otherwise a client could become a new one with every
    request by sending made-up text.
    """
    remote: str = request.META.get("REMOTE_ADDR", "") or ""
    forwarded: list[str] = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    chain = [*forwarded, remote]
    networks = _trusted_networks()
    if networks:
        for entry in reversed(chain):
            address = _parse_ip(entry)
            if address is None:
                break  # not an address: made up, so the peer is all that is known
            if not any(address in network for network in networks):
                return entry
        else:
            return chain[0]
        return remote
    count = settings.TRUSTED_PROXY_COUNT
    if count > 0 and len(forwarded) >= count and _parse_ip(forwarded[-count]) is not None:
        return forwarded[-count]
    return remote


def client_bucket(address: str) -> str:
    """Return the rate-limit bucket of an address: itself for IPv4, its /64 for IPv6.

    One IPv6 subscriber usually holds a whole /64, so limiting single v6 addresses limits nothing.
    """
    parsed = _parse_ip(address)
    if parsed is None:
        return address[:100] or "unknown"
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


def client_identity(request: HttpRequest, *, user: User | AnonymousUser | None = None) -> str:
    """Return who is posting, for rate limits and idempotency keys.

    The signed-in user (or the user an API token belongs to: every token has one) if any,
    else the client's IP address (see client_ip).
    """
    if user is None:
        user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return f"ip:{client_bucket(client_ip(request))}"


def _window_key(scope: str, client: str, window: int) -> str:
    digest = hashlib.sha256(client.encode()).hexdigest()[:32]
    return f"ratelimit:{scope}:{digest}:{window}"


def _count(key: str, timeout: int) -> int:
    cache.add(key, 0, timeout=timeout)
    try:
        return cache.incr(key)
    except ValueError:  # evicted between add and incr
        cache.add(key, 0, timeout=timeout)
        return cache.incr(key)


class _Backend:
    """Whether the cache failed lately: one warning per outage, and no calls while it is down."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.down = False
        self.retry_at = 0.0  # time.monotonic()

    def skip(self) -> bool:
        """Return whether to let a post through without trying the cache (it failed lately)."""
        with self.lock:
            return self.down and time.monotonic() < self.retry_at

    def failed(self) -> None:
        with self.lock:
            first = not self.down
            self.down = True
            self.retry_at = time.monotonic() + BACKEND_RETRY
        if first:
            logger.warning(
                "The rate-limit cache failed; posts are let through uncounted until it answers again "
                "(livefeed_rate_limit_backend_failures_total counts them)",
                exc_info=True,
            )

    def answered(self) -> None:
        if self.down:
            with self.lock:
                was_down, self.down = self.down, False
            if was_down:
                logger.info("The rate-limit cache answers again; posts are counted")


_backend = _Backend()


def rate_limit_hit(*, scope: str, client: str, rate: Rate | None, now: float | None = None) -> RateLimitDecision:
    """Count one action by `client` against `rate` and say whether it is allowed.

    A refused action is not counted, so a client that keeps retrying is let through as soon
    as its rate allows, which is what ``retry_after`` says. If the cache fails, the action
    is allowed (fail open; see the module docstring).
    """
    if rate is None:
        return RateLimitDecision(allowed=True)
    if _backend.skip():
        RATE_LIMIT_FAILURES_TOTAL.inc()
        return RateLimitDecision(allowed=True)
    try:
        decision = _rate_limit_count(scope=scope, client=client, rate=rate, now=now)
    except Exception:  # the cache's errors depend on its backend (redis-py: ConnectionError, TimeoutError)
        RATE_LIMIT_FAILURES_TOTAL.inc()
        _backend.failed()
        return RateLimitDecision(allowed=True)
    _backend.answered()
    return decision


def _rate_limit_count(*, scope: str, client: str, rate: Rate, now: float | None) -> RateLimitDecision:
    now = time.time() if now is None else now
    period = rate.period
    window = int(now // period)
    elapsed = now - window * period
    key = _window_key(scope, client, window)
    # A window's key is counted during its window and read during the next one; it outlives
    # both, so an incr never recreates an expired key without a timeout.
    current = _count(key, timeout=2 * period + 1)
    previous = cache.get(_window_key(scope, client, window - 1), 0)
    overlap = 1 - elapsed / period
    if previous * overlap + current <= rate.limit:
        return RateLimitDecision(allowed=True, counted_key=key)
    try:
        current = cache.decr(key)
    except ValueError:
        current = 0
    return RateLimitDecision(allowed=False, retry_after=_retry_after(rate, previous, current, elapsed))


def _retry_after(rate: Rate, previous: int, current: int, elapsed: float) -> int:
    period, limit = rate.period, rate.limit
    if current + 1 <= limit and previous > 0:
        # Still in this window, once enough of the previous window has slid out.
        wait = period * (1 - (limit - current - 1) / previous) - elapsed
    else:
        # In the next window, where this window's count is the one sliding out.
        wait = period - elapsed + (period * (1 - (limit - 1) / current) if current > 0 else 0)
    return max(1, math.ceil(wait))


def post_rate_limit_hit(*, client: str, now: float | None = None) -> RateLimitDecision:
    """Count one comment post by `client` against FEED_POST_RATE."""
    return rate_limit_hit(scope="post", client=client, rate=parse_rate(settings.FEED_POST_RATE), now=now)


class RateLimited(Exception):
    """The client is over its posting rate; it may post again after `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(f"Too many posts; try again in {retry_after} second{'s' if retry_after != 1 else ''}.")


def post_rate_limit_check(*, client: str) -> RateLimitDecision:
    """Count one comment post by `client`; raise RateLimited if it is over FEED_POST_RATE."""
    decision = post_rate_limit_hit(client=client)
    if not decision.allowed:
        raise RateLimited(decision.retry_after)
    return decision


def rate_limit_refund(decision: RateLimitDecision) -> None:
    """Take back an allowed action's count: it was refused after it was counted. Never raises.

    A count whose window has expired meanwhile is left alone (its key is gone).
    """
    if decision.counted_key is None:
        return
    try:
        cache.decr(decision.counted_key)
    except Exception:  # expired (ValueError), or the cache failing: the count stands, in the client's disfavour
        logger.debug("Could not take back a rate-limit count", exc_info=True)
