"""Writes. Every comment is created here, by the form view and the API alike."""
from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.http import Http404
from django.utils import timezone

from feed.comment_rows import (
    REGISTERED_NAME_REFUSED,
    comment_and_event_save,
    is_registered_username,
    saved_in_one_statement,
)
from feed.idempotency import (
    IDEMPOTENCY_KEY_TTL,
    PostResult,
    idempotency_key_check,
    idempotency_keys_purge_expired,
    idempotent_result_find,
    purge_is_due,
    request_fingerprint,
)
from feed.mentions import active_users_named, mention_candidates, mentions_looked_up_once
from feed.models import (
    AUTHOR_MAX_LENGTH,
    BODY_MAX_LENGTH,
    Comment,
    Feed,
    IdempotencyKey,
)
from feed.ratelimit import RateLimitDecision, post_rate_limit_check, rate_limit_refund
from feed.rendering import comment_as_dict
from feed.text import clean_body, clean_name
from livefeed.metrics import COMMENTS_CREATED_TOTAL

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser, User

logger = logging.getLogger(__name__)


class FeedAccessDenied(Exception):
    """The user may not do this on the feed: 401 without credentials, 403 with them."""

    action = "use"

    def __init__(self, *, authenticated: bool) -> None:
        self.status = 403 if authenticated else 401
        self.code = "forbidden" if authenticated else "not_authenticated"
        super().__init__(
            "You are not a member of this feed." if authenticated else f"Sign in to {self.action} this feed."
        )


class PostingNotAllowed(FeedAccessDenied):
    action = "post to"


# The message of get_object_or_404: a hidden feed and an unknown slug answer alike, even in DEBUG pages.
FEED_NOT_FOUND = "No Feed matches the given query."


class ReadingNotAllowed(Http404):
    """The user may not read the feed, so to them it does not exist: every surface answers 404.

    A subclass of Http404, so that a view, the API or the stream that lets it through answers
    exactly as for an unknown slug, and never names the feed.
    """

    def __init__(self) -> None:
        super().__init__(FEED_NOT_FOUND)


def feed_readable_filter(*, user: User | AnonymousUser | None) -> Q:
    """Return the condition on Feed rows that the user may read: the one read rule.

    Open feeds (anonymous posting) are public; a members-only feed is read by its members and
    by staff, and only while their account is active.
    """
    if user is None or not user.is_authenticated or not getattr(user, "is_active", False):
        return Q(allow_anonymous=True)
    if user.is_staff:
        return Q()
    # A subquery, not a join: joining the members would repeat each open feed once per member.
    memberships = Feed.members.through.objects.filter(user_id=user.pk).values("feed_id")
    return Q(allow_anonymous=True) | Q(pk__in=memberships)


def feed_check_can_read(*, feed: Feed, user: User | AnonymousUser | None) -> None:
    """Raise ReadingNotAllowed (a 404) unless the user may read the feed (page, API and stream alike)."""
    if feed.allow_anonymous:
        return  # the rule's first case, without a query
    if not Feed.objects.filter(feed_readable_filter(user=user), pk=feed.pk).exists():
        raise ReadingNotAllowed()


def feed_check_can_post(*, feed: Feed, user: User | AnonymousUser | None) -> None:
    """Raise ReadingNotAllowed (a 404) unless the user may post to the feed.

    Whoever may read a feed may post to it: anyone on an open feed, members and staff on a
    members-only one. Those who may not read it get the answer of an unknown feed, never a
    401/403 that would tell them it exists.
    """
    feed_check_can_read(feed=feed, user=user)


def comment_validate(
    *,
    feed: Feed,
    author: str,
    body: str,
    user: User | AnonymousUser | None = None,
    reply_to: int | None = None,
    registered_name_checked_on_save: bool = False,
) -> tuple[str, str]:
    """Return the cleaned (author, body), or raise ValidationError with field errors.

    A signed-in user's author is their username, whatever they sent; a guest's display name
    may not be a registered username; `reply_to` must be a comment of the same feed. With
    `registered_name_checked_on_save` (the statement that saves the comment refuses such a
    name: comment_and_event_save), a guest's name is looked up here only when the post is
    refused anyway, so that all that is wrong with it is said at once.
    """
    errors: dict[str, list[str]] = {}
    body = clean_body(body or "")
    signed_in = user if user is not None and user.is_authenticated else None
    author = signed_in.get_username() if signed_in is not None else clean_name(author or "")
    if not author:
        errors.setdefault("author", []).append("A display name is required.")
    elif len(author) > AUTHOR_MAX_LENGTH:
        errors.setdefault("author", []).append(f"Use at most {AUTHOR_MAX_LENGTH} characters.")
    if not body:
        errors.setdefault("body", []).append("Write something first.")
    elif len(body) > BODY_MAX_LENGTH:
        errors.setdefault("body", []).append(f"Use at most {BODY_MAX_LENGTH} characters (you used {len(body)}).")
    if reply_to is not None:
        parent = list(Comment.objects.filter(pk=reply_to, feed_id=feed.pk).values_list("removed_at", flat=True)[:1])
        if not parent:
            errors.setdefault("reply_to", []).append("This is not a comment of this feed.")
        elif parent[0] is not None:
            errors.setdefault("reply_to", []).append("That comment was removed: it cannot be answered.")
    if signed_in is None and author and (errors or not registered_name_checked_on_save) and is_registered_username(author):
        errors.setdefault("author", []).insert(0, REGISTERED_NAME_REFUSED)
    if errors:
        raise ValidationError(errors)
    return author, body


def comment_create(
    *,
    feed: Feed,
    author: str,
    body: str,
    user: User | AnonymousUser | None = None,
    reply_to: int | None = None,
) -> Comment:
    """Validate and save a comment with the feed's next seq, and publish it once committed.

    Raises PostingNotAllowed or ValidationError; nothing is saved or published then.
    """
    feed_check_can_post(feed=feed, user=user)
    author, body = comment_validate(
        feed=feed, author=author, body=body, user=user, reply_to=reply_to,
        registered_name_checked_on_save=saved_in_one_statement(),
    )
    with mentions_looked_up_once():  # who is notified, and the live frame's marked mentions: one lookup
        return _comment_insert(feed=feed, author=author, body=body, user=user, reply_to=reply_to)


def _comment_insert(
    *,
    feed: Feed,
    author: str,
    body: str,
    user: User | AnonymousUser | None,
    reply_to: int | None = None,
) -> Comment:
    """Save a checked and cleaned comment with the feed's next seq; publish it once committed.

    The notifications it causes are saved in the same transaction: the comment and all of
    them exist, or none do.
    """
    from notifications.services import comment_notifies_nobody, notifications_create_for_comment

    active_users_named(mention_candidates(body))  # who is mentioned: looked up before the write lock is taken
    # On PostgreSQL a comment that answers and notifies nobody is one statement, which is its own
    # transaction: the feed row's lock, which every post to the feed waits for, is then held only
    # while PostgreSQL runs it, not across round trips and a COMMIT.
    one_statement = saved_in_one_statement() and comment_notifies_nobody(body=body, reply_to_id=reply_to)
    with contextlib.nullcontext() if one_statement else transaction.atomic():
        parent = None
        if reply_to is not None:
            parent = (
                Comment.objects.select_related("user")
                .filter(pk=reply_to, feed_id=feed.pk, removed_at__isnull=True)
                .first()
            )
            if parent is None:  # deleted or removed since it was checked
                raise ValidationError({"reply_to": ["This is not a comment of this feed."]})
        signed_in = user if user is not None and user.is_authenticated else None
        comment = comment_and_event_save(
            feed=feed,
            author=author,
            body=body,
            user=signed_in,
            reply_to=parent,
            refuse_registered_name=signed_in is None and saved_in_one_statement(),
        )
        transaction.on_commit(lambda: _publish(comment))
        notifications_create_for_comment(comment=comment)
    feed.last_seq = comment.seq
    return comment


def _comment_insert_counted(counted: RateLimitDecision, **post: Any) -> Comment:
    """_comment_insert for a post already counted against the rate limit: a post refused while
    it is saved (a registered name, a reply whose parent went) is not counted after all."""
    try:
        return _comment_insert(**post)
    except ValidationError:
        rate_limit_refund(counted)
        raise


def _publish(comment: Comment) -> None:
    """Count the committed comment and publish it; never raise (the comment is saved)."""
    from notifications.publishing import never_failing_the_write, publish_comment_created

    COMMENTS_CREATED_TOTAL.inc()
    with never_failing_the_write(f"comment {comment.seq} of feed {comment.feed_id}"):
        publish_comment_created(comment)


# --- Idempotent posts (the key store: feed.idempotency) ---------------------------

def _comment_insert_once(
    *,
    feed: Feed,
    request_author: str,
    request_body: str,
    author: str,
    body: str,
    user: User | AnonymousUser | None,
    client: str,
    key: str,
    reply_to: int | None = None,
) -> PostResult:
    """Create the comment once per (client, key): a repeat returns the first answer, creating nothing.

    The key's row and the comment are saved in one transaction, and (client, key) is unique
    in the database, so concurrent repeats on different instances create one comment: the
    loser's insert fails (or, on PostgreSQL, waits for the winner and then fails) and it
    returns the winner's answer. The post is counted against the rate limit only once its
    key row is in, so a racing repeat never takes a slot; over the limit, RateLimited rolls
    the key back. Only successes are stored: a post refused before or here leaves no key
    behind and can be retried with the same key. The request's own author and body
    identify it (the key's fingerprint); the cleaned ones are saved.
    """
    try:
        with transaction.atomic():
            # An expired row for this key frees it for a new post.
            IdempotencyKey.objects.filter(
                client=client, key=key, created_at__lt=timezone.now() - IDEMPOTENCY_KEY_TTL
            ).delete()
            record = IdempotencyKey.objects.create(
                client=client,
                key=key,
                fingerprint=request_fingerprint(feed=feed, author=request_author, body=request_body, reply_to=reply_to),
                response_status=201,
                response_body={},
            )
            counted = post_rate_limit_check(client=client)
            comment = _comment_insert_counted(
                counted, feed=feed, author=author, body=body, user=user, reply_to=reply_to
            )
            record.comment = comment
            record.response_body = comment_as_dict(comment)
            record.save(update_fields=["comment", "response_body"])
            if purge_is_due():
                transaction.on_commit(_purge_expired_keys_quietly)
    except IntegrityError:
        found = idempotent_result_find(
            client=client, key=key, feed=feed, author=request_author, body=request_body, reply_to=reply_to
        )
        if found is None:
            raise
        return found
    return PostResult(status=201, body=record.response_body, replayed=False)


def _purge_expired_keys_quietly() -> None:
    # After commit: the post is saved, so a failed purge is logged, never answered with a 500.
    try:
        idempotency_keys_purge_expired()
    except Exception:
        logger.warning("Could not purge expired idempotency keys; the next post retries later", exc_info=True)


def comment_submit(
    *,
    feed: Feed,
    author: str,
    body: str,
    user: User | AnonymousUser | None = None,
    client: str,
    idempotency_key: str | None = None,
    reply_to: int | None = None,
) -> PostResult:
    """Post a comment for a client: check, validate, count against the rate limit, then create.

    The one posting flow of the form and the API. Only a post that would be saved is
    counted: PostingNotAllowed and ValidationError are raised before counting, and a repeat
    of an idempotent post, or a concurrent duplicate of it, gets the stored answer
    uncounted. Raises RateLimited over the limit, and IdempotencyKeyInvalid /
    IdempotencyKeyReused for a bad key.
    """
    feed_check_can_post(feed=feed, user=user)
    if idempotency_key is not None:
        idempotency_key_check(idempotency_key)
        found = idempotent_result_find(
            client=client, key=idempotency_key, feed=feed, author=author, body=body, reply_to=reply_to
        )
        if found is not None:
            return found
    cleaned_author, cleaned_body = comment_validate(
        feed=feed, author=author, body=body, user=user, reply_to=reply_to,
        registered_name_checked_on_save=saved_in_one_statement(),
    )
    # Who is notified, and the live frame's marked mentions: one lookup of the mentioned names.
    with mentions_looked_up_once():
        if idempotency_key is None:
            counted = post_rate_limit_check(client=client)
            comment = _comment_insert_counted(
                counted, feed=feed, author=cleaned_author, body=cleaned_body, user=user, reply_to=reply_to
            )
            return PostResult(status=201, body=comment_as_dict(comment), replayed=False)
        return _comment_insert_once(
            feed=feed, request_author=author, request_body=body, author=cleaned_author, body=cleaned_body,
            user=user, client=client, key=idempotency_key, reply_to=reply_to,
        )
