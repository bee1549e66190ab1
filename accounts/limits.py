"""Rate limits on failed sign-ins (per client address and per account name) and on sign-ups.

Failures are counted with feed.ratelimit's sliding-window limiter in the shared cache, so
every instance enforces one limit; successful sign-ins are not counted (an office behind one
address signing in at nine is fine). The failure that goes over a limit blocks that client
or account for the limiter's `retry_after`: until then every attempt is answered 429 without
checking the password, so guessing cannot go on in the meantime.
"""
from __future__ import annotations

import hashlib
import logging
import math
import time

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest

from feed.ratelimit import client_bucket, client_ip, parse_rate, rate_limit_hit

logger = logging.getLogger(__name__)


class TooManyAttempts(Exception):
    """Too many failed sign-ins or sign-ups; try again after `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(f"Too many attempts; try again in {retry_after} second{'s' if retry_after != 1 else ''}.")


def _client(request: HttpRequest) -> str:
    return f"ip:{client_bucket(client_ip(request))}"


def _login_limits(request: HttpRequest, username: str) -> list[tuple[str, str, str]]:
    limits = [("login-client", _client(request), settings.LOGIN_FAIL_RATE)]
    if username.strip():
        limits.append(("login-account", username.strip().casefold()[:150], settings.LOGIN_FAIL_RATE_PER_ACCOUNT))
    return limits


def _block_key(scope: str, client: str) -> str:
    # Hashed like the limiter's keys: addresses and names are not stored in the cache.
    return f"ratelimit:{scope}-blocked:{hashlib.sha256(client.encode()).hexdigest()[:32]}"


def login_blocked_check(request: HttpRequest, *, username: str) -> None:
    """Raise TooManyAttempts while the client or the account is blocked after too many failures."""
    now = time.time()
    for scope, client, _rate in _login_limits(request, username):
        try:
            until = cache.get(_block_key(scope, client))
        except Exception:  # the cache (Redis) is down: sign-in stays possible
            logger.warning("Could not read the sign-in block of %s", scope, exc_info=True)
            continue
        if until is not None and until > now:
            raise TooManyAttempts(max(1, math.ceil(until - now)))


def login_failure_count(request: HttpRequest, *, username: str) -> None:
    """Count a failed sign-in for the client and the account; over a limit, block it and raise TooManyAttempts."""
    for scope, client, rate in _login_limits(request, username):
        decision = rate_limit_hit(scope=scope, client=client, rate=parse_rate(rate))
        if decision.allowed:
            continue
        try:
            cache.set(_block_key(scope, client), time.time() + decision.retry_after, timeout=decision.retry_after + 1)
        except Exception:
            logger.warning("Could not block sign-ins of %s", scope, exc_info=True)
        raise TooManyAttempts(decision.retry_after)


def signup_attempt_check(request: HttpRequest) -> None:
    """Count a sign-up attempt for the client; raise TooManyAttempts over SIGNUP_RATE."""
    decision = rate_limit_hit(scope="signup-client", client=_client(request), rate=parse_rate(settings.SIGNUP_RATE))
    if not decision.allowed:
        raise TooManyAttempts(decision.retry_after)
