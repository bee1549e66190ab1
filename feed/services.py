"""Writes. Every comment is created here, by the form view and the API alike."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.http import Http404
from django.utils import timezone

from feed.models import (
    AUTHOR_MAX_LENGTH,
    BODY_MAX_LENGTH,
    IDEMPOTENCY_KEY_MAX_LENGTH,
    Comment,
    Feed,
    IdempotencyKey,
)
from feed.ratelimit import post_rate_limit_check
from feed.rendering import comment_as_dict
from feed.text import clean_body, clean_name

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser


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


def feed_readable_filter(*, user: AbstractBaseUser | AnonymousUser | None) -> Q:
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


def feed_check_can_read(*, feed: Feed, user: AbstractBaseUser | AnonymousUser | None) -> None:
    """Raise ReadingNotAllowed (a 404) unless the user may read the feed (page, API and stream alike)."""
    if feed.allow_anonymous:
        return  # the rule's first case, without a query
    if not Feed.objects.filter(feed_readable_filter(user=user), pk=feed.pk).exists():
        raise ReadingNotAllowed()


def feed_check_can_post(*, feed: Feed, user: AbstractBaseUser | AnonymousUser | None) -> None:
    """Raise ReadingNotAllowed (a 404) unless the user may post to the feed.

    Whoever may read a feed may post to it: anyone on an open feed, members and staff on a
    members-only one. Those who may not read it get the answer of an unknown feed, never a
    401/403 that would tell them it exists.
    """
    feed_check_can_read(feed=feed, user=user)


def comment_validate(
    *, feed: Feed, author: str, body: str, user: AbstractBaseUser | AnonymousUser | None = None
) -> tuple[str, str]:
    """Return the cleaned (author, body), or raise ValidationError with field errors."""
    errors: dict[str, list[str]] = {}
    author = clean_name(author or "")
    body = clean_body(body or "")
    if not author and user is not None and user.is_authenticated:
        author = clean_name(user.get_username())
    if not author:
        errors.setdefault("author", []).append("A display name is required.")
    elif len(author) > AUTHOR_MAX_LENGTH:
        errors.setdefault("author", []).append(f"Use at most {AUTHOR_MAX_LENGTH} characters.")
    if not body:
        errors.setdefault("body", []).append("Write something first.")
    elif len(body) > BODY_MAX_LENGTH:
        errors.setdefault("body", []).append(f"Use at most {BODY_MAX_LENGTH} characters (you used {len(body)}).")
    if errors:
        raise ValidationError(errors)
    return author, body


def comment_create(
    *, feed: Feed, author: str, body: str, user: AbstractBaseUser | AnonymousUser | None = None
) -> Comment:
    """Validate and save a comment with the feed's next seq, and publish it once committed.

    Raises PostingNotAllowed or ValidationError; nothing is saved or published then.
    """
    feed_check_can_post(feed=feed, user=user)
    author, body = comment_validate(feed=feed, author=author, body=body, user=user)
    return _comment_insert(feed=feed, author=author, body=body, user=user)


def _comment_insert(
    *, feed: Feed, author: str, body: str, user: AbstractBaseUser | AnonymousUser | None
) -> Comment:
    """Save a checked and cleaned comment with the feed's next seq; publish it once committed."""
    with transaction.atomic():
        # The row lock serialises posters per feed: seq has no gaps, and comment N
        # commits before comment N+1 can be numbered.
        locked = Feed.objects.select_for_update().only("pk", "slug", "last_seq").get(pk=feed.pk)
        seq = locked.last_seq + 1
        Feed.objects.filter(pk=feed.pk).update(last_seq=seq)
        comment = Comment.objects.create(
            feed=locked,
            seq=seq,
            author=author,
            body=body,
            user=user if user is not None and user.is_authenticated else None,
        )
        transaction.on_commit(lambda: _publish(comment))
    feed.last_seq = seq
    return comment


def _publish(comment: Comment) -> None:
    from notifications.publishing import publish_comment_created

    publish_comment_created(comment)


# --- Idempotent posts ----------------------------------------------------------

IDEMPOTENCY_KEY_TTL = timedelta(hours=24)
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,%d}$" % IDEMPOTENCY_KEY_MAX_LENGTH)


class IdempotencyKeyInvalid(Exception):
    """The Idempotency-Key header is empty, too long or not printable ASCII (400)."""


class IdempotencyKeyReused(Exception):
    """The key was first used with a different request (422)."""


@dataclass(frozen=True)
class PostResult:
    """The answer to a post: its status and the comment as JSON, maybe a stored earlier answer."""

    status: int
    body: dict[str, Any]
    replayed: bool  # True: the answer of an earlier request with this key; nothing was created


def idempotency_key_check(key: str) -> str:
    """Return the key if it is usable, else raise IdempotencyKeyInvalid."""
    if not _IDEMPOTENCY_KEY.match(key):
        raise IdempotencyKeyInvalid(
            f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} printable ASCII characters (a UUID is ideal)."
        )
    return key


def _fingerprint(*, feed: Feed, author: str, body: str) -> str:
    request = json.dumps([feed.slug, author, body], ensure_ascii=False)
    return hashlib.sha256(request.encode("utf-8", "surrogatepass")).hexdigest()


def idempotent_result_find(*, client: str, key: str, feed: Feed, author: str, body: str) -> PostResult | None:
    """Return the stored answer for (client, key) if it has not expired.

    Raise IdempotencyKeyReused if the key was first used with another request.
    """
    cutoff = timezone.now() - IDEMPOTENCY_KEY_TTL
    record = IdempotencyKey.objects.filter(client=client, key=key, created_at__gte=cutoff).first()
    if record is None:
        return None
    if record.fingerprint != _fingerprint(feed=feed, author=author, body=body):
        raise IdempotencyKeyReused(
            "This Idempotency-Key was already used with a different request; use a new key for a new comment."
        )
    return PostResult(status=record.response_status, body=record.response_body, replayed=True)


def _comment_insert_once(
    *,
    feed: Feed,
    request_author: str,
    request_body: str,
    author: str,
    body: str,
    user: AbstractBaseUser | AnonymousUser | None,
    client: str,
    key: str,
) -> PostResult:
    """Create the comment once per (client, key): a repeat returns the first answer, creating nothing.

    The key's row and the comment are saved in one transaction, and (client, key) is unique
    in the database, so concurrent repeats on different instances create one comment: the
    loser's insert fails (or, on PostgreSQL, waits for the winner and then fails) and it
    returns the winner's answer. Only successes are stored: a post refused before this
    leaves no key behind and can be retried with the same key. The request's own author and
    body identify it (the key's fingerprint); the cleaned ones are saved.
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
                fingerprint=_fingerprint(feed=feed, author=request_author, body=request_body),
                response_status=201,
                response_body={},
            )
            comment = _comment_insert(feed=feed, author=author, body=body, user=user)
            record.comment = comment
            record.response_body = comment_as_dict(comment)
            record.save(update_fields=["comment", "response_body"])
    except IntegrityError:
        found = idempotent_result_find(client=client, key=key, feed=feed, author=request_author, body=request_body)
        if found is None:
            raise
        return found
    transaction.on_commit(idempotency_keys_purge_expired)
    return PostResult(status=201, body=record.response_body, replayed=False)


def comment_submit(
    *,
    feed: Feed,
    author: str,
    body: str,
    user: AbstractBaseUser | AnonymousUser | None = None,
    client: str,
    idempotency_key: str | None = None,
) -> PostResult:
    """Post a comment for a client: check, validate, count against the rate limit, then create.

    The one posting flow of the form and the API. Only a post that would be saved is
    counted: PostingNotAllowed and ValidationError are raised before counting, and a repeat
    of an idempotent post gets the stored answer uncounted. Raises RateLimited over the
    limit, and IdempotencyKeyInvalid / IdempotencyKeyReused for a bad key.
    """
    feed_check_can_post(feed=feed, user=user)
    if idempotency_key is not None:
        idempotency_key_check(idempotency_key)
        found = idempotent_result_find(client=client, key=idempotency_key, feed=feed, author=author, body=body)
        if found is not None:
            return found
    cleaned_author, cleaned_body = comment_validate(feed=feed, author=author, body=body, user=user)
    post_rate_limit_check(client=client)
    if idempotency_key is None:
        comment = _comment_insert(feed=feed, author=cleaned_author, body=cleaned_body, user=user)
        return PostResult(status=201, body=comment_as_dict(comment), replayed=False)
    return _comment_insert_once(
        feed=feed, request_author=author, request_body=body, author=cleaned_author, body=cleaned_body,
        user=user, client=client, key=idempotency_key,
    )


def idempotency_keys_purge_expired() -> int:
    """Delete keys older than IDEMPOTENCY_KEY_TTL; return how many."""
    deleted, _ = IdempotencyKey.objects.filter(created_at__lt=timezone.now() - IDEMPOTENCY_KEY_TTL).delete()
    return deleted
