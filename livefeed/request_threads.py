"""Django's ASGI handler with each request's sync code on a reused thread, in one stretch.

Django runs a request's synchronous part (the middleware chain, the view, the database) in a
thread of its own: by default a new thread per request, started and joined (a second thread)
for every request, and since Django's database connections belong to a thread, a new
database connection per request too. Here each request borrows a one-thread executor from a
small pool (asgiref's ``ThreadSensitiveContext(executor=...)``): the threads, and with them the
connections (``CONN_MAX_AGE``), are kept from one request to the next, as under a WSGI server.

An executor goes back to the pool only once everything its request submitted has finished
(a request whose client went away may leave its view running): a marker submitted after it
returns it, so a borrowed thread is always idle.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.db import connections
from django.http import HttpRequest
from django.http.response import HttpResponseBase

# Idle threads kept for the next requests; more concurrent requests get threads that end after them.
IDLE_THREADS_KEPT = 16


class ReusedThreadASGIHandler(ASGIHandler):
    def __init__(self, *, idle_threads_kept: int = IDLE_THREADS_KEPT) -> None:
        self.idle_threads_kept = idle_threads_kept
        self._idle: list[ThreadPoolExecutor] = []
        super().__init__()

    def load_middleware(self, is_async: bool = False) -> None:
        """Build the whole middleware chain in sync mode, down to the view.

        Django's ASGI handler builds it async at the bottom, so a request crosses from the
        event loop into its thread, back to the loop for the bottom of the chain, and into the
        thread again for the view; every middleware that can run async hops for each of its
        hooks. Here the chain, the view and the database run in one stretch on the request's
        thread (``get_response_async``), and an async view is run by Django's sync path.
        """
        super().load_middleware(is_async=False)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        executor = self._idle.pop() if self._idle else ThreadPoolExecutor(1, thread_name_prefix="request")
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            self._give_back(executor)

    def _give_back(self, executor: ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()

        def idle(_: Future[None]) -> None:
            loop.call_soon_threadsafe(self._keep_or_end, executor)

        executor.submit(lambda: None).add_done_callback(idle)

    def _keep_or_end(self, executor: ThreadPoolExecutor) -> None:
        if len(self._idle) < self.idle_threads_kept:
            self._idle.append(executor)
        else:
            executor.submit(connections.close_all)  # the thread's own connections end with it
            executor.shutdown(wait=False)


def get_asgi_application() -> ReusedThreadASGIHandler:
    """Like django.core.asgi.get_asgi_application, with reused request threads."""
    import django

    django.setup(set_prefix=False)
    return ReusedThreadASGIHandler()
