"""The one representation of a comment: its JSON shape and its HTML markup."""
from __future__ import annotations

from datetime import datetime
from datetime import timezone as dt_timezone
from typing import Any

from django.template.loader import render_to_string

from feed.models import Comment, Event

# The version of every event envelope (`"v"`), on the WebSocket and in the API's event list.
EVENT_VERSION = 1


def iso_utc(moment: datetime) -> str:
    """Return the time as ISO 8601 in UTC with a `Z`, as every JSON answer writes it."""
    return moment.astimezone(dt_timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def comment_as_dict(comment: Comment) -> dict[str, Any]:
    """Return the comment as the contract's JSON object."""
    return {
        "id": comment.pk,
        "seq": comment.seq,
        "feed": comment.feed.slug,
        "author": comment.author,
        # The signed-in author's username; None for a guest, whose `author` is a display name.
        "user": comment.user.get_username() if comment.user is not None else None,
        # A removed comment's body is blanked in its row too; never shown either way.
        "body": "" if comment.removed else comment.body,
        "reply_to": comment.reply_to_id,
        "created_at": iso_utc(comment.created_at),
        "deleted": comment.removed,
    }


def event_as_dict(event: Event) -> dict[str, Any]:
    """Return a logged feed event as the contract's envelope (as the WebSocket's JSON mode sends it)."""
    deleted = event.kind == Event.Kind.COMMENT_DELETED
    return {
        "type": str(event.kind),
        "v": EVENT_VERSION,
        "feed": event.feed.slug,
        "seq": event.seq,
        "data": {"id": event.comment_id} if deleted else comment_as_dict(event.comment),
    }


def render_comment(comment: Comment) -> str:
    """Return the comment's <article> markup, every user string escaped."""
    return render_to_string("feed/_comment.html", {"comment": comment})
