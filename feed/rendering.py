"""The one representation of a comment: its JSON shape and its HTML markup."""
from __future__ import annotations

import functools
from datetime import datetime
from datetime import timezone as dt_timezone
from typing import Any

from django.urls import get_script_prefix, reverse
from django.utils import dateformat
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.utils.timezone import localtime

from feed.mentions import render_body

from feed.models import Comment, Event, Feed

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


def render_comment(
    comment: Comment,
    *,
    on_page: bool = False,
    moderating: bool = False,
    viewer_id: int | None = None,
    csrf_token: str | None = None,
) -> SafeString:
    """Return the comment's <article> markup, every user string escaped.

    The page's list and every live frame show a comment with this markup. It is built here
    rather than in a template because every comment posted is rendered once for its live
    frame, and Django's template engine took ~0.8 ms of CPU for it, more than saving the
    comment.

    Live frames (the default) are rendered once for every reader: their remove action is
    hidden, and static/js/feed.js shows it where the page's viewer may remove (the server
    checks either way). On the page (``on_page``) the action is there only for moderators
    and the comment's own signed-in author, with the page's CSRF token.
    """
    author = escape(comment.author)
    kind = "author-user\">(signed in)" if comment.user_id else "author-guest\">(guest)"
    created_at = localtime(comment.created_at)
    parts = [
        f'<article id="comment-{comment.pk}" class="comment{" comment-removed" if comment.removed else ""}"'
        f' data-seq="{comment.seq}"',
        f' data-user="{escape(comment.user.get_username())}">\n' if comment.user is not None else ">\n",
        f'  <header class="comment-meta"><span class="comment-author">{author}</span> <span class="author-kind {kind}</span>'
        f' <time datetime="{dateformat.format(created_at, "c")}">{escape(dateformat.format(created_at, "M j, H:i"))}</time>'
        f' <span class="comment-seq">#{comment.seq}</span>',
    ]
    if comment.reply_to_id:
        parts.append(
            f'\n    <a class="in-reply-to" href="#comment-{comment.reply_to_id}">'
            f"in reply to {escape(comment.reply_to.author if comment.reply_to else '')}</a>"
        )
    parts.append("</header>\n  ")
    if comment.removed:
        parts.append('<p class="comment-body comment-removed-note">This comment was removed.</p>')
    else:
        page, remove_url = _feed_urls(get_script_prefix(), comment.feed.slug)
        parts.append(
            f'<p class="comment-body">{render_body(comment.body)}</p>\n'
            f'  <div class="comment-actions"><a class="reply-link" href="{page}?reply_to={comment.pk}#comment-form"'
            f' hx-get="{page}?reply_to={comment.pk}" hx-target="#comment-form" hx-swap="outerHTML">'
            f'Reply<span class="visually-hidden"> to {author}</span></a>\n    \n    '
        )
        if not on_page or moderating or (viewer_id and comment.user_id == viewer_id):
            remove = f"{remove_url[0]}{comment.pk}{remove_url[1]}"
            token = (
                f'<input type="hidden" name="csrfmiddlewaretoken" value="{escape(csrf_token)}">'
                if csrf_token and csrf_token != "NOTPROVIDED"
                else ""
            )
            parts.append(
                f'<form class="comment-remove" method="post" action="{remove}" hx-post="{remove}"'
                f' hx-confirm="Remove this comment by {author}? This cannot be undone." hx-target="closest article"'
                f' hx-swap="delete"{"" if on_page else " hidden"}>{token}'
                f'<button type="submit" class="link-button remove-button">'
                f'Remove<span class="visually-hidden"> the comment by {author}</span></button></form>'
            )
        parts.append("</div>")
    parts.append("\n</article>\n")
    return mark_safe("".join(parts))  # every user string above is escaped


@functools.lru_cache(maxsize=1024)
def _feed_urls(script_prefix: str, slug: str) -> tuple[str, tuple[str, str]]:
    """Return a feed's page URL and its comment-removal URL split around the comment's id, escaped.

    Reversing the two took half the CPU of rendering a comment, and they depend only on the
    slug and on the script prefix, which reverse() reads.
    """
    marker = 10**18  # any number: the id is the URL's last number, so the last match is its place
    head, _, tail = reverse("feed:comment_remove", args=[slug, marker]).rpartition(str(marker))
    return escape(Feed(slug=slug).get_absolute_url()), (escape(head), escape(tail))
