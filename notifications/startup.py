from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger("livefeed")


def announce_channel_layer() -> None:
    """Log which channel layer this server uses, so operators see it at start-up."""
    backend = settings.CHANNEL_LAYERS["default"]["BACKEND"]
    if settings.REDIS_URL:
        logger.info("Channel layer: %s on Redis (REDIS_URL is set); instances share live events.", backend)
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
