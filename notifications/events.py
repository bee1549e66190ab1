"""Event payloads, rendered once at publish time and shared by every reader."""
from __future__ import annotations

import json
from typing import Any

from feed.models import Comment
from feed.rendering import comment_as_dict, render_comment

EVENT_VERSION = 1


def feed_group_name(feed_id: int) -> str:
    """Return the channel-layer group that carries a feed's events."""
    return f"feed.{feed_id}"


def user_group_name(user_id: int) -> str:
    """Return the channel-layer group that carries a person's notification events."""
    return f"user.{user_id}"


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
    }


def notifications_read_event(*, user_id: int, up_to: int, unread: int) -> dict[str, Any]:
    """Return the layer message telling every open connection of a user that notifications were read.

    Not sequenced: the hub writes it to each of the user's connections as it arrives. The HTML
    frame swaps the unread count into the element ``#notifications-unread`` (out of band).
    """
    envelope = {"type": "notifications.read", "v": EVENT_VERSION, "up_to": up_to, "unread": unread}
    return {
        "type": "notifications.read",
        "v": EVENT_VERSION,
        "user_id": user_id,
        "json": json.dumps(envelope, separators=(",", ":")),
        "html": f'<span id="notifications-unread" hx-swap-oob="innerHTML">{int(unread)}</span>',
    }
