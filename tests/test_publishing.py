"""Publishing on commit: what reaches the feed's group, and what happens when Redis is away."""
import socket
import time
from unittest import mock

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.test import TestCase, TransactionTestCase, override_settings

from feed.models import Comment, Feed
from feed.services import comment_create
from notifications import publishing
from livefeed.metrics import COMMENTS_CREATED_TOTAL, EVENTS_PUBLISHED_TOTAL, PUBLISH_FAILURES_TOTAL
from notifications.events import feed_group_name
from tests.harness import DaphneInstance, free_port, post_comment, subprocess_database_url, wait_until
from tests.test_consumers import redis_server


def redis_layer_settings(url):
    return {
        "default": {
            "BACKEND": "notifications.layer.LiveChannelLayer",
            "CONFIG": {"hosts": [{"address": url, "socket_connect_timeout": 2}], "prefix": "livefeed-publish-test"},
        }
    }


class GroupListener:
    """A channel of the channel layer in the feed's group, as a hub would hold."""

    def __init__(self, feed):
        self.layer = get_channel_layer()
        self.channel = async_to_sync(self.layer.new_channel)()
        async_to_sync(self.layer.group_add)(feed_group_name(feed.pk), self.channel)

    def receive(self, timeout=5):
        async def receive():
            import asyncio

            try:
                return await asyncio.wait_for(self.layer.receive(self.channel), timeout)
            except TimeoutError:
                return None

        return async_to_sync(receive)()


def reset_publish_backoff():
    publishing._skip_until = 0.0


@override_settings(CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}})
class PublishOnCommitTests(TestCase):
    def setUp(self):
        reset_publish_backoff()
        self.feed = Feed.objects.create(slug="town", title="Town", allow_anonymous=True)
        self.listener = GroupListener(self.feed)

    def test_commit_publishes_the_comment_with_both_frames_rendered(self):
        """On commit the feed's group gets comment.created with seq, the HTML fragment and the JSON envelope."""
        with self.captureOnCommitCallbacks(execute=True) as callbacks:
            comment = comment_create(feed=self.feed, author="ann", body="<script>x</script>")
        self.assertEqual(len(callbacks), 1)
        event = self.listener.receive()
        self.assertEqual(
            {k: event[k] for k in ("type", "v", "feed_id", "seq")},
            {"type": "comment.created", "v": 1, "feed_id": self.feed.pk, "seq": 1},
        )
        self.assertIn(f'<article id="comment-{comment.pk}"', event["html"])
        self.assertIn("&lt;script&gt;x&lt;/script&gt;", event["html"])
        self.assertTrue(event["html"].startswith('<div id="comments" hx-swap-oob="beforeend">'))
        self.assertIn('"seq":1', event["json"])
        self.assertIsNone(self.listener.receive(timeout=0.2), "published exactly once")

    def test_nothing_is_published_before_commit(self):
        """Inside the transaction nothing is sent; the event waits for the commit."""
        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            comment_create(feed=self.feed, author="ann", body="waiting")
            self.assertIsNone(self.listener.receive(timeout=0.2))
        self.assertEqual(len(callbacks), 1)

    def test_rolled_back_post_publishes_nothing(self):
        """A post whose transaction rolls back is neither saved nor published."""
        with self.captureOnCommitCallbacks(execute=True) as callbacks:
            try:
                with transaction.atomic():
                    comment_create(feed=self.feed, author="ann", body="never")
                    raise RuntimeError("roll back")
            except RuntimeError:
                pass
        self.assertEqual(callbacks, [])
        self.assertFalse(Comment.objects.exists())
        self.feed.refresh_from_db()
        self.assertEqual(self.feed.last_seq, 0, "the rolled-back seq is taken again by the next post")
        self.assertIsNone(self.listener.receive(timeout=0.2))


def metric(counter):
    return counter._value.get()


@override_settings(CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}})
class AfterCommitTests(TransactionTestCase):
    """What runs after commit never turns a saved post into an error (real commits, real views)."""

    def setUp(self):
        reset_publish_backoff()
        self.feed = Feed.objects.create(slug="town", title="Town", allow_anonymous=True)

    def api_post(self, body, **headers):
        return self.client.post(
            "/api/feeds/town/comments/", {"author": "Ann", "body": body}, content_type="application/json", **headers
        )

    def test_a_publish_that_raises_still_answers_201_and_is_counted(self):
        """Rendering the event fails after commit: the API answers 201, the comment is saved, the failure counted."""
        failures, created = metric(PUBLISH_FAILURES_TOTAL), metric(COMMENTS_CREATED_TOTAL)
        with mock.patch.object(publishing, "comment_created_event", side_effect=RuntimeError("template broke")):
            with self.assertLogs("notifications.publishing", "ERROR") as logs:
                response = self.api_post("saved anyway")
        self.assertEqual(response.status_code, 201, response.content)
        self.assertTrue(Comment.objects.filter(pk=response.json()["id"]).exists())
        self.assertEqual(metric(PUBLISH_FAILURES_TOTAL) - failures, 1)
        self.assertEqual(metric(COMMENTS_CREATED_TOTAL) - created, 1)
        self.assertIn("readers get it from the database", logs.output[0])

    def test_a_form_post_whose_publish_raises_still_redirects(self):
        """The same for the page's form: 303 to the new comment, not a 500."""
        with mock.patch.object(publishing, "get_channel_layer", side_effect=RuntimeError("bad settings")):
            with self.assertLogs("notifications.publishing", "ERROR"):
                response = self.client.post("/feeds/town/comments/", {"author": "Ann", "body": "form"})
        self.assertEqual(response.status_code, 303)
        self.assertEqual(Comment.objects.count(), 1)

    def test_a_mention_whose_notification_events_fail_to_render_still_answers_201(self):
        """The notifications' events fail after commit: 201, the comment and its notification saved, the failure counted."""
        from django.contrib.auth import get_user_model

        from notifications import events
        from notifications.models import Notification

        bob = get_user_model().objects.create_user("bob")
        failures = metric(PUBLISH_FAILURES_TOTAL)
        with mock.patch.object(events, "notification_created_events", side_effect=RuntimeError("template broke")):
            with self.assertLogs("notifications.publishing", "ERROR") as logs:
                response = self.api_post("hello @bob")
        self.assertEqual(response.status_code, 201, response.content)
        self.assertEqual(Notification.objects.filter(user=bob, comment_id=response.json()["id"]).count(), 1)
        self.assertEqual(metric(PUBLISH_FAILURES_TOTAL) - failures, 1)
        self.assertIn("readers get it from the database", logs.output[0])

    def test_a_successful_publish_is_counted(self):
        """Each event sent to the layer counts in livefeed_events_published_total."""
        published = metric(EVENTS_PUBLISHED_TOTAL)
        self.assertEqual(self.api_post("one").status_code, 201)
        self.assertEqual(metric(EVENTS_PUBLISHED_TOTAL) - published, 1)


class PublishWithoutRedisTests(TestCase):
    """Outside a server (management commands, these tests) the post sends before returning."""

    def setUp(self):
        reset_publish_backoff()
        self.feed = Feed.objects.create(slug="town", title="Town", allow_anonymous=True)

    def test_post_succeeds_and_is_logged_when_redis_refuses_connections(self):
        """With nothing listening at REDIS_URL the comment is saved, the failure logged, the post quick."""
        with override_settings(CHANNEL_LAYERS=redis_layer_settings(f"redis://127.0.0.1:{free_port()}/0")):
            started = time.monotonic()
            with self.assertLogs("notifications.publishing", "WARNING") as logs:
                with self.captureOnCommitCallbacks(execute=True):
                    comment = comment_create(feed=self.feed, author="ann", body="saved anyway")
            self.assertLess(time.monotonic() - started, 5)
        self.assertTrue(Comment.objects.filter(pk=comment.pk).exists())
        self.assertIn("Could not publish comment 1", logs.output[0])

    def test_a_failed_publish_is_counted(self):
        """A publish the layer refuses counts in livefeed_publish_failures_total, and not as published."""
        failures, published = metric(PUBLISH_FAILURES_TOTAL), metric(EVENTS_PUBLISHED_TOTAL)
        with override_settings(CHANNEL_LAYERS=redis_layer_settings(f"redis://127.0.0.1:{free_port()}/0")):
            with self.assertLogs("notifications.publishing", "WARNING"):
                with self.captureOnCommitCallbacks(execute=True):
                    comment_create(feed=self.feed, author="ann", body="not published")
        self.assertEqual(metric(PUBLISH_FAILURES_TOTAL) - failures, 1)
        self.assertEqual(metric(EVENTS_PUBLISHED_TOTAL) - published, 0)

    @override_settings(LIVE_UPDATES={"layer_timeout": 0.5, "publish_backoff": 30})
    def test_post_does_not_hang_on_a_redis_that_never_answers(self):
        """A Redis that accepts connections but never replies costs a post at most the layer timeout,
        and posts right after it skip publishing instead of waiting again."""
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        try:
            url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
            with override_settings(CHANNEL_LAYERS=redis_layer_settings(url)):
                started = time.monotonic()
                with self.assertLogs("notifications.publishing", "WARNING"):
                    with self.captureOnCommitCallbacks(execute=True):
                        comment_create(feed=self.feed, author="ann", body="one")
                first = time.monotonic() - started
                started = time.monotonic()
                with self.captureOnCommitCallbacks(execute=True):
                    comment_create(feed=self.feed, author="ann", body="two")
                second = time.monotonic() - started
        finally:
            silent.close()
        self.assertLess(first, 3)
        self.assertLess(second, 0.4)
        self.assertEqual(Comment.objects.count(), 2)


class PublishThroughRedisTests(TransactionTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = redis_server()

    @classmethod
    def tearDownClass(cls):
        cls.redis.stop()
        super().tearDownClass()

    def test_committed_comment_reaches_the_group_through_a_real_redis(self):
        """With the Redis channel layer the event reaches a channel in the feed's group."""
        reset_publish_backoff()
        with override_settings(CHANNEL_LAYERS=redis_layer_settings(self.redis.url)):
            feed = Feed.objects.create(slug="town", title="Town", allow_anonymous=True)
            listener = GroupListener(feed)
            comment = comment_create(feed=feed, author="ann", body="via redis")
            event = listener.receive()
        self.assertEqual(event["seq"], comment.seq)
        self.assertIn('data-seq="1"', event["html"])


class PublishFromTheServerTests(TransactionTestCase):
    """In daphne the post schedules the send on the server's event loop and does not wait for it."""

    def start_instance(self, redis_url):
        instance = DaphneInstance("P", redis_url=redis_url, database_url=subprocess_database_url())
        self.addCleanup(instance.close_log)
        self.addCleanup(instance.kill)
        instance.start()
        instance.wait_ready()
        return instance

    def test_post_answers_before_a_silent_redis_times_out_and_the_failure_is_logged(self):
        """With a Redis that accepts connections but never answers, the post is saved and answered
        before the 2 s publish timeout ends; the failed publish is logged by the server afterwards."""
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        self.addCleanup(silent.close)
        instance = self.start_instance(f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        Feed.objects.create(slug="town", title="Town", allow_anonymous=True)
        offset = instance.log_offset()

        started = time.monotonic()
        status, data = post_comment(instance, "town", author="ann", body="saved anyway")
        answered_after = time.monotonic() - started
        log_when_answered = instance.log_since(offset)

        self.assertEqual(status, 201, data)
        self.assertTrue(Comment.objects.filter(pk=data["id"]).exists())
        self.assertNotIn("Could not publish comment", log_when_answered, "the post waited for the publish")
        self.assertLess(answered_after, 2.0)
        wait_until(
            lambda: "Could not publish comment 1 of feed" in instance.log_since(offset),
            20,
            "the server to log the failed publish",
        )

    def test_post_through_the_server_reaches_the_group_through_a_real_redis(self):
        """A post answered by daphne still publishes: the event reaches a channel in the feed's group."""
        redis = redis_server()
        self.addCleanup(redis.stop)
        instance = self.start_instance(redis.url)
        feed = Feed.objects.create(slug="town", title="Town", allow_anonymous=True)
        layer_settings = redis_layer_settings(redis.url)
        layer_settings["default"]["CONFIG"].pop("prefix")  # the server's layer uses the default prefix
        with override_settings(CHANNEL_LAYERS=layer_settings):
            listener = GroupListener(feed)
            status, data = post_comment(instance, "town", author="ann", body="via the server")
            event = listener.receive(timeout=10)
        self.assertEqual(status, 201, data)
        self.assertIsNotNone(event, "nothing reached the group")
        self.assertEqual((event["type"], event["seq"]), ("comment.created", data["seq"]))
        self.assertIn("via the server", event["html"])
