"""The feed socket: /ws/feeds/<slug>/ (HTML frames) and ?format=json (event envelopes).

The consumer only speaks the protocol: it checks the handshake, validates client frames and
hands the reader to the process's StreamHub, which does all delivery. It has no channel-layer
channel of its own, and live frames never pass through it.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.db import reset_queries
from django.http import Http404

from feed.models import Feed
from feed.selectors import feed_get
from feed.services import ReadingNotAllowed, feed_check_can_read
from notifications import live_metrics
from notifications.connection import Connection
from notifications.frames import CLOSE_TOO_MANY_RESUMES, CLOSE_TRY_AGAIN_LATER, BadClientFrame, parse_client_frame
from notifications.hub import get_hub
from notifications.server_adapter import forget_frame, forget_handshake, socket_of
from notifications.streams import StreamKey, feed_stream
from notifications.session_watch import CLOSE_SESSION_ENDED, session_watch_start

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from channels.consumer import _ChannelScope

    from notifications import session_watch as session_watch_module


@database_sync_to_async
def feed_for_reader(*, slug: str, user: Any) -> Feed | None:
    """Return the feed if this user may open its stream (the rule of the page and the API),
    None when it does not exist or is not allowed."""
    handshake_started()
    try:
        feed = feed_get(slug=slug)
        feed_check_can_read(feed=feed, user=user)
    except (Http404, ReadingNotAllowed):
        return None
    return feed


def handshake_started() -> None:
    """A handshake is a request: with DEBUG on, forget the queries logged before it, as Django
    does when an HTTP request starts (otherwise every handshake's queries stay logged)."""
    reset_queries()


def stream_format(scope: Mapping[str, Any]) -> str | None:
    """Return "html" or "json" from the query string, None for anything else."""
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("format", ["html"])
    return values[0] if len(values) == 1 and values[0] in ("html", "json") else None


class FeedConsumer(AsyncWebsocketConsumer):
    # No per-socket channel: an alias that is not configured makes get_channel_layer() return
    # None. The hub holds the process's one channel and joins the feed groups.
    channel_layer_alias = "livefeed.feed-consumers-have-no-channel"
    groups = ()  # type: ignore[assignment]  # none; a tuple every socket shares (Channels gives each its own list)

    # What an open socket keeps of its scope: the rest (headers, cookies, session, user,
    # the server's protocol) is read by connect() only.
    OPEN_SCOPE_KEYS = ("type", "path", "client", "url_route")

    conn: Connection | None = None
    session_watch: session_watch_module.WatchedSocket | session_watch_module.CredentialWatch | None = None

    async def __call__(self, scope: _ChannelScope, receive: Any, send: Any) -> None:
        # AsyncConsumer.__call__ without a channel layer, minus await_many_dispatch: with one
        # source it only adds a task and an asyncio.wait per message (about 1.5 KB per socket).
        self.scope = scope
        del scope  # this frame lives as long as the socket; the scope is trimmed once it is open
        self.channel_layer = None  # type: ignore[assignment]  # as channels does for an alias with no layer; its stub omits None
        self.base_send = send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        finally:
            # Also on cancellation (daphne's shutdown, a stuck close): leave the hub.
            if self.conn is not None:
                self.conn.release()
            live_metrics.ws_closed(self, None)  # no disconnect message (cancelled): counted as 1006
            if self.session_watch is not None:
                self.session_watch.cancel()

    async def dispatch(self, message: dict[str, Any]) -> None:
        # channels 4.2+ awaits aclose_old_connections() (a thread hop) before every handler;
        # this consumer touches the database only through database_sync_to_async, which
        # closes stale connections itself, so the hop is skipped.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_connect(self, message: Any) -> None:
        await super().websocket_connect(message)
        # connect() (this class's or a subclass's) has read what it needs of the handshake.
        scope = cast(Mapping[str, Any], self.scope)
        self.scope = {name: scope[name] for name in self.OPEN_SCOPE_KEYS if name in scope}  # type: ignore[assignment]

    async def connect(self) -> None:
        mode = stream_format(self.scope)
        feed = None
        if mode is not None:
            feed = await feed_for_reader(slug=self.scope["url_route"]["kwargs"]["slug"], user=self.scope.get("user"))
        if feed is None:
            await self.close()  # before accept: the handshake is refused (HTTP 403)
            return
        if not await self.start_stream(feed_stream(feed.pk), json_mode=mode == "json", presence_name=feed.slug):
            return
        if not feed.allow_anonymous:
            # Members-only: the stream ends when the reader's session or right to read does.
            conn = self.conn
            assert conn is not None  # set by start_stream
            self.session_watch = session_watch_start(
                scope=self.scope, feed_id=feed.pk, on_ended=lambda: conn.close(CLOSE_SESSION_ENDED)
            )

    async def start_stream(self, key: StreamKey, *, json_mode: bool, presence_name: str | None = None) -> bool:
        """Accept the handshake and hand the reader of this stream to the hub; False if it was closed."""
        hub = get_hub()
        self.conn = Connection(
            stream=key,
            json_mode=json_mode,
            send=self.base_send,
            protocol=socket_of(self.scope),
            conf=hub.conf,
        )
        await self.accept()
        live_metrics.ws_opened(self, key)
        if self.conn.protocol is not None:
            forget_handshake(self.conn.protocol)
        try:
            await hub.attach(self.conn, presence_name=presence_name)
        except Exception:
            # The database or the layer is away: 1013 makes clients retry (daphne's 1011 would not).
            logger.warning("Could not open %s for a reader; asking it to retry", key, exc_info=True)
            self.conn.close(CLOSE_TRY_AGAIN_LATER)
            return False
        return not self.conn.closed

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        conn = self.conn
        if conn is None or conn.closed:
            return
        if conn.protocol is not None:
            forget_frame(conn.protocol)
        try:
            resume = parse_client_frame(text=text_data, data=bytes_data)
        except BadClientFrame as exc:
            conn.close(exc.code)
            return
        if not conn.allow_resume():
            conn.close(CLOSE_TOO_MANY_RESUMES)
            return
        if self.session_watch is not None and not await self.session_watch.recheck():
            return  # signed out or no longer a member: closed with CLOSE_SESSION_ENDED, nothing replayed
        get_hub().resume(conn, resume.after)

    async def disconnect(self, code: int) -> None:
        live_metrics.ws_closed(self, code)
        if self.conn is not None:
            self.conn.release()
