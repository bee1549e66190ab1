"""Start-up checks of the settings the live path and posting rely on.

Each value that would silently switch off a guarantee (the database backstop of the live
path, the rate limit, a post answered within 2 s) is refused, naming its setting. The checks
run with ``manage.py check`` (Django's system-check framework, registered by
``notifications.apps``) and when daphne loads ``livefeed.asgi``, which refuses to start
(``require_valid_settings``).
"""
from __future__ import annotations

import ipaddress
import math
from dataclasses import fields
from typing import Any

from django.conf import settings
from django.core.checks import Error, register
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

# Above this, a post could wait longer on an unresponsive Redis than it may take in all (2 s).
MAX_REDIS_WAIT = 1.5
# The largest frame of one comment (2000 characters, each escaped to at most 6 bytes, in markup).
MIN_SLOW_READER_MAX_BYTES = 64 * 1024

# (LIVE_UPDATES key, environment variable that sets it or None, lowest, highest, kind).
# A bound of None is open; lowest bounds are inclusive unless noted in _LIVE_EXCLUSIVE_LOW.
_LIVE_RANGES: list[tuple[str, str | None, float | None, float | None, type]] = [
    ("check_interval", "WS_CHECK_INTERVAL", 0.01, 3600, float),
    ("lag_grace", None, 0, None, float),
    ("gap_grace", None, 0, 60, float),
    ("late_grace_max", None, 0, 60, float),
    ("live_coalesce", None, 0, 1, float),
    ("batch_size", None, 1, 10000, int),
    ("recent_events", None, 0, 100000, int),
    ("slow_reader_max_bytes", "WS_SLOW_READER_MAX_BYTES", MIN_SLOW_READER_MAX_BYTES, None, int),
    ("slow_reader_soft_bytes", None, 1, None, int),
    ("slow_reader_timeout", "WS_SLOW_READER_TIMEOUT", 0.1, 3600, float),
    ("close_grace", None, 0, 3600, float),
    ("shutdown_grace", "WS_SHUTDOWN_GRACE", 0, 3600, float),
    ("membership_refresh", None, 1, None, float),
    ("layer_timeout", None, 0.01, 60, float),
    ("publish_backoff", None, 0, 3600, float),
]


def _name(key: str, env: str | None) -> str:
    return f"{env} (LIVE_UPDATES['{key}'])" if env else f"LIVE_UPDATES['{key}']"


def _number_error(name: str, value: Any, low: float | None, high: float | None, kind: type, id_: str) -> Error | None:
    """Return an Error unless value is a finite number of `kind` within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not float(value).is_integer()):
        return Error(f"{name} must be {'an integer' if kind is int else 'a number'}, not {value!r}.", id=id_)
    if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        return Error(f"{name} must be {bounds}, not {value!r}.", id=id_)
    return None


def live_settings_errors() -> list[Error]:
    """Return what is wrong with LIVE_UPDATES (ranges, and the relations the hub relies on)."""
    from notifications.conf import CHECK_HISTORY, LiveSettings, live_settings

    overrides = dict(getattr(settings, "LIVE_UPDATES", {}) or {})
    unknown = sorted(set(overrides) - {field.name for field in fields(LiveSettings)})
    if unknown:
        return [Error(f"LIVE_UPDATES has unknown keys: {', '.join(unknown)}.", id="livefeed.E001")]
    conf = live_settings()
    # lag_grace follows check_interval unless set: only a lag_grace that was set is blamed.
    errors = [
        error
        for key, env, low, high, kind in _LIVE_RANGES
        if (key != "lag_grace" or key in overrides)
        and (error := _number_error(_name(key, env), getattr(conf, key), low, high, kind, "livefeed.E002"))
    ]
    if errors:
        return errors
    horizon = (CHECK_HISTORY - 1) * conf.check_interval
    if conf.lag_grace >= horizon:
        errors.append(Error(
            f"LIVE_UPDATES['lag_grace'] ({conf.lag_grace} s) must be below {CHECK_HISTORY - 1} x WS_CHECK_INTERVAL "
            f"({horizon:g} s): the hub keeps {CHECK_HISTORY} checks, so the database would never fill a stalled feed.",
            id="livefeed.E003",
        ))
    if conf.slow_reader_soft_bytes > conf.slow_reader_max_bytes:
        errors.append(Error(
            f"LIVE_UPDATES['slow_reader_soft_bytes'] ({conf.slow_reader_soft_bytes}) must not exceed "
            f"WS_SLOW_READER_MAX_BYTES ({conf.slow_reader_max_bytes}).",
            id="livefeed.E004",
        ))
    group_expiry = _layer_config().get("group_expiry")
    if group_expiry is not None and conf.membership_refresh >= group_expiry:
        errors.append(Error(
            f"LIVE_UPDATES['membership_refresh'] ({conf.membership_refresh} s) must be below the channel layer's "
            f"group_expiry ({group_expiry} s), or feed groups expire between refreshes and live events stop.",
            id="livefeed.E005",
        ))
    return errors


def _layer_config() -> dict[str, Any]:
    layer: dict[str, Any] = settings.CHANNEL_LAYERS.get("default", {})
    if not layer.get("BACKEND"):
        return {}
    from channels_redis.core import RedisChannelLayer

    config: dict[str, Any] = layer.get("CONFIG", {}) if issubclass(import_string(layer["BACKEND"]), RedisChannelLayer) else {}
    return config


def redis_settings_errors() -> list[Error]:
    """Return what is wrong with the Redis timeouts, the channel layer's capacity and where Redis is."""
    errors = [
        error
        for name, low, high, kind in [
            ("REDIS_CONNECT_TIMEOUT", 0.01, MAX_REDIS_WAIT, float),
            ("REDIS_SOCKET_TIMEOUT", 0.01, MAX_REDIS_WAIT, float),
            ("CHANNEL_LAYER_SOCKET_TIMEOUT", 0.01, 3600, float),
            ("CHANNEL_LAYER_CAPACITY", 1, None, int),
            # A dead instance's readers must stop counting within 30 s (the contract's Presence).
            ("PRESENCE_TTL", 3, 25, int),
        ]
        if hasattr(settings, name)
        and (error := _number_error(name, getattr(settings, name), low, high, kind, "livefeed.E010"))
    ]
    if errors:
        return errors
    from livefeed.redis_config import config_errors

    errors.extend(
        Error(message, id="livefeed.E013")
        for message in config_errors(
            getattr(settings, "REDIS_URL", ""),
            getattr(settings, "REDIS_SENTINELS", ""),
            getattr(settings, "REDIS_SENTINEL_MASTER", ""),
        )
    )
    connect, read = getattr(settings, "REDIS_CONNECT_TIMEOUT", 0), getattr(settings, "REDIS_SOCKET_TIMEOUT", 0)
    if connect + read > MAX_REDIS_WAIT:
        errors.append(Error(
            f"REDIS_CONNECT_TIMEOUT + REDIS_SOCKET_TIMEOUT ({connect + read:g} s) must be at most {MAX_REDIS_WAIT} s: "
            "a post may wait that long on an unresponsive Redis and must be answered within 2 s.",
            id="livefeed.E011",
        ))
    if _layer_config():
        from channels_redis.core import RedisChannelLayer

        block = RedisChannelLayer.brpop_timeout
        for host in _layer_config().get("hosts", []):
            timeout = host.get("socket_timeout") if isinstance(host, dict) else None
            if timeout is not None and timeout <= block:
                errors.append(Error(
                    f"CHANNEL_LAYER_SOCKET_TIMEOUT ({timeout} s) must exceed the {block} s the channel layer's "
                    "receive blocks in BZPOPMIN, or every idle receive fails.",
                    id="livefeed.E012",
                ))
                break
    return errors


def posting_settings_errors() -> list[Error]:
    """Return what is wrong with FEED_POST_RATE, the trusted proxies and the session re-check."""
    from feed.ratelimit import parse_rate

    errors = []
    try:
        parse_rate(str(settings.FEED_POST_RATE))
    except ImproperlyConfigured as exc:
        errors.append(Error(str(exc), id="livefeed.E020"))
    count = settings.TRUSTED_PROXY_COUNT
    if error := _number_error("TRUSTED_PROXY_COUNT", count, 0, 100, int, "livefeed.E021"):
        errors.append(error)
    for entry in settings.TRUSTED_PROXIES:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            errors.append(Error(
                f"TRUSTED_PROXIES has {entry!r}, which is no IP address or network.", id="livefeed.E022"
            ))
    if settings.TRUSTED_PROXIES and count:
        errors.append(Error(
            "Set TRUSTED_PROXIES or TRUSTED_PROXY_COUNT, not both: TRUSTED_PROXY_COUNT would be ignored.",
            id="livefeed.E023",
        ))
    interval = getattr(settings, "WS_SESSION_CHECK_INTERVAL", 30)
    if error := _number_error("WS_SESSION_CHECK_INTERVAL", interval, 0.1, 3600, float, "livefeed.E024"):
        errors.append(error)
    interval = getattr(settings, "WS_ACCESS_CHECK_INTERVAL", 1)
    if error := _number_error("WS_ACCESS_CHECK_INTERVAL", interval, 0.1, 3600, float, "livefeed.E025"):
        errors.append(error)
    return errors


# Comments are numbered with UPDATE ... RETURNING (feed.services), which SQLite has since 3.35.
SQLITE_MIN_VERSION = (3, 35, 0)


def database_errors() -> list[Error]:
    """Return an error if the database cannot run the project's statements."""
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3":
        return []
    import sqlite3

    if sqlite3.sqlite_version_info < SQLITE_MIN_VERSION:
        needed = ".".join(map(str, SQLITE_MIN_VERSION))
        return [Error(
            f"SQLite {sqlite3.sqlite_version} is too old: Live Feed needs {needed} or newer (UPDATE ... RETURNING). "
            "Use a newer Python build, or PostgreSQL (DATABASE_URL).",
            id="livefeed.E026",
        )]
    return []


@register("livefeed")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """The system check: every error of the settings above."""
    return [*live_settings_errors(), *redis_settings_errors(), *posting_settings_errors(), *database_errors()]


def require_valid_settings() -> None:
    """Raise ImproperlyConfigured, one line naming each bad setting, if a check fails (server start)."""
    errors = check_settings()
    if errors:
        raise ImproperlyConfigured(" ".join(f"{error.id}: {error.msg}" for error in errors))
