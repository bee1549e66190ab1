"""The feed socket through the real ASGI application (origin check, auth, routing, consumer, hub)."""
import asyncio
import json
import os
import re
import shutil
import time
from contextlib import contextmanager
from unittest import SkipTest, mock

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client, TransactionTestCase, override_settings

from feed.models import Feed
from feed.services import comment_create
from livefeed.asgi import application
from notifications.conf import LiveSettings
from notifications.connection import Connection, StreamEvent, pending_bytes
from notifications.events import comment_created_event, feed_group_name
from notifications.hub import StreamHub, all_hubs
from notifications.streams import FeedKind, StreamStore, feed_stream
from tests.harness import presence_watching

ORIGIN = (b"origin", b"http://localhost")
SEQ_RE = re.compile(r'data-seq="(\d+)"')

# Quick checks so the tests that rely on them finish fast; each test overrides what it needs.
FAST = {"check_interval": 0.2, "lag_grace": 0.05, "gap_grace": 0.05}


def frame_seq(frame, json_mode):
    if json_mode:
        return json.loads(frame)["seq"]
    seqs = [int(s) for s in SEQ_RE.findall(frame)]
    assert len(seqs) == 1, f"one article per HTML frame, got {frame!r}"
    return seqs[0]


class Reader:
    """A WebsocketCommunicator on /ws/feeds/<slug>/ that collects comment seqs.

    Presence frames (feed.presence, no seq) go to ``watching``, not ``frames``/``seqs``.
    """

    def __init__(self, slug, *, json_mode=False, headers=None, query=None):
        self.json_mode = json_mode
        path = f"/ws/feeds/{slug}/"
        if query is not None:
            path += f"?{query}"
        elif json_mode:
            path += "?format=json"
        self.communicator = WebsocketCommunicator(application, path, headers=[ORIGIN] if headers is None else headers)
        self.seqs = []
        self.frames = []
        self.watching = []
        self.connected = False

    async def connect(self, resume_after=None):
        self.connected, self.subprotocol_or_code = await self.communicator.connect(timeout=10)
        if self.connected and resume_after is not None:
            await self.send({"type": "resume", "after": resume_after})
        return self.connected

    async def send(self, message):
        await self.communicator.send_to(text_data=json.dumps(message))

    async def receive_seqs(self, count, timeout=10):
        """Wait for `count` more comment frames and return all seqs so far."""
        deadline = time.monotonic() + timeout
        target = len(self.seqs) + count
        while len(self.seqs) < target:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"expected {count} more frames, have seqs {self.seqs}")
            output = await self.communicator.receive_output(timeout=remaining)
            if output["type"] != "websocket.send":
                raise AssertionError(f"expected a frame, got {output} after seqs {self.seqs}")
            if self.is_presence(output["text"]):
                continue
            self.frames.append(output["text"])
            self.seqs.append(frame_seq(output["text"], self.json_mode))
        return self.seqs

    async def receive_close(self, timeout=10):
        """Wait for the server's close and return its code (frames before it are collected)."""
        deadline = time.monotonic() + timeout
        while True:
            output = await self.communicator.receive_output(timeout=max(0.01, deadline - time.monotonic()))
            if output["type"] == "websocket.close":
                return output.get("code", 1000)
            if self.is_presence(output["text"]):
                continue
            self.frames.append(output["text"])
            self.seqs.append(frame_seq(output["text"], self.json_mode))

    def is_presence(self, text):
        watching = presence_watching(text)
        if watching is not None:
            self.watching.append(watching)
        return watching is not None

    async def assert_nothing_more(self, within=0.5):
        """No frame but presence frames arrives within `within` seconds."""
        deadline = time.monotonic() + within
        while (remaining := deadline - time.monotonic()) > 0:
            if await self.communicator.receive_nothing(timeout=remaining):
                return
            output = await self.communicator.receive_output(timeout=1)
            assert output["type"] == "websocket.send" and self.is_presence(output["text"]), f"unexpected {output}"

    async def close(self):
        await self.communicator.disconnect()


async def wait_until(predicate, timeout=10, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def hub_ready(feed_id):
    """Return whether this loop's hub has opened the feed (joined its group, read its cursor)."""
    return any(hub.is_open(feed_stream(feed_id)) for hub in all_hubs())


@database_sync_to_async
def post(feed, body, author="ann"):
    return comment_create(feed=Feed.objects.get(pk=feed.pk), author=author, body=body)


@database_sync_to_async
def post_silently(feed, count, user=None):
    """Save comments without publishing them; return their events in seq order."""
    with mock.patch("notifications.publishing.publish_comment_created"):
        comments = [
            comment_create(feed=Feed.objects.get(pk=feed.pk), author="ann", body=f"quiet {i}", user=user)
            for i in range(count)
        ]
    return [comment_created_event(comment) for comment in comments]


async def publish(event):
    await get_channel_layer().group_send(feed_group_name(event["feed_id"]), event)


class ConsumerTestCase(TransactionTestCase):
    def setUp(self):
        self.feed = Feed.objects.create(slug="town", title="Town", allow_anonymous=True)
        self.readers = []

    def reader(self, slug="town", **kwargs):
        reader = Reader(slug, **kwargs)
        self.readers.append(reader)
        return reader

    async def asyncTearDown(self):
        for reader in self.readers:
            try:
                await reader.close()
            except Exception:
                pass


@override_settings(LIVE_UPDATES=FAST)
class LiveDeliveryTests(ConsumerTestCase):
    async def test_new_comment_arrives_as_one_html_article_swapped_into_comments(self):
        """An HTML reader gets each new comment as an out-of-band fragment holding its article."""
        reader = self.reader()
        self.assertTrue(await reader.connect())
        await wait_until(lambda: hub_ready(self.feed.pk), what="hub ready")
        comment = await post(self.feed, "<img src=x onerror=alert(1)> hello")
        await reader.receive_seqs(1)
        frame = reader.frames[0]
        self.assertTrue(
            frame.startswith(f'<div id="comments" hx-swap-oob="beforeend"><article id="comment-{comment.pk}"')
        )
        self.assertIn('data-seq="1"', frame)
        self.assertIn("&lt;img src=x onerror=alert(1)&gt; hello", frame)
        self.assertNotIn("<img", frame)
        self.assertEqual(frame.count("<article"), 1)

    async def test_new_comment_arrives_as_json_envelope(self):
        """A ?format=json reader gets the contract's event envelope."""
        reader = self.reader(json_mode=True)
        self.assertTrue(await reader.connect())
        await wait_until(lambda: hub_ready(self.feed.pk), what="hub ready")
        comment = await post(self.feed, "hi <b>there</b>", author="bob")
        await reader.receive_seqs(1)
        envelope = json.loads(reader.frames[0])
        self.assertEqual(
            {k: envelope[k] for k in ("type", "v", "feed", "seq")},
            {"type": "comment.created", "v": 1, "feed": "town", "seq": 1},
        )
        self.assertEqual(envelope["data"]["id"], comment.pk)
        self.assertEqual(envelope["data"]["body"], "hi <b>there</b>")
        self.assertEqual(envelope["data"]["author"], "bob")
        self.assertEqual((envelope["data"]["user"], envelope["data"]["reply_to"]), (None, None))
        self.assertEqual(envelope["data"]["feed"], "town")
        self.assertTrue(envelope["data"]["created_at"].endswith("Z"))

    async def test_every_reader_of_the_feed_receives_every_comment_once_in_order(self):
        """Several readers in both modes each get all comments, in seq order; other feeds' readers get none."""
        other = await database_sync_to_async(Feed.objects.create)(slug="other", title="Other", allow_anonymous=True)
        readers = [self.reader(json_mode=i % 2 == 0) for i in range(4)]
        bystander = self.reader("other")
        for reader in [*readers, bystander]:
            self.assertTrue(await reader.connect(resume_after=0))
        await wait_until(lambda: hub_ready(self.feed.pk) and hub_ready(other.pk), what="hub ready")
        for i in range(10):
            await post(self.feed, f"comment {i}")
        for reader in readers:
            self.assertEqual(await reader.receive_seqs(10), list(range(1, 11)))
        await bystander.assert_nothing_more(0.3)
        for reader in readers:
            await reader.assert_nothing_more(0.1)

    async def test_reader_without_resume_gets_comments_posted_after_it_connected(self):
        """Without a resume message a reader starts at the feed's current comment."""
        await post_silently(self.feed, 3)
        reader = self.reader(json_mode=True)
        self.assertTrue(await reader.connect())
        await wait_until(lambda: hub_ready(self.feed.pk), what="hub ready")
        await post(self.feed, "fourth")
        self.assertEqual(await reader.receive_seqs(1), [4])


@override_settings(LIVE_UPDATES=FAST)
class ResumeTests(ConsumerTestCase):
    async def test_resume_replays_missed_comments_in_order_then_continues_live(self):
        """resume(after=N) sends N+1.. from the database, then live comments, without a gap or repeat."""
        await post_silently(self.feed, 5)
        reader = self.reader(json_mode=True)
        self.assertTrue(await reader.connect(resume_after=2))
        self.assertEqual(await reader.receive_seqs(3), [3, 4, 5])
        await post(self.feed, "six")
        self.assertEqual(await reader.receive_seqs(1), [3, 4, 5, 6])
        await reader.assert_nothing_more(0.3)

    @override_settings(LIVE_UPDATES={**FAST, "batch_size": 3})
    async def test_long_replay_is_read_in_batches_and_stays_in_order(self):
        """A replay longer than one database batch arrives complete and in order, in HTML mode too."""
        await post_silently(self.feed, 10)
        reader = self.reader()
        self.assertTrue(await reader.connect(resume_after=0))
        self.assertEqual(await reader.receive_seqs(10), list(range(1, 11)))
        await reader.assert_nothing_more(0.3)

    async def test_comments_posted_during_a_replay_follow_it_without_gap_or_repeat(self):
        """Live comments that arrive while a reader is replaying come once, after the replayed ones."""
        await post_silently(self.feed, 30)
        watcher = self.reader(json_mode=True)
        self.assertTrue(await watcher.connect())
        await wait_until(lambda: hub_ready(self.feed.pk), what="hub ready")
        reader = self.reader(json_mode=True)
        self.assertTrue(await reader.connect(resume_after=0))
        posts = asyncio.ensure_future(asyncio.gather(*[post(self.feed, f"live {i}") for i in range(5)]))
        self.assertEqual(await reader.receive_seqs(35), list(range(1, 36)))
        await posts
        self.assertEqual(await watcher.receive_seqs(5), list(range(31, 36)))
        await reader.assert_nothing_more(0.3)

    async def test_resume_from_recent_memory_serves_many_readers(self):
        """Readers resuming after a recent seq all get the same complete tail."""
        first = self.reader(json_mode=True)
        self.assertTrue(await first.connect(resume_after=0))
        await wait_until(lambda: hub_ready(self.feed.pk), what="hub ready")
        for i in range(6):
            await post(self.feed, f"c{i}")
        self.assertEqual(await first.receive_seqs(6), list(range(1, 7)))
        late = [self.reader(json_mode=i % 2 == 1) for i in range(5)]
        for reader in late:
            self.assertTrue(await reader.connect(resume_after=3))
        for reader in late:
            self.assertEqual(await reader.receive_seqs(3), [4, 5, 6])

    async def test_second_resume_restarts_the_stream_from_its_point(self):
        """A later resume replays from its own point: the stream restarts there, in order."""
        await post_silently(self.feed, 4)
        reader = self.reader(json_mode=True)
        self.assertTrue(await reader.connect(resume_after=2))
        self.assertEqual(await reader.receive_seqs(2), [3, 4])
        await reader.send({"type": "resume", "after": 0})
        self.assertEqual(await reader.receive_seqs(4), [3, 4, 1, 2, 3, 4])
        await post(self.feed, "five")
        self.assertEqual(await reader.receive_seqs(1), [3, 4, 1, 2, 3, 4, 5])

    async def test_resume_ahead_of_the_feed_waits_for_newer_comments(self):
        """A resume point beyond what exists sends nothing until a comment beyond it exists."""
        await post_silently(self.feed, 2)
        reader = self.reader(json_mode=True)
        self.assertTrue(await reader.connect(resume_after=3))
        await wait_until(lambda: hub_ready(self.feed.pk), what="hub ready")
        await post(self.feed, "three")
        await reader.assert_nothing_more(0.3)
        await post(self.feed, "four")
        self.assertEqual(await reader.receive_seqs(1), [4])


class OrderingTests(ConsumerTestCase):
    async def connected_reader(self):
        reader = self.reader(json_mode=True)
        self.assertTrue(await reader.connect(resume_after=0))
        await wait_until(lambda: hub_ready(self.feed.pk), what="hub ready")
        return reader

    @override_settings(LIVE_UPDATES={"gap_grace": 5.0, "check_interval": 60.0})
    async def test_out_of_order_live_events_are_delivered_in_seq_order(self):
        """Events arriving 3, 2, 1 reach the reader as 1, 2, 3 (held, not read from the database)."""
        reader = await self.connected_reader()
        events = await post_silently(self.feed, 3)
        with mock.patch.object(FeedKind, "load_after") as load:
            for event in reversed(events):
                await publish(event)
            self.assertEqual(await reader.receive_seqs(3), [1, 2, 3])
        load.assert_not_called()

    @override_settings(LIVE_UPDATES={"gap_grace": 0.05, "check_interval": 60.0})
    async def test_missing_live_event_is_filled_from_the_database(self):
        """When event 2 never arrives but 3 does, the reader still gets 1, 2, 3 in order."""
        reader = await self.connected_reader()
        events = await post_silently(self.feed, 3)
        await publish(events[0])
        await publish(events[2])
        self.assertEqual(await reader.receive_seqs(3), [1, 2, 3])
        self.assertEqual(json.loads(reader.frames[1]), json.loads(events[1]["json"]))

    @override_settings(LIVE_UPDATES={"check_interval": 0.1, "lag_grace": 0.05})
    async def test_lost_last_event_is_filled_by_the_periodic_check(self):
        """A comment whose event never arrives (no later event either) reaches the reader from the database."""
        reader = await self.connected_reader()
        await post_silently(self.feed, 2)
        self.assertEqual(await reader.receive_seqs(2, timeout=5), [1, 2])

    @override_settings(LIVE_UPDATES={"gap_grace": 5.0, "check_interval": 60.0})
    async def test_duplicate_live_events_are_dropped(self):
        """The same event delivered twice by the layer reaches the reader once."""
        reader = await self.connected_reader()
        events = await post_silently(self.feed, 2)
        for event in (events[0], events[0], events[1], events[0], events[1]):
            await publish(event)
        self.assertEqual(await reader.receive_seqs(2), [1, 2])
        await reader.assert_nothing_more(0.3)


@override_settings(LIVE_UPDATES=FAST)
class HandshakeTests(ConsumerTestCase):
    async def test_disallowed_origin_is_refused(self):
        """A handshake from another site's page is refused."""
        reader = self.reader(headers=[(b"origin", b"http://evil.example")])
        self.assertFalse(await reader.connect())

    async def test_missing_origin_is_refused(self):
        """A handshake without an Origin header is refused."""
        reader = self.reader(headers=[])
        self.assertFalse(await reader.connect())

    async def test_unknown_feed_is_refused(self):
        """The handshake for a feed that does not exist is refused."""
        reader = self.reader("nope")
        self.assertFalse(await reader.connect())

    async def test_unknown_format_is_refused(self):
        """Only format=html and format=json exist."""
        reader = self.reader(query="format=xml")
        self.assertFalse(await reader.connect())

    async def test_reader_is_asked_to_retry_when_the_feed_cannot_be_opened(self):
        """If the feed's cursor cannot be read (database away) the socket closes with 1013, which clients retry."""
        with mock.patch.object(StreamStore, "last_seqs", side_effect=RuntimeError("database away")):
            reader = self.reader()
            self.assertTrue(await reader.connect())
            self.assertEqual(await reader.receive_close(), 1013)
        retry = self.reader(json_mode=True)
        self.assertTrue(await retry.connect(resume_after=0))
        await post(self.feed, "after the outage")
        self.assertEqual(await retry.receive_seqs(1), [1])

    async def test_members_only_feed_refuses_anonymous_reader(self):
        """A feed without anonymous posting streams only to signed-in users."""
        await database_sync_to_async(Feed.objects.create)(slug="club", title="Club", allow_anonymous=False)
        reader = self.reader("club")
        self.assertFalse(await reader.connect())

    async def test_members_only_feed_streams_to_signed_in_user(self):
        """A signed-in user (session cookie) opens a members-only feed's stream."""
        club = await database_sync_to_async(Feed.objects.create)(slug="club", title="Club", allow_anonymous=False)

        def login_cookie():
            user = get_user_model().objects.create_user("member", password="pw-not-used-9")
            club.members.add(user)
            client = Client()
            client.force_login(user)
            return user, client.cookies["sessionid"].value

        user, session = await database_sync_to_async(login_cookie)()
        reader = self.reader("club", json_mode=True, headers=[ORIGIN, (b"cookie", f"sessionid={session}".encode())])
        self.assertTrue(await reader.connect(resume_after=0))
        await post_silently(club, 1, user=user)
        self.assertEqual(await reader.receive_seqs(1), [1])


@override_settings(LIVE_UPDATES=FAST)
class ClientFrameTests(ConsumerTestCase):
    async def assert_closes(self, text=None, data=None, code=4400):
        bystander = self.reader(json_mode=True)
        self.assertTrue(await bystander.connect(resume_after=0))
        reader = self.reader(json_mode=True)
        self.assertTrue(await reader.connect())
        await wait_until(lambda: hub_ready(self.feed.pk), what="hub ready")
        if data is not None:
            await reader.communicator.send_to(bytes_data=data)
        else:
            await reader.communicator.send_to(text_data=text)
        self.assertEqual(await reader.receive_close(), code)
        await post(self.feed, "still here")
        self.assertEqual(await bystander.receive_seqs(1), [1])

    async def test_non_json_frame_closes_with_4400_and_others_keep_receiving(self):
        """Garbage closes that connection with 4400; another reader keeps receiving."""
        await self.assert_closes("not json at all")

    async def test_oversized_frame_closes_with_4413_and_others_keep_receiving(self):
        """A frame over 4 KiB closes the connection with 4413 before it is parsed."""
        await self.assert_closes(json.dumps({"type": "resume", "after": 1, "pad": "x" * 5000}), code=4413)

    async def test_oversized_multibyte_frame_closes_with_4413(self):
        """The limit counts bytes, not characters."""
        frame = json.dumps({"type": "resume", "after": 1, "pad": "é" * 2100}, ensure_ascii=False)
        await self.assert_closes(frame, code=4413)

    async def test_binary_frame_closes_with_4400(self):
        """Only text frames are accepted."""
        await self.assert_closes(data=b'{"type": "resume", "after": 0}')

    async def test_invalid_messages_close_with_4400(self):
        """Unknown types and bad `after` values close the connection with 4400."""
        for message in (
            {"type": "subscribe", "after": 0},
            {"after": 0},
            {"type": "resume"},
            {"type": "resume", "after": -1},
            {"type": "resume", "after": "3"},
            {"type": "resume", "after": 1.5},
            {"type": "resume", "after": True},
            {"type": "resume", "after": 2**64},
            ["resume", 0],
        ):
            with self.subTest(message=message):
                reader = self.reader(json_mode=True)
                self.assertTrue(await reader.connect())
                await reader.send(message)
                self.assertEqual(await reader.receive_close(), 4400)

    async def test_resume_flood_closes_with_4429(self):
        """More than five resumes within ten seconds close the connection with 4429."""
        reader = self.reader(json_mode=True)
        self.assertTrue(await reader.connect())
        for _ in range(6):
            await reader.send({"type": "resume", "after": 0})
        self.assertEqual(await reader.receive_close(), 4429)


class FakeTransport:
    """Stands in for Twisted's TCP transport: the same write-buffer attributes, nothing sent."""

    def __init__(self):
        from twisted.internet.abstract import FileDescriptor

        class Buffer(FileDescriptor):
            connected = True

            def startWriting(self):  # the peer reads nothing
                pass

        self.buffer = Buffer()


class FakeProtocol:
    STATE_OPEN = 1
    STATE_CLOSING = 2

    def __init__(self):
        from autobahn.twisted.websocket import WebSocketServerFactory

        self.factory = WebSocketServerFactory()
        self.transport = FakeTransport().buffer
        self.state = self.STATE_OPEN
        self.close_codes = []
        self._perMessageCompress = None
        self.send_queue = []

    def sendPreparedMessage(self, prepared):
        self.transport.write(prepared.payloadHybi)

    def sendCloseFrame(self, code=None):
        self.close_codes.append(code)
        self.state = self.STATE_CLOSING


class SlowReaderTests(TransactionTestCase):
    """The slow-reader policy against a Twisted write buffer that never drains."""

    def connection(self, **conf):
        protocol = FakeProtocol()
        conn = Connection(stream=feed_stream(1), json_mode=False, send=None, protocol=protocol, conf=LiveSettings(**conf))
        released = []
        conn.on_close(released.append)
        return conn, protocol, released

    def event(self, seq, size=1000):
        return StreamEvent(seq=seq, html="x" * size, json="{}")

    def test_reader_over_the_byte_limit_is_closed_with_1013_and_detached(self):
        """Once unsent bytes pass the limit the reader gets a 1013 close and no more frames."""
        conn, protocol, released = self.connection(slow_reader_max_bytes=10_000)
        for seq in range(1, 10):
            conn.write(self.event(seq))
        self.assertEqual(protocol.close_codes, [])
        conn.write(self.event(10))
        conn.write(self.event(11))
        self.assertEqual(protocol.close_codes, [1013])
        self.assertEqual(released, [conn])
        size = pending_bytes(protocol.transport)
        conn.write(self.event(12))
        self.assertEqual(pending_bytes(protocol.transport), size)
        self.assertLess(size, 10_000 + 2_000)

    def test_reader_backed_up_too_long_is_closed_with_1013(self):
        """A reader above the soft limit for longer than the timeout is stalled; below it, it is not."""
        conn, protocol, _ = self.connection(slow_reader_soft_bytes=2_000, slow_reader_timeout=5.0)
        conn.write(self.event(1))
        self.assertFalse(conn.is_stalled(time.monotonic() + 60))
        conn.write(self.event(2))
        conn.write(self.event(3))
        self.assertFalse(conn.is_stalled(time.monotonic()))
        self.assertTrue(conn.is_stalled(time.monotonic() + 6))

    def test_frames_are_framed_once_for_all_readers(self):
        """Readers of one event share one prepared frame."""
        first, protocol_a, _ = self.connection()
        second, protocol_b, _ = self.connection()
        event = self.event(1, size=10)
        first.write(event)
        second.write(event)
        self.assertIs(event.prepared(False, protocol_a.factory), event.prepared(False, protocol_b.factory))
        self.assertEqual(protocol_a.transport._tempDataBuffer, protocol_b.transport._tempDataBuffer)
        self.assertTrue(protocol_a.transport._tempDataBuffer[0].endswith(b"x" * 10))

    def test_writes_at_or_below_the_sent_seq_are_dropped(self):
        """A connection never sends a seq twice or goes backwards."""
        conn, protocol, _ = self.connection()
        for seq in (1, 2, 2, 1, 3):
            conn.write(self.event(seq, size=10))
        self.assertEqual(len(protocol.transport._tempDataBuffer), 3)
        self.assertEqual(conn.sent_seq, 3)


def redis_server():
    """Start a throwaway redis-server; skip (fail under CI=true) when none can run."""
    from tests.harness import RedisServer

    if shutil.which("redis-server") is None:
        if os.environ.get("CI") == "true":
            raise AssertionError("redis-server is required under CI")
        raise SkipTest("redis-server is not installed")
    server = RedisServer()
    server.start()
    return server


@contextmanager
def redis_layer(url):
    with override_settings(
        CHANNEL_LAYERS={
            "default": {
                "BACKEND": "notifications.layer.LiveChannelLayer",
                "CONFIG": {"hosts": [url], "prefix": "livefeed-test"},
            }
        }
    ):
        yield


class RedisLayerTests(ConsumerTestCase):
    """Through a real Redis (core channel layer), including an outage with a restarted, empty Redis."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = redis_server()

    @classmethod
    def tearDownClass(cls):
        cls.redis.stop()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        if not self.redis.running:
            self.redis.start()

    @contextmanager
    def layer_messages(self):
        """Collect the seqs of the events the hub receives from the channel layer."""
        received = []
        original = StreamHub._on_message

        def spy(hub, message):
            received.append(message.get("seq"))
            return original(hub, message)

        with mock.patch.object(StreamHub, "_on_message", spy):
            yield received

    @override_settings(
        LIVE_UPDATES={"check_interval": 0.3, "lag_grace": 0.1, "layer_timeout": 1.0, "publish_backoff": 0.5}
    )
    async def test_readers_get_comments_through_redis_and_during_an_outage(self):
        """Live through Redis; while Redis is down posts succeed and reach readers from the database;
        after Redis restarts empty, live delivery through it works again."""
        with redis_layer(self.redis.url):
            html_reader = self.reader()
            json_reader = self.reader(json_mode=True)
            self.assertTrue(await html_reader.connect(resume_after=0))
            self.assertTrue(await json_reader.connect(resume_after=0))
            await wait_until(lambda: hub_ready(self.feed.pk), what="hub ready")

            with self.layer_messages() as received:
                await post(self.feed, "through redis")
                self.assertEqual(await html_reader.receive_seqs(1), [1])
                self.assertEqual(await json_reader.receive_seqs(1), [1])
            self.assertEqual(received, [1], "delivered through Redis, not from the database")

            await database_sync_to_async(self.redis.stop)()
            started = time.monotonic()
            await post(self.feed, "during the outage")
            self.assertLess(time.monotonic() - started, 5, "a post must not hang while Redis is down")
            await post(self.feed, "still down")
            self.assertEqual(await json_reader.receive_seqs(2), [1, 2, 3])
            self.assertEqual(await html_reader.receive_seqs(2), [1, 2, 3])

            await database_sync_to_async(self.redis.start)()  # empty: every group is forgotten
            hub = next(hub for hub in all_hubs() if feed_stream(self.feed.pk) in hub.streams)
            await wait_until(lambda: hub.membership.ok and not hub.membership.need_rejoin, timeout=15, what="hub re-joined")
            # Live through Redis again: within 10 s a new comment reaches the hub from the layer.
            deadline = time.monotonic() + 10
            with self.layer_messages() as received:
                while not received and time.monotonic() < deadline:
                    await post(self.feed, "redis is back")
                    await json_reader.receive_seqs(1)
                    await html_reader.receive_seqs(1)
                    await asyncio.sleep(0.2)
            self.assertTrue(received, "no comment came through Redis after it restarted")
            expected = list(range(1, len(json_reader.seqs) + 1))
            self.assertEqual(json_reader.seqs, expected)
            self.assertEqual(html_reader.seqs, expected)
            await json_reader.assert_nothing_more(0.3)
