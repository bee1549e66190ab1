"""The coordinator: several kinds of stream through one StreamHub, on a fake layer and database."""
import asyncio
import time
from dataclasses import replace
from unittest import mock
from unittest import IsolatedAsyncioTestCase

from notifications.conf import LiveSettings
from notifications.hub import StreamHub
from notifications.streams import FeedKind, StreamKey
from tests.stream_fakes import FakeConnection, FakeLayer, FakeStore, ThingKind, event, thing_message, wait_until

FEED = StreamKey("feed", 1)
THING = StreamKey("thing", 7)


def feed_message(seq, feed_id=1):
    e = event(seq)
    return {"type": "comment.created", "feed_id": feed_id, "seq": seq, "html": e.html, "json": e.json}


class HubTestCase(IsolatedAsyncioTestCase):
    conf = LiveSettings(check_interval=3600.0, gap_grace=0.01, lag_grace=0.0, live_coalesce=0.0)

    async def asyncSetUp(self):
        self.layer = FakeLayer()
        self.store = FakeStore()
        self.hub = StreamHub(
            self.conf,
            kinds={"feed": FeedKind(), "thing": ThingKind()},
            store=self.store,
            get_layer=lambda: self.layer,
        )

    async def asyncTearDown(self):
        self.hub.close_all(1001)
        await self.hub.left()

    async def live_reader(self, key=FEED, *, after=0, fail=False):
        conn = FakeConnection(key)
        await self.hub.attach(conn)
        self.hub.resume(conn, after)
        await wait_until(lambda: conn in self.hub.streams[key].live, what="live")
        conn.fail = fail
        return conn

    async def publish(self, key, *seqs):
        """Commit the seqs and send their events to the stream's group, like publish on commit."""
        self.store.commit(key, *seqs)
        for seq in seqs:
            message = feed_message(seq, key.id) if key.kind == "feed" else thing_message(key.id, seq)
            await self.layer.group_send(self.hub.kinds[key.kind].group(key.id), message)


class StreamHubTests(HubTestCase):
    async def test_two_kinds_of_stream_share_one_channel_and_stay_apart(self):
        """A feed and a thing stream are joined on one channel; each reader gets its own stream, in order."""
        feed_reader = await self.live_reader(FEED)
        thing_reader = await self.live_reader(THING)
        self.assertEqual(self.layer.groups["feed.1"], {"hub!1"})
        self.assertEqual(self.layer.groups["thing.7"], {"hub!1"})
        await self.publish(FEED, 1, 2)
        await self.publish(THING, 1, 2, 3)
        await wait_until(lambda: feed_reader.seqs == [1, 2] and thing_reader.seqs == [1, 2, 3], what="delivered")
        self.assertIn("<p>t7-1</p>", self.hub.streams[THING].order.recent[0].html)

    async def test_gap_is_filled_from_the_database_in_order(self):
        """Events 1 and 3 arrive live, 2 never does: the reader gets 1, 2, 3."""
        reader = await self.live_reader(THING)
        self.store.commit(THING, 2)
        await self.publish(THING, 1, 3)
        await wait_until(lambda: reader.seqs == [1, 2, 3], what="gap filled")
        self.assertEqual(self.hub.delivered, {"live": 2, "database": 1})

    async def test_lost_events_are_filled_by_the_check(self):
        """Events committed but never published reach readers at the periodic check."""
        reader = await self.live_reader(FEED)
        self.store.commit(FEED, 1, 2)
        await self.hub.check()
        await wait_until(lambda: reader.seqs == [1, 2], what="stall filled")

    async def test_reader_whose_write_raises_is_closed_and_the_others_miss_nothing(self):
        """Between two good readers, a reader whose socket write raises is closed with 1013 and
        detached; the others get that event and every later one, with no gap."""
        first = await self.live_reader(FEED)
        broken = await self.live_reader(FEED, fail=True)
        last = await self.live_reader(FEED)
        with self.assertLogs("notifications.fanout", "WARNING"):
            await self.publish(FEED, 1)
            await wait_until(lambda: broken.closed, what="broken reader closed")
        await self.publish(FEED, 2, 3)
        await wait_until(lambda: first.seqs == [1, 2, 3] and last.seqs == [1, 2, 3], what="delivered")
        self.assertEqual(broken.close_codes, [1013])
        self.assertNotIn(broken, self.hub.streams[FEED].members)

    async def test_resume_replays_then_continues_live(self):
        """A resume replays what the reader missed, then live events follow without gap or repeat."""
        watcher = await self.live_reader(FEED)
        await self.publish(FEED, 1, 2, 3)
        await wait_until(lambda: watcher.seqs == [1, 2, 3], what="delivered")
        late = await self.live_reader(FEED, after=1)
        await self.publish(FEED, 4)
        await wait_until(lambda: late.seqs == [2, 3, 4], what="replayed then live")

    async def test_last_reader_leaving_leaves_the_group(self):
        """When a stream's last local reader goes, its group is left and its state dropped."""
        reader = await self.live_reader(THING)
        reader.close(1000)
        await self.hub.left()
        self.assertEqual(self.layer.groups["thing.7"], set())
        self.assertEqual(self.hub.streams, {})

    async def test_stream_that_cannot_be_opened_refuses_the_reader(self):
        """With the database away, attach raises (the consumer closes with 1013) and keeps nothing."""
        self.store.fail = True
        conn = FakeConnection(FEED)
        with self.assertRaises(RuntimeError):
            await self.hub.attach(conn)
        self.assertEqual(self.hub.streams, {})

    async def test_groups_are_rejoined_after_a_layer_outage(self):
        """A layer that failed a join is rejoined at the next check, and live events flow again."""
        self.layer.fail = True
        with self.assertLogs("notifications.membership", "WARNING"):
            reader = await self.live_reader(FEED)
        self.layer.fail = False
        await self.hub.check()
        self.assertTrue(self.hub.membership.ok)
        await self.publish(FEED, 1)
        await wait_until(lambda: reader.seqs == [1], what="live again")

    async def test_unknown_and_malformed_messages_are_ignored(self):
        """Messages of no known type are ignored; malformed events are dropped with a warning."""
        reader = await self.live_reader(FEED)
        self.hub._on_message({"type": "feed.presence", "feed_id": 1})
        with self.assertLogs("notifications.hub", "WARNING"):
            self.hub._on_message({"type": "comment.created", "feed_id": 1, "seq": "1", "html": "", "json": ""})
        await self.publish(FEED, 1)
        await wait_until(lambda: reader.seqs == [1], what="delivered")

    async def test_signals_reach_every_reader_of_their_stream_outside_the_order(self):
        """An unsequenced signal goes to every connection of its stream, replaying or live, and to no
        other stream; a reader whose write raises is closed; the seq order is untouched."""
        live = await self.live_reader(THING)
        waiting = FakeConnection(THING)
        await self.hub.attach(waiting)  # attached, no resume yet: not live
        broken = await self.live_reader(THING, fail=True)
        feed_reader = await self.live_reader(FEED)
        touched = {"type": "thing.touched", "thing_id": 7, "html": "<b>7</b>", "json": '{"touched":7}'}
        with self.assertLogs("notifications.fanout", "WARNING"):
            self.hub._on_message(touched)
        self.assertEqual((live.signals, waiting.signals, feed_reader.signals), (['{"touched":7}'], ['{"touched":7}'], []))
        self.assertEqual(broken.close_codes, [1013])
        with self.assertLogs("notifications.hub", "WARNING"):
            self.hub._on_message({"type": "thing.touched", "thing_id": "7"})
        await self.publish(THING, 1)
        await wait_until(lambda: live.seqs == [1], what="delivered")

    async def test_close_all_closes_every_reader_even_if_one_close_raises(self):
        """At shutdown a reader whose close raises does not keep the others open."""
        first, broken, last = [await self.live_reader(FEED) for _ in range(3)]

        def close(code, *, grace=None):
            raise OSError("socket gone")

        broken.close = close
        with self.assertLogs("notifications.hub", "WARNING"):
            closing = self.hub.close_all(1012)
        self.assertEqual(len(closing), 3)
        self.assertEqual((first.close_codes, last.close_codes), ([1012], [1012]))
        self.assertEqual(self.hub.streams, {})


class LateLiveEventsTests(HubTestCase):
    conf = LiveSettings(check_interval=3600.0, gap_grace=0.01, lag_grace=0.0, live_coalesce=0.0, late_grace_max=2.0)

    async def send_late(self, key, seq, late):
        message = thing_message(key.id, seq)
        message["committed_at"] = time.time() - late
        await self.layer.group_send(self.hub.kinds[key.kind].group(key.id), message)

    async def test_a_gap_behind_late_live_events_waits_for_them_instead_of_reading_the_database(self):
        """Live events arrive 0.3 s after their commit and one of them 0.1 s after its successor:
        the gap waits for it (no database read), so the reader gets 1, 2, 3 all live."""
        reader = await self.live_reader(THING)
        self.store.commit(THING, 1, 2, 3)
        await self.send_late(THING, 1, 0.3)
        await self.send_late(THING, 3, 0.3)
        await asyncio.sleep(0.1)
        await self.send_late(THING, 2, 0.4)
        await wait_until(lambda: reader.seqs == [1, 2, 3], what="delivered")
        self.assertEqual(self.store.loads, [])
        self.assertEqual(self.hub.delivered, {"live": 3, "database": 0})

    async def test_a_lost_event_is_still_filled_within_late_grace_max_however_late_the_live_path(self):
        """Live events 30 s late (capped at late_grace_max 0.2 s): a seq that never comes is filled soon."""
        self.hub.conf = replace(self.conf, late_grace_max=0.2)
        reader = await self.live_reader(THING)
        self.store.commit(THING, 1, 2, 3)
        await self.send_late(THING, 1, 30.0)
        await self.send_late(THING, 3, 30.0)
        started = time.monotonic()
        await wait_until(lambda: reader.seqs == [1, 2, 3], what="gap filled")
        self.assertLess(time.monotonic() - started, 1.5)
        self.assertGreaterEqual(time.monotonic() - started, 0.15)
        self.assertEqual(self.hub.delivered, {"live": 2, "database": 1})

    async def test_the_check_stretches_lag_grace_by_the_live_delay(self):
        """The periodic check leaves a seq the database shows to a live path that runs late."""
        await self.live_reader(THING)
        await self.send_late(THING, 1, 0.5)
        await wait_until(lambda: self.hub.delivered["live"] == 1, what="delivered")
        self.assertAlmostEqual(self.hub.lag_grace(), 0.5, delta=0.05)
        self.assertAlmostEqual(self.hub.gap_grace(), 0.51, delta=0.05)


class SharedThingKind(ThingKind):
    """Every thing's events in one group, like every person's notifications."""

    def group(self, stream_id):
        return "things"


class SharedGroupTests(HubTestCase):
    async def asyncSetUp(self):
        self.layer = FakeLayer()
        self.store = FakeStore()
        self.hub = StreamHub(self.conf, kinds={"thing": SharedThingKind()}, store=self.store, get_layer=lambda: self.layer)

    async def test_a_batch_reaches_each_local_stream_and_skips_the_others(self):
        """One events.batch with events of three streams, two of them read here: each reader gets its own."""
        seven = await self.live_reader(StreamKey("thing", 7))
        eight = await self.live_reader(StreamKey("thing", 8))
        for thing_id in (7, 8, 9):
            self.store.commit(StreamKey("thing", thing_id), 1)
        events = [thing_message(thing_id, 1) for thing_id in (7, 8, 9)]
        await self.layer.group_send("things", {"type": "events.batch", "events": [*events, "junk", {"type": "events.batch"}]})
        await wait_until(lambda: seven.seqs == [1] and eight.seqs == [1], what="delivered")
        self.assertEqual(self.hub.delivered, {"live": 2, "database": 0})
        self.assertEqual(self.store.loads, [])

    async def test_a_shared_group_is_left_only_with_its_last_stream(self):
        """Two streams in one group: the first leaving keeps the group; the second leaving leaves it."""
        seven = await self.live_reader(StreamKey("thing", 7))
        eight = await self.live_reader(StreamKey("thing", 8))
        seven.close(1000)
        await self.hub.left()
        self.assertEqual(self.layer.groups["things"], {"hub!1"})
        self.store.commit(StreamKey("thing", 8), 1)
        await self.layer.group_send("things", thing_message(8, 1))
        await wait_until(lambda: eight.seqs == [1], what="still delivered")
        eight.close(1000)
        await self.hub.left()
        self.assertEqual(self.layer.groups["things"], set())


class OrderedConnection(FakeConnection):
    """Records events and signals in the one order the reader got them."""

    def __init__(self, stream):
        super().__init__(stream)
        self.log = []

    def write(self, event):
        before = len(self.seqs)
        super().write(event)
        self.log.extend(("event", seq) for seq in self.seqs[before:])

    def write_batch(self, batch):
        before = len(self.seqs)
        super().write_batch(batch)
        self.log.extend(("event", seq) for seq in self.seqs[before:])

    def write_unsequenced(self, frame):
        super().write_unsequenced(frame)
        self.log.append(("signal", frame.json))


class PositionedSignalTests(HubTestCase):
    conf = LiveSettings(check_interval=3600.0, gap_grace=1.0, lag_grace=0.0, live_coalesce=0.0)

    def touched(self, after_seq=None):
        message = {"type": "thing.touched", "thing_id": 7, "html": "<b>read</b>", "json": '{"unread":0}'}
        if after_seq is not None:
            message["after_seq"] = after_seq
        return message

    async def reader(self):
        conn = OrderedConnection(THING)
        await self.hub.attach(conn)
        self.hub.resume(conn, 0)
        await wait_until(lambda: conn in self.hub.streams[THING].live, what="live")
        return conn

    async def test_a_signal_waits_for_the_event_it_follows(self):
        """Event 2 arrives before 1 and is held; a signal counted after event 2 arrives meanwhile:
        the reader gets 1, 2 and only then the signal (else 2's older count would overwrite it)."""
        reader = await self.reader()
        self.store.commit(THING, 1, 2)
        await self.layer.group_send("thing.7", thing_message(7, 2))
        await self.layer.group_send("thing.7", self.touched(after_seq=2))
        await self.layer.group_send("thing.7", thing_message(7, 1))
        await wait_until(lambda: len(reader.log) == 3, what="all delivered")
        self.assertEqual(reader.log, [("event", 1), ("event", 2), ("signal", '{"unread":0}')])
        self.assertEqual(self.store.loads, [])

    async def test_a_signal_whose_event_was_delivered_or_that_names_none_goes_at_once(self):
        reader = await self.reader()
        self.store.commit(THING, 1)
        await self.layer.group_send("thing.7", thing_message(7, 1))
        await self.layer.group_send("thing.7", self.touched(after_seq=1))
        await self.layer.group_send("thing.7", self.touched())
        await wait_until(lambda: len(reader.log) == 3, what="all delivered")
        self.assertEqual([kind for kind, _ in reader.log], ["event", "signal", "signal"])

    async def test_a_signal_waits_a_bounded_time_for_an_event_that_never_comes(self):
        reader = await self.reader()
        with mock.patch("notifications.hub.SIGNAL_WAIT_MAX", 0.05):
            await self.layer.group_send("thing.7", self.touched(after_seq=5))
            await wait_until(lambda: reader.log == [("signal", '{"unread":0}')], timeout=2, what="signal sent anyway")
