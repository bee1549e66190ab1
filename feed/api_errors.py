"""The API's one error shape, `{"error": code, "detail": ..., "fields": {...}}`, for every failure."""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from ninja.errors import HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.parser import Parser

from feed.api_auth import CsrfFailed, InvalidToken
from feed.ratelimit import RateLimited
from feed.idempotency import IdempotencyKeyInvalid, IdempotencyKeyReused
from feed.services import FeedAccessDenied
from livefeed.limits import too_large_detail

if TYPE_CHECKING:
    from ninja import NinjaAPI

logger = logging.getLogger(__name__)

CODES = {
    400: "invalid",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    500: "server_error",
}


class UnsupportedMediaType(Exception):
    """The request body is not JSON."""


class NotAnObject(Exception):
    """The JSON body is valid but not an object."""


class NestedTooDeeply(ValueError):
    """The JSON body nests deeper than the parser can follow (Python's RecursionError)."""


class JsonBodyParser(Parser):
    """Parse request bodies as JSON and refuse any other media type."""

    def parse_body(self, request: HttpRequest) -> Any:
        if request.content_type != "application/json":
            raise UnsupportedMediaType(f"Send JSON with `Content-Type: application/json`, not {request.content_type!r}.")
        try:
            data = json.loads(request.body)
        except RecursionError:
            raise NestedTooDeeply("The JSON body is nested too deeply.") from None
        if not isinstance(data, dict):
            raise NotAnObject("Send a JSON object, such as {\"author\": \"Ann\", \"body\": \"Hello\"}.")
        return data


def error_body(code: str, detail: Any, fields: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Return the error object; `fields` only when the error is about particular fields."""
    body: dict[str, Any] = {"error": code, "detail": detail}
    if fields:
        body["fields"] = fields
    return body


def error_response(
    status: int, detail: Any, *, code: str | None = None, fields: dict[str, list[str]] | None = None
) -> JsonResponse:
    """Return a JSON error response with the given status."""
    return JsonResponse(
        error_body(code or CODES.get(status, "error"), detail, fields),
        status=status,
        content_type="application/json; charset=utf-8",
    )


def _fields_from_ninja(errors: list[dict[str, Any]]) -> tuple[dict[str, list[str]], list[str]]:
    """Split pydantic errors into per-field messages and messages about the whole request."""
    fields: dict[str, list[str]] = {}
    general: list[str] = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        # loc is (source, name...) for query/path and (source, param, name...) for the body.
        name_parts = loc[2:] if loc[:1] == ["body"] else loc[1:]
        if name_parts:
            fields.setdefault(".".join(name_parts), []).append(error.get("msg", "Invalid value."))
        elif error.get("type") == "missing":
            general.append("Send a JSON object with the fields described in the API schema.")
        else:
            general.append(error.get("msg", "Invalid request."))
    return fields, general


def install_error_handlers(api: NinjaAPI) -> None:
    """Make every error the API raises come out in the one JSON error shape."""

    @api.exception_handler(NinjaValidationError)
    def invalid_input(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
        fields, general = _fields_from_ninja(exc.errors)
        return error_response(400, " ".join(general) or "Some fields are invalid.", fields=fields)

    @api.exception_handler(DjangoValidationError)
    def invalid_comment(request: HttpRequest, exc: DjangoValidationError) -> HttpResponse:
        if hasattr(exc, "error_dict"):
            return error_response(400, "Some fields are invalid.", fields=exc.message_dict)
        return error_response(400, " ".join(exc.messages))

    @api.exception_handler(HttpError)
    def http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
        cause = exc.__cause__
        if isinstance(cause, UnsupportedMediaType):
            return error_response(415, str(cause))
        if isinstance(cause, NotAnObject):
            return error_response(400, str(cause))
        if isinstance(cause, RequestDataTooBig):
            return too_large(request, cause)
        if isinstance(cause, NestedTooDeeply):
            return error_response(400, str(cause), code="invalid_json")
        if isinstance(cause, (ValueError, UnicodeDecodeError)):
            return error_response(400, "The body is not valid JSON.", code="invalid_json")
        return error_response(exc.status_code, exc.message)

    @api.exception_handler(RequestDataTooBig)
    def too_large(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
        return error_response(413, too_large_detail(settings.DATA_UPLOAD_MAX_MEMORY_SIZE))

    @api.exception_handler(InvalidToken)
    def invalid_token(request: HttpRequest, exc: InvalidToken) -> HttpResponse:
        response = error_response(401, str(exc), code="invalid_token")
        response["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        return response

    @api.exception_handler(CsrfFailed)
    def csrf_failed(request: HttpRequest, exc: CsrfFailed) -> HttpResponse:
        return error_response(403, str(exc), code="csrf_failed")

    @api.exception_handler(FeedAccessDenied)
    def feed_access_denied(request: HttpRequest, exc: FeedAccessDenied) -> HttpResponse:
        response = error_response(exc.status, str(exc), code=exc.code)
        if exc.status == 401:
            response["WWW-Authenticate"] = "Bearer"
        return response

    @api.exception_handler(RateLimited)
    def too_many_posts(request: HttpRequest, exc: RateLimited) -> HttpResponse:
        response = error_response(429, str(exc))
        response["Retry-After"] = str(exc.retry_after)
        return response

    @api.exception_handler(IdempotencyKeyInvalid)
    def idempotency_key_invalid(request: HttpRequest, exc: IdempotencyKeyInvalid) -> HttpResponse:
        return error_response(400, str(exc), code="invalid_idempotency_key")

    @api.exception_handler(IdempotencyKeyReused)
    def idempotency_key_reused(request: HttpRequest, exc: IdempotencyKeyReused) -> HttpResponse:
        return error_response(422, str(exc), code="idempotency_key_reused")

    @api.exception_handler(Http404)
    def not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
        return error_response(404, "Not found.")

    @api.exception_handler(Exception)
    def server_error(request: HttpRequest, exc: Exception) -> HttpResponse:
        logger.exception("API error on %s %s", request.method, request.path)
        return error_response(500, "Something went wrong on our side.")


def json_method_not_allowed(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """Wrap an API view so that its 405 answer is the JSON error shape (ninja's is plain text)."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response = view(request, *args, **kwargs)
        if response.status_code == 405 and "Allow" in response and not response.get("Content-Type", "").startswith(
            "application/json"
        ):
            allowed = response["Allow"]
            response = error_response(405, f"{request.method} is not allowed here; use {allowed}.")
            response["Allow"] = allowed
        return response

    return wrapped


@csrf_exempt  # a 404 either way; the CSRF middleware would answer with an HTML 403 first
def api_not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """Answer unknown /api/ paths in JSON rather than with the site's HTML 404 page."""
    return error_response(404, f"No API endpoint at {request.path}.")
