"""Health, readiness and metrics: answered before any other middleware.

``/healthz``, ``/readyz`` and ``/metrics`` are answered first in the middleware chain, so
they are never redirected to HTTPS, rate-limited, session-touched or checked against
``ALLOWED_HOSTS`` (a balancer or Docker probes by address: ``http://10.0.0.5:8000/readyz``).
They reveal nothing a host name would protect: health is "ok"/"unavailable", and
``/metrics`` is served only to loopback clients and ``METRICS_ALLOWED_CIDRS``.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse

from livefeed import lifecycle, redis_config

CHECK_TIMEOUT = 1.0
# Database checks run here, not on the request threads: a database that hangs ties up at most
# these two threads while every probe answers 503 after CHECK_TIMEOUT.
_DB_EXECUTOR = ThreadPoolExecutor(max_workers=2, thread_name_prefix="readyz-db")


def _ping_database() -> None:
    # A fresh connection each time (closed after): the check proves the database accepts
    # connections, and the probe threads hold none between checks.
    if getattr(connection, "pool", None):
        # PostgreSQL with the pool: a connection of its own, not one borrowed from the pool, which
        # would wait DATABASE_POOL_TIMEOUT on a database that refuses, and fail on a busy pool.
        params = connection.get_connection_params()
        import psycopg

        with psycopg.connect(**params, connect_timeout=max(1, round(CHECK_TIMEOUT))) as raw:
            raw.execute("SELECT 1").fetchone()
        return
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        connection.close()


def redis_urls() -> list[str]:
    """Return the channel layer's shards, each checked on its own (none with Sentinel or no Redis)."""
    return redis_config.shard_urls()


async def _ping_redis(url: str | None) -> None:
    """PING one shard by URL, or (None) the master Sentinel names, through the sentinels."""
    import redis.asyncio

    client = (
        redis.asyncio.Redis.from_url(url, socket_timeout=CHECK_TIMEOUT, socket_connect_timeout=CHECK_TIMEOUT)
        if url is not None
        else redis_config.shared_async_client(socket_timeout=CHECK_TIMEOUT, socket_connect_timeout=CHECK_TIMEOUT)
    )
    assert client is not None
    try:
        await client.ping()
    finally:
        await redis_config.aclose_client(client)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return f"error: no answer within {CHECK_TIMEOUT:g} s"
    # The class and the first line only: no URLs (passwords) from tracebacks.
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"error: {type(exc).__name__}{': ' + text if text else ''}"


async def readiness() -> tuple[bool, dict[str, str]]:
    """Return whether this process should get traffic, and each check's result."""
    if lifecycle.is_draining():
        return False, {"draining": "error: the process is shutting down"}
    loop = asyncio.get_running_loop()
    names = ["database"]
    probes: list[Awaitable[Any]] = [loop.run_in_executor(_DB_EXECUTOR, _ping_database)]
    urls: list[str | None] = [None] if redis_config.uses_sentinel() else list(redis_urls())
    for index, url in enumerate(urls):
        names.append("redis" if len(urls) == 1 else f"redis{index + 1}")
        probes.append(_ping_redis(url))
    results = await asyncio.gather(
        *(asyncio.wait_for(probe, CHECK_TIMEOUT) for probe in probes), return_exceptions=True
    )
    checks = {
        name: _describe(result) if isinstance(result, BaseException) else "ok" for name, result in zip(names, results)
    }
    return all(value == "ok" for value in checks.values()), checks


def _readiness_response(ready: bool, checks: dict[str, str]) -> JsonResponse:
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
        headers={"Cache-Control": "no-store"},
    )


def _health_response() -> JsonResponse:
    return JsonResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})


def metrics_allowed(remote_addr: str) -> bool:
    """Return whether this client address may read /metrics: loopback or METRICS_ALLOWED_CIDRS."""
    try:
        address = ipaddress.ip_address(remote_addr)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return True
    return any(address in ipaddress.ip_network(cidr, strict=False) for cidr in settings.METRICS_ALLOWED_CIDRS)


def _metrics_response(request: HttpRequest) -> HttpResponse:
    if not metrics_allowed(request.META.get("REMOTE_ADDR", "")):
        return HttpResponse(
            "Forbidden: /metrics is served to METRICS_ALLOWED_CIDRS only.\n", status=403, content_type="text/plain"
        )
    from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, REGISTRY, generate_latest

    from notifications import live_metrics

    live_metrics.bind_labels()

    return HttpResponse(
        generate_latest(REGISTRY), content_type=CONTENT_TYPE_PLAIN_0_0_4, headers={"Cache-Control": "no-store"}
    )


class ProbeMiddleware:
    """Answer GET/HEAD /healthz, /readyz and /metrics; pass everything else on.

    Sync only, like the whole chain under ASGI (livefeed/request_threads.py).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        path = request.path_info
        if request.method not in ("GET", "HEAD") or path not in ("/healthz", "/readyz", "/metrics"):
            return self.get_response(request)
        if path == "/readyz":
            return _readiness_response(*async_to_sync(readiness)())
        return _health_response() if path == "/healthz" else _metrics_response(request)
