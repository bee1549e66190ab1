"""A person's notification socket: /ws/notifications/ (HTML frames) and ?format=json.

The same protocol and the same delivery machinery as a feed's socket (FeedConsumer,
notifications.hub): ``{"type": "resume", "after": N}`` replays the user's notifications
after N, then they continue live, in strictly increasing seq; ``notifications.read`` frames
reach every open connection of the user, outside the seq order. Only the handshake differs:
the reader is the signed-in user (session cookie) or the owner of the
``Authorization: Bearer <token>`` sent with it; anonymous handshakes and bad tokens are refused.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from channels.db import database_sync_to_async

from notifications.consumers import FeedConsumer, stream_format
from notifications.session_watch import CLOSE_SESSION_ENDED, credential_watch_start, session_watch_start
from notifications.streams import UserKind, user_stream


def bearer_secret(scope: Mapping[str, Any]) -> str | None:
    """Return the token of an ``Authorization: Bearer`` handshake header, "" if malformed, None if absent."""
    values: list[bytes] = [value for name, value in scope.get("headers", []) if name.lower() == b"authorization"]
    if not values:
        return None
    scheme, _, secret = values[0].decode("latin-1").strip().partition(" ")
    if len(values) > 1 or scheme.lower() != "bearer":
        return ""
    return secret.strip()


@database_sync_to_async
def token_user_id(*, secret: str) -> int | None:
    """Return the id of the active user this API token belongs to, or None."""
    from feed.auth import api_token_find

    token = api_token_find(secret=secret) if secret else None
    return None if token is None else token.user_id


class NotificationConsumer(FeedConsumer):
    async def connect(self) -> None:
        mode = stream_format(self.scope)
        user_id, by_session = None, False
        secret = bearer_secret(self.scope)
        if mode is not None and UserKind().available():
            if secret is not None:
                user_id = await token_user_id(secret=secret)  # a bad token is refused, never anonymous
            else:
                user = self.scope.get("user")
                if user is not None and user.is_authenticated:
                    user_id, by_session = user.pk, True
        if user_id is None:
            await self.close()  # before accept: the handshake is refused (HTTP 403)
            return
        if not await self.start_stream(user_stream(user_id), json_mode=mode == "json"):
            return
        # The stream ends when the session or the token that opened it does (signed out, revoked).
        conn = self.conn
        assert conn is not None  # set by start_stream
        if by_session:
            self.session_watch = session_watch_start(
                scope=self.scope, feed_id=None, on_ended=lambda: conn.close(CLOSE_SESSION_ENDED)
            )
        else:
            self.session_watch = credential_watch_start(
                still_valid=lambda: _token_still_valid(secret or "", user_id), on_ended=lambda: conn.close(CLOSE_SESSION_ENDED)
            )


async def _token_still_valid(secret: str, user_id: int) -> bool:
    return await token_user_id(secret=secret) == user_id
