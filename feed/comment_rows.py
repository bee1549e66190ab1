"""A comment's rows: numbering it and saving it with its created event, and the guest-name check.

The SQL of the write path, apart from the flow in feed.services: on PostgreSQL one statement
numbers a comment, saves it and its event and refuses a guest's registered name; elsewhere
the ORM's three statements, in the caller's transaction.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import connection, models
from django.db.models import Field
from django.utils import timezone

from feed.models import Comment, Event, Feed

if TYPE_CHECKING:
    from django.contrib.auth.models import User

REGISTERED_NAME_REFUSED = "That name belongs to a registered user: sign in as them, or choose another name."


def saved_in_one_statement() -> bool:
    """Return whether comment_and_event_save is one statement here, which also refuses a guest's
    registered name itself (_numbered_comment_insert_sql): on PostgreSQL. Every guest post
    then makes one round trip fewer, and no user can register the name between check and save.
    """
    return connection.vendor == "postgresql"


def is_registered_username(name: str) -> bool:
    """Return whether a user has this username, ignoring case.

    Every guest post asks this, so it is one plain statement: compiling the ORM's query took
    more CPU than PostgreSQL took to answer it from accounts' UPPER(username) index.
    """
    with connection.cursor() as cursor:
        cursor.execute(_registered_username_sql(), [name])
        return cursor.fetchone() is not None


@functools.cache
def _registered_username_sql() -> str:
    model = get_user_model()
    quote = connection.ops.quote_name
    field = model._meta.get_field(model.USERNAME_FIELD)
    assert isinstance(field, Field)
    column = quote(field.column)
    return f"SELECT 1 FROM {quote(model._meta.db_table)} WHERE UPPER({column}) = UPPER(%s) LIMIT 1"


def comment_and_event_save(
    *,
    feed: Feed,
    author: str,
    body: str,
    user: User | None,
    reply_to: Comment | None,
    refuse_registered_name: bool = False,
) -> Comment:
    """Number the feed's next event and save the comment and its created event with that seq.

    The comment's seq is its created event's seq. Numbering adds one to the feed's last_seq
    with an UPDATE, whose row lock lasts until the transaction ends: that serialises the
    feed's changes, so seqs have no gaps and event N commits before event N+1 is numbered.
    On PostgreSQL all three writes are one statement (one round trip); elsewhere three,
    which the caller wraps in a transaction. With `refuse_registered_name` (PostgreSQL) the
    statement saves nothing if `author` is a registered username, and ValidationError is raised
    as comment_validate raises it.
    """
    created_at = timezone.now()
    if not saved_in_one_statement():
        seq = _feed_next_seq(feed_id=feed.pk)
        comment = Comment.objects.create(
            feed=feed, seq=seq, author=author, body=body, user=user, reply_to=reply_to, created_at=created_at
        )
        Event.objects.create(feed=feed, seq=seq, kind=Event.Kind.COMMENT_CREATED, comment=comment, created_at=created_at)
        return comment
    guard = [author] if refuse_registered_name else []
    with connection.cursor() as cursor:
        cursor.execute(
            _numbered_comment_insert_sql(guarded=refuse_registered_name),
            [feed.pk, *guard, author, body, user.pk if user else None, reply_to.pk if reply_to else None,
             created_at, Event.Kind.COMMENT_CREATED],
        )
        row = cursor.fetchone()
    if row is None:
        if refuse_registered_name and is_registered_username(author):
            raise ValidationError({"author": [REGISTERED_NAME_REFUSED]})
        raise Feed.DoesNotExist(f"feed {feed.pk} was deleted")
    comment = Comment(
        id=row[0], feed=feed, seq=row[1], author=author, body=body, user=user, reply_to=reply_to, created_at=created_at
    )
    comment._state.adding = False
    comment._state.db = connection.alias
    return comment


@functools.cache
def _numbered_comment_insert_sql(*, guarded: bool) -> str:
    """Return PostgreSQL's one statement for comment_and_event_save: it returns (comment id, seq),
    or no row when the feed is gone (or, `guarded`, the name is a registered username).
    Parameters: feed id, (guarded: the name,) author, body, user id, reply-to id, created_at,
    event kind."""
    quote = connection.ops.quote_name

    def table(model: type[models.Model]) -> str:
        return quote(model._meta.db_table)

    def column(model: type[models.Model], name: str) -> str:
        field = model._meta.get_field(name)
        assert isinstance(field, Field)
        return quote(field.column)

    c, e = Comment, Event
    comment_columns = ", ".join(column(c, name) for name in ("feed", "seq", "author", "body", "user", "reply_to", "created_at"))
    event_columns = ", ".join(column(e, name) for name in ("feed", "seq", "kind", "comment", "created_at"))
    last_seq, feed_id = column(Feed, "last_seq"), column(Feed, "id")
    guard = f" AND NOT EXISTS ({_registered_username_sql()})" if guarded else ""
    return (
        f"WITH numbered AS (UPDATE {table(Feed)} SET {last_seq} = {last_seq} + 1 WHERE {feed_id} = %s{guard}"
        f" RETURNING {feed_id} AS feed_id, {last_seq} AS seq),"
        f" saved AS (INSERT INTO {table(c)} ({comment_columns})"
        f" SELECT feed_id, seq, %s, %s, %s, %s, %s FROM numbered"
        f" RETURNING {column(c, 'id')} AS id, {column(c, 'feed')} AS feed_id, {column(c, 'seq')} AS seq,"
        f" {column(c, 'created_at')} AS created_at)"
        f" INSERT INTO {table(e)} ({event_columns}) SELECT feed_id, seq, %s, id, created_at FROM saved"
        f" RETURNING {column(e, 'comment')}, {column(e, 'seq')}"
    )


def _feed_next_seq(*, feed_id: int) -> int:
    """Add one to the feed's last_seq and return it, in one statement (see comment_and_event_save).

    (RETURNING: PostgreSQL, and SQLite 3.35+.)
    """
    table = connection.ops.quote_name(Feed._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET last_seq = last_seq + 1 WHERE id = %s RETURNING last_seq", [feed_id])
        row = cursor.fetchone()
    if row is None:
        raise Feed.DoesNotExist(f"feed {feed_id} was deleted")
    return int(row[0])
