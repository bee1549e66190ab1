"""The project's channel layer (notifications.layer): the core layer, receiving with one BZPOPMIN a
message and sending to a group with one script."""
import asyncio
import time

import redis
from asgiref.sync import async_to_sync
from django.test import SimpleTestCase

from channels_redis.core import RedisChannelLayer

from notifications.layer import LiveChannelLayer
from tests.test_consumers import redis_server


class LiveChannelLayerTests(SimpleTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = redis_server()
        cls.addClassCleanup(cls.redis.stop)

    def setUp(self):
        self.client = redis.Redis.from_url(self.redis.url)
        self.addCleanup(self.client.close)
        self.client.flushall()
        self.layer = LiveChannelLayer(hosts=[self.redis.url], prefix="layer-test")

    def commands(self):
        """Return {command: calls} since the last CONFIG RESETSTAT."""
        return {name.removeprefix("cmdstat_"): stats["calls"] for name, stats in self.client.info("commandstats").items()}

    def test_a_received_message_costs_one_bzpopmin_and_no_backup_queue(self):
        async def run():
            channel = await self.layer.new_channel()
            await self.layer.group_add("feed.1", channel)
            for seq in range(1, 6):
                await self.layer.group_send("feed.1", {"type": "event", "seq": seq})
            self.client.config_resetstat()
            received = [await asyncio.wait_for(self.layer.receive(channel), 5) for _ in range(5)]
            return received, self.commands()

        received, commands = async_to_sync(run)()
        self.assertEqual([message["seq"] for message in received], [1, 2, 3, 4, 5])
        self.assertEqual(received[0], {"type": "event", "seq": 1})
        commands.pop("config|resetstat", None)
        commands.pop("info", None)
        self.assertEqual(commands, {"bzpopmin": 5})
        self.assertEqual(self.client.keys("*backup*"), [])

    def test_channels_of_one_process_each_get_their_own_messages_in_order(self):
        """Two receives at once on one process's key: what one pops for the other waits for it."""

        async def run():
            first, second = await self.layer.new_channel(), await self.layer.new_channel()
            got = {first: [], second: []}

            async def take(channel, count):
                for _ in range(count):
                    got[channel].append((await self.layer.receive(channel))["n"])

            readers = [asyncio.ensure_future(take(first, 20)), asyncio.ensure_future(take(second, 20))]
            for n in range(20):
                await self.layer.send(first, {"type": "x", "n": n})
                await self.layer.send(second, {"type": "x", "n": 100 + n})
            await asyncio.wait_for(asyncio.gather(*readers), 10)
            return got[first], got[second]

        first, second = async_to_sync(run)()
        self.assertEqual(first, list(range(20)))
        self.assertEqual(second, list(range(100, 120)))

    def test_a_group_message_for_several_channels_of_the_process_reaches_each(self):
        async def run():
            channels = [await self.layer.new_channel() for _ in range(3)]
            for channel in channels:
                await self.layer.group_add("feed.2", channel)
            await self.layer.group_send("feed.2", {"type": "event", "seq": 7})
            return [await asyncio.wait_for(self.layer.receive(channel), 5) for channel in channels]

        self.assertEqual(async_to_sync(run)(), [{"type": "event", "seq": 7}] * 3)

    def test_a_plain_channel_is_received_as_the_core_layer_does(self):
        async def run():
            await self.layer.send("jobs", {"type": "job", "n": 1})
            return await asyncio.wait_for(self.layer.receive("jobs"), 5)

        self.assertEqual(async_to_sync(run)(), {"type": "job", "n": 1})

    def test_a_group_send_on_one_redis_is_one_script(self):
        async def run():
            channel = await self.layer.new_channel()
            await self.layer.group_add("feed.3", channel)
            self.client.config_resetstat()
            await self.layer.group_send("feed.3", {"type": "event", "seq": 1})
            commands = self.commands()
            return commands, await asyncio.wait_for(self.layer.receive(channel), 5)

        commands, received = async_to_sync(run)()
        self.assertEqual(commands["eval"], 1)  # the commands the script runs are counted too
        self.assertNotIn("exec", commands)  # no pipeline of its own
        self.assertEqual(received, {"type": "event", "seq": 1})

    def test_what_the_script_sends_is_what_the_core_layer_sends_to_every_kind_of_member(self):
        """Members of this process, of a process on the core layer, and a plain channel all get
        the message whole, including one of more than 15 keys (a longer msgpack map header)."""
        core = RedisChannelLayer(hosts=[self.redis.url], prefix="layer-test")
        small = {"type": "event", "seq": 3, "html": "<p>caf\u00e9 \U0001f600</p>", "user": None, "flags": [1, 2.5, True]}
        large = {"type": "event", **{f"field{n}": n for n in range(20)}, "body": "x" * 70_000}

        async def run():
            ours = [await self.layer.new_channel() for _ in range(2)]
            theirs = await core.new_channel()
            plain = "plain-member"
            for channel in [*ours, theirs, plain]:
                await self.layer.group_add("feed.5", channel)
            got = []
            for message in (small, large):
                await self.layer.group_send("feed.5", message)
                got.append([
                    *[await asyncio.wait_for(self.layer.receive(channel), 5) for channel in ours],
                    await asyncio.wait_for(core.receive(theirs), 5),
                    await asyncio.wait_for(core.receive(plain), 5),
                ])
            await core.flush()
            return got

        got_small, got_large = async_to_sync(run)()
        self.assertEqual(got_small, [small] * 4)
        self.assertEqual(got_large, [large] * 4)

    def test_a_group_send_drops_expired_members_and_respects_the_channels_capacity(self):
        layer = LiveChannelLayer(hosts=[self.redis.url], prefix="layer-test", capacity=2, group_expiry=60)

        async def run():
            stale, live = await layer.new_channel(), await layer.new_channel()
            # A member nobody refreshed for longer than group_expiry, and one just added.
            self.client.zadd(layer._group_key("feed.4"), {stale: time.time() - 120})
            await layer.group_add("feed.4", live)
            for seq in range(1, 4):
                await layer.group_send("feed.4", {"type": "event", "seq": seq})
            members = self.client.zrange(layer._group_key("feed.4"), 0, -1)
            received = [await asyncio.wait_for(layer.receive(live), 5) for _ in range(2)]
            return members, received

        members, received = async_to_sync(run)()
        self.assertEqual(len(members), 1, "the expired member is still in the group")
        # The third message found the channel full (capacity 2): it is dropped, as by the core layer.
        self.assertEqual([message["seq"] for message in received], [1, 2])
        self.assertEqual(self.client.keys("layer-test*!"), [], "the channel's key still holds messages")
