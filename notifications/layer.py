"""The channel layer on Redis: channels_redis's core layer, receiving without its backup queue.

The core layer keeps every message it pops in a backup sorted set until the receive has
returned it, so that a receive cancelled half-way loses nothing: three more Redis commands
(a cleanup script, the backup ZADD and a ZPOPMIN), two tasks and a lock per message. Here a
lost layer message costs nothing but time: every hub fills gaps from the database (the
backstop), and only a receive cancelled between Redis popping a message and the reply being
read can lose one (a hub's receive is cancelled only when the process stops). Measured on
the benchmark machine: 1,056 µs of CPU per received message with the core layer's receive,
256 µs with this one; each instance receives every comment of the feeds it serves.

A group send on one Redis (one server, or Sentinel's master) is one script instead of four
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

# KEYS[1] the group. ARGV: the oldest membership score kept, the key prefix, the message
# (msgpack, a map) with its random prefix's length, the keys' capacity, the oldest message
# score kept, the time and the keys' expiry. One script does what the core layer does in
# four round trips: drop expired members, read the members, and send each channel key the
# message with its channels in `__asgi_channel__` (a process's channels share one key:
# "specific.<process>!" + suffix), as the core layer's _map_channel_keys_to_connection
# builds it, and only if the key is under capacity. Returns {members, keys over capacity}.
_GROUP_SEND = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
if #members == 0 then return {0, 0} end
local prefix, message, prefix_length = ARGV[2], ARGV[3], tonumber(ARGV[4])
local capacity, oldest, now, expiry = tonumber(ARGV[5]), ARGV[6], ARGV[7], ARGV[8]
local random_prefix = string.sub(message, 1, prefix_length)
local packed = string.sub(message, prefix_length + 1)
local first, entries, rest = string.byte(packed, 1), 0, ''
if first >= 0x80 and first <= 0x8f then
    entries, rest = first - 0x80, string.sub(packed, 2)
elseif first == 0xde then
    entries, rest = string.byte(packed, 2) * 256 + string.byte(packed, 3), string.sub(packed, 4)
else
    return redis.error_reply('group_send: the message is not a msgpack map')
end
local header
if entries + 1 <= 15 then
    header = string.char(0x80 + entries + 1)
else
    header = string.char(0xde, math.floor((entries + 1) / 256), (entries + 1) % 256)
end
local order, channels = {}, {}
for _, member in ipairs(members) do
    local bang = string.find(member, '!', 1, true)
    local key = prefix .. (bang and string.sub(member, 1, bang) or member)
    if channels[key] == nil then
        channels[key] = {}
        order[#order + 1] = key
    end
    table.insert(channels[key], member)
end
local over_capacity = 0
for _, key in ipairs(order) do
    redis.call('ZREMRANGEBYSCORE', key, 0, oldest)
    if redis.call('ZCOUNT', key, '-inf', '+inf') < capacity then
        local body = random_prefix .. header .. cmsgpack.pack('__asgi_channel__') .. cmsgpack.pack(channels[key]) .. rest
        redis.call('ZADD', key, now, body)
        redis.call('EXPIRE', key, expiry)
    else
        over_capacity = over_capacity + 1
    end
end
return {#members, over_capacity}
"""


class LiveChannelLayer(RedisChannelLayer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Messages popped for a channel of this process, until its receive takes them.
        self._received: defaultdict[str, deque[dict[str, Any]]] = defaultdict(partial(deque, maxlen=self.capacity))
        self._popping: asyncio.Lock | None = None
        self._popping_loop: asyncio.AbstractEventLoop | None = None

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        """Send the message to every channel of the group: one script on one Redis.

        Several shards, encryption or per-channel capacities: the core layer's group_send.
        """
        if self.ring_size != 1 or self._serializer.crypter is not None or self.channel_capacity:
            await super().group_send(group, message)
            return
        assert self.require_valid_group_name(group), "Group name not valid"
        now = time.time()
        members, over_capacity = await self.connection(0).eval(
            _GROUP_SEND, 1, self._group_key(group),
            int(now) - self.group_expiry, self.prefix, self.serialize(message),
            self._serializer.random_prefix_length, self.capacity, int(now) - int(self.expiry), now, self.expiry,
        )
        if over_capacity:
            logger.info("%s of %s channels over capacity in group %s", over_capacity, members, group)

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
