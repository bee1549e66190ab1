"""The channel layer on Redis: channels_redis's core layer, receiving without its backup queue.

The core layer keeps every message it pops in a backup sorted set until the receive has
returned it, so that a receive cancelled half-way loses nothing: three more Redis commands
(a cleanup script, the backup ZADD and a ZPOPMIN), two tasks and a lock per message. Here a
lost layer message costs nothing but time: every hub fills gaps from the database (the
backstop), and only a receive cancelled between Redis popping a message and the reply being
read can lose one (a hub's receive is cancelled only when the process stops). Measured on
the benchmark machine: 1,056 µs of CPU per received message with the core layer's receive,
256 µs with this one; each instance receives every comment of the feeds it serves.

Sending, groups, capacity, expiry, sharding and Sentinel are the core layer's, unchanged.
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from channels_redis.core import RedisChannelLayer


class LiveChannelLayer(RedisChannelLayer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Messages popped for a channel of this process, until its receive takes them.
        self._received: dict[str, deque[dict[str, Any]]] = {}
        self._popping: asyncio.Lock | None = None
        self._popping_loop: asyncio.AbstractEventLoop | None = None

    async def receive(self, channel: str) -> dict[str, Any]:
        """Return the next message of a process-local channel: one BZPOPMIN per message."""
        if "!" not in channel:
            message: dict[str, Any] = await super().receive(channel)
            return message
        assert self.require_valid_channel_name(channel)
        waiting = self._received.setdefault(channel, deque(maxlen=self.capacity))
        # A process's channels share one Redis key: one receive pops at a time, and what it
        # pops for another channel waits here for that channel's receive.
        while not waiting:
            async with self._pop_lock():
                if not waiting:
                    await self._pop(self.non_local_name(channel))
        return waiting.popleft()

    def _pop_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._popping is None or self._popping_loop is not loop:
            self._popping, self._popping_loop = asyncio.Lock(), loop
        return self._popping

    async def _pop(self, real_channel: str) -> None:
        key = self.prefix + real_channel
        popped = await self.connection(self.consistent_hash(real_channel)).bzpopmin(key, timeout=self.brpop_timeout)
        if popped is None:
            return
        message = self.deserialize(popped[1])
        targets = message.pop("__asgi_channel__", [])
        targets = targets if isinstance(targets, list) else [targets]
        for target in targets:
            self._received.setdefault(target, deque(maxlen=self.capacity)).append(
                message if len(targets) == 1 else dict(message)
            )
