"""Several real daphne instances on one Redis and one database behave as one service.

Every test checks the contract's per-connection guarantee precisely: each reader receives
every comment exactly once, in seq order, across faults (a killed instance, Redis restarted
empty, a stalled reader, events dropped by the channel layer, SIGTERM).
"""
import json
import subprocess
import threading
import time
from contextlib import contextmanager

from django.test import TransactionTestCase

from feed.models import Comment
from tests.harness import (
    DaphneInstance,
    FeedReader,
    MultiInstanceTestCase,
    SilentServer,
    post_comment,
    post_form,
    subprocess_database_url,
    wait_until,
)

DELIVERY_TIMEOUT = 20  # generous for a loaded 2-core machine; tighter limits are asserted on measured times
STALLED_READERS = 3
MAX_STALL_POSTS = 1200
RSS_GROWTH_LIMIT = 40 * 2**20
SHUTDOWN_GRACE = 3  # seconds daphne gives open sockets to complete the 1012 close
POST_DEADLINE = 2.0  # every post is answered within this, Redis or not
# The harness switches the rate limit off for delivery tests; fault tests run with the default.
DEFAULT_POST_RATE = {"FEED_POST_RATE": "30/m"}
RATE_LIMIT_OUTAGE_WARNING = "The rate-limit cache failed"


class MultiInstanceTestMixin:
    def assertEveryReaderGetsAll(self, readers, last_seq, via, timeout=DELIVERY_TIMEOUT, histories=None):
        """Wait until every reader has `last_seq`, post a sentinel and assert 1..sentinel exactly once, in order.

        The sentinel flushes the connections: frames arrive in the order they were sent, so once
        it is in, every duplicate or stray frame sent before it is in the assertion too.
        `histories` maps a reader to the seqs an earlier connection of the same client received.
        """
        histories = histories or {}
        for reader in readers:
            reader.wait_for_seq(last_seq, timeout)
        sentinel = self.post(via, self.slug, "sentinel")["seq"]
        self.assertEqual(sentinel, last_seq + 1)
        for reader in readers:
            reader.wait_for_seq(sentinel, timeout)
        for reader in readers:
            self.assertExactlyOnceInOrder(histories.get(reader, []) + reader.seqs, list(range(1, sentinel + 1)), repr(reader))


class Poster(threading.Thread):
    """Post `count` comments through one instance in the background, each answer checked for 201."""

    def __init__(self, test, instance, count, pause=0.0):
        super().__init__(daemon=True)
        self.test, self.instance, self.count, self.pause = test, instance, count, pause
        self.failures = []
        self.created = []

    def run(self):
        for index in range(self.count):
            status, data = post_comment(self.instance, self.test.slug, author="background", body=f"during fault {index}")
            (self.created if status == 201 else self.failures).append(data if status == 201 else (status, data))
            time.sleep(self.pause)  # paces the posts across the fault; not a synchronisation


class MultiInstanceDeliveryTests(MultiInstanceTestMixin, MultiInstanceTestCase):
    """Two daphne instances, A and B, on one throwaway Redis and the test database."""

    instance_env = {"WS_SHUTDOWN_GRACE": str(SHUTDOWN_GRACE)}

    def setUp(self):
        super().setUp()
        self.slug = f"multi-{self._testMethodName[5:40].replace('_', '-')}"
        self.feed = self.make_feed(self.slug)
        self.a, self.b = self.instances

    def test_comment_posted_on_one_instance_reaches_readers_on_every_instance_in_both_modes(self):
        """A comment posted through A's API reaches JSON and HTML readers on A and on B, and vice versa."""
        readers = [self.reader(instance, self.slug, json=json) for instance in (self.a, self.b) for json in (True, False)]

        first = self.post(self.a, self.slug, "Hello from A <b>bold?</b>", author="Ann")
        second = self.post(self.b, self.slug, "Hello from B", author="Bob")

        self.assertEqual((first["seq"], second["seq"]), (1, 2))
        self.assertEveryReaderGetsAll(readers, 2, via=self.a)
        json_reader_on_b, html_reader_on_b = readers[2], readers[3]
        envelope = json.loads(json_reader_on_b.frames[0])
        self.assertEqual(
            envelope, {"type": "comment.created", "v": 1, "feed": self.slug, "seq": 1, "data": first}
        )
        html = html_reader_on_b.frames[0]
        self.assertIn(f'id="comment-{first["id"]}"', html)
        self.assertIn('data-seq="1"', html)
        self.assertIn("Hello from A &lt;b&gt;bold?&lt;/b&gt;", html)
        self.assertNotIn("<b>bold", html)

    def test_concurrent_posters_on_both_instances_reach_every_reader_exactly_once_in_order(self):
        """4 posters x 50 comments through A and B at once: every reader gets all 200 once, in seq order."""
        readers = [self.reader(instance, self.slug, json=json) for instance in (self.a, self.b) for json in (True, False)]

        created = self.post_many([(self.a, 50), (self.b, 50), (self.a, 50), (self.b, 50)], self.slug)

        self.assertEqual(sorted(comment["seq"] for comment in created), list(range(1, 201)))
        self.assertEveryReaderGetsAll(readers, 200, via=self.b)

    def test_readers_of_a_killed_instance_resume_on_the_other_without_loss(self):
        """SIGKILL on A: its readers reconnect to B with resume and get everything posted meanwhile."""
        on_a = [self.reader(self.a, self.slug, json=True), self.reader(self.a, self.slug, json=False)]
        on_b = self.reader(self.b, self.slug, json=True)
        for index in range(5):
            self.post(self.a, self.slug, f"before the kill {index}")
        for reader in [*on_a, on_b]:
            reader.wait_for_seq(5, DELIVERY_TIMEOUT)
        poster = Poster(self, self.b, 30, pause=0.02)
        poster.start()
        wait_until(lambda: len(poster.created) >= 5, DELIVERY_TIMEOUT, "posts through B to start")

        self.a.kill()

        for reader in on_a:
            self.assertNotEqual(reader.wait_closed(10), 1000, "a killed server cannot close cleanly")
        resumed = {}
        for reader in on_a:
            again = self.reader(self.b, self.slug, json=reader.json, resume_after=reader.last_seq)
            resumed[again] = reader.seqs
        poster.join(60)
        self.assertEqual(poster.failures, [])
        self.assertEveryReaderGetsAll([*resumed, on_b], 35, via=self.b, histories=resumed)
        self.assertFalse(on_b.closed.is_set(), "B's reader was disconnected")

    def test_readers_get_comments_posted_while_redis_was_down_once_it_is_back_empty(self):
        """Redis down: posts still succeed; Redis back empty: connected readers catch up within 10 s, then live."""
        readers = [self.reader(instance, self.slug, json=json) for instance in (self.a, self.b) for json in (True, False)]
        for index in range(3):
            self.post(self.a, self.slug, f"before the outage {index}")
        for reader in readers:
            reader.wait_for_seq(3, DELIVERY_TIMEOUT)

        self.redis.stop()
        for index in range(10):
            self.post((self.a, self.b)[index % 2], self.slug, f"during the outage {index}")
        self.assertEqual(Comment.objects.filter(feed=self.feed).count(), 13)
        self.redis.start()
        back = time.monotonic()

        for reader in readers:
            reader.wait_for_seq(13, timeout=max(0.1, back + 10 - time.monotonic()))
        self.assertEqual([reader for reader in readers if reader.closed.is_set()], [], "readers were disconnected")
        # The empty Redis forgot the core layer's group; both instances join it again.
        group = f"asgi:group:feed.{self.feed.pk}"
        wait_until(lambda: self.redis.command("ZCARD", group) == b":2", 10, f"A and B back in {group}")
        # Live again: each new comment reaches every reader promptly, without waiting for a catch-up.
        for index in range(3):
            comment = self.post((self.b, self.a)[index % 2], self.slug, f"after the outage {index}")
            posted = time.monotonic()
            for reader in readers:
                reader.wait_for_seq(comment["seq"], DELIVERY_TIMEOUT)
                self.assertLess(reader.arrivals[-1] - posted, 3.0, f"{reader!r} got seq {comment['seq']} late")
        self.assertEveryReaderGetsAll(readers, 16, via=self.a)
        self.assertEqual([reader for reader in readers if reader.closed.is_set()], [], "readers were disconnected")

    def test_reader_that_stops_reading_is_closed_with_1013_and_resumes_without_loss(self):
        """Stalled readers are closed with 1013 while A's memory stays bounded and others keep pace; they resume losslessly."""
        normal = [self.reader(self.a, self.slug, json=False), self.reader(self.b, self.slug, json=True)]
        stalled = [self.stalled_reader(self.a, self.slug) for _ in range(STALLED_READERS)]
        rss_before = self.a.rss()
        # '&' is escaped to '&amp;': each HTML frame is ~10 KB, so a stalled socket fills the
        # kernel's buffers (a few MB on loopback) and then the server's 1 MB limit.
        body = lambda poster, index: f"{poster}-{index} " + "&" * 1980  # noqa: E731
        start = self.a.log_offset()

        def closes():  # the server logs each slow-reader close (byte limit, or backed up too long)
            log = self.a.log_since(start)
            return log.count("Closing a slow reader") + log.count("that stopped reading")

        posted, lags, peak_rss = 0, [], rss_before
        while closes() < STALLED_READERS and posted < MAX_STALL_POSTS:
            self.post_many([(self.a, 10), (self.b, 10), (self.a, 10), (self.b, 10)], self.slug, body=body)
            posted += 40
            done = time.monotonic()
            for reader in normal:
                reader.wait_for_seq(posted, DELIVERY_TIMEOUT)
                lags.append(reader.arrivals[-1] - done)
            peak_rss = max(peak_rss, self.a.rss())
        self.assertGreaterEqual(closes(), STALLED_READERS, f"after {posted} posts\n{self.diagnostics()}")

        # The server keeps a closed reader's queue only for its close grace, so wake up now.
        results = [None] * len(stalled)

        def drain(index):
            results[index] = stalled[index].drain(timeout=20)

        threads = [threading.Thread(target=drain, args=(index,)) for index in range(len(stalled))]
        for thread in threads:
            thread.start()
        # Comments posted after the closes reach the stalled readers only through their resume.
        self.post_many([(self.a, 5), (self.b, 5)], self.slug, body=body)
        posted += 10
        for reader in normal:
            reader.wait_for_seq(posted, DELIVERY_TIMEOUT)
        for thread in threads:
            thread.join(30)
        peak_rss = max(peak_rss, self.a.rss())

        for seqs, code in results:
            self.assertEqual(code, 1013, f"close code after seqs {seqs[-3:]}")
            self.assertEqual(seqs, list(range(1, len(seqs) + 1)))
            self.assertLess(len(seqs), posted, "a closed reader was still sent comments")
        self.assertLess(max(lags), 5.0, f"other readers were slowed: lags {lags}")
        growth = peak_rss - rss_before
        self.assertLess(growth, RSS_GROWTH_LIMIT, f"A grew by {growth / 2**20:.1f} MB for {posted} posts")
        resumed = {}
        for index, (seqs, _) in enumerate(results):
            again = self.reader((self.a, self.b)[index % 2], self.slug, json=False, resume_after=seqs[-1] if seqs else 0)
            resumed[again] = seqs
        self.assertEveryReaderGetsAll([*resumed, *normal], posted, via=self.a, histories=resumed)

    def test_sigterm_closes_readers_with_1012_and_the_instance_exits_in_its_grace_period(self):
        """SIGTERM on A: A's readers get close code 1012 (service restart) and A exits promptly."""
        on_a = [self.reader(self.a, self.slug, json=True), self.reader(self.a, self.slug, json=False)]
        on_b = self.reader(self.b, self.slug, json=True)
        for index in range(3):
            self.post(self.b, self.slug, f"before SIGTERM {index}")
        for reader in [*on_a, on_b]:
            reader.wait_for_seq(3, DELIVERY_TIMEOUT)

        started = time.monotonic()
        self.a.terminate()

        for reader in on_a:
            self.assertEqual(reader.wait_closed(10), 1012, self.diagnostics())
        try:
            self.a.wait_exit(timeout=SHUTDOWN_GRACE + 10)
        except subprocess.TimeoutExpired:
            self.fail(f"A still runs {SHUTDOWN_GRACE + 10} s after SIGTERM\n{self.diagnostics()}")
        exited_after = time.monotonic() - started
        # The grace, plus what an exiting Python process needs on a busy machine.
        self.assertLess(exited_after, SHUTDOWN_GRACE + 2, f"A exited {exited_after:.1f} s after SIGTERM")
        self.post(self.b, self.slug, "after SIGTERM")
        resumed = {}
        for reader in on_a:
            again = self.reader(self.b, self.slug, json=reader.json, resume_after=reader.last_seq)
            resumed[again] = reader.seqs
        self.assertEveryReaderGetsAll([*resumed, on_b], 4, via=self.b, histories=resumed)


class LiveFanOutTests(MultiInstanceTestMixin, MultiInstanceTestCase):
    """Instances that check the database only once a minute: what readers get in time came live through Redis."""

    instance_env = {"WS_CHECK_INTERVAL": "60"}
    live_timeout = 10  # well below the check interval, so the database check cannot stand in for the live path

    def setUp(self):
        super().setUp()
        self.slug = "live-fan-out"
        self.feed = self.make_feed(self.slug)

    def test_comments_reach_readers_on_every_instance_through_the_channel_layer(self):
        """Posts through A and B reach every reader on both instances live, once each, in order."""
        a, b = self.instances
        readers = [self.reader(instance, self.slug, json=json) for instance in (a, b) for json in (True, False)]

        for index in range(10):
            comment = self.post((a, b)[index % 2], self.slug, f"live {index}")
            for reader in readers:
                reader.wait_for_seq(comment["seq"], self.live_timeout)
        self.post_many([(a, 20), (b, 20)], self.slug)

        self.assertEveryReaderGetsAll(readers, 50, via=b, timeout=self.live_timeout)


class DroppedEventsTests(MultiInstanceTestMixin, MultiInstanceTestCase):
    """Instances whose channel layer holds one message per channel: a burst overflows it."""

    instance_env = {"CHANNEL_LAYER_CAPACITY": "1"}

    def setUp(self):
        super().setUp()
        self.slug = "dropped-events"
        self.feed = self.make_feed(self.slug)

    def test_events_dropped_by_the_channel_layer_are_filled_from_the_database(self):
        """Live events that overflow an instance's channel are lost there; every reader still gets all, once, in order."""
        a, b = self.instances
        readers = [self.reader(instance, self.slug, json=json) for instance in (a, b) for json in (True, False)]

        # A first comment reaching every reader shows that both instances are in the feed's group.
        self.post(a, self.slug, "before the freeze")
        for reader in readers:
            reader.wait_for_seq(1, DELIVERY_TIMEOUT)

        # While B is frozen its channel holds one message and A's group_send drops every later one for B.
        with b.paused():
            self.post_many([(a, 25), (a, 24)], self.slug)
        self.post_many([(a, 25), (b, 25)], self.slug)

        # The tail of the burst counts too: nothing after it would reveal a gap by itself.
        for reader in readers:
            reader.wait_for_seq(100, DELIVERY_TIMEOUT)
        self.assertEveryReaderGetsAll(readers, 100, via=a)
        # The channel layer logs each group send that found a channel full: the burst did lose live events.
        self.assertTrue(
            "over capacity" in a.log_since(0),
            f"the channel layer dropped nothing, so the fill from the database went untested\n{self.diagnostics()}",
        )


class PostsWithoutRedisMixin:
    """Posts through the API and the form, each timed and checked (201, 303) against POST_DEADLINE."""

    def post_in_time(self, instance, body):
        started = time.monotonic()
        status, data = post_comment(instance, self.slug, author="tester", body=body, timeout=30)
        took = time.monotonic() - started
        self.assertEqual(status, 201, f"POST via {instance.name} answered {status}: {data}\n{self.diagnostics()}")
        self.assertLess(took, POST_DEADLINE, f"POST via {instance.name} took {took:.2f} s\n{self.diagnostics()}")
        return data

    def form_post_in_time(self, instance, body):
        started = time.monotonic()
        status, location = post_form(instance, self.slug, author="tester", body=body)
        took = time.monotonic() - started
        self.assertEqual(status, 303, f"form POST via {instance.name} answered {status}\n{self.diagnostics()}")
        self.assertLess(took, POST_DEADLINE, f"form POST via {instance.name} took {took:.2f} s\n{self.diagnostics()}")
        return location


class RedisFaultMixin(PostsWithoutRedisMixin, MultiInstanceTestMixin):
    """Redis lost, rate limit on: every post is answered 201 within 2 s and saved, and readers
    get it from the database. One outage per class: the instances start without one behind them."""

    instance_env = DEFAULT_POST_RATE

    def setUp(self):
        super().setUp()
        self.slug = f"fault-{self._testMethodName[5:40].replace('_', '-')}"
        self.feed = self.make_feed(self.slug)
        self.a, self.b = self.instances

    @contextmanager
    def redis_stopped(self):
        self.redis.stop()
        try:
            yield
        finally:
            self.redis.start()

    def check_posts_and_delivery_during(self, outage):
        readers = [self.reader(instance, self.slug, json=json) for instance in (self.a, self.b) for json in (True, False)]
        for index in range(3):
            self.post(self.a, self.slug, f"before the outage {index}")
        for reader in readers:
            reader.wait_for_seq(3, DELIVERY_TIMEOUT)
        offsets = {instance: instance.log_offset() for instance in self.instances}

        with outage():
            for index in range(6):
                self.post_in_time((self.a, self.b)[index % 2], f"during the outage {index}")
            for instance in self.instances:
                self.form_post_in_time(instance, f"form post via {instance.name} during the outage")
            self.assertEqual(Comment.objects.filter(feed=self.feed).count(), 11)
            # A reader that connects during the outage is served too (joining the group times out).
            late = self.reader(self.b, self.slug, json=True)
            # Delivered before Redis is back: the database backstop.
            for reader in [*readers, late]:
                reader.wait_for_seq(11, DELIVERY_TIMEOUT)

        for instance in self.instances:
            log = instance.log_since(offsets[instance])
            self.assertEqual(
                log.count(RATE_LIMIT_OUTAGE_WARNING), 1, f"one rate-limit warning per outage on {instance.name}:\n{log}"
            )
        self.assertEveryReaderGetsAll([*readers, late], 11, via=self.a)
        self.assertEqual([reader for reader in readers if reader.closed.is_set()], [], "readers were disconnected")


class RefusedRedisTests(RedisFaultMixin, MultiInstanceTestCase):
    def test_posts_answer_in_time_and_reach_readers_while_redis_refuses_connections(self):
        """Redis stopped: API and form posts on both instances answer in time, are saved and delivered."""
        self.check_posts_and_delivery_during(self.redis_stopped)


class SilentRedisTests(RedisFaultMixin, MultiInstanceTestCase):
    def test_posts_answer_in_time_and_reach_readers_while_redis_accepts_but_never_answers(self):
        """Redis frozen (SIGSTOP: connections accepted, nothing answered): the same holds."""
        self.check_posts_and_delivery_during(self.redis.paused)


class SilentRedisFromTheStartTests(PostsWithoutRedisMixin, TransactionTestCase):
    """An instance whose REDIS_URL points at a server that accepts connections and never answers."""

    def diagnostics(self):
        return f"--- {self.instance.name} log:\n{self.instance.log(3000)}"

    def test_posts_answer_in_time_and_reach_a_reader_from_the_database(self):
        """With the default rate limit, API and form posts answer in time; a reader gets them from the database."""
        silent = SilentServer()
        silent.start()
        self.addCleanup(silent.stop)
        self.instance = DaphneInstance(
            "S", redis_url=silent.url, database_url=subprocess_database_url(), env=DEFAULT_POST_RATE
        )
        self.addCleanup(self.instance.close_log)
        self.addCleanup(self.instance.kill)
        self.instance.start()
        self.instance.wait_ready()
        from feed.models import Feed

        self.slug = "silent"
        Feed.objects.create(slug=self.slug, title="Silent", allow_anonymous=True)
        reader = FeedReader(self.instance, self.slug, json=True).connect(resume_after=0)
        self.addCleanup(reader.close)

        for index in range(4):
            self.post_in_time(self.instance, f"api {index}")
        self.form_post_in_time(self.instance, "form")

        self.assertEqual(Comment.objects.filter(feed__slug=self.slug).count(), 5)
        reader.wait_for_seq(5, DELIVERY_TIMEOUT)
        self.assertEqual(reader.seqs, [1, 2, 3, 4, 5])
        self.assertGreater(silent.connections, 0, "the instance never tried Redis")
        self.assertEqual(self.instance.log_since(0).count(RATE_LIMIT_OUTAGE_WARNING), 1, self.diagnostics())
