"""Request and response shapes of the JSON API; they are also its OpenAPI description."""
from __future__ import annotations

from ninja import Field, Schema

from feed.models import AUTHOR_MAX_LENGTH, BODY_MAX_LENGTH


class FeedOut(Schema):
    slug: str
    title: str
    last_seq: int = Field(description="The seq of the feed's newest comment (0 when it has none).")


class CommentIn(Schema):
    author: str = Field(
        "",
        max_length=AUTHOR_MAX_LENGTH,
        description="Display name. Required when posting anonymously; defaults to the username when signed in.",
    )
    body: str = Field(..., max_length=BODY_MAX_LENGTH, description="The comment text, shown as plain text.")
    reply_to: int | None = Field(
        None, ge=1, description="The id of the comment of this feed that this one answers, if any."
    )


class CommentOut(Schema):
    id: int
    seq: int = Field(description="Position in the feed: 1, 2, 3… with no gaps.")
    feed: str = Field(description="The feed's slug.")
    author: str = Field(description="The signed-in author's username, or a guest's display name.")
    user: str | None = Field(description="The author's username when signed in; null for a guest.")
    body: str
    reply_to: int | None = Field(description="The id of the comment this one answers, or null.")
    created_at: str = Field(json_schema_extra={"format": "date-time"}, description="ISO 8601, UTC.")


class ErrorOut(Schema):
    error: str = Field(description="A stable code such as `invalid`, `not_found`, `invalid_token`.")
    detail: str = Field(description="A human-readable explanation.")
    fields: dict[str, list[str]] | None = Field(None, description="Messages per invalid field, when there are any.")
