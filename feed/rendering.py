"""The one representation of a comment: its JSON shape and its HTML markup."""
from __future__ import annotations

from datetime import datetime
from datetime import timezone as dt_timezone
from typing import Any

from django.template.loader import render_to_string

from feed.models import Comment


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
        "body": comment.body,
        "reply_to": comment.reply_to_id,
        "created_at": iso_utc(comment.created_at),
    }


def render_comment(comment: Comment) -> str:
    """Return the comment's <article> markup, every user string escaped."""
    return render_to_string("feed/_comment.html", {"comment": comment})
