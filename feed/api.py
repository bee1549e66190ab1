"""The JSON API (django-ninja): feeds, catch-up reads and posting. Errors: feed.api_errors."""
from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import URLPattern, URLResolver, path, re_path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe
from ninja import Header, NinjaAPI, Query

from feed.api_auth import BearerToken, SessionCookie, anonymous
from feed.api_errors import JsonBodyParser, api_not_found, install_error_handlers, json_method_not_allowed
from feed.api_schemas import CommentIn, CommentOut, ErrorOut, EventOut, FeedOut
from feed.models import IDEMPOTENCY_KEY_MAX_LENGTH, Feed
from feed.moderation import comment_remove
from feed.ratelimit import client_identity
from feed.rendering import comment_as_dict, event_as_dict
from feed.selectors import (
    MAX_LIMIT,
    comment_get,
    comments_after,
    events_after,
    feed_get,
    feed_get_readable,
    feeds_readable,
)
from feed.services import comment_submit
from notifications.api import router as notifications_router
from notifications.presence import watching_counts

DESCRIPTION = """\
Read feeds and comments, and post comments. New comments also arrive live on the
WebSocket `/ws/feeds/{slug}/?format=json`; after a disconnect, catch up with
`GET /api/feeds/{slug}/comments/?after=<highest seq seen>`.

Presence: each feed carries `watching`, its open live connections across all instances
(`GET /api/feeds/{slug}/` for one feed); live readers get `feed.presence` frames when it changes.

Authentication: `Authorization: Bearer <token>` (issue one with `manage.py issue_token <username>`),
or the browser session (then unsafe requests need the `X-CSRFToken` header), or none:
feeds that allow anonymous posting take a display name in `author`. A members-only feed is
read and posted to by its members and staff; to anyone else it answers `404`, like an
unknown feed, and it is not listed. A signed-in author's
comments carry their username in `author` and `user` (an `author` they send is ignored);
a guest's `user` is null, and a guest may not take a registered username as display name.

Replies and mentions: `reply_to` names the comment (of the same feed) a comment answers;
`@username` in a body mentions that user. Either notifies the person (signed in, and able to
read the feed): `GET /api/notifications/?after=<seq>` lists your notifications in ascending
per-user seq, `GET /api/notifications/summary/` counts the unread ones, and
`POST /api/notifications/read/` with `{"up_to": <seq>}` marks them read. These need a token
or the session; without credentials they answer `401`.

Moderation: `DELETE /api/feeds/{slug}/comments/{id}/` removes a comment (`204`), for staff,
the feed's moderators and the comment's signed-in author; anyone else who may read the feed
gets `403` (`401` without credentials). Removing a removed comment answers `204` again and
changes nothing. A removed comment's row stays for audit, its body is gone from every answer,
and comment lists leave it out. Every change of a feed is an event numbered in one sequence
(`comment.created`, `comment.deleted`), so comment seqs skip the numbers of removals and a
feed's `last_seq` is its last event's seq. `GET /api/feeds/{slug}/events/?after=<seq>` lists
the events themselves, as the WebSocket's JSON mode sends them: catch up with it to learn of
removals too (a `comment.created` of a comment removed since has `"deleted": true` and an
empty body).

Errors are always JSON: `{"error": "<code>", "detail": "<text>", "fields": {"<field>": ["<message>"]}}`,
with `fields` only when particular fields are invalid.

Safe retries: send `Idempotency-Key: <unique string>` (a UUID) with a post. A repeat with the
same key, on any server and even while the first is in flight, returns the first answer
(`201`, the same comment, header `Idempotent-Replayed: true`) and creates nothing. Keys are
kept for 24 hours per client (user or token, else IP address). The same key with a different
request is refused with `422` (`idempotency_key_reused`).

Rate limit: each client may post a limited number of comments per period (`FEED_POST_RATE`,
30 a minute by default). Over it the answer is `429` (`too_many_requests`) with `Retry-After`
in seconds; repeats of an idempotent post are not counted.
"""


class FeedAPI(NinjaAPI):
    def get_openapi_schema(self, *, path_prefix: str | None = None, path_params: dict[str, Any] | None = None) -> Any:
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        # Every feed operation also works without credentials (anonymous): say so with `{}`.
        # A person's notifications need a signed-in user or a token.
        for operations in schema["paths"].values():
            for operation in operations.values():
                if "notifications" in operation.get("tags", ()):
                    continue
                if "security" in operation and {} not in operation["security"]:
                    operation["security"].append({})
        return schema


api = FeedAPI(
    title="Live Feed API",
    version="1",
    description=DESCRIPTION,
    urls_namespace="feed:api",
    auth=[BearerToken(), SessionCookie(), anonymous],
    parser=JsonBodyParser(),
)
install_error_handlers(api)
api.add_router("/notifications/", notifications_router)

READ_ERRORS: dict[int, Any] = {400: ErrorOut, 401: ErrorOut, 404: ErrorOut}


@api.get("/feeds/", response={200: list[FeedOut], 401: ErrorOut}, url_name="feeds", summary="List the feeds")
def list_feeds(request: HttpRequest) -> list[dict[str, Any]]:
    """Return the feeds the caller may read: members-only feeds only to their members and staff."""
    user = request.auth  # type: ignore[attr-defined]
    feeds = list(feeds_readable(user=user))
    watching = watching_counts(feed.pk for feed in feeds)
    return [feed_as_dict(feed, watching[feed.pk]) for feed in feeds]


@api.get("/feeds/{slug}/", response={200: FeedOut, 401: ErrorOut, 404: ErrorOut}, url_name="feed", summary="Get a feed")
def get_feed(request: HttpRequest, slug: str) -> dict[str, Any]:
    """Return one feed, with its last seq and how many are watching it live."""
    feed = feed_get_readable(slug=slug, user=request.auth)  # type: ignore[attr-defined]
    return feed_as_dict(feed, watching_counts([feed.pk])[feed.pk])


def feed_as_dict(feed: Feed, watching: int) -> dict[str, Any]:
    return {"slug": feed.slug, "title": feed.title, "last_seq": feed.last_seq, "watching": watching}


@api.get(
    "/feeds/{slug}/comments/",
    response={200: list[CommentOut], **READ_ERRORS},
    url_name="comments",
    summary="List comments after a seq",
)
def list_comments(
    request: HttpRequest,
    slug: str,
    after: int = Query(0, ge=0, description="Return comments with a seq above this one."),
    limit: int = Query(50, ge=1, le=MAX_LIMIT, description=f"At most this many (1 to {MAX_LIMIT})."),
) -> list[dict[str, Any]]:
    """Return up to `limit` comments with `seq > after`, in ascending seq.

    Fewer than `limit` means there are no more for now; otherwise ask again with
    `after` set to the last seq received.
    """
    feed = feed_get_readable(slug=slug, user=request.auth)  # type: ignore[attr-defined]
    return [comment_as_dict(c) for c in comments_after(feed=feed, after_seq=after, limit=limit)]


@api.get(
    "/feeds/{slug}/events/",
    response={200: list[EventOut], **READ_ERRORS},
    url_name="events",
    summary="List a feed's events after a seq",
)
def list_events(
    request: HttpRequest,
    slug: str,
    after: int = Query(0, ge=0, description="Return events with a seq above this one."),
    limit: int = Query(50, ge=1, le=MAX_LIMIT, description=f"At most this many (1 to {MAX_LIMIT})."),
) -> list[dict[str, Any]]:
    """Return up to `limit` events with `seq > after`, in ascending seq, with no gaps.

    The envelopes of the WebSocket's JSON mode: `comment.created` and `comment.deleted`.
    Fewer than `limit` means there are no more for now.
    """
    feed = feed_get_readable(slug=slug, user=request.auth)  # type: ignore[attr-defined]
    return [event_as_dict(event) for event in events_after(feed=feed, after_seq=after, limit=limit)]


@api.delete(
    "/feeds/{slug}/comments/{comment_id}/",
    response={204: None, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut},
    url_name="comment_delete",
    summary="Remove a comment",
)
def delete_comment(request: HttpRequest, slug: str, comment_id: int) -> tuple[int, None]:
    """Remove a comment: staff, the feed's moderators and its signed-in author may.

    `204` also when it was removed already (nothing changes then). `403` for anyone else who
    may read the feed, `401` without credentials, `404` for an unknown comment or feed, or a
    feed the caller may not read.
    """
    feed = feed_get(slug=slug)
    comment_remove(comment=comment_get(feed=feed, comment_id=comment_id), by=request.auth)  # type: ignore[attr-defined]
    return 204, None


@api.post(
    "/feeds/{slug}/comments/",
    response={
        201: CommentOut,
        400: ErrorOut,
        401: ErrorOut,
        403: ErrorOut,
        404: ErrorOut,
        413: ErrorOut,
        415: ErrorOut,
        422: ErrorOut,
        429: ErrorOut,
    },
    url_name="comment_create",
    summary="Post a comment",
    openapi_extra={
        "responses": {
            201: {
                "headers": {
                    "Idempotent-Replayed": {
                        "description": "`true` when this is the stored answer to an earlier post with the same key.",
                        "schema": {"type": "string", "enum": ["true"]},
                    }
                }
            },
            422: {"description": "The Idempotency-Key was already used with a different request."},
            429: {
                "description": "Too many posts from this client; retry after `Retry-After` seconds.",
                "headers": {
                    "Retry-After": {
                        "description": "Seconds to wait before posting again.",
                        "required": True,
                        "schema": {"type": "integer", "minimum": 1},
                    }
                },
            },
        }
    },
)
def create_comment(
    request: HttpRequest,
    response: HttpResponse,
    slug: str,
    payload: CommentIn,
    idempotency_key: str | None = Header(
        None,
        alias="Idempotency-Key",
        min_length=1,
        max_length=IDEMPOTENCY_KEY_MAX_LENGTH,
        pattern=r"^[!-~]+$",
        description="Makes retries safe: a repeat with this key returns the first answer and creates nothing.",
    ),
) -> tuple[int, dict[str, Any]]:
    """Post a comment; it is numbered with the feed's next seq and sent to live readers."""
    feed = feed_get(slug=slug)
    user = request.auth  # type: ignore[attr-defined]
    result = comment_submit(
        feed=feed,
        author=payload.author,
        body=payload.body,
        user=user,
        client=client_identity(request, user=user),
        idempotency_key=idempotency_key,
        reply_to=payload.reply_to,
    )
    if result.replayed:
        response["Idempotent-Replayed"] = "true"
    return result.status, result.body


@csrf_exempt  # read-only; any other method gets the JSON 405, not the CSRF page
@require_safe
def api_index(request: HttpRequest) -> JsonResponse:
    """Point at the API's entry points (ninja's own root page is an HTML 404)."""
    return JsonResponse({"feeds": "/api/feeds/", "openapi": "/api/openapi.json", "docs": "/api/docs"})


def api_urlpatterns() -> list[URLPattern | URLResolver]:
    """Return the URL patterns under /api/: an index, the API, then JSON 404s for anything else."""
    patterns, app_name, namespace = api.urls
    for pattern in patterns:
        if isinstance(pattern, URLPattern):
            pattern.callback = json_method_not_allowed(pattern.callback)
    return [
        path("", json_method_not_allowed(api_index), name="api_index"),
        path("", (patterns, app_name, namespace)),
        re_path(r"^.*$", api_not_found),
    ]
