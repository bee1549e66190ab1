from __future__ import annotations

from django.urls import path

from notifications.consumers import FeedConsumer
from notifications.notification_consumer import NotificationConsumer

websocket_urlpatterns = [
    path("ws/feeds/<slug:slug>/", FeedConsumer.as_asgi()),
    path("ws/notifications/", NotificationConsumer.as_asgi()),
]
