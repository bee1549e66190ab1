"""Rate limits on sign-in and sign-up attempts, per client address and per account name.

Counted with feed.ratelimit's sliding-window limiter in the shared cache, so every instance
enforces one limit. An attempt is counted before the password is checked (the limiter has
no separate "peek"), so a successful sign-in counts too; the defaults leave room for that.
"""
from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest

from feed.ratelimit import client_bucket, client_ip, parse_rate, rate_limit_hit


class TooManyAttempts(Exception):
    """Too many sign-in or sign-up attempts; try again after `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(f"Too many attempts; try again in {retry_after} second{'s' if retry_after != 1 else ''}.")


def _client(request: HttpRequest) -> str:
    return f"ip:{client_bucket(client_ip(request))}"


def login_attempt_check(request: HttpRequest, *, username: str) -> None:
    """Count a sign-in attempt for the client and for the account; raise TooManyAttempts over either limit."""
    checks = [("login-client", _client(request), settings.LOGIN_FAIL_RATE)]
    if username:
        checks.append(("login-account", username.strip().casefold(), settings.LOGIN_FAIL_RATE_PER_ACCOUNT))
    for scope, client, rate in checks:
        decision = rate_limit_hit(scope=scope, client=client, rate=parse_rate(rate))
        if not decision.allowed:
            raise TooManyAttempts(decision.retry_after)


def signup_attempt_check(request: HttpRequest) -> None:
    """Count a sign-up attempt for the client; raise TooManyAttempts over SIGNUP_RATE."""
    decision = rate_limit_hit(scope="signup-client", client=_client(request), rate=parse_rate(settings.SIGNUP_RATE))
    if not decision.allowed:
        raise TooManyAttempts(decision.retry_after)
