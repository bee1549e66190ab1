"""Members-only streams last only as long as the reader's session.

A WebSocket is authenticated once, at the handshake. For a members-only feed the consumer
also re-reads the reader's session every ``settings.WS_SESSION_CHECK_INTERVAL`` seconds and
closes the socket with CLOSE_SESSION_ENDED once the session is gone: signed out, expired,
flushed by a password change, or the user deactivated.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from importlib import import_module
from types import SimpleNamespace
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

logger = logging.getLogger(__name__)

CLOSE_SESSION_ENDED = 4401  # the session that opened a members-only stream has ended


@database_sync_to_async
def session_user_valid(*, session_key: str | None, user_pk: Any) -> bool:
    """Return whether this session still signs in the user with this pk (read afresh from the store)."""
    from django.contrib.auth import get_user

    if not session_key:
        return False
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    # get_user needs only `.session`; it checks the backend, is_active and the password hash.
    user = get_user(SimpleNamespace(session=store))  # type: ignore[arg-type]
    return bool(user.is_authenticated and user.pk == user_pk)


def session_watch_start(*, scope: dict[str, Any], on_ended: Callable[[], None]) -> asyncio.Task[None] | None:
    """Start re-checking the scope's session in the background; call `on_ended` once it ends.

    Return the task (cancel it when the socket closes), or None if nobody is signed in.
    """
    user = scope.get("user")
    session = scope.get("session")
    if user is None or not user.is_authenticated or session is None:
        return None
    session_key = session.session_key
    return credential_watch_start(
        still_valid=lambda: session_user_valid(session_key=session_key, user_pk=user.pk), on_ended=on_ended
    )


def credential_watch_start(
    *, still_valid: Callable[[], Awaitable[bool]], on_ended: Callable[[], None]
) -> asyncio.Task[None]:
    """Re-check a stream's credentials (a session, an API token) every WS_SESSION_CHECK_INTERVAL
    seconds in the background; call `on_ended` once `still_valid()` answers False."""
    return asyncio.ensure_future(
        _watch(still_valid=still_valid, interval=float(settings.WS_SESSION_CHECK_INTERVAL), on_ended=on_ended)
    )


async def _watch(*, still_valid: Callable[[], Awaitable[bool]], interval: float, on_ended: Callable[[], None]) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            valid = await still_valid()
        except Exception:  # the database is away: keep the reader, check again next time
            logger.warning("Could not re-check a WebSocket session", exc_info=True)
            continue
        if not valid:
            on_ended()
            return
