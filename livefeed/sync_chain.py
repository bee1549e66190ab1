"""The last middleware: runs the whole middleware chain synchronously, in the request's thread.

Under ASGI Django starts the chain from an async handler, so every middleware that can run
either way (all of Django's own, ``MiddlewareMixin``) runs async, and each of its hooks
(``process_request``, ``process_response``, ...) hops to the request's thread and back: about
a dozen thread hops per request. One sync-only middleware at the bottom makes Django pick the
sync mode for everything above it: one hop in, one hop out to the view.
"""
from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest
from django.http.response import HttpResponseBase


class SyncMiddlewareChain:
    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        return self.get_response(request)
