from __future__ import annotations

import logging

from django.conf import settings

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
