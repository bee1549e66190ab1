"""The Channels tutorial's consumer: one group_add per socket, one group_send per message."""
from __future__ import annotations

import json
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer


class FeedConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.slug = self.scope["url_route"]["kwargs"]["slug"]
        self.group_name = f"feed_{self.slug}"
        await self.channel_layer.group_add(self.group_name, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group_name, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # Posts come through the HTTP view, like the project's; client frames are ignored.
        return

    async def comment_created(self, event: dict[str, Any]) -> None:
        # Rendered here, once per socket, as the tutorial does.
        await self.send(
            text_data=json.dumps(
                {
                    "type": "comment.created",
                    "v": 1,
                    "feed": self.slug,
                    "seq": event["seq"],
                    "data": {
                        "id": event["seq"],
                        "seq": event["seq"],
                        "feed": self.slug,
                        "author": event["author"],
                        "body": event["body"],
                        "created_at": event["created_at"],
                    },
                }
            )
        )
