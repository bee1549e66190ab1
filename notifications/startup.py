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
