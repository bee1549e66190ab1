"""Request and response shapes of the JSON API; they are also its OpenAPI description."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ninja import Field, Schema

from feed.models import AUTHOR_MAX_LENGTH, BODY_MAX_LENGTH
from feed.text import visible_character_pattern


def visible_text(max_length: int) -> Callable[[dict[str, Any]], None]:
    """Describe a text field as the server checks it (feed.services.comment_validate).

    The server cleans the text first (feed.text: control and invisible format characters
    removed, line ends unified, accents composed, excess combining marks dropped) and then
    needs a visible character and at most `max_length` characters. Cleaning never lengthens
    a text, so `maxLength` as sent is a safe bound; `pattern` matches exactly the texts
    with a visible character. The server checks both itself, after cleaning, with messages
    per field, so these are only described here (pydantic would count before cleaning and
    answer with the whole pattern).
    """

    def describe(schema: dict[str, Any]) -> None:
        schema.update(minLength=1, maxLength=max_length, pattern=visible_character_pattern())

    return describe


class FeedOut(Schema):
    slug: str
    title: str
    last_seq: int = Field(
        description="The seq of the feed's last event, a comment created or removed (0 when it has none)."
    )
    watching: int = Field(
        description=(
            "Open live connections (WebSockets) to the feed across all instances; a dead instance's stop"
            " counting within 30 s. Live readers get changes as `feed.presence` frames."
        ),
        ge=0,
    )


class CommentIn(Schema):
    author: str = Field(
        "",
        description=(
            f"Display name: at most {AUTHOR_MAX_LENGTH} characters with at least one visible one. Required when"
            " posting without credentials (else 400); defaults to the username when signed in."
        ),
        json_schema_extra=visible_text(AUTHOR_MAX_LENGTH),
    )
    body: str = Field(
        ...,
        description=(
            f"The comment text, shown as plain text: at most {BODY_MAX_LENGTH} characters with at least one"
            " visible one, counted after cleaning (invisible and control characters are removed, `\\r\\n` counts as one)."
        ),
        json_schema_extra=visible_text(BODY_MAX_LENGTH),
    )
    reply_to: int | None = Field(
        None, ge=1, description="The id of the comment of this feed that this one answers, if any."
    )


class CommentOut(Schema):
    id: int
    seq: int = Field(
        description="The seq of its creation among the feed's events: increasing; numbers of removals are skipped."
    )
    feed: str = Field(description="The feed's slug.")
    author: str = Field(description="The signed-in author's username, or a guest's display name.")
    user: str | None = Field(description="The author's username when signed in; null for a guest.")
    body: str = Field(description="The text; empty once the comment was removed.")
    reply_to: int | None = Field(description="The id of the comment this one answers, or null.")
    created_at: str = Field(json_schema_extra={"format": "date-time"}, description="ISO 8601, UTC.")
    deleted: bool = Field(description="True once the comment was removed (then `body` is empty).")


class DeletedOut(Schema):
    id: int = Field(description="The removed comment's id.")


class EventOut(Schema):
    type: str = Field(
        description="`comment.created` (`data` is the comment) or `comment.deleted` (`data` is `{\"id\": <comment id>}`).",
        json_schema_extra={"enum": ["comment.created", "comment.deleted"]},
    )
    v: int = Field(description="The envelope's version: 1.")
    feed: str = Field(description="The feed's slug.")
    seq: int = Field(description="The event's position in the feed: 1, 2, 3… with no gaps.")
    data: CommentOut | DeletedOut


class ErrorOut(Schema):
    error: str = Field(description="A stable code such as `invalid`, `not_found`, `invalid_token`.")
    detail: str = Field(description="A human-readable explanation.")
    fields: dict[str, list[str]] | None = Field(None, description="Messages per invalid field, when there are any.")
