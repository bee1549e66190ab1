"""Reads shared by the pages, the API and the WebSocket replay."""
from __future__ import annotations

from typing import TYPE_CHECKING

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from feed.models import Comment, Feed
from feed.services import ReadingNotAllowed, feed_check_can_read

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

MAX_LIMIT = 200


def feeds_all() -> QuerySet[Feed]:
    """Return every feed, by slug."""
    return Feed.objects.order_by("slug")


def feeds_readable(*, user: AbstractBaseUser | AnonymousUser | None) -> list[Feed]:
    """Return the feeds the user may read, by slug: members-only feeds are hidden from anonymous users."""
    return [feed for feed in feeds_all() if _can_read(feed, user)]


def _can_read(feed: Feed, user: AbstractBaseUser | AnonymousUser | None) -> bool:
    # feed_check_can_read is the one rule for reading, shared with the page, the API and the stream.
    try:
        feed_check_can_read(feed=feed, user=user)
    except ReadingNotAllowed:
        return False
    return True


def feed_get(*, slug: str) -> Feed:
    """Return the feed with this slug, or raise Http404."""
    return get_object_or_404(Feed, slug=slug)


def feed_last_seqs(*, feed_ids: list[int]) -> dict[int, int]:
    """Return {feed id: last committed seq} for the given feeds."""
    return dict(Feed.objects.filter(pk__in=feed_ids).values_list("pk", "last_seq"))


def comment_in_feed(*, feed: Feed, comment_id: int | None) -> Comment | None:
    """Return the comment with this id if it belongs to the feed, else None."""
    if comment_id is None:
        return None
    return _comments(feed).filter(pk=comment_id).first()


def _comments(feed: Feed | int) -> QuerySet[Comment]:
    feed_id = feed if isinstance(feed, int) else feed.pk
    return Comment.objects.filter(feed_id=feed_id).select_related("feed", "user", "reply_to")


def comments_after(*, feed: Feed | int, after_seq: int, limit: int = 50) -> list[Comment]:
    """Return up to `limit` comments with seq > after_seq, in ascending seq."""
    limit = max(1, min(limit, MAX_LIMIT))
    return list(_comments(feed).filter(seq__gt=after_seq).order_by("seq")[:limit])


def comments_latest(*, feed: Feed, limit: int = 50, before_seq: int | None = None) -> list[Comment]:
    """Return the newest `limit` comments (older than before_seq if given), oldest first."""
    queryset = _comments(feed)
    if before_seq is not None:
        queryset = queryset.filter(seq__lt=before_seq)
    newest_first = list(queryset.order_by("-seq")[: max(1, min(limit, MAX_LIMIT))])
    newest_first.reverse()
    return newest_first
