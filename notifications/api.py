"""The notifications part of the JSON API (a ninja router mounted at /api/notifications/)."""
from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Field, Query, Router, Schema

from feed.api_auth import BearerToken, SessionCookie
from feed.api_schemas import CommentOut, ErrorOut
from notifications.rendering import notification_as_dict
from notifications.selectors import MAX_LIMIT, notification_summary, notifications_after
from notifications.services import notifications_mark_read

# Signed in (session, with CSRF for POST) or a bearer token; nobody else (401).
router = Router(auth=[BearerToken(), SessionCookie()], tags=["notifications"])

AUTH_ERRORS: dict[int, Any] = {401: ErrorOut, 403: ErrorOut}


class NotificationOut(Schema):
    id: int
    seq: int = Field(description="Position among your notifications: 1, 2, 3… with no gaps.")
    kind: str = Field(description="`reply` or `mention`.", json_schema_extra={"enum": ["reply", "mention"]})
    feed: str = Field(description="The feed's slug.")
    comment: CommentOut
    created_at: str = Field(json_schema_extra={"format": "date-time"}, description="ISO 8601, UTC.")
    read: bool


class SummaryOut(Schema):
    unread: int = Field(description="How many of your notifications are unread.")
    last_seq: int = Field(description="The seq of your newest notification (0 when there is none).")


class ReadIn(Schema):
    up_to: int = Field(..., ge=0, description="Mark every notification with a seq up to this one read.")


def _summary(request: HttpRequest) -> dict[str, int]:
    summary = notification_summary(user=request.auth)  # type: ignore[attr-defined]
    return {"unread": summary.unread, "last_seq": summary.last_seq}


@router.get(
    "/",
    response={200: list[NotificationOut], 400: ErrorOut, **AUTH_ERRORS},
    url_name="notifications",
    summary="List your notifications after a seq",
)
def list_notifications(
    request: HttpRequest,
    after: int = Query(0, ge=0, description="Return notifications with a seq above this one."),
    limit: int = Query(50, ge=1, le=MAX_LIMIT, description=f"At most this many (1 to {MAX_LIMIT})."),
) -> list[dict[str, Any]]:
    """Return up to `limit` of your notifications with `seq > after`, in ascending seq.

    Notifications of feeds you may no longer read are left out.
    """
    user = request.auth  # type: ignore[attr-defined]
    return [notification_as_dict(n) for n in notifications_after(user=user, after_seq=after, limit=limit)]


@router.get("/summary/", response={200: SummaryOut, **AUTH_ERRORS}, url_name="notification_summary",
            summary="Count your unread notifications")
def summary(request: HttpRequest) -> dict[str, int]:
    """Return how many notifications are unread and the newest seq."""
    return _summary(request)


@router.post("/read/", response={200: SummaryOut, 400: ErrorOut, **AUTH_ERRORS, 415: ErrorOut},
             url_name="notifications_read", summary="Mark your notifications read")
def mark_read(request: HttpRequest, payload: ReadIn) -> dict[str, int]:
    """Mark every notification with `seq <= up_to` read, then return the summary."""
    notifications_mark_read(user=request.auth, up_to=payload.up_to)  # type: ignore[attr-defined]
    return _summary(request)
