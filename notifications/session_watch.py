"""Members-only streams last only as long as the reader's right to read them.

A WebSocket is authenticated once, at the handshake. Each event loop (one per daphne
process) then has one AccessWatcher for all its members-only sockets. Every
``settings.WS_ACCESS_CHECK_INTERVAL`` seconds (1 s) it checks them all at once, in two
queries whatever their number: which of their sessions still exist unexpired, and which of
their users are still active and still members (or staff). Every
``settings.WS_SESSION_CHECK_INTERVAL`` seconds (30 s) each session is also re-read in full
(Django's get_user: the password hash too). A socket that lost its right is closed with
CLOSE_SESSION_ENDED. Only the database is asked, so this holds on every instance even while
Redis is down: signing out on one instance ends that session's streams on all of them.

A resume asks again (``WatchedSocket.recheck``) before replaying anything.

A person's notification socket opened with a session is watched the same way (``feed_id``
None: only the session and the user's being active count); one opened with an API token is
re-checked every ``WS_SESSION_CHECK_INTERVAL`` seconds (``credential_watch_start``).
"""
from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from importlib import import_module
from types import SimpleNamespace
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from feed.selectors import feed_readers_allowed
from notifications.cancellation import raise_if_cancelled

logger = logging.getLogger(__name__)

CLOSE_SESSION_ENDED = 4401  # the session that opened a members-only stream has ended, or its right to read


def session_user_valid_sync(*, session_key: str | None, user_pk: Any) -> bool:
    """Return whether this session still signs in the user with this pk (read afresh from the store)."""
    from django.contrib.auth import get_user

    if not session_key:
        return False
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    # get_user needs only `.session`; it checks the backend, is_active and the password hash.
    user = get_user(SimpleNamespace(session=store))  # type: ignore[arg-type]
    return bool(user.is_authenticated and user.pk == user_pk)


session_user_valid = database_sync_to_async(session_user_valid_sync)


def sessions_alive(session_keys: set[str]) -> set[str]:
    """Return which of these sessions still exist unexpired: one query with a database-backed store."""
    if not session_keys:
        return set()
    store_class = import_module(settings.SESSION_ENGINE).SessionStore
    if hasattr(store_class, "get_model_class"):  # the db and cached_db engines
        model = store_class.get_model_class()
        return set(
            model.objects.filter(session_key__in=session_keys, expire_date__gt=timezone.now()).values_list(
                "session_key", flat=True
            )
        )
    if settings.SESSION_ENGINE.endswith("signed_cookies"):
        return session_keys  # nothing server-side to end; the full check still reads the user
    return {key for key in session_keys if store_class().exists(key)}


@dataclass(eq=False)
class WatchedSocket:
    """One members-only socket: whose it is, which feed, and what to do when the right ends."""

    session_key: str | None  # None: signed in another way (a token): only the user is checked
    user_pk: Any
    feed_id: int | None  # None: a person's notification stream, open to its user alone
    on_ended: Callable[[], None]
    watcher: AccessWatcher
    checked_at: float = field(default_factory=time.monotonic)  # of the last full check
    ended: bool = False

    async def recheck(self) -> bool:
        """Check this socket's right in full now (before a resume); end it and return False if lost."""
        if self.ended:
            return False
        try:
            allowed = await database_sync_to_async(_full_check)(self)
        except Exception:
            # The database is away, as in the sweep: keep the reader (a replay needs the database too).
            logger.warning("Could not re-check a members-only WebSocket before a resume", exc_info=True)
            return True
        self.checked_at = time.monotonic()
        if not allowed:
            self.watcher.end(self)
        return allowed

    def cancel(self) -> None:
        """Stop watching (the socket closed)."""
        self.watcher.discard(self)


def _full_check(watched: WatchedSocket) -> bool:
    if watched.session_key is not None and not session_user_valid_sync(
        session_key=watched.session_key, user_pk=watched.user_pk
    ):
        return False
    if watched.feed_id is None:
        return get_user_model().objects.filter(pk=watched.user_pk, is_active=True).exists()
    return bool(feed_readers_allowed(pairs={(watched.feed_id, watched.user_pk)}))


def _sweep_lost(watched: list[WatchedSocket]) -> set[WatchedSocket]:
    """Return the sockets whose session ended or whose user may no longer read: two or three queries."""
    alive = sessions_alive({w.session_key for w in watched if w.session_key is not None})
    allowed: set[tuple[int | None, Any]] = set(
        feed_readers_allowed(pairs={(w.feed_id, w.user_pk) for w in watched if w.feed_id is not None})
    )
    personal = {w.user_pk for w in watched if w.feed_id is None}
    if personal:
        active = get_user_model().objects.filter(pk__in=personal, is_active=True).values_list("pk", flat=True)
        allowed.update((None, pk) for pk in active)
    return {
        w for w in watched
        if (w.session_key is not None and w.session_key not in alive) or (w.feed_id, w.user_pk) not in allowed
    }


class AccessWatcher:
    """The members-only sockets of one event loop, swept together by one task while there are any."""

    def __init__(self) -> None:
        self.watched: set[WatchedSocket] = set()
        self.task: asyncio.Task[None] | None = None

    def add(self, watched: WatchedSocket) -> None:
        self.watched.add(watched)
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._run())

    def discard(self, watched: WatchedSocket) -> None:
        self.watched.discard(watched)

    def end(self, watched: WatchedSocket) -> None:
        self.discard(watched)
        if not watched.ended:
            watched.ended = True
            watched.on_ended()

    async def _run(self) -> None:
        while self.watched:
            await asyncio.sleep(float(getattr(settings, "WS_ACCESS_CHECK_INTERVAL", 1.0)))
            try:
                await self.sweep()
            except Exception:  # the database is away: keep the readers, check again next time
                logger.warning("Could not re-check members-only WebSockets", exc_info=True)
            raise_if_cancelled()

    async def sweep(self) -> None:
        """Check every watched socket now; a full check for those whose turn it is."""
        watched = list(self.watched)
        if not watched:
            return
        for lost in await database_sync_to_async(_sweep_lost)(watched):
            self.end(lost)
        full_interval = float(settings.WS_SESSION_CHECK_INTERVAL)
        now = time.monotonic()
        due = [w for w in watched if not w.ended and now - w.checked_at >= full_interval]
        if due:
            for lost in await database_sync_to_async(_full_checks_lost)(due):
                self.end(lost)


def _full_checks_lost(due: list[WatchedSocket]) -> list[WatchedSocket]:
    """Return the sockets that fail the full check: one get_user per distinct session, however many sockets."""
    verdicts: dict[tuple[str | None, Any, int | None], bool] = {}
    lost = []
    for watched in due:
        key = (watched.session_key, watched.user_pk, watched.feed_id)
        if key not in verdicts:
            verdicts[key] = _full_check(watched)
        watched.checked_at = time.monotonic()
        if not verdicts[key]:
            lost.append(watched)
    return lost


_watchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AccessWatcher] = weakref.WeakKeyDictionary()


def access_watcher() -> AccessWatcher:
    """Return the running event loop's watcher."""
    loop = asyncio.get_running_loop()
    watcher = _watchers.get(loop)
    if watcher is None:
        watcher = _watchers[loop] = AccessWatcher()
    return watcher


def session_watch_start(
    *, scope: Mapping[str, Any], feed_id: int | None, on_ended: Callable[[], None]
) -> WatchedSocket | None:
    """Watch a members-only socket (or, with feed_id None, a person's notification socket);
    call `on_ended` once its reader's right to read ends.

    Return the handle (`cancel()` it when the socket closes, `await recheck()` before a
    resume), or None if nobody is signed in.
    """
    user = scope.get("user")
    if user is None or not user.is_authenticated:
        return None
    session = scope.get("session")
    session_key = session.session_key if session is not None else None
    watcher = access_watcher()
    watched = WatchedSocket(session_key=session_key, user_pk=user.pk, feed_id=feed_id, on_ended=on_ended, watcher=watcher)
    watcher.add(watched)
    return watched


class CredentialWatch:
    """A stream opened with another credential (an API token), re-checked in the background
    every WS_SESSION_CHECK_INTERVAL seconds and before each resume."""

    def __init__(self, *, still_valid: Callable[[], Awaitable[bool]], on_ended: Callable[[], None]) -> None:
        self.still_valid = still_valid
        self.on_ended = on_ended
        self.ended = False
        self.task = asyncio.ensure_future(self._run(float(settings.WS_SESSION_CHECK_INTERVAL)))

    async def recheck(self) -> bool:
        """Check the credential now; end the stream and return False if it is gone."""
        if self.ended:
            return False
        try:
            valid = await self.still_valid()
        except Exception:  # the database is away: keep the reader, check again next time
            logger.warning("Could not re-check a WebSocket's credential", exc_info=True)
            return True
        if not valid:
            self.ended = True
            self.on_ended()
        return valid

    def cancel(self) -> None:
        """Stop watching (the socket closed)."""
        self.task.cancel()

    async def _run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if not await self.recheck():
                return
            raise_if_cancelled()


def credential_watch_start(
    *, still_valid: Callable[[], Awaitable[bool]], on_ended: Callable[[], None]
) -> CredentialWatch:
    """Watch a stream opened with an API token; call `on_ended` once `still_valid()` answers False."""
    return CredentialWatch(still_valid=still_valid, on_ended=on_ended)
