"""Stream kinds: the feed kind's group, parsing and database reads; the store across kinds."""
from unittest import mock

from asgiref.sync import async_to_sync
from django.test import TestCase, TransactionTestCase

from feed.models import Feed
from feed.services import comment_create
from notifications.events import comment_created_event
from notifications.streams import FeedKind, StreamKey, StreamStore, event_from_message, feed_stream
from tests.stream_fakes import ThingKind


class FeedKindTests(TestCase):
    def setUp(self):
        self.feed = Feed.objects.create(slug="town", title="Town", allow_anonymous=True)
        with mock.patch("notifications.publishing.publish_comment_created"):
            self.comments = [comment_create(feed=self.feed, author="ann", body=f"c{i}") for i in range(3)]

    def test_group_and_key_of_a_feed(self):
        """A feed's stream is ("feed", id), carried by the group feed.<id>."""
        self.assertEqual(feed_stream(self.feed.pk), StreamKey("feed", self.feed.pk))
        self.assertEqual(FeedKind().group(self.feed.pk), f"feed.{self.feed.pk}")

    def test_published_message_parses_to_its_stream_and_event(self):
        """The message publish sends is the event readers get, frames unchanged."""
        message = comment_created_event(self.comments[1])
        key, event = FeedKind().parse(message)
        self.assertEqual(key, feed_stream(self.feed.pk))
        self.assertEqual((event.seq, event.html, event.json), (2, message["html"], message["json"]))
        self.assertFalse(event.from_db)

    def test_malformed_messages_do_not_parse(self):
        """A message without an int feed id, a positive int seq or both frames is refused."""
        good = comment_created_event(self.comments[0])
        for change in ({"feed_id": "1"}, {"seq": 0}, {"seq": True}, {"seq": 1.0}, {"html": None}, {"json": b"{}"}):
            with self.subTest(change=change):
                self.assertIsNone(FeedKind().parse({**good, **change}))
        self.assertIsNone(event_from_message({}))

    def test_load_after_reads_events_rendered_like_published_ones(self):
        """Database reads give the same frames as the live path, marked from_db."""
        events = FeedKind().load_after(self.feed.pk, 1, 10)
        self.assertEqual([e.seq for e in events], [2, 3])
        self.assertTrue(all(e.from_db for e in events))
        self.assertEqual(events[0].json, comment_created_event(self.comments[1])["json"])
        self.assertEqual([e.seq for e in FeedKind().load_after(self.feed.pk, 0, 1)], [1])



class StreamStoreTests(TransactionTestCase):
    # A TransactionTestCase: the store reads in a worker thread, which closes its connection.
    def test_store_reads_last_seqs_of_every_kind_at_once(self):
        """last_seqs answers for keys of several kinds, one query per kind."""
        feed = Feed.objects.create(slug="town", title="Town", allow_anonymous=True)
        with mock.patch("notifications.publishing.publish_comment_created"):
            for i in range(3):
                comment_create(feed=feed, author="ann", body=f"c{i}")
        other = Feed.objects.create(slug="other", title="Other")

        class Things(ThingKind):
            def last_seqs(self, stream_ids):
                return {stream_id: stream_id * 10 for stream_id in stream_ids}

        store = StreamStore({"feed": FeedKind(), "thing": Things()})
        keys = [feed_stream(feed.pk), feed_stream(other.pk), StreamKey("thing", 4)]
        with self.assertNumQueries(1):
            seqs = async_to_sync(store.last_seqs)(keys)
        self.assertEqual(seqs, {keys[0]: 3, keys[1]: 0, keys[2]: 40})
