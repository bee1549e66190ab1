"""Publishing events to the channel layer. Only the services (feed.services, feed.moderation) call this, on commit."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from feed.models import Comment, Event
from livefeed.metrics import EVENTS_PUBLISHED_TOTAL, PUBLISH_FAILURES_TOTAL
from notifications.conf import live_settings
from notifications.events import comment_created_event, comment_deleted_event, feed_group_name, user_group_name
from notifications.server_adapter import server_event_loop
from notifications.streams import BATCH_TYPE

logger = logging.getLogger(__name__)


@contextmanager
def never_failing_the_write(what: str) -> Iterator[None]:
    """Run after-commit work (rendering and publishing events) without ever raising.

    It runs in the request after the change is saved: an exception would answer the saved
    change with a 500, and a client retrying without an Idempotency-Key would make it twice.
    A failure is logged and counted; readers get the change from the database (the backstop).
    """
    try:
        yield
    except Exception:
        PUBLISH_FAILURES_TOTAL.inc()
        logger.exception("Could not publish %s; readers get it from the database", what)

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
    publishing for ``publish_backoff`` seconds. Events sent are counted in
    ``livefeed_events_published_total``, events not sent (failed or skipped) in
    ``livefeed_publish_failures_total``. Raises only if the event cannot be rendered; the
    caller (feed.services, after commit) logs and counts that.
    """
    if _skipping(f"comment {comment.seq} of feed {comment.feed_id}"):
        return
    # Rendered here, in the request's thread: the event loop never touches the database.
    _send(feed_group_name(comment.feed_id), comment_created_event(comment), f"comment {comment.seq} of feed {comment.feed_id}")


def publish_comment_deleted(event: Event) -> None:
    """Send a comment's removal (a logged feed event) to its feed's group, guarded like publish_comment_created."""
    what = f"removal {event.seq} of feed {event.feed_id}"
    if _skipping(what):
        return
    _send(feed_group_name(event.feed_id), comment_deleted_event(event), what)


def publish_user_event(user_id: int, event: dict[str, Any]) -> None:
    """Send a notification event to the user's group, guarded like publish_comment_created.

    Readers catch up from the database (GET /api/notifications/?after=<seq>) when it is lost.
    """
    what = f"{event.get('type')} {event.get('seq') or event.get('up_to')} of user {user_id}"
    if _skipping(what):
        return
    _send(user_group_name(user_id), event, what)


def publish_user_events(events: list[dict[str, Any]]) -> None:
    """Send several people's notification events in one layer message, guarded like publish_comment_created."""
    if not events:
        return
    if len(events) == 1:
        publish_user_event(events[0]["user_id"], events[0])
        return
    what = f"{len(events)} notification events"
    if _skipping(what):
        return
    # Every person's events share one group (notifications.streams.UserKind).
    _send(user_group_name(events[0]["user_id"]), {"type": BATCH_TYPE, "events": events}, what)


def _skipping(what: str) -> bool:
    """Return True (counted as a failure) while posts skip publishing after a failure, or with no layer."""
    if get_channel_layer() is None:
        return True
    if time.monotonic() < _skip_until:
        PUBLISH_FAILURES_TOTAL.inc()
        logger.debug("Not publishing %s: the layer failed recently", what)
        return True
    return False


def _send(group: str, event: dict[str, Any], what: str) -> None:
    """Schedule the send on the server's event loop, or send it now outside a server."""
    send = _Send(get_channel_layer(), group, event, live_settings(), what=what)
    loop = server_event_loop()
    if loop is None:
        try:
            async_to_sync(send.run)()
        except Exception:  # run() logs its own failures; this is async_to_sync failing
            PUBLISH_FAILURES_TOTAL.inc()
            logger.warning("Could not publish %s", what, exc_info=True)
        return
    loop.call_soon_threadsafe(send.schedule)


class _Send:
    """One group_send, bounded by the layer timeout; a failure is logged and starts the backoff."""

    def __init__(self, layer: Any, group: str, event: dict[str, Any], conf: Any, *, what: str) -> None:
        self.layer = layer
        self.group = group
        self.event = event
        self.conf = conf
        self.what = what

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
            async with asyncio.timeout(self.conf.layer_timeout):  # unlike wait_for, no task of its own
                await self.layer.group_send(self.group, self.event)
        except Exception:
            self._failed("the channel layer failed", exc_info=True)
        else:
            EVENTS_PUBLISHED_TOTAL.inc()

    def _failed(self, why: str, *, exc_info: bool) -> None:
        global _skip_until
        PUBLISH_FAILURES_TOTAL.inc()
        _skip_until = time.monotonic() + self.conf.publish_backoff
        logger.warning(
            "Could not publish %s (%s); readers will catch up from the database",
            self.what,
            why,
            exc_info=exc_info,
        )
