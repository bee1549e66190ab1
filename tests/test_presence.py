"""Presence counting and its frames (notifications.presence) on fakes: no server, no Redis."""
import asyncio
import json
import logging
import time

from django.test import SimpleTestCase

from notifications.presence import Presence, presence_frame
from notifications.streams import StreamKey
from tests.stream_fakes import FakeConnection, wait_until

FEED = StreamKey("feed", 7)
OTHER = StreamKey("feed", 8)


def watching(conn):
    """The watching values a fake reader received, in order."""
    return [json.loads(frame)["watching"] for frame in conn.signals]


class FakeStore:
    """Redis as presence uses it: one hash per instance, gone `ttl` seconds after its last write."""

    def __init__(self, ttl=15.0):
        self.ttl = ttl
        self.hashes = {}  # instance -> (expires at, counts)
        self.fail = False
        self.calls = 0

    def client(self, instance):
        store = self

        class Client:
            async def exchange(self, counts, feed_ids):
                store.calls += 1
                if store.fail:
                    raise ConnectionError("redis is away")
                now = time.monotonic()
                if counts is not None:
                    store.hashes[instance] = (now + store.ttl, {k: v for k, v in counts.items() if v})
                live = [counts for expires, counts in store.hashes.values() if expires > now]
                return {feed_id: sum(c.get(feed_id, 0) for c in live) for feed_id in feed_ids}

        return Client()


class PresenceTests(SimpleTestCase):
    def run_async(self, coro):
        return asyncio.run(asyncio.wait_for(coro, 30))

    def test_presence_frame_is_the_contract_json_and_an_escaped_oob_swap(self):
        frame = presence_frame("news<&>", 3)
        self.assertEqual(frame.seq, 0)
        self.assertEqual(json.loads(frame.json), {"type": "feed.presence", "v": 1, "feed": "news<&>", "watching": 3})
        self.assertIn('id="feed-watching"', frame.html)
        self.assertIn('hx-swap-oob="true"', frame.html)
        self.assertIn("3 watching", frame.html)
        self.assertNotIn("data-seq", frame.html)

    def test_readers_get_the_count_after_connecting_and_when_it_changes(self):
        async def scenario():
            presence = Presence(interval=0.05)
            a, b = FakeConnection(FEED), FakeConnection(FEED)
            presence.add(a, "f")
            await wait_until(lambda: watching(a) == [1], what="a sees itself")
            presence.add(b, "f")
            await wait_until(lambda: watching(a) == [1, 2] and watching(b) == [2], what="both see 2")
            presence.remove(b)
            await wait_until(lambda: watching(a) == [1, 2, 1], what="a sees 1 again")
            self.assertEqual(presence.local_counts(), {7: 1})
            presence.remove(a)
            await wait_until(lambda: presence._task is None, what="the loop to stop without readers")
            self.assertEqual(presence.local_counts(), {})

        self.run_async(scenario())

    def test_feeds_are_counted_apart(self):
        async def scenario():
            presence = Presence(interval=0.05)
            a, b, c = FakeConnection(FEED), FakeConnection(FEED), FakeConnection(OTHER)
            for conn in (a, b, c):
                presence.add(conn, "f")
            await wait_until(lambda: watching(a)[-1:] == [2] and watching(c) == [1], what="per-feed counts")
            self.assertEqual(presence.local_counts(), {7: 2, 8: 1})
            presence.remove(a)
            presence.remove(a)  # twice: counted once
            presence.remove(FakeConnection(OTHER))  # never added
            self.assertEqual(presence.local_counts(), {7: 1, 8: 1})
            presence.stop()

        self.run_async(scenario())

    def test_a_storm_of_connects_sends_each_reader_at_most_one_frame_per_interval(self):
        async def scenario():
            presence = Presence(interval=0.5)
            existing = [FakeConnection(FEED) for _ in range(3)]
            for conn in existing:
                presence.add(conn, "f")
            await wait_until(lambda: all(watching(conn) == [3] for conn in existing), what="first frames")
            started = time.monotonic()
            storm = []
            for _ in range(50):
                conn = FakeConnection(FEED)
                storm.append(conn)
                presence.add(conn, "f")
                await asyncio.sleep(0.01)
            await wait_until(lambda: all(watching(conn)[-1:] == [53] for conn in existing + storm), what="53")
            elapsed = time.monotonic() - started
            for conn in existing:
                # The latest value wins; ticks are at least `interval` apart.
                self.assertLessEqual(len(watching(conn)) - 1, int(elapsed / 0.5) + 1, watching(conn))
            self.assertLessEqual(presence.frames_sent, (53 * (int(elapsed / 0.5) + 2)))
            presence.stop()

        self.run_async(scenario())

    def test_counts_of_several_instances_add_up_and_a_dead_one_stops_counting(self):
        async def scenario():
            store = FakeStore(ttl=0.6)
            one = Presence(store=store.client("one"), interval=0.05, ttl=0.6)
            two = Presence(store=store.client("two"), interval=0.05, ttl=0.6)
            a, b, c = FakeConnection(FEED), FakeConnection(FEED), FakeConnection(FEED)
            one.add(a, "f")
            two.add(b, "f")
            two.add(c, "f")
            await wait_until(lambda: watching(a)[-1:] == [3] and watching(b)[-1:] == [3], what="3 across both")
            two.stop()  # dies without closing its readers: its hash expires
            await wait_until(lambda: watching(a)[-1:] == [1], timeout=5, what="the dead instance's readers to go")
            one.stop()

        self.run_async(scenario())

    def test_heartbeats_rewrite_the_counts_so_an_emptied_store_is_refilled(self):
        async def scenario():
            store = FakeStore(ttl=0.6)
            one = Presence(store=store.client("one"), interval=0.05, ttl=0.6)
            two = Presence(store=store.client("two"), interval=0.05, ttl=0.6)
            a, b = FakeConnection(FEED), FakeConnection(FEED)
            one.add(a, "f")
            two.add(b, "f")
            await wait_until(lambda: watching(a)[-1:] == [2], what="2")
            store.hashes.clear()  # Redis restarted empty
            await wait_until(lambda: len(store.hashes) == 2, timeout=2, what="both instances to write again")
            await wait_until(lambda: watching(a)[-1:] == [2], timeout=2, what="the total rebuilt")
            one.stop()
            two.stop()

        self.run_async(scenario())

    def test_a_store_outage_is_logged_once_and_the_counts_are_written_again_after_it(self):
        """Redis away: one warning, readers keep (at least their own) counts; back: one info, counts rewritten."""
        async def scenario():
            store = FakeStore()
            one = Presence(store=store.client("one"), interval=0.05)
            a = FakeConnection(FEED)
            one.add(a, "f")
            await wait_until(lambda: watching(a) == [1], what="1")
            store.fail = True
            with self.assertLogs("notifications.presence", logging.INFO) as logs:
                newcomer = FakeConnection(FEED)
                one.add(newcomer, "f")
                calls = store.calls
                await wait_until(lambda: store.calls > calls + 3, what="several failed ticks")
                self.assertEqual(watching(newcomer), [2], "a reader connecting during the outage gets a count")
                store.fail = False
                await wait_until(lambda: store.hashes.get("one", (0, {}))[1] == {7: 2}, what="the rewrite")
            self.assertEqual([r.levelname for r in logs.records], ["WARNING", "INFO"], logs.output)
            await wait_until(lambda: watching(a) == [1, 2], what="2 after the outage")
            one.stop()

        self.run_async(scenario())

    def test_a_reader_whose_write_fails_is_dropped_and_the_others_get_the_count(self):
        async def scenario():
            presence = Presence(interval=0.05)
            good, bad = FakeConnection(FEED), FakeConnection(FEED, fail=True)
            bad.on_close(presence.remove)
            with self.assertLogs("notifications.fanout", logging.WARNING):
                presence.add(good, "f")
                presence.add(bad, "f")
                await wait_until(lambda: watching(good)[:1] == [2], what="the good reader's frame")
            await wait_until(lambda: watching(good)[-1:] == [1], what="the failed reader no longer counted")
            self.assertEqual(presence.local_counts(), {7: 1})
            presence.stop()

        self.run_async(scenario())
