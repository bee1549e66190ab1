"""Removing comments: the one write path of the API's DELETE, the page's remove action and the admin.

A removal keeps the row for audit (who removed it, when), blanks its body, and is an event of
the feed with the feed's next seq (feed.models.Event), written in the same transaction under
the feed row's lock and published once committed.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import transaction
from django.utils import timezone

from feed.models import Comment, Event, Feed, IdempotencyKey
from feed.rendering import comment_as_dict
from feed.services import FeedAccessDenied, feed_check_can_read

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser, User



class RemovalNotAllowed(FeedAccessDenied):
    """The user may read the feed but not remove this comment: 401 without credentials, 403 with them."""

    def __init__(self, *, authenticated: bool) -> None:
        super().__init__(authenticated=authenticated)
        self.args = (
            "Only staff, the feed's moderators and the comment's author may remove it."
            if authenticated
            else "Sign in to remove comments.",
        )


def feed_is_moderated_by(*, feed: Feed, user: User | AnonymousUser | None) -> bool:
    """Return True if the user may remove any comment of the feed: active staff or one of its moderators."""
    if user is None or not user.is_authenticated or not getattr(user, "is_active", False):
        return False
    if user.is_staff:
        return True
    return Feed.moderators.through.objects.filter(feed_id=feed.pk, user_id=user.pk).exists()


def comment_can_remove(*, comment: Comment, user: User | AnonymousUser | None) -> bool:
    """Return True if the user may remove the comment: staff, the feed's moderators, its signed-in author."""
    if user is None or not user.is_authenticated or not getattr(user, "is_active", False):
        return False
    if comment.user_id is not None and comment.user_id == user.pk:
        return True
    return feed_is_moderated_by(feed=comment.feed, user=user)


def comment_remove(*, comment: Comment, by: User | AnonymousUser | None) -> bool:
    """Remove the comment as `by`; return True if removed now, False if it was removed already.

    Raises ReadingNotAllowed (a 404) when `by` may not read the feed, RemovalNotAllowed when
    they may read it but not remove this comment. Idempotent: removing a removed comment
    changes nothing and publishes nothing (and still needs the permission).
    """
    feed_check_can_read(feed=comment.feed, user=by)
    if not comment_can_remove(comment=comment, user=by):
        raise RemovalNotAllowed(authenticated=by is not None and by.is_authenticated)
    with transaction.atomic():
        # The feed row's lock orders this event with every other change of the feed.
        locked = Feed.objects.select_for_update().only("pk", "slug", "last_seq").get(pk=comment.feed_id)
        current = Comment.objects.select_related("feed", "user", "reply_to").get(pk=comment.pk)
        if current.removed:
            _copy_removal(current, comment)
            return False
        seq = locked.last_seq + 1
        Feed.objects.filter(pk=locked.pk).update(last_seq=seq)
        current.body = ""
        current.removed_at = timezone.now()
        current.removed_by = by  # type: ignore[assignment]
        current.save(update_fields=["body", "removed_at", "removed_by"])
        event = Event.objects.create(feed=locked, seq=seq, kind=Event.Kind.COMMENT_DELETED, comment=current)
        # A stored answer to an idempotent post must not give the body back on a retry.
        IdempotencyKey.objects.filter(comment=current).update(response_body=comment_as_dict(current))
        transaction.on_commit(lambda: _publish(event))
    _copy_removal(current, comment)
    comment.feed.last_seq = seq
    return True


def comments_remove(*, comments: list[Comment], by: User | AnonymousUser | None) -> int:
    """Remove each comment as `by` (one event each); return how many were removed now."""
    return sum(1 for comment in comments if comment_remove(comment=comment, by=by))


def _copy_removal(source: Comment, target: Comment) -> None:
    target.body = source.body
    target.removed_at = source.removed_at
    target.removed_by_id = source.removed_by_id


def _publish(event: Event) -> None:
    """Publish the committed removal; never raise (it is saved: readers get it from the database)."""
    from notifications.publishing import never_failing_the_write, publish_comment_deleted

    with never_failing_the_write(f"the removal {event.seq} of feed {event.feed_id}"):
        publish_comment_deleted(event)