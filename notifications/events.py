"""Event payloads, rendered once at publish time and shared by every reader."""
from __future__ import annotations

import json
import time
from typing import Any

from feed.models import Comment
from feed.rendering import comment_as_dict, render_comment

EVENT_VERSION = 1


def feed_group_name(feed_id: int) -> str:
    """Return the channel-layer group that carries a feed's events."""
    return f"feed.{feed_id}"


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
