"""WebSocket Origin check: the site's own origin (scheme, host and port) or a trusted one.

Channels' AllowedHostsOriginValidator compares only the origin's host with ALLOWED_HOSTS, so
``http://127.0.0.1:9`` passes on a server at ``http://127.0.0.1:8000`` and a page on another
port of the same host opens sockets with the visitor's cookie. Here the origin must equal the
origin the request was made to: the scheme as served (``wss``/``https``, or ``https`` through a
trusted proxy's header, ``SECURE_PROXY_SSL_HEADER``), and the Host header with its port; or
it must be listed in ``CSRF_TRUSTED_ORIGINS`` (``https://*.example.com`` covers subdomains, as
for Django's CSRF check). A refused handshake gets HTTP 403, before any consumer runs.
"""
from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import split_domain_port, validate_host

Scope = MutableMapping[str, Any]
DEFAULT_PORTS = {"http": 80, "https": 443}


def _header(scope: Scope, name: bytes) -> str | None:
    values = [value for key, value in scope.get("headers", []) if key.lower() == name]
    return values[0].decode("latin-1") if len(values) == 1 else None


def _origin_tuple(origin: str) -> tuple[str, str, int] | None:
    """Return (scheme, host, port) of an http(s) origin, None for anything else (null, junk)."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.path or parts.query or parts.username:
        return None
    return parts.scheme, parts.hostname.lower(), port or DEFAULT_PORTS[parts.scheme]


def served_scheme(scope: Scope) -> str:
    """Return "https" if the handshake came over TLS (directly or via a trusted proxy), else "http"."""
    if scope.get("scheme") in ("wss", "https"):
        return "https"
    proxy_header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy_header:
        name, secure_value = proxy_header
        header = name.removeprefix("HTTP_").replace("_", "-").lower().encode("latin-1")
        value = _header(scope, header)
        if value is not None and value.split(",", 1)[0].strip() == secure_value:
            return "https"
    return "http"


def own_origin(scope: Scope, origin: tuple[str, str, int]) -> tuple[str, str, int] | None:
    """Return the origin the handshake was addressed to, None without a valid allowed Host."""
    host = _header(scope, b"host")
    scheme = served_scheme(scope)
    if host is None:
        # No Host header: not a browser (HTTP/1.1 requires it), e.g. an in-process test
        # client. The origin's host must then be allowed, on its scheme's default port.
        host = origin[1] if origin[2] == DEFAULT_PORTS[scheme] else ""
    domain, port = split_domain_port(host.lower())
    # Django's rule (HttpRequest.get_host): with DEBUG on and no ALLOWED_HOSTS, local names.
    allowed = settings.ALLOWED_HOSTS or ([".localhost", "127.0.0.1", "[::1]"] if settings.DEBUG else [])
    if not domain or not validate_host(domain, allowed):
        return None
    try:
        number = int(port) if port else DEFAULT_PORTS[scheme]
    except ValueError:
        return None
    return scheme, domain.strip("[]"), number


def trusted(origin: tuple[str, str, int]) -> bool:
    """Return whether the origin is listed in CSRF_TRUSTED_ORIGINS (``*.`` matches subdomains)."""
    scheme, host, port = origin
    for entry in settings.CSRF_TRUSTED_ORIGINS:
        allowed = _origin_tuple(entry.replace("://*.", "://wildcard.", 1))
        if allowed is None or allowed[0] != scheme or allowed[2] != port:
            continue
        if "://*." in entry:
            suffix = allowed[1].removeprefix("wildcard")
            if host.endswith(suffix):
                return True
        elif allowed[1] == host:
            return True
    return False


def origin_allowed(scope: Scope) -> bool:
    """Return whether the handshake's Origin is the site's own or a trusted one."""
    header = _header(scope, b"origin")
    origin = _origin_tuple(header) if header is not None else None
    if origin is None:
        return False
    return origin == own_origin(scope, origin) or trusted(origin)


async def refuse_handshake(receive: Any, send: Any) -> None:
    """Answer the handshake with a refusal (daphne: HTTP 403) without running any consumer."""
    message = await receive()
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.close"})
