"""One id per HTTP request, in the logs and in the ``X-Request-ID`` response header.

The id comes from a trusted proxy's ``X-Request-ID`` (nginx's ``$request_id``) when the
request came through one (``TRUSTED_PROXY_COUNT`` / ``TRUSTED_PROXIES``, the settings of the
rate limit), else it is a new uuid4: a client cannot choose the id its request is logged under.
"""
from __future__ import annotations

import contextvars
import ipaddress
import re
import uuid
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase

HEADER = "X-Request-ID"
_VALID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def current_request_id() -> str | None:
    """Return the id of the request being handled in this context, if any."""
    return request_id_var.get()


def _from_trusted_proxy(request: HttpRequest) -> bool:
    if settings.TRUSTED_PROXY_COUNT > 0:
        return True
    remote = request.META.get("REMOTE_ADDR", "")
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(entry, strict=False) for entry in settings.TRUSTED_PROXIES)


def request_id_for(request: HttpRequest) -> str:
    """Return the proxy's id for this request if it may be trusted and is well-formed, else a new one."""
    given: str = request.META.get("HTTP_X_REQUEST_ID", "")
    if given and _VALID.fullmatch(given) and _from_trusted_proxy(request):
        return given
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Put the request's id in a contextvar (the log filter reads it) and in the response.

    Sync only, like the whole chain under ASGI (livefeed/request_threads.py).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        request_id = request.request_id = request_id_for(request)  # type: ignore[attr-defined]
        token = request_id_var.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
        response[HEADER] = request_id
        return response
