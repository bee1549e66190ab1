from __future__ import annotations

from django.urls import path

from notifications.consumers import FeedConsumer

websocket_urlpatterns = [
    path("ws/feeds/<slug:slug>/", FeedConsumer.as_asgi()),
]
