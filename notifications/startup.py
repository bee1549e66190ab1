"""What a server says about itself at start-up, and what it refuses to start without."""
from __future__ import annotations

import gc
import logging

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from livefeed import redis_config

logger = logging.getLogger("livefeed")


def announce_configuration() -> None:
    """Log the database, channel layer, Redis hosts and limits in force (never a password)."""
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        where = db.get("NAME")
    else:
        where = f"{db.get('HOST') or 'localhost'}:{db.get('PORT') or '-'}/{db.get('NAME')}"
    logger.info("Database: %s at %s", db["ENGINE"].rsplit(".", 1)[-1], where)
    announce_channel_layer()
    if redis_config.uses_sentinel():
        logger.info("Redis: %s (Sentinel: channel layer and shared cache on the master)", ", ".join(redis_config.describe_hosts()))
    elif len(redis_config.shard_urls()) > 1:
        hosts = redis_config.describe_hosts()
        logger.info(
            "Redis: %s (channel layer sharded across %d servers; shared cache on %s)", ", ".join(hosts), len(hosts), hosts[0]
        )
    elif redis_config.redis_configured():
        logger.info("Redis: %s (channel layer and shared cache)", ", ".join(redis_config.describe_hosts()))
    live = settings.LIVE_UPDATES
    logger.info(
        "Limits: FEED_POST_RATE=%s, DATA_UPLOAD_MAX_MEMORY_SIZE=%d bytes, WS_SLOW_READER_MAX_BYTES=%d, "
        "WS_SLOW_READER_TIMEOUT=%gs, WS_SHUTDOWN_GRACE=%gs, WS_CHECK_INTERVAL=%gs, WS_SESSION_CHECK_INTERVAL=%gs",
        settings.FEED_POST_RATE,
        settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
        live["slow_reader_max_bytes"],
        live["slow_reader_timeout"],
        live["shutdown_grace"],
        live["check_interval"],
        settings.WS_SESSION_CHECK_INTERVAL,
    )


def redis_hosts(urls: str) -> list[str]:
    """Return host:port/db of each comma-separated Redis URL, without user names or passwords."""
    return [redis_config.describe_url(url) for url in redis_config.split_urls(urls)]


def announce_channel_layer() -> None:
    """Log which channel layer this server uses, so operators see it at start-up."""
    backend = settings.CHANNEL_LAYERS["default"]["BACKEND"]
    if redis_config.redis_configured():
        how = "REDIS_SENTINELS is set" if redis_config.uses_sentinel() else "REDIS_URL is set"
        logger.info("Channel layer: %s on Redis (%s); instances share live events.", backend, how)
    else:
        logger.warning(
            "Channel layer: %s (in-process, REDIS_URL is unset); run a single instance only.", backend
        )


def require_collected_static_files() -> None:
    """With DEBUG off, refuse to start without collectstatic's manifest: every page would be a 500."""
    if settings.DEBUG:
        return
    from django.contrib.staticfiles.storage import ManifestFilesMixin, staticfiles_storage

    if isinstance(staticfiles_storage, ManifestFilesMixin) and not staticfiles_storage.hashed_files:
        raise ImproperlyConfigured(
            f"No static files manifest in {settings.STATIC_ROOT}: run `python manage.py collectstatic --noinput` "
            "before starting with DEBUG off."
        )


def check_server_adapter() -> None:
    """Run the server adapter's system checks: log warnings, refuse to start on an error."""
    from django.core import checks

    from notifications.server_adapter.checks import TAG

    messages = checks.run_checks(tags=[TAG], include_deployment_checks=False)
    errors = [message for message in messages if message.level >= checks.ERROR]
    for message in messages:
        (logger.error if message in errors else logger.warning)("%s: %s (%s)", message.id, message.msg, message.hint)
    if errors:
        raise ImproperlyConfigured("; ".join(f"{message.id}: {message.msg}" for message in errors))


def tune_garbage_collector() -> None:
    """Freeze what start-up built and set the collector's thresholds (settings.GC_THRESHOLDS).

    A process serving a few thousand sockets tracks a few hundred thousand objects, and a full
    collection stops every socket of the process for 100-300 ms. With Python's thresholds
    (700, 10, 10) full collections came several times a minute while streaming, set off by the
    events and frames that stay alive a while; with (5,000, 10, 40) one is considered 2,000,000
    net allocations apart, so they come when the process has grown by a quarter (sockets
    connecting), not in steady streaming. A young generation of 10,000 kept ~1 KB more per
    idle connection (handshake garbage collected later). The modules,
    classes and functions that start-up built live as long as the process: gc.freeze() takes
    them out of every later collection.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*settings.GC_THRESHOLDS)
    logger.info("Garbage collector: %d start-up objects frozen, thresholds %s", gc.get_freeze_count(), settings.GC_THRESHOLDS)
