"""API tokens: issuing them and finding the user behind one. Only hashes are stored."""
from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import TYPE_CHECKING

from django.utils import timezone

from feed.models import ApiToken

if TYPE_CHECKING:
    from django.contrib.auth.models import User

TOKEN_PREFIX = "lf_"
# Recording every use would turn each API read into a write; once in a while is enough.
LAST_USED_GRANULARITY = timedelta(minutes=5)


def token_hash(token: str) -> str:
    """Return the stored form of a token.

    Tokens carry 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    """
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def api_token_issue(*, user: User, name: str = "") -> tuple[ApiToken, str]:
    """Create a token for the user; return it and its secret, which is shown only this once."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=name, key_prefix=secret[: len(TOKEN_PREFIX) + 6], key_hash=token_hash(secret)
    )
    return token, secret


def api_token_find(*, secret: str) -> ApiToken | None:
    """Return the token whose secret this is, if its user is active; note when it was used."""
    token = (
        ApiToken.objects.select_related("user")
        .filter(key_hash=token_hash(secret), user__is_active=True)
        .first()
    )
    if token is None:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_GRANULARITY:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token
