"""The one representation of a comment: its JSON shape and its HTML markup."""
from __future__ import annotations

from datetime import timezone as dt_timezone
from typing import Any

from django.template.loader import render_to_string

from feed.models import Comment


def comment_as_dict(comment: Comment) -> dict[str, Any]:
    """Return the comment as the contract's JSON object."""
    created = comment.created_at.astimezone(dt_timezone.utc).isoformat(timespec="microseconds")
    return {
        "id": comment.pk,
        "seq": comment.seq,
        "feed": comment.feed.slug,
        "author": comment.author,
        "body": comment.body,
        "created_at": created.replace("+00:00", "Z"),
    }


def render_comment(comment: Comment) -> str:
    """Return the comment's <article> markup, every user string escaped."""
    return render_to_string("feed/_comment.html", {"comment": comment})
