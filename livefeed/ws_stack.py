"""The WebSocket side of the ASGI application: every check, then the consumer, from one frame.

Channels' layers (CookieMiddleware, SessionMiddleware, AuthMiddleware, URLRouter) each copy
the scope and await the next layer, so an idle socket keeps a dozen coroutine frames and five
copies of its scope alive for as long as it is open (about 5 KB a socket). Here the same
layers run to their end first: the innermost app only records which consumer the route
chose and the scope it was given (``Handoff``). Only then is the consumer run, from this
frame, with that one scope. The scope is exactly the one Channels builds (``cookies``,
``session``, ``user``, ``url_route``).

The consumer gets daphne's own ``send``, not SessionMiddleware's wrapper of it: that wrapper
only saves the session and sets its cookie on ``http.response.start``, never on a WebSocket
message (checked at start-up, notifications.server_adapter.checks).
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from channels.routing import URLRouter
from django.urls import URLPattern

from livefeed.ws_limits import WebSocketsPerClient, refuse_too_many
from livefeed.ws_origin import origin_allowed, refuse_handshake

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


class _Routed:
    """Stands in for ``receive`` while the layers run, and carries what they routed to."""

    __slots__ = ("receive", "app", "scope")

    def __init__(self, receive: Any) -> None:
        self.receive = receive
        self.app: ASGIApp | None = None
        self.scope: Scope | None = None

    async def __call__(self) -> Any:
        return await self.receive()  # a layer that reads a message itself gets the real one


class Handoff:
    """A route's app inside the layers: records the app and its scope instead of running it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if not isinstance(receive, _Routed):  # used outside WebSocketStack: just run it
            await self.app(scope, receive, send)
            return
        receive.app, receive.scope = self.app, scope


def handoff_routes(routes: list[URLPattern]) -> list[URLPattern]:
    """Return the routes with each app wrapped in a Handoff (same patterns, names, defaults)."""
    return [URLPattern(route.pattern, Handoff(route.callback), route.default_args, route.name) for route in routes]


class ProtocolRouter:
    """Channels' ProtocolTypeRouter, except that its frame lets go of the scope, receive and send
    once it has called the app (the scope is the server's, which the app has copied)."""

    def __init__(self, apps: dict[str, ASGIApp]) -> None:
        self.apps = apps

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        app = self.apps.get(scope["type"])
        if app is None:
            raise ValueError(f"No application configured for scope type {scope['type']!r}")
        running = app(scope, receive, send)
        del scope, receive, send
        await running


class WebSocketStack:
    """ASGI app for WebSockets: Origin check, the per-client limit, ``layers`` around the routes,
    then the routed consumer.

    ``layers`` wraps an ASGI app (Channels' AuthMiddlewareStack); it must await the inner
    app at most once and do nothing after it returns, as Channels' middleware do.
    """

    def __init__(self, routes: list[URLPattern], *, layers: Callable[[Any], Any]) -> None:
        self.resolve: ASGIApp = layers(URLRouter(handoff_routes(routes)))  # type: ignore[arg-type]
        self.limit = WebSocketsPerClient()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            raise ValueError(f"WebSocketStack got a {scope['type']!r} scope")
        if not origin_allowed(scope):
            await refuse_handshake(receive, send)
            return
        allowed, address = self.limit.enter(scope)
        if not allowed:
            await refuse_too_many(receive, send)
            return
        try:
            routed = _Routed(receive)
            await self.resolve(scope, routed, send)
            app, scope = routed.app, routed.scope  # type: ignore[assignment]  # the outer scope is no longer needed
            del routed
            if app is None or scope is None:
                return  # a layer answered the handshake itself
            consumer_class = getattr(app, "consumer_class", None)
            if consumer_class is not None:
                # What Channels' as_asgi() app does, without its frame.
                running = consumer_class(**app.consumer_initkwargs)(scope, receive, send)  # type: ignore[attr-defined]
            else:
                running = app(scope, receive, send)
            del app, scope, receive, send  # the consumer has them; it may let go of some
            await running
        finally:
            self.limit.leave(address)
