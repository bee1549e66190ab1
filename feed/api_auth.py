"""Who is calling the API: a bearer token, the browser session, or nobody (anonymous).

Every operation takes the first that applies, in this order. A bad token is refused
outright rather than treated as anonymous, and a session-authenticated unsafe request
must carry a CSRF token, because the browser attaches the session cookie on its own.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.conf import settings
from ninja.security import APIKeyCookie, HttpBearer
from ninja.utils import check_csrf

from feed.auth import api_token_find

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser, User
    from django.http import HttpRequest


class InvalidToken(Exception):
    """The Authorization header is malformed or names no active token."""


class CsrfFailed(Exception):
    """A session-authenticated unsafe request came without a valid CSRF token."""


class BearerToken(HttpBearer):
    """`Authorization: Bearer <token>`, a token from `manage.py issue_token`."""

    def __call__(self, request: HttpRequest) -> Any:
        header = request.headers.get("Authorization")
        if header is None:
            return None
        scheme, _, secret = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise InvalidToken("Use `Authorization: Bearer <token>`.")
        return self.authenticate(request, secret.strip())

    def authenticate(self, request: HttpRequest, token: str) -> User:
        found = api_token_find(secret=token)
        if found is None:
            raise InvalidToken("The token is unknown, revoked or belongs to an inactive user.")
        return found.user


class SessionCookie(APIKeyCookie):
    """The browser's Django session (the `sessionid` cookie); unsafe methods need CSRF."""

    def __init__(self) -> None:
        self.param_name = settings.SESSION_COOKIE_NAME
        super().__init__(csrf=False)

    def _get_key(self, request: HttpRequest) -> str | None:
        return request.COOKIES.get(self.param_name)

    def authenticate(self, request: HttpRequest, key: str | None) -> User | None:
        if not request.user.is_authenticated:
            return None
        if check_csrf(request) is not None:
            raise CsrfFailed("CSRF token missing or incorrect: send the csrftoken cookie's value in X-CSRFToken.")
        return request.user


def anonymous(request: HttpRequest) -> AnonymousUser:
    """Nobody signed in: allowed to read, and to post to feeds that take anonymous posts."""
    return request.user  # type: ignore[return-value]
