from __future__ import annotations

from django.urls import path

from notifications.consumers import FeedConsumer
from notifications.notification_consumer import NotificationConsumer

# Channels routes ASGI apps with Django's path(); django-stubs types path() for views only.
websocket_urlpatterns = [
    path("ws/feeds/<slug:slug>/", FeedConsumer.as_asgi()),  # type: ignore[arg-type]
    path("ws/notifications/", NotificationConsumer.as_asgi()),  # type: ignore[arg-type]
]
