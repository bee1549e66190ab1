"""Django's Redis cache on the master Redis Sentinel names (Django's RedisCache speaks no Sentinel).

``CACHES = {"default": {"BACKEND": "livefeed.sentinel_cache.SentinelRedisCache",
"LOCATION": "<master name>", "OPTIONS": {"sentinels": [(host, port), ...], "sentinel_kwargs": {...},
...redis-py connection options}}}`` (``livefeed.redis_config.cache_config`` writes it).
Everything but the connection pool is Django's own client: one redis-py
``SentinelConnectionPool`` per process, whose connections ask the sentinels for the master
when they (re)connect, so the cache follows a failover once Sentinel has promoted a replica.
"""
from __future__ import annotations

from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient


class SentinelCacheClient(RedisCacheClient):
    # Set by RedisCacheClient.__init__ (not in django-stubs).
    _pools: dict[int, Any]
    _pool_options: dict[str, Any]

    def __init__(self, servers: list[str], *, sentinels: list[tuple[str, int]], sentinel_kwargs: dict[str, Any] | None = None, **options: Any) -> None:
        super().__init__(servers, **options)
        import redis.sentinel

        self._sentinel = redis.sentinel.Sentinel([tuple(address) for address in sentinels], sentinel_kwargs=sentinel_kwargs)
        self._master_name = servers[0]

    def _get_connection_pool(self, write: bool) -> Any:
        # One pool, writes and reads alike: a replica's counts may lag the master's.
        if 0 not in self._pools:
            import redis.sentinel

            self._pools[0] = redis.sentinel.SentinelConnectionPool(
                self._master_name, self._sentinel, **self._pool_options
            )
        return self._pools[0]


class SentinelRedisCache(RedisCache):
    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = SentinelCacheClient
