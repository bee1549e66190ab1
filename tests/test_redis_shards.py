"""REDIS_URL with several servers: the channel layer shards across them, shared state stays on the first.

Two real daphne instances on two throwaway Redis servers: feeds whose groups live on either
shard, readers on both instances, posts through both; every reader gets every comment once,
in order, through the live path (not the database backstop).
"""
from channels_redis.utils import _consistent_hash
from django.test import SimpleTestCase, override_settings

from livefeed import redis_config
from livefeed.checks import redis_settings_errors
from tests.harness import MultiInstanceTestCase, RedisServer, metric_value, wait_until
from tests.test_multi_instance import MultiInstanceTestMixin

LIVE_TIMEOUT = 3.0  # well under the backstop of these instances (lag_grace 3.75 s, checked every 5 s)


class ShardedDeliveryTests(MultiInstanceTestMixin, MultiInstanceTestCase):
    """Instances A and B with REDIS_URL listing two servers."""

    # A slow database backstop (checks every 5 s, lag_grace 3.75 s), so that a comment arriving
    # within LIVE_TIMEOUT can only have come through the sharded channel layer.
    instance_env = {"WS_CHECK_INTERVAL": "5"}
    shard2: RedisServer

    @classmethod
    def start_redis(cls):
        cls.redis.start()
        cls.shard2 = RedisServer()
        cls.extra_processes = [cls.shard2]
        cls.shard2.start()
        return {"REDIS_URL": f"{cls.redis.url},{cls.shard2.url}"}

    def feed_on_shard(self, shard):
        """Create feeds until one's group hashes onto `shard` (0: first server, 1: second)."""
        for number in range(64):
            feed = self.make_feed(f"shard{shard}-{number}")
            if _consistent_hash(f"feed.{feed.pk}", 2) == shard:
                return feed
        raise AssertionError("no feed id hashed onto the shard")

    def fills(self):
        return sum(metric_value(instance, "livefeed_db_fills_total", stream="feed") for instance in self.instances)

    def test_posts_through_either_instance_reach_readers_on_both_once_in_order(self):
        a, b = self.instances
        for shard, server in enumerate([self.redis, self.shard2]):
            with self.subTest(group_on_shard=shard):
                feed = self.feed_on_shard(shard)
                self.slug = feed.slug
                readers = [self.reader(a, feed.slug), self.reader(a, feed.slug), self.reader(b, feed.slug), self.reader(b, feed.slug)]
                group_key = f"asgi:group:feed.{feed.pk}"
                other = self.shard2 if server is self.redis else self.redis
                wait_until(lambda: server.command("ZCARD", group_key) == b":2", 10, f"both hubs in {group_key}")
                self.assertEqual(other.command("EXISTS", group_key), b":0", "the group lives on one shard only")

                # One at a time, through A and B in turn: each arrives live on every reader.
                fills_before = self.fills()
                for index in range(6):
                    comment = self.post([a, b][index % 2], feed.slug, f"one at a time {index}")
                    for reader in readers:
                        reader.wait_for_seq(comment["seq"], LIVE_TIMEOUT)
                self.assertEqual(self.fills(), fills_before, "a comment came from the database, not the layer")

                # Then concurrently through both.
                created = self.post_many([(a, 15), (b, 15)], feed.slug)
                self.assertEqual(len(created), 30)
                self.assertEveryReaderGetsAll(readers, 36, via=b)

    def test_readyz_checks_each_shard(self):
        import json
        import urllib.request

        from tests.harness import NO_PROXY

        def readyz(instance):
            try:
                with NO_PROXY.open(instance.http_url("/readyz"), timeout=5) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as error:
                return error.code, json.loads(error.read())

        a = self.instances[0]
        self.assertEqual(readyz(a), (200, {"status": "ok", "checks": {"database": "ok", "redis1": "ok", "redis2": "ok"}}))
        self.shard2.stop()
        status, body = readyz(a)
        self.assertEqual(status, 503)
        self.assertEqual(body["checks"]["redis1"], "ok")
        self.assertTrue(body["checks"]["redis2"].startswith("error: "), body)
        self.shard2.start()
        wait_until(lambda: readyz(a)[0] == 200, 10, "/readyz back at 200")


class ShardSettingsTests(SimpleTestCase):
    URLS = "redis://:secret@10.0.0.1:6379/0, redis://10.0.0.2:6380/0"

    def test_the_channel_layer_gets_every_shard_and_the_cache_only_the_first(self):
        where = {"urls": self.URLS, "sentinels": "", "master": ""}
        hosts = redis_config.channel_layer_hosts(**where, connect_timeout=0.5, socket_timeout=15)
        self.assertEqual([host["address"] for host in hosts], ["redis://:secret@10.0.0.1:6379/0", "redis://10.0.0.2:6380/0"])
        cache = redis_config.cache_config(**where, connect_timeout=0.5, socket_timeout=0.5)
        # Django's RedisCache would read from the others as replicas of the first: they are not.
        self.assertEqual(cache["LOCATION"], "redis://:secret@10.0.0.1:6379/0")
        with override_settings(REDIS_URL=self.URLS, REDIS_SENTINELS="", REDIS_SENTINEL_MASTER=""):
            self.assertEqual(redis_config.shared_redis_url(), "redis://:secret@10.0.0.1:6379/0")
            self.assertEqual(redis_config.describe_hosts(), ["redis://10.0.0.1:6379/0", "redis://10.0.0.2:6380/0"])

    def test_the_start_up_announcement_names_each_shard_without_passwords(self):
        from notifications.startup import announce_configuration

        with override_settings(REDIS_URL=self.URLS, REDIS_SENTINELS="", REDIS_SENTINEL_MASTER=""), self.assertLogs("livefeed", "INFO") as logs:
            announce_configuration()
        line = next(line for line in logs.output if "Redis:" in line)
        self.assertIn("redis://10.0.0.1:6379/0, redis://10.0.0.2:6380/0", line)
        self.assertIn("sharded across 2 servers; shared cache on redis://10.0.0.1:6379/0", line)
        self.assertNotIn("secret", "\n".join(logs.output))
        sentinel = {"REDIS_URL": "", "REDIS_SENTINELS": "10.0.0.1:26379", "REDIS_SENTINEL_MASTER": "livefeed"}
        with override_settings(**sentinel), self.assertLogs("livefeed", "INFO") as logs:
            announce_configuration()
        self.assertIn("Redis: sentinel 10.0.0.1:26379, master 'livefeed' (Sentinel", "\n".join(logs.output))

    def test_malformed_or_conflicting_redis_settings_are_refused_by_name(self):
        cases = [
            ({"REDIS_URL": "http://10.0.0.1:6379"}, "scheme"),
            ({"REDIS_URL": "redis://a:6379/0,redis://a:6379/0"}, "twice"),
            ({"REDIS_URL": "redis://a:notaport/0"}, "malformed"),
            ({"REDIS_SENTINELS": "10.0.0.1:26379"}, "without REDIS_SENTINEL_MASTER"),
            ({"REDIS_SENTINEL_MASTER": "livefeed"}, "without REDIS_SENTINELS"),
            ({"REDIS_SENTINELS": "10.0.0.1", "REDIS_SENTINEL_MASTER": "m"}, "not host:port"),
            ({"REDIS_URL": "redis://a/0", "REDIS_SENTINELS": "a:26379", "REDIS_SENTINEL_MASTER": "m"}, "not both"),
        ]
        for values, words in cases:
            with self.subTest(values), override_settings(**{"REDIS_URL": "", "REDIS_SENTINELS": "", "REDIS_SENTINEL_MASTER": "", **values}):
                errors = redis_settings_errors()
                self.assertEqual(len(errors), 1, errors)
                self.assertEqual(errors[0].id, "livefeed.E013")
                self.assertIn(words, errors[0].msg)
                self.assertNotIn("secret", errors[0].msg)
        with override_settings(REDIS_URL="redis://:secret@a:6379/0,redis://b/0", REDIS_SENTINELS="", REDIS_SENTINEL_MASTER=""):
            self.assertEqual(redis_settings_errors(), [])
