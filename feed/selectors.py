"""Reads shared by the pages, the API and the WebSocket replay."""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import FilteredRelation, Q, QuerySet
from django.http import Http404
from django.shortcuts import get_object_or_404

from feed.models import Comment, Event, Feed
from feed.services import FEED_NOT_FOUND, feed_check_can_read, feed_readable_filter

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser, User

MAX_LIMIT = 200


def feeds_all() -> QuerySet[Feed]:
    """Return every feed, by slug."""
    return Feed.objects.order_by("slug")


def feeds_readable(*, user: User | AnonymousUser | None) -> QuerySet[Feed]:
    """Return the feeds the user may read, by slug, in one query: others' members-only feeds are left out."""
    return feeds_all().filter(feed_readable_filter(user=user))


def feed_readers_allowed(*, pairs: set[tuple[int, Any]]) -> set[tuple[int, Any]]:
    """Return which (members-only feed id, user pk) pairs may still read, in one query.

    The rule of feed_readable_filter for many readers at once: an active user who is staff
    or a member of the feed. Used by the live streams' access sweep.
    """
    if not pairs:
        return set()
    feed_ids = {feed_id for feed_id, _ in pairs}
    rows = (
        get_user_model()
        ._default_manager.filter(pk__in={user_pk for _, user_pk in pairs}, is_active=True)
        # One row per (user, membership among these feeds), or one row with None if none.
        .annotate(membership=FilteredRelation("feeds", condition=Q(feeds__pk__in=feed_ids)))
        .values_list("pk", "is_staff", "membership__pk")
    )
    allowed: set[tuple[int, Any]] = set()
    staff: set[Any] = set()
    for user_pk, is_staff, feed_id in rows:
        if is_staff:
            staff.add(user_pk)
        elif feed_id is not None:
            allowed.add((feed_id, user_pk))
    return allowed | {(feed_id, user_pk) for feed_id, user_pk in pairs if user_pk in staff}


def feed_get(*, slug: str) -> Feed:
    """Return the feed with this slug, or raise Http404.

    Every request about a feed (each post, each socket) starts here, so the ORM compiles its
    statement once: building and compiling the query anew took more CPU than the database
    took to answer it.
    """
    sql, fields = _feed_by_slug_query()
    with connection.cursor() as cursor:
        cursor.execute(sql, [slug])
        row = cursor.fetchone()
    if row is None:
        raise Http404(FEED_NOT_FOUND)
    return Feed.from_db(connection.alias, fields, row)


@functools.cache
def _feed_by_slug_query() -> tuple[str, list[str]]:
    """Return the statement (slug as its one parameter) and the fields it selects, in order."""
    sql, _ = Feed.objects.filter(slug="").query.sql_with_params()  # selects every concrete field
    return sql, [field.attname for field in Feed._meta.concrete_fields]


def feed_get_readable(*, slug: str, user: User | AnonymousUser | None) -> Feed:
    """Return the feed with this slug if the user may read it; raise Http404 alike when unknown or hidden."""
    feed = feed_get(slug=slug)
    feed_check_can_read(feed=feed, user=user)
    return feed


def feed_last_seqs(*, feed_ids: list[int]) -> dict[int, int]:
    """Return {feed id: seq of its last committed event} for the given feeds."""
    return dict(Feed.objects.filter(pk__in=feed_ids).values_list("pk", "last_seq"))


def comment_in_feed(*, feed: Feed, comment_id: int | None) -> Comment | None:
    """Return the comment with this id if it belongs to the feed, else None."""
    if comment_id is None:
        return None
    return _comments(feed).filter(pk=comment_id).first()


def comment_get(*, feed: Feed, comment_id: int) -> Comment:
    """Return the feed's comment with this id, removed or not, or raise Http404."""
    return get_object_or_404(Comment.objects.select_related("feed", "user", "reply_to"), pk=comment_id, feed_id=feed.pk)


def _comments(feed: Feed | int) -> QuerySet[Comment]:
    """Return the feed's comments that are shown: removed ones are left out."""
    feed_id = feed if isinstance(feed, int) else feed.pk
    return Comment.objects.filter(feed_id=feed_id, removed_at__isnull=True).select_related("feed", "user", "reply_to")


def events_after(*, feed: Feed | int, after_seq: int, limit: int = 50) -> list[Event]:
    """Return up to `limit` events of the feed with seq > after_seq, in ascending seq (no gaps).

    Removals included; each event's comment is loaded (blanked when removed since).
    """
    feed_id = feed if isinstance(feed, int) else feed.pk
    limit = max(1, min(limit, MAX_LIMIT))
    queryset = Event.objects.filter(feed_id=feed_id, seq__gt=after_seq).select_related(
        "feed", "comment", "comment__feed", "comment__user", "comment__reply_to"
    )
    return list(queryset.order_by("seq")[:limit])


def comments_after(*, feed: Feed | int, after_seq: int, limit: int = 50) -> list[Comment]:
    """Return up to `limit` shown comments with seq > after_seq, in ascending seq (removed ones left out)."""
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
