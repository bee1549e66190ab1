"""Where Redis is: shards of the channel layer, the server of shared state, or a Sentinel master.

Three ways to configure Redis (README "Beyond one Redis"):

- ``REDIS_URL=redis://a/0``: one server for the channel layer and the shared state.
- ``REDIS_URL=redis://a/0,redis://b/0``: the channel layer shards across every server
  (channels_redis hashes group and channel names onto them); the shared state (Django's cache:
  rate limits, sign-in limits, /ops/ heartbeats; presence) lives on the FIRST server only.
- ``REDIS_SENTINELS=host:port,...`` with ``REDIS_SENTINEL_MASTER=name``: every Redis use goes
  to the master that Sentinel names, and follows it through a failover.

``settings.py`` builds the channel layer and the cache from the pure functions here
(``channel_layer_hosts``, ``cache_config``); the rest of the code asks for shared state through
``shared_redis_url()``, ``shared_async_client()`` and ``shared_sync_client()``, which read the
settings and hide whether the server is the first shard or a Sentinel master.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import redis
    import redis.asyncio

URL_SCHEMES = ("redis", "rediss", "unix")
# The cache backend that speaks Sentinel (Django's RedisCache does not).
SENTINEL_CACHE_BACKEND = "livefeed.sentinel_cache.SentinelRedisCache"


def split_urls(value: str) -> list[str]:
    """Return the comma-separated URLs of ``REDIS_URL``, stripped, empty parts dropped."""
    return [url.strip() for url in (value or "").split(",") if url.strip()]


def url_error(url: str) -> str | None:
    """Return why one Redis URL is unusable, or None (no password in the message)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is no number or out of range
    except ValueError as exc:
        return f"a malformed Redis URL ({exc})"
    if parts.scheme not in URL_SCHEMES:
        return f"a URL whose scheme is {parts.scheme!r}, not one of {', '.join(URL_SCHEMES)}"
    if parts.scheme != "unix" and not parts.hostname:
        return f"a {parts.scheme}:// URL without a host"
    if parts.scheme == "unix" and not parts.path:
        return "a unix:// URL without a socket path"
    return None


def parse_sentinels(value: str) -> list[tuple[str, int]]:
    """Return the ``(host, port)`` pairs of ``REDIS_SENTINELS`` (``host:port,[::1]:port``); ValueError names a bad entry."""
    sentinels = []
    for entry in (part.strip() for part in (value or "").split(",")):
        if not entry:
            continue
        host, sep, port = entry.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"REDIS_SENTINELS has {entry!r}, which is not host:port.")
        sentinels.append((host, int(port)))
    return sentinels


def config_errors(urls: str, sentinels: str, master: str) -> list[str]:
    """Return what is wrong with REDIS_URL, REDIS_SENTINELS and REDIS_SENTINEL_MASTER together."""
    errors = []
    listed = split_urls(urls)
    for url in listed:
        if problem := url_error(url):
            errors.append(f"REDIS_URL has {problem}: {describe_url(url)}.")
    if len(set(listed)) != len(listed):
        errors.append("REDIS_URL lists one server twice: each shard must be a server of its own.")
    try:
        parsed = parse_sentinels(sentinels)
    except ValueError as exc:
        errors.append(str(exc))
        parsed = [("", 0)]
    if parsed and not master.strip():
        errors.append("REDIS_SENTINELS is set without REDIS_SENTINEL_MASTER, the name Sentinel monitors the master by.")
    if master.strip() and not parsed:
        errors.append("REDIS_SENTINEL_MASTER is set without REDIS_SENTINELS (host:port of each sentinel).")
    if parsed and listed:
        errors.append(
            "Set REDIS_URL or REDIS_SENTINELS, not both: with Sentinel every Redis use goes to the master it names."
        )
    return errors


def describe_url(url: str) -> str:
    """Return scheme://host:port/db of one Redis URL, without user name or password."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        port = parts.port or 6379
    except ValueError:
        return "(unparsable URL)"
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}:{port}{parts.path or ''}"


def _sentinel_kwargs(connect_timeout: float, socket_timeout: float) -> dict[str, Any]:
    # The sentinels' own connections: asking them for the master is bounded like any Redis call.
    return {"socket_connect_timeout": connect_timeout, "socket_timeout": socket_timeout}


def channel_layer_hosts(
    *, urls: str, sentinels: str, master: str, connect_timeout: float, socket_timeout: float
) -> list[dict[str, Any]]:
    """Return channels_redis ``hosts``: one per shard, or the Sentinel master (empty: no Redis)."""
    timeouts = {"socket_timeout": socket_timeout, "socket_connect_timeout": connect_timeout}
    try:
        sentinel_list = parse_sentinels(sentinels)
    except ValueError:
        return []  # refused at start-up by livefeed.checks
    if sentinel_list and master.strip():
        return [{
            "sentinels": sentinel_list,
            "master_name": master.strip(),
            "sentinel_kwargs": _sentinel_kwargs(connect_timeout, connect_timeout),
            **timeouts,
        }]
    return [{"address": url, **timeouts} for url in split_urls(urls)]


def cache_config(*, urls: str, sentinels: str, master: str, connect_timeout: float, socket_timeout: float) -> dict[str, Any] | None:
    """Return the CACHES['default'] of shared state: the first server, or the Sentinel master (None: no Redis)."""
    options = {"socket_connect_timeout": connect_timeout, "socket_timeout": socket_timeout}
    try:
        sentinel_list = parse_sentinels(sentinels)
    except ValueError:
        return None
    if sentinel_list and master.strip():
        return {
            "BACKEND": SENTINEL_CACHE_BACKEND,
            "LOCATION": master.strip(),
            "OPTIONS": {**options, "sentinels": sentinel_list, "sentinel_kwargs": _sentinel_kwargs(connect_timeout, socket_timeout)},
        }
    listed = split_urls(urls)
    if not listed:
        return None
    # Only the first: Django's RedisCache would take the others for read replicas of the first,
    # which independent shards are not (a count read from another shard would be wrong).
    return {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": listed[0], "OPTIONS": options}


# --- At run time, from the settings -------------------------------------------------------


def _settings() -> tuple[str, list[tuple[str, int]], str]:
    from django.conf import settings

    try:
        sentinels = parse_sentinels(getattr(settings, "REDIS_SENTINELS", ""))
    except ValueError:
        sentinels = []
    master = getattr(settings, "REDIS_SENTINEL_MASTER", "").strip()
    return getattr(settings, "REDIS_URL", ""), (sentinels if master else []), master


def uses_sentinel() -> bool:
    """Whether Redis is reached through Sentinel (REDIS_SENTINELS and REDIS_SENTINEL_MASTER set)."""
    return bool(_settings()[1])


def redis_configured() -> bool:
    """Whether this process uses Redis at all (else: in-process layer and cache, one instance)."""
    urls, sentinels, _ = _settings()
    return bool(sentinels or split_urls(urls))


def shard_urls() -> list[str]:
    """Return the channel layer's shards (REDIS_URL's servers; empty with Sentinel or no Redis)."""
    urls, sentinels, _ = _settings()
    return [] if sentinels else split_urls(urls)


def shared_redis_url() -> str | None:
    """Return the URL of the server holding shared state: REDIS_URL's first (None with Sentinel or no Redis)."""
    listed = shard_urls()
    return listed[0] if listed else None


def describe_hosts() -> list[str]:
    """Return what this process connects to, for logs: each shard, or the sentinels and master name."""
    urls, sentinels, master = _settings()
    if sentinels:
        return [f"sentinel {host}:{port}" for host, port in sentinels] + [f"master {master!r}"]
    return [describe_url(url) for url in split_urls(urls)]


def _client_options(overrides: dict[str, Any]) -> dict[str, Any]:
    from django.conf import settings

    return {
        "socket_connect_timeout": settings.REDIS_CONNECT_TIMEOUT,
        "socket_timeout": settings.REDIS_SOCKET_TIMEOUT,
        **overrides,
    }


def shared_async_client(**overrides: Any) -> redis.asyncio.Redis | None:
    """Return a redis-py asyncio client of the shared-state server, or None without Redis.

    The first ``REDIS_URL`` server, or the master Sentinel names (found again after a failover:
    each new connection asks the sentinels). Timeouts default to REDIS_CONNECT_TIMEOUT and
    REDIS_SOCKET_TIMEOUT; keyword arguments override them. The caller closes it (``aclose()``).
    """
    import redis.asyncio
    import redis.asyncio.sentinel

    _, sentinels, master = _settings()
    options = _client_options(overrides)
    if sentinels:
        sentinel = redis.asyncio.sentinel.Sentinel(
            sentinels, sentinel_kwargs=_sentinel_kwargs(options["socket_connect_timeout"], options["socket_timeout"])
        )
        client: redis.asyncio.Redis = sentinel.master_for(master, **options)
        return client
    url = shared_redis_url()
    return redis.asyncio.Redis.from_url(url, **options) if url else None


def shared_sync_client(**overrides: Any) -> redis.Redis | None:
    """Like ``shared_async_client``, a blocking redis-py client (for threads and management commands)."""
    import redis
    import redis.sentinel

    _, sentinels, master = _settings()
    options = _client_options(overrides)
    if sentinels:
        sentinel = redis.sentinel.Sentinel(
            sentinels, sentinel_kwargs=_sentinel_kwargs(options["socket_connect_timeout"], options["socket_timeout"])
        )
        sync_client: redis.Redis = sentinel.master_for(master, **options)
        return sync_client
    url = shared_redis_url()
    return redis.Redis.from_url(url, **options) if url else None


async def aclose_client(client: redis.asyncio.Redis) -> None:
    """Close a client of ``shared_async_client``: its pool and, with Sentinel, the sentinels' connections."""
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    await client.aclose()
    for sentinel in getattr(manager, "sentinels", []):
        await sentinel.aclose()
