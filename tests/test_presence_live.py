"""Presence through the real path: real daphne processes, real sockets, a real Redis.

A feed's `watching` (GET /api/feeds/<slug>/ and the streams' feed.presence frames) is its
number of open live connections across all instances: it rises and falls as readers come
and go, forgets a SIGKILLed instance's readers within 30 s, is rebuilt within 30 s after
Redis restarted empty, and a storm of connects costs each reader about one frame a second.
"""
import json
import threading
import time
import urllib.request

from django.test import TransactionTestCase

from tests.harness import (
    NO_PROXY,
    DaphneInstance,
    FeedReader,
    MultiInstanceTestCase,
    subprocess_database_url,
    wait_until,
)

WAIT = 20  # generous for a loaded 2-core machine
CONTRACT_LIMIT = 30  # the contract: a dead instance's readers stop counting, and Redis is refilled, within 30 s


def api_watching(instance, slug):
    with NO_PROXY.open(instance.http_url(f"/api/feeds/{slug}/"), timeout=10) as response:
        feed = json.loads(response.read())
    return feed["watching"]


def api_list_watching(instance, slug):
    with NO_PROXY.open(instance.http_url("/api/feeds/"), timeout=10) as response:
        return {feed["slug"]: feed["watching"] for feed in json.loads(response.read())}[slug]


class PresenceReadersMixin:
    def open_reader(self, instance, slug, *, json=True):
        reader = FeedReader(instance, slug, json=json)
        self._readers.append(reader)
        return reader.connect(resume_after=0)

    def assertWatching(self, readers, count, instances, slug, timeout=WAIT):
        for reader in readers:
            reader.wait_watching(count, timeout)
        for instance in instances:
            wait_until(lambda: api_watching(instance, slug) == count, timeout, f"{count} watching via {instance.name}")


class InProcessPresenceTests(PresenceReadersMixin, TransactionTestCase):
    """One instance with the in-process channel layer (no Redis): the process counts alone."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.instance = DaphneInstance("solo", redis_url="", database_url=subprocess_database_url())
        cls.instance.start()
        try:
            cls.instance.wait_ready()
        except BaseException:
            cls.instance.kill()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.instance.kill()
        cls.instance.close_log()
        super().tearDownClass()

    def setUp(self):
        from feed.models import Feed

        self._readers = []
        self.addCleanup(lambda: [reader.close() for reader in self._readers])
        Feed.objects.create(slug="solo", title="Solo", allow_anonymous=True)

    def test_watching_rises_and_falls_as_readers_connect_and_close(self):
        """JSON and HTML readers see 1, 2, 3, then 2; the API answers the same count."""
        first = self.open_reader(self.instance, "solo")
        self.assertWatching([first], 1, [self.instance], "solo")
        frame = json.loads(first.presence_frames[0])
        self.assertEqual(frame, {"type": "feed.presence", "v": 1, "feed": "solo", "watching": 1})
        html = self.open_reader(self.instance, "solo", json=False)
        third = self.open_reader(self.instance, "solo")
        self.assertWatching([first, html, third], 3, [self.instance], "solo")
        self.assertRegex(html.presence_frames[-1], r'^<span id="feed-watching"[^>]* hx-swap-oob="true"[^>]*>.* 3 watching</span>$')
        self.assertEqual(api_list_watching(self.instance, "solo"), 3)
        html.close()
        self.assertWatching([first, third], 2, [self.instance], "solo")
        self.assertEqual(first.seqs, [], "presence frames carry no seq")
        self.assertEqual(first.frames, [], "nothing but presence frames was sent")


class RedisPresenceTests(PresenceReadersMixin, MultiInstanceTestCase):
    """Two daphne instances, A and B, on one throwaway Redis."""

    def setUp(self):
        super().setUp()
        self.slug = f"presence-{self._testMethodName[5:40].replace('_', '-')}"
        self.make_feed(self.slug)

    def test_counts_add_up_across_instances_and_fall_when_readers_close(self):
        a, b = self.instances
        on_a = self.open_reader(a, self.slug)
        self.assertWatching([on_a], 1, [a, b], self.slug)
        on_b = self.open_reader(b, self.slug, json=False)
        self.assertWatching([on_a, on_b], 2, [a, b], self.slug)
        second_on_a = self.open_reader(a, self.slug)
        self.assertWatching([on_a, on_b, second_on_a], 3, [a, b], self.slug)
        on_b.close()
        self.assertWatching([on_a, second_on_a], 2, [a, b], self.slug)
        second_on_a.close()
        self.assertWatching([on_a], 1, [a, b], self.slug)

    def test_a_killed_instance_stops_counting_within_30_seconds(self):
        a, b = self.instances
        on_a = self.open_reader(a, self.slug)
        on_b = [self.open_reader(b, self.slug) for _ in range(2)]
        self.assertWatching([on_a, *on_b], 3, [a], self.slug)
        b.kill()  # SIGKILL: its sockets are never closed by it, its hash only expires
        killed = time.monotonic()
        on_a.wait_watching(1, CONTRACT_LIMIT + 5)
        elapsed = time.monotonic() - killed
        self.assertLessEqual(elapsed, CONTRACT_LIMIT, f"took {elapsed:.1f} s")
        self.assertEqual(api_watching(a, self.slug), 1)

    def test_counts_are_rebuilt_within_30_seconds_after_redis_restarts_empty(self):
        a, b = self.instances
        readers = [self.open_reader(a, self.slug), self.open_reader(b, self.slug), self.open_reader(b, self.slug)]
        self.assertWatching(readers, 3, [a, b], self.slug)
        self.redis.restart()
        restarted = time.monotonic()
        self.assertEqual(self.redis.command("EXISTS", "presence:instances"), b":0", "Redis came back empty")
        wait_until(
            lambda: self.redis.command("ZCARD", "presence:instances") == b":2",
            CONTRACT_LIMIT, "both instances to write their counts again",
        )
        self.assertWatching(readers, 3, [a, b], self.slug, timeout=CONTRACT_LIMIT)
        elapsed = time.monotonic() - restarted
        self.assertLessEqual(elapsed, CONTRACT_LIMIT, f"took {elapsed:.1f} s")

    def test_a_storm_of_50_connects_gives_each_reader_about_two_presence_frames(self):
        a, b = self.instances
        existing = [self.open_reader(a, self.slug), self.open_reader(b, self.slug)]
        self.assertWatching(existing, 2, [], self.slug)
        before = [len(reader.watching) for reader in existing]
        storm = []
        lock = threading.Lock()

        def connect(count):
            for _ in range(count):
                reader = FeedReader(a, self.slug).connect(resume_after=0)
                with lock:
                    storm.append(reader)

        started = time.monotonic()
        threads = [threading.Thread(target=connect, args=(10,)) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self._readers.extend(storm)
        storm_seconds = time.monotonic() - started
        self.assertWatching(existing, 52, [a, b], self.slug)
        received = [len(reader.watching) - count for reader, count in zip(existing, before)]
        # One frame per reader per tick (ticks are 1 s apart), B's readers one tick behind A's
        # write: ~2 when the 50 connects fit within a second.
        allowed = int(storm_seconds) + 2
        self.assertTrue(all(1 <= n <= allowed for n in received), f"{received} frames in a {storm_seconds:.2f} s storm")
        for reader in existing:
            self.assertEqual(sorted(reader.watching), reader.watching, "rising counts, latest value wins")
