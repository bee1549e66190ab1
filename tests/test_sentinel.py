"""REDIS_SENTINELS: the channel layer and the cache follow a Sentinel failover.

A master, a replica and one sentinel (tests.harness.SentinelCluster), two real daphne
instances with JSON readers on both. The master is SIGKILLed while comments are posted every
~100 ms through both instances: every post is still answered 201 within 2 s, every reader gets
every comment once, in order, without reconnecting, and after the promotion a comment travels
the live path again.
"""
import re
import threading
import time

from django.test import SimpleTestCase, override_settings

from livefeed import redis_config
from tests.harness import MultiInstanceTestCase, SentinelCluster, metric_value, post_comment, wait_until
from tests.test_health import readiness
from tests.test_multi_instance import MultiInstanceTestMixin

POST_DEADLINE = 2.0
DELIVERY_TIMEOUT = 20
LIVE_TIMEOUT = 2.0
BACK = "The rate-limit cache answers again"


def incr_calls(server):
    """Return how many INCRBY a Redis server has run (the rate limit's counts: cache.incr)."""
    match = re.search(rb"cmdstat_incrby:calls=(\d+)", server.info("commandstats"))
    return int(match.group(1)) if match else 0


class PacedPoster(threading.Thread):
    """Post through the instances in turn every ~100 ms until stopped; record each answer's status and time."""

    def __init__(self, instances, slug):
        super().__init__(daemon=True)
        self.instances, self.slug = instances, slug
        self.answers = []  # (instance name, status, seconds, body)
        self.stop = threading.Event()

    def run(self):
        index = 0
        while not self.stop.is_set():
            instance = self.instances[index % len(self.instances)]
            started = time.monotonic()
            try:
                status, body = post_comment(instance, self.slug, author="poster", body=f"across the failover {index}", timeout=10)
            except OSError as error:
                status, body = 0, repr(error)
            self.answers.append((instance.name, status, time.monotonic() - started, body))
            index += 1
            self.stop.wait(0.1)  # paces the posts across the failover; not a synchronisation


class SentinelFailoverTests(MultiInstanceTestMixin, MultiInstanceTestCase):
    # The rate limit stays on (its counts live on the Sentinel master, and must fail open while
    # there is none), with room for the ~10 posts a second this test sends from one address.
    # The backstop checks every 3 s (lag_grace 2.25 s), so the last comment's arrival within
    # LIVE_TIMEOUT can only be the live path's doing.
    instance_env = {"FEED_POST_RATE": "100000/m", "WS_CHECK_INTERVAL": "3"}
    cluster: SentinelCluster

    @classmethod
    def start_redis(cls):
        cls.cluster = SentinelCluster()
        cls.redis = cls.cluster.master
        cls.extra_processes = [cls.cluster.replica, cls.cluster.sentinel]
        cls.cluster.start()
        return cls.cluster.env

    def test_a_killed_master_loses_no_comment_and_live_delivery_resumes_after_the_promotion(self):
        a, b = self.instances
        self.slug = self.make_feed("sentinel").slug
        readers = [self.reader(a, self.slug), self.reader(b, self.slug)]
        self.assertEqual(readiness(a), (200, {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}))
        first = self.post(a, self.slug, "before the failover")["seq"]
        for reader in readers:
            reader.wait_for_seq(first, LIVE_TIMEOUT)

        offsets = {instance.name: instance.log_offset() for instance in self.instances}
        poster = PacedPoster(self.instances, self.slug)
        poster.start()
        try:
            wait_until(lambda: len(poster.answers) >= 10, 20, "posts before the kill")
            self.cluster.kill_master()
            killed_at = time.monotonic()
            self.cluster.wait_promoted(15)
            promoted_after = time.monotonic() - killed_at
            counted_before = incr_calls(self.cluster.replica)  # now the master: nothing replicates to it
            # Keep posting after the promotion until the instances count posts again: the rate
            # limit, which failed open at the kill, retries its cache 5 s later (feed.ratelimit).
            posted = len(poster.answers)
            wait_until(lambda: len(poster.answers) >= posted + 20, 20, "posts after the promotion")
            for instance in self.instances:
                wait_until(lambda: BACK in instance.log_since(offsets[instance.name]), 20, f"{instance.name}'s rate limit back")
        finally:
            poster.stop.set()
            poster.join(15)

        slow_or_failed = [(name, status, round(seconds, 2)) for name, status, seconds, _ in poster.answers if status != 201 or seconds > POST_DEADLINE]
        self.assertEqual(slow_or_failed, [], f"promoted after {promoted_after:.1f} s\n{self.diagnostics()}")
        last = max(body["seq"] for _, _, _, body in poster.answers)
        self.assertEqual(last, first + len(poster.answers))
        for reader in readers:
            reader.wait_for_seq(last, DELIVERY_TIMEOUT)
            self.assertFalse(reader.closed.is_set(), f"{reader!r} was closed ({reader.close_code})")

        # After the promotion: a comment reaches every reader through the layer, not the database.
        fills = [metric_value(instance, "livefeed_db_fills_total", stream="feed") for instance in self.instances]
        comment = self.post(b, self.slug, "after the failover")
        for reader in readers:
            reader.wait_for_seq(comment["seq"], LIVE_TIMEOUT)
        self.assertEqual(
            [metric_value(instance, "livefeed_db_fills_total", stream="feed") for instance in self.instances], fills,
            "the comment after the failover came from the database",
        )
        self.assertEveryReaderGetsAll(readers, comment["seq"], via=a)
        for reader in readers:
            self.assertFalse(reader.closed.is_set(), f"{reader!r} reconnected ({reader.close_code})")
        # The cache followed the failover too: the rate limit counts on the promoted replica, and
        # /readyz finds the master through the sentinel.
        self.assertGreater(incr_calls(self.cluster.replica), counted_before, "no rate-limit count on the new master")
        for instance in self.instances:
            wait_until(lambda: readiness(instance)[0] == 200, 10, f"/readyz of {instance.name} after the failover")


class SentinelSettingsTests(SimpleTestCase):
    def test_every_redis_use_goes_through_the_sentinels(self):
        where = {"urls": "", "sentinels": "10.0.0.1:26379,[::1]:26380", "master": "livefeed"}
        (host,) = redis_config.channel_layer_hosts(**where, connect_timeout=0.5, socket_timeout=15)
        self.assertEqual(host["sentinels"], [("10.0.0.1", 26379), ("::1", 26380)])
        self.assertEqual(host["master_name"], "livefeed")
        self.assertEqual((host["socket_connect_timeout"], host["socket_timeout"]), (0.5, 15))
        cache = redis_config.cache_config(**where, connect_timeout=0.5, socket_timeout=0.5)
        self.assertEqual(cache["BACKEND"], "livefeed.sentinel_cache.SentinelRedisCache")
        self.assertEqual(cache["LOCATION"], "livefeed")
        with override_settings(REDIS_URL="", REDIS_SENTINELS="10.0.0.1:26379", REDIS_SENTINEL_MASTER="livefeed"):
            self.assertTrue(redis_config.uses_sentinel())
            self.assertIsNone(redis_config.shared_redis_url())
            self.assertEqual(redis_config.describe_hosts(), ["sentinel 10.0.0.1:26379", "master 'livefeed'"])
