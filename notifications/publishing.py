"""Publishing events to the channel layer. Only feed.services calls this, on commit."""
from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from asgiref.sync import SyncToAsync, async_to_sync
from channels.layers import get_channel_layer

from feed.models import Comment
from notifications.conf import live_settings
from notifications.events import comment_created_event, feed_group_name, user_group_name

logger = logging.getLogger(__name__)

# While the layer is failing, posts skip publishing until this time.monotonic() value.
_skip_until = 0.0
# Sends scheduled on the server's event loop and not finished yet (a strong reference each).
_in_flight: set[asyncio.Task[None]] = set()
# Beyond this many unfinished sends (a Redis that stopped answering), posts skip publishing.
MAX_IN_FLIGHT = 1000


def publish_comment_created(comment: Comment) -> None:
    """Send the comment's event to its feed's group; log and carry on if the layer is down.

    Readers never depend on this arriving: they fill gaps from the database. In a server
    (daphne) the send is scheduled on the server's event loop and the post does not wait for
    it; elsewhere (management commands, tests) it is sent before returning. Either way the
    send is bounded by ``layer_timeout``, a failure is logged, and after a failure posts skip
    publishing for ``publish_backoff`` seconds.
    """
    layer = get_channel_layer()
    if layer is None:
        return
    conf = live_settings()
    if time.monotonic() < _skip_until:
        logger.debug("Not publishing comment %s of feed %s: the layer failed recently", comment.seq, comment.feed_id)
        return
    # Rendered here, in the request's thread: the event loop never touches the database.
    event = comment_created_event(comment)
    send = _Send(layer, feed_group_name(comment.feed_id), event, conf, seq=comment.seq, feed_id=comment.feed_id)
    loop = _server_loop()
    if loop is None:
        try:
            async_to_sync(send.run)()
        except Exception:  # run() logs its own failures; this is async_to_sync failing
            logger.warning("Could not publish comment %s of feed %s", comment.seq, comment.feed_id, exc_info=True)
        return
    loop.call_soon_threadsafe(send.schedule)


def _server_loop() -> asyncio.AbstractEventLoop | None:
    """Return the running event loop of the ASGI server this request runs in, if any."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        pass
    # A sync view runs in a thread that asgiref's SyncToAsync marks with the server's loop.
    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    if loop is None or getattr(SyncToAsync.threadlocal, "main_event_loop_pid", None) != os.getpid():
        return None
    return loop if loop.is_running() and not loop.is_closed() else None


class _Send:
    """One group_send, bounded by the layer timeout; a failure is logged and starts the backoff."""

    def __init__(
        self, layer: Any, group: str, event: dict[str, Any], conf: Any, *, seq: int, feed_id: int
    ) -> None:
        self.layer = layer
        self.group = group
        self.event = event
        self.conf = conf
        self.seq = seq
        self.feed_id = feed_id

    def schedule(self) -> None:
        """Start the send on the running loop (called there), unless too many are unfinished."""
        if len(_in_flight) >= MAX_IN_FLIGHT:
            self._failed(f"{len(_in_flight)} earlier sends have not finished", exc_info=False)
            return
        task = asyncio.ensure_future(self.run())
        _in_flight.add(task)
        task.add_done_callback(_in_flight.discard)

    async def run(self) -> None:
        try:
            await asyncio.wait_for(self.layer.group_send(self.group, self.event), self.conf.layer_timeout)
        except Exception:
            self._failed("the channel layer failed", exc_info=True)

    def _failed(self, why: str, *, exc_info: bool) -> None:
        global _skip_until
        _skip_until = time.monotonic() + self.conf.publish_backoff
        logger.warning(
            "Could not publish comment %s of feed %s (%s); readers will catch up from the database",
            self.seq,
            self.feed_id,
            why,
            exc_info=exc_info,
        )


def publish_user_event(user_id: int, event: dict[str, Any]) -> None:
    """Send a notification event to the user's group, guarded like publish_comment_created.

    Bounded by ``layer_timeout``, logged and skipped on failure: readers catch up from the
    database (GET /api/notifications/?after=<seq>).
    """
    layer = get_channel_layer()
    if layer is None or time.monotonic() < _skip_until:
        return
    seq = int(event.get("seq") or event.get("up_to") or 0)
    # _Send's log line names a feed; here the id is the user's (its group says so).
    send = _Send(layer, user_group_name(user_id), event, live_settings(), seq=seq, feed_id=user_id)
    loop = _server_loop()
    if loop is None:
        try:
            async_to_sync(send.run)()
        except Exception:
            logger.warning("Could not publish %s to user %s", event.get("type"), user_id, exc_info=True)
        return
    loop.call_soon_threadsafe(send.schedule)
