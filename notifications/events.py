"""Event payloads, rendered once at publish time and shared by every reader."""
from __future__ import annotations

import json
import time
from typing import Any

from feed.models import Comment, Event
from feed.rendering import EVENT_VERSION, comment_as_dict, event_as_dict, render_comment
from notifications.models import Notification


def feed_group_name(feed_id: int) -> str:
    """Return the channel-layer group that carries a feed's events."""
    return f"feed.{feed_id}"


# The channel-layer group of every person's notification events (see notifications.streams.UserKind).
NOTIFICATIONS_GROUP = "notifications"


def user_group_name(user_id: int) -> str:
    """Return the channel-layer group that carries a person's notification events: one for everybody,
    each event naming its `user_id`, so one send carries a comment's notifications of everybody."""
    return NOTIFICATIONS_GROUP


def html_frame(article_html: str) -> str:
    """Return the WebSocket frame that htmx appends to #comments (an out-of-band swap)."""
    return f'<div id="comments" hx-swap-oob="beforeend">{article_html}</div>'


def comment_created_event(comment: Comment) -> dict[str, Any]:
    """Return the channel-layer message for a new comment, with both frames pre-rendered."""
    envelope = {
        "type": "comment.created",
        "v": EVENT_VERSION,
        "feed": comment.feed.slug,
        "seq": comment.seq,
        "data": comment_as_dict(comment),
    }
    return {
        "type": "comment.created",
        "v": EVENT_VERSION,
        "feed_id": comment.feed_id,
        "seq": comment.seq,
        "json": json.dumps(envelope, ensure_ascii=False, separators=(",", ":")),
        "html": html_frame(render_comment(comment)),
        # Rendered on commit: the delivery-time metric measures from here to the socket write.
        "committed_at": time.time(),
    }


def deletion_frame(*, comment_id: int, seq: int) -> str:
    """Return the WebSocket frame that removes #comment-<id> from the page (an out-of-band delete).

    The seq is in `data-deleted-seq`, not `data-seq`: the page counts only shown comments.
    """
    return f'<article id="comment-{comment_id}" data-deleted-seq="{seq}" hx-swap-oob="delete"></article>'


def comment_deleted_event(event: Event) -> dict[str, Any]:
    """Return the channel-layer message for a comment's removal (event kind comment.deleted)."""
    return {
        "type": "comment.deleted",
        "v": EVENT_VERSION,
        "feed_id": event.feed_id,
        "seq": event.seq,
        "json": json.dumps(event_as_dict(event), separators=(",", ":")),
        "html": deletion_frame(comment_id=event.comment_id, seq=event.seq),
    }


def feed_event_message(event: Event) -> dict[str, Any]:
    """Return the channel-layer message of any logged feed event, as its publish sent it.

    A replayed comment.created of a comment removed since carries an empty body and
    `deleted: true` (its row is blanked).
    """
    if event.kind == Event.Kind.COMMENT_DELETED:
        return comment_deleted_event(event)
    return comment_created_event(event.comment)


# --- A person's notifications ---------------------------------------------------


def notification_created_event(notification: Notification) -> dict[str, Any]:
    """Return the channel-layer message for a new notification, with both frames pre-rendered.

    `html` updates the header badge and prepends the item to a notification list, both as
    out-of-band swaps; `unread` is the count when it was rendered.
    """
    return notification_created_events([notification])[0]


def notification_created_events(notifications: list[Notification]) -> list[dict[str, Any]]:
    """Return notification_created_event() of each notification, in order, with fewer queries.

    The notifications one comment causes (one per person) are rendered together: the unread
    counts of all their users come from one query, the comment's JSON is built once, and a
    badge is rendered once per count. Each event is still rendered once, at publish time.
    """
    from notifications.rendering import notification_as_dict, render_notification
    from notifications.selectors import notifications_unread_counts

    # Counted at their commit (notifications_create_for_comment), else now (a fill or a replay).
    known = [getattr(n, "unread_at_commit", None) for n in notifications]
    if None in known:
        unread_by_user = notifications_unread_counts(users=[n.user for n in notifications])
        known = [unread_by_user[n.user_id] for n in notifications]
    committed_at = time.time()
    comments: dict[int, dict[str, Any]] = {}
    badges: dict[int, str] = {}
    shared: dict[tuple[Any, ...], tuple[str, ...]] = {}
    events = []
    for notification, unread in zip(notifications, known):
        comment = comments.get(notification.comment_id)
        if comment is None:
            comment = comments[notification.comment_id] = comment_as_dict(notification.comment)
        envelope = {
            "type": "notification.created",
            "v": EVENT_VERSION,
            "seq": notification.seq,
            "data": notification_as_dict(notification, comment=comment),
        }
        assert unread is not None
        badge = badges.get(unread)
        if badge is None:
            badge = badges[unread] = _badge_frame(unread)
        events.append({
            "type": "notification.created",
            "v": EVENT_VERSION,
            "user_id": notification.user_id,
            "seq": notification.seq,
            "unread": unread,
            "json": json.dumps(envelope, ensure_ascii=False, separators=(",", ":")),
            "html": badge
            + f'<ol id="notification-list" hx-swap-oob="afterbegin">{render_notification(notification, shared=shared)}</ol>',
            # Rendered on commit: the hub measures the live path's delay from here (notifications.backstop).
            "committed_at": committed_at,
        })
    return events


def notifications_read_event(*, user: Any, up_to: int, unread: int | None = None, at: int | None = None) -> dict[str, Any]:
    """Return the channel-layer message for notifications marked read up to a seq.

    `unread`: the count as the read left it (else counted now). `at`: the user's newest
    notification seq when it was counted; the hub delivers the frame after that notification's
    (`after_seq`), so a frame counted before the read cannot overwrite the read's count.
    """
    if unread is None:
        from notifications.selectors import notifications_unread_count

        unread = notifications_unread_count(user=user)
    envelope = {"type": "notifications.read", "v": EVENT_VERSION, "up_to": up_to, "unread": unread}
    message = {
        "type": "notifications.read",
        "v": EVENT_VERSION,
        "user_id": user.pk,
        "up_to": up_to,
        "unread": unread,
        "json": json.dumps(envelope, separators=(",", ":")),
        "html": _badge_frame(unread),
    }
    if at is not None:
        message["after_seq"] = at
    return message


def _badge_frame(unread: int) -> str:
    from notifications.rendering import render_badge

    return render_badge(unread, oob=True)
