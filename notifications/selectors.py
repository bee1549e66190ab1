"""Reads of a person's notifications, shared by the API, the page, the header and the stream.

A notification shows only while its user may still read its feed (feed_check_can_read,
the one rule for reading): access lost later hides that feed's notifications.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Subquery

from feed.models import Feed
from feed.services import feed_readable_filter
from notifications.models import Notification, NotificationCounter

if TYPE_CHECKING:
    from django.contrib.auth.models import User

MAX_LIMIT = 200


@dataclass(frozen=True)
class NotificationSummary:
    unread: int
    last_seq: int


def _readable_feeds(user: User) -> QuerySet[Feed, Any]:
    """The feeds the user may read (feed_readable_filter: the rule feed_check_can_read applies), as a subquery."""
    return Feed.objects.filter(feed_readable_filter(user=user)).values("pk")


def _visible(user: User) -> QuerySet[Notification]:
    return Notification.objects.filter(user=user, feed_id__in=_readable_feeds(user))


def _with_comment(queryset: QuerySet[Notification]) -> QuerySet[Notification]:
    return queryset.select_related("feed", "comment", "comment__feed", "comment__user", "comment__reply_to")


def notifications_after(*, user: User, after_seq: int, limit: int = 50) -> list[Notification]:
    """Return up to `limit` of the user's notifications with seq > after_seq, in ascending seq."""
    limit = max(1, min(limit, MAX_LIMIT))
    notifications = list(_with_comment(_visible(user).filter(seq__gt=after_seq)).order_by("seq")[:limit])
    for notification in notifications:
        notification.user = user  # theirs: rendering them (unread counts) needs no query per row
    return notifications


def notifications_latest(*, user: User, limit: int = 50) -> list[Notification]:
    """Return the user's newest `limit` notifications, newest first."""
    return list(_with_comment(_visible(user)).order_by("-seq")[: max(1, min(limit, MAX_LIMIT))])


def notifications_unread_count(*, user: User) -> int:
    """Return how many of the user's notifications are unread.

    One query, the feeds the user may read a subquery of it.
    """
    return _visible(user).filter(read=False).count()


def _visible_to_its_user() -> Q:
    """The condition on Notification rows that their own user may see them, for many users at once:
    feed_readable_filter's rule with the user taken from each row."""
    membership = Feed.members.through.objects.filter(feed_id=OuterRef("feed_id"), user_id=OuterRef("user_id"))
    member_or_staff = Q(Q(user__is_staff=True) | Q(Exists(membership)))
    return Q(Q(feed__allow_anonymous=True) | Q(Q(user__is_active=True) & member_or_staff))


def notifications_unread_counts(*, users: list[User]) -> dict[int, int]:
    """Return {user id: notifications_unread_count(user=user)} for these users, in one grouped query."""
    return notifications_unread_by_user(user_ids=[user.pk for user in users])


def _visible_sql(join: str = "JOIN") -> tuple[str, str, list[bool]]:
    """Return (joins, condition, params): _visible_to_its_user() in SQL, for notifications aliased `n`
    (feeds `f` and users `u` joined). Written out: it runs inside the comment's write transaction
    and on every check of the streams, where the ORM's building of the query took longer than the
    query itself. tests.test_notification_publish_cost and tests.test_notifications hold them equal."""
    quote = connection.ops.quote_name
    membership = Feed.members.through._meta
    notification, feed, user = Notification._meta, Feed._meta, get_user_model()._meta
    n_user = quote(notification.get_field("user").column)
    n_feed = quote(notification.get_field("feed").column)
    joins = (
        f" {join} {quote(feed.db_table)} f ON f.{quote(feed.pk.column)} = n.{n_feed}"
        f" {join} {quote(user.db_table)} u ON u.{quote(user.pk.column)} = n.{n_user}"
    )
    condition = (
        f"(f.{quote('allow_anonymous')} = %s OR (u.{quote('is_active')} = %s AND (u.{quote('is_staff')} = %s"
        f" OR EXISTS (SELECT 1 FROM {quote(membership.db_table)} m WHERE m.{quote(membership.get_field('feed').column)}"
        f" = n.{n_feed} AND m.{quote(membership.get_field('user').column)} = n.{n_user}))))"
    )
    return joins, condition, [True, True, True]


def notifications_unread_by_user(*, user_ids: list[int]) -> dict[int, int]:
    """Return {user id: how many of their notifications they may see are unread}, every id given, in one query."""
    counts = dict.fromkeys(user_ids, 0)
    if not user_ids:
        return counts
    quote = connection.ops.quote_name
    n_user = quote(Notification._meta.get_field("user").column)
    joins, visible, params = _visible_sql()
    sql = (
        f"SELECT n.{n_user}, COUNT(*) FROM {quote(Notification._meta.db_table)} n{joins}"
        f" WHERE n.{n_user} IN ({', '.join(['%s'] * len(user_ids))}) AND n.{quote('read')} = %s AND {visible}"
        f" GROUP BY n.{n_user}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*user_ids, False, *params])
        counts.update(cursor.fetchall())
    return counts


def notification_last_seq(*, user: User) -> int:
    """Return the seq of the user's newest notification (0 when there is none)."""
    counter = NotificationCounter.objects.filter(user_id=user.pk).values_list("last_seq", flat=True).first()
    return counter or 0


def notification_summary(*, user: User) -> NotificationSummary:
    """Return the user's unread count and newest notification seq."""
    return NotificationSummary(unread=notifications_unread_count(user=user), last_seq=notification_last_seq(user=user))


def notification_stream_after(*, user_id: int, after_seq: int, limit: int) -> list[Notification]:
    """Return an active user's visible notifications after a seq, for their live stream's replays and fills."""
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    return [] if user is None else notifications_after(user=user, after_seq=after_seq, limit=limit)


def notification_last_seqs(*, user_ids: list[int]) -> dict[int, int]:
    """Return {user id: seq of their newest notification they may still see} for these active users
    (absent: none). Their streams deliver no other (notification_stream_after), so a newer one of a
    feed they lost is not a seq the stream lacks.

    One query when each user's newest notification is visible (the usual case), and one more for
    the users whose newest is not.
    """
    if not user_ids:
        return {}
    quote = connection.ops.quote_name
    counter, notification = NotificationCounter._meta, Notification._meta
    c_user, n_user = quote(counter.get_field("user").column), quote(notification.get_field("user").column)
    joins, visible, params = _visible_sql("LEFT JOIN")
    sql = (
        f"SELECT c.{c_user}, c.{quote('last_seq')}, u.{quote('is_active')} = %s AND {visible}"
        f" FROM {quote(counter.db_table)} c LEFT JOIN {quote(notification.db_table)} n"
        f" ON n.{n_user} = c.{c_user} AND n.{quote('seq')} = c.{quote('last_seq')}{joins}"
        f" WHERE c.{c_user} IN ({', '.join(['%s'] * len(user_ids))})"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [True, *params, *user_ids])
        rows = cursor.fetchall()
    seqs = {user_id: last_seq for user_id, last_seq, shown in rows if shown}
    hidden = [user_id for user_id, _, shown in rows if not shown]
    if hidden:
        newest = (
            Notification.objects.filter(_visible_to_its_user(), user_id=OuterRef("user_id"), user__is_active=True)
            .order_by("-seq")
            .values("seq")[:1]
        )
        others = NotificationCounter.objects.filter(user_id__in=hidden).annotate(visible=Subquery(newest))
        seqs.update((user_id, seq) for user_id, seq in others.values_list("user_id", "visible") if seq is not None)
    return seqs


def notification_header_summary(*, user: User) -> NotificationSummary:
    """Return what every page's header shows: the unread count and the newest seq to resume after.

    One query when nothing is unread (the newest seq and whether any is unread, together);
    the count only when some are. The seq is read first, so a notification saved meanwhile
    is above it and reaches the page through the live stream.
    """
    row = (
        NotificationCounter.objects.filter(user_id=user.pk)
        .annotate(any_unread=Exists(Notification.objects.filter(user_id=OuterRef("user_id"), read=False)))
        .values_list("last_seq", "any_unread")
        .first()
    )
    if row is None:
        return NotificationSummary(unread=0, last_seq=0)
    last_seq, any_unread = row
    return NotificationSummary(unread=notifications_unread_count(user=user) if any_unread else 0, last_seq=last_seq)
