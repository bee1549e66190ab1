"""Writes of a person's notifications: creating them with a comment, and marking them read."""
from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from django.db import connection, transaction
from django.utils import timezone

from feed.mentions import mentioned_users
from feed.models import Comment, Feed
from feed.services import ReadingNotAllowed, feed_check_can_read
from notifications.models import Notification, NotificationCounter
from notifications.selectors import notification_last_seqs, notifications_unread_by_user

if TYPE_CHECKING:
    from django.contrib.auth.models import User

# One comment notifies at most this many people.
MAX_NOTIFIED_PER_COMMENT = 20


def _recipients(*, comment: Comment, feed: Feed) -> list[tuple[User, str]]:
    """Return (user, kind) for each person the comment should notify, replied-to author first.

    Never the comment's own author; once per person (a reply that also mentions is a reply);
    only active users who may read the feed; at most MAX_NOTIFIED_PER_COMMENT.
    """
    candidates: dict[int, tuple[User, str]] = {}
    parent = comment.reply_to
    if parent is not None and parent.user is not None and parent.user.is_active:
        candidates[parent.user.pk] = (parent.user, Notification.Kind.REPLY)
    for user in mentioned_users(comment.body):
        candidates.setdefault(user.pk, (user, Notification.Kind.MENTION))
    if comment.user_id is not None:
        candidates.pop(comment.user_id, None)
    chosen: list[tuple[User, str]] = []
    for user, kind in candidates.values():
        try:
            feed_check_can_read(feed=feed, user=user)
        except ReadingNotAllowed:
            continue
        chosen.append((user, kind))
        if len(chosen) == MAX_NOTIFIED_PER_COMMENT:
            break
    return chosen


def comment_notifies_nobody(*, body: str, reply_to_id: int | None) -> bool:
    """Return whether a comment certainly notifies nobody: it answers no comment and has no `@`."""
    return reply_to_id is None and "@" not in body


def notifications_create_for_comment(*, comment: Comment) -> list[Notification]:
    """Save the notifications a new comment causes, each with its user's next seq.

    Must be called inside the transaction that saves the comment, so that the comment and
    its notifications commit together or not at all. The users' counter rows are locked in
    user-id order, so concurrent comments notifying the same people cannot deadlock. Each
    notification is published to its user once the transaction commits.
    """
    if comment_notifies_nobody(body=comment.body, reply_to_id=comment.reply_to_id):
        return []
    feed = Feed.objects.get(pk=comment.feed_id)
    recipients = sorted(_recipients(comment=comment, feed=feed), key=lambda pair: pair[0].pk)
    if not recipients:
        return []
    user_ids = [user.pk for user, _ in recipients]
    seqs = _counters_bumped(user_ids)
    created_at = timezone.now()  # one instant for all of them (their frames then share its rendering)
    notifications = [
        Notification(user=user, seq=seqs[user.pk], kind=kind, comment=comment, feed=feed, created_at=created_at)
        for user, kind in recipients
    ]
    Notification.objects.bulk_create(notifications)
    # Each frame's unread count is the one at this commit, counted under the counter locks (which
    # marking read takes too): a count read after commit could include later notifications or
    # miss a read, and a frame delivered in seq order would then show a count out of step.
    unread = notifications_unread_by_user(user_ids=user_ids)
    for notification in notifications:
        notification.unread_at_commit = unread[notification.user_id]  # type: ignore[attr-defined]
    # One callback for all of them: their events are rendered together (one unread-count query).
    transaction.on_commit(partial(_publish_created, notifications))
    return notifications


def _counters_bumped(user_ids: list[int]) -> dict[int, int]:
    """Add one to each user's counter (made at 1 if missing) and return {user id: their new last seq}.

    ``user_ids`` ascending: the rows are locked in that order, so concurrent comments notifying
    the same people cannot deadlock. One INSERT … ON CONFLICT … RETURNING statement (SQLite has
    RETURNING or the server refuses to start, livefeed.E026), which keeps the comment's write
    transaction, and the lock it holds, short.
    """
    quote = connection.ops.quote_name
    table = quote(NotificationCounter._meta.db_table)
    user_column = quote(NotificationCounter._meta.get_field("user").column)
    seq_column = quote("last_seq")
    sql = (
        f"INSERT INTO {table} ({user_column}, {seq_column}) VALUES {', '.join(['(%s, 1)'] * len(user_ids))}"
        f" ON CONFLICT ({user_column}) DO UPDATE SET {seq_column} = {table}.{seq_column} + 1"
        f" RETURNING {user_column}, {seq_column}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, user_ids)
        return {user_id: seq for user_id, seq in cursor.fetchall()}


def notifications_mark_read(*, user: User, up_to: int) -> int:
    """Mark the user's notifications with seq <= up_to read; return how many changed.

    Publishes a `notifications.read` event to the user once committed.
    """
    with transaction.atomic():
        # The user's counter lock orders this read with their new notifications: its count is
        # the one after every notification up to `at` (the newest their stream shows) and
        # before any later one.
        list(NotificationCounter.objects.select_for_update().filter(user_id=user.pk).values_list("pk"))
        changed = Notification.objects.filter(user=user, seq__lte=up_to, read=False).update(read=True)
        unread = notifications_unread_by_user(user_ids=[user.pk])[user.pk]
        at = notification_last_seqs(user_ids=[user.pk]).get(user.pk, 0)
        transaction.on_commit(lambda: _publish_read(user, up_to, unread=unread, at=at))
    return changed


def _publish_created(notifications: list[Notification]) -> None:
    """Publish a comment's committed notifications; never raise (readers catch up from the database)."""
    from notifications.events import notification_created_events
    from notifications.publishing import never_failing_the_write, publish_user_events

    with never_failing_the_write(f"the {len(notifications)} notification(s) of a comment"):
        publish_user_events(notification_created_events(notifications))


def _publish_read(user: User, up_to: int, *, unread: int, at: int) -> None:
    """Tell the user's open connections what was read; never raise (the change is saved)."""
    from notifications.events import notifications_read_event
    from notifications.publishing import never_failing_the_write, publish_user_event

    with never_failing_the_write(f"notifications of user {user.pk} read up to {up_to}"):
        publish_user_event(user.pk, notifications_read_event(user=user, up_to=up_to, unread=unread, at=at))
