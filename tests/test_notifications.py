"""Notifications to people: who is notified and when, stored with the comment, read over the API and the page."""
import asyncio
import json
import re
from unittest import mock

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client, TestCase, TransactionTestCase, override_settings
from django.test.utils import CaptureQueriesContext

from feed.auth import api_token_issue
from feed.models import Comment, Feed
from feed.services import comment_create
from notifications import publishing
from notifications.events import user_group_name
from notifications.models import Notification, NotificationCounter
from notifications.backstop import check_streams
from notifications.conf import LiveSettings
from notifications.selectors import notification_last_seqs
from notifications.services import notifications_mark_read
from notifications.stream_state import StreamState
from notifications.streams import StreamStore, stream_kinds, user_stream

User = get_user_model()
NOTIFICATION_KEYS = {"id", "seq", "kind", "feed", "comment", "created_at", "read"}


def kinds(user):
    return list(Notification.objects.filter(user=user).order_by("seq").values_list("seq", "kind"))


class NotificationsTestCase(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.feed = Feed.objects.create(slug="talk", title="Talk", allow_anonymous=True)
        cls.club = Feed.objects.create(slug="club", title="Club", allow_anonymous=False)
        cls.ann = User.objects.create_user("ann")
        cls.bob = User.objects.create_user("bob")
        cls.club.members.add(cls.ann)

    def setUp(self):
        publishing._skip_until = 0.0


class WhoIsNotifiedTests(NotificationsTestCase):
    def test_a_reply_notifies_the_author_of_the_comment_it_answers(self):
        """Bob's reply to Ann's comment gives Ann one "reply" notification, seq 1."""
        mine = comment_create(feed=self.feed, author="", body="question", user=self.ann)
        reply = comment_create(feed=self.feed, author="", body="answer", user=self.bob, reply_to=mine.pk)
        notification = Notification.objects.get(user=self.ann)
        self.assertEqual(
            (notification.seq, notification.kind, notification.comment, notification.feed, notification.read),
            (1, "reply", reply, self.feed, False),
        )
        self.assertFalse(Notification.objects.filter(user=self.bob).exists())

    def test_a_guest_reply_and_a_guest_mention_notify(self):
        """Guests notify too: a reply to a signed-in author and a mention."""
        mine = comment_create(feed=self.feed, author="", body="question", user=self.ann)
        comment_create(feed=self.feed, author="Guest", body="hi", reply_to=mine.pk)
        comment_create(feed=self.feed, author="Guest", body="hey @BOB")
        self.assertEqual(kinds(self.ann), [(1, "reply")])
        self.assertEqual(kinds(self.bob), [(1, "mention")])

    def test_a_reply_that_also_mentions_notifies_once_as_a_reply(self):
        """At most one notification per comment per person; a reply wins over a mention."""
        mine = comment_create(feed=self.feed, author="", body="question", user=self.ann)
        comment_create(feed=self.feed, author="", body="@ann @ann @Ann yes", user=self.bob, reply_to=mine.pk)
        self.assertEqual(kinds(self.ann), [(1, "reply")])

    def test_nobody_is_notified_of_their_own_comment(self):
        """Replying to oneself or mentioning oneself notifies nobody; a guest's comment notifies no guest."""
        mine = comment_create(feed=self.feed, author="", body="question", user=self.ann)
        comment_create(feed=self.feed, author="", body="@ann me again", user=self.ann, reply_to=mine.pk)
        guest = comment_create(feed=self.feed, author="Guest", body="guest here")
        comment_create(feed=self.feed, author="", body="ok", user=self.bob, reply_to=guest.pk)
        self.assertFalse(Notification.objects.exists())

    def test_only_people_who_may_read_the_feed_are_notified(self):
        """A mention in a members-only feed notifies members and staff, not others; inactive users never."""
        staff = User.objects.create_user("boss", is_staff=True)
        User.objects.create_user("gone", is_active=False)
        comment_create(feed=self.club, author="", body="@bob @boss @gone @ann", user=self.ann)
        comment_create(feed=self.club, author="", body="@ann hi", user=staff)
        self.assertEqual(kinds(staff), [(1, "mention")])
        self.assertEqual(kinds(self.ann), [(1, "mention")])
        self.assertFalse(Notification.objects.filter(user__username__in=["bob", "gone"]).exists())

    def test_one_comment_notifies_at_most_twenty_people(self):
        """Mentioning 30 users notifies the first 20 mentioned."""
        users = [User.objects.create_user(f"user{number:02}") for number in range(30)]
        body = " ".join(f"@{user.username}" for user in users)
        comment_create(feed=self.feed, author="Guest", body=body)
        notified = set(Notification.objects.values_list("user__username", flat=True))
        self.assertEqual(notified, {user.username for user in users[:20]})

    def test_seqs_count_per_user_from_one(self):
        """Each user's notifications are numbered 1, 2, 3… whatever the feed."""
        staff = User.objects.create_user("boss", is_staff=True)
        for number in range(3):
            comment_create(feed=self.feed if number % 2 else self.club, author="", body=f"@ann {number}", user=staff)
        self.assertEqual([seq for seq, _ in kinds(self.ann)], [1, 2, 3])
        self.assertEqual(NotificationCounter.objects.get(user=self.ann).last_seq, 3)


class AtomicityTests(NotificationsTestCase):
    def test_a_failing_notification_leaves_no_comment(self):
        """The comment and its notifications commit together: if notifying fails, no comment, no seq used."""
        with mock.patch.object(Notification.objects, "bulk_create", side_effect=RuntimeError("disk full")):
            with self.assertRaises(RuntimeError):
                comment_create(feed=self.feed, author="Guest", body="hi @ann")
        self.assertFalse(Comment.objects.exists())
        self.feed.refresh_from_db()
        self.assertEqual(self.feed.last_seq, 0)
        self.assertFalse(NotificationCounter.objects.filter(last_seq__gt=0).exists())
        comment_create(feed=self.feed, author="Guest", body="hi @ann")
        self.assertEqual(kinds(self.ann), [(1, "mention")])


@override_settings(CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}})
class PublishingTests(NotificationsTestCase):
    def listen(self, user):
        layer = get_channel_layer()
        channel = async_to_sync(layer.new_channel)()
        async_to_sync(layer.group_add)(user_group_name(user.pk), channel)

        def receive(timeout=2):
            async def receive_one():
                try:
                    return await asyncio.wait_for(layer.receive(channel), timeout)
                except TimeoutError:
                    return None

            return async_to_sync(receive_one)()

        return receive

    def test_every_persons_events_share_one_group(self):
        """Every person's events go to one group; each names its user_id (the hubs sort them out)."""
        self.assertEqual(user_group_name(42), "notifications")
        self.assertEqual(user_group_name(7), user_group_name(42))

    def test_a_notification_is_published_to_its_user_after_commit(self):
        """On commit the user's group gets notification.created with the JSON envelope and the HTML fragment."""
        receive = self.listen(self.ann)
        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            comment = comment_create(feed=self.feed, author="Guest", body="hi @ann <b>")
            self.assertIsNone(receive(timeout=0.1), "nothing before the commit")
        for callback in callbacks:
            callback()
        event = receive()
        self.assertEqual({k: event[k] for k in ("type", "v", "user_id", "seq", "unread")},
                         {"type": "notification.created", "v": 1, "user_id": self.ann.pk, "seq": 1, "unread": 1})
        envelope = json.loads(event["json"])
        self.assertEqual({k: envelope[k] for k in ("type", "v", "seq")}, {"type": "notification.created", "v": 1, "seq": 1})
        self.assertEqual(set(envelope["data"]), NOTIFICATION_KEYS)
        self.assertEqual((envelope["data"]["kind"], envelope["data"]["comment"]["id"]), ("mention", comment.pk))
        self.assertIn('id="notification-badge"', event["html"])
        self.assertIn(f'href="/feeds/talk/#comment-{comment.pk}"', event["html"])
        self.assertNotIn("<b>", event["html"])
        self.assertIsNone(receive(timeout=0.1), "published once")

    def test_a_comments_notifications_are_published_in_one_layer_message(self):
        """A comment notifying two people sends one events.batch: both events, each naming its user."""
        receive = self.listen(self.ann)
        with self.captureOnCommitCallbacks(execute=True):
            comment_create(feed=self.feed, author="Guest", body="hi @ann and @bob")
        batch = receive()
        self.assertEqual(batch["type"], "events.batch")
        self.assertEqual(
            sorted((e["type"], e["user_id"], e["seq"]) for e in batch["events"]),
            sorted([("notification.created", self.ann.pk, 1), ("notification.created", self.bob.pk, 1)]),
        )
        self.assertIsNone(receive(timeout=0.1), "published once")

    def test_a_frame_carries_the_unread_count_at_its_commit_not_at_its_publish(self):
        """Seq 1 commits (1 unread); before its publish runs, seq 2 commits: frame 1 still says 1, frame 2 says 2."""
        receive = self.listen(self.ann)
        with self.captureOnCommitCallbacks(execute=False) as first:
            comment_create(feed=self.feed, author="Guest", body="one @ann")
        with self.captureOnCommitCallbacks(execute=False) as second:
            comment_create(feed=self.feed, author="Guest", body="two @ann")
        for callback in second + first:  # the later commit publishes first
            callback()
        frames = {event["seq"]: event for event in (receive(), receive())}
        self.assertEqual({seq: frame["unread"] for seq, frame in frames.items()}, {1: 1, 2: 2})
        self.assertIn('data-unread="1"', frames[1]["html"])

    def test_a_read_carries_the_count_it_left_and_the_newest_seq_it_counted(self):
        """Its count and position are taken in its transaction, under the counter lock new notifications take."""
        comment_create(feed=self.feed, author="Guest", body="hi @ann")
        comment_create(feed=self.feed, author="Guest", body="again @ann")
        receive = self.listen(self.ann)
        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            notifications_mark_read(user=self.ann, up_to=1)
        comment_create(feed=self.feed, author="Guest", body="third @ann")  # after the read, before its publish
        for callback in callbacks:
            callback()
        event = receive()
        self.assertEqual((event["type"], event["unread"], event["after_seq"]), ("notifications.read", 1, 2))

    def test_marking_read_publishes_notifications_read(self):
        """Marking read sends {"type": "notifications.read", "v": 1, "up_to", "unread"} to the user's group."""
        comment_create(feed=self.feed, author="Guest", body="hi @ann")
        comment_create(feed=self.feed, author="Guest", body="again @ann")
        receive = self.listen(self.ann)
        with self.captureOnCommitCallbacks(execute=True):
            notifications_mark_read(user=self.ann, up_to=1)
        event = receive()
        self.assertEqual(json.loads(event["json"]), {"type": "notifications.read", "v": 1, "up_to": 1, "unread": 1})
        self.assertIn('data-unread="1"', event["html"])


class ApiTests(NotificationsTestCase):
    def setUp(self):
        super().setUp()
        self.mine = comment_create(feed=self.feed, author="", body="question", user=self.ann)
        for number in range(3):
            comment_create(feed=self.feed, author="", body=f"reply {number}", user=self.bob, reply_to=self.mine.pk)

    def test_anonymous_callers_get_401(self):
        """Without a session or token every notifications endpoint answers 401 in the JSON error shape."""
        for method, path in (("get", "/api/notifications/"), ("get", "/api/notifications/summary/"),
                             ("post", "/api/notifications/read/")):
            with self.subTest(path=path):
                response = getattr(self.client, method)(path, content_type="application/json", data="{}" if method == "post" else None)
                self.assertEqual(response.status_code, 401, response.content)
                self.assertEqual(response.json()["error"], "not_authenticated")

    def test_list_is_ascending_after_a_seq_with_a_limit(self):
        """GET ?after=&limit= returns the caller's notifications with seq > after, ascending, in the contract shape."""
        self.client.force_login(self.ann)
        items = self.client.get("/api/notifications/").json()
        self.assertEqual([n["seq"] for n in items], [1, 2, 3])
        self.assertEqual(set(items[0]), NOTIFICATION_KEYS)
        self.assertEqual((items[0]["kind"], items[0]["feed"], items[0]["read"]), ("reply", "talk", False))
        self.assertEqual(items[0]["comment"]["reply_to"], self.mine.pk)
        self.assertTrue(items[0]["created_at"].endswith("Z"))
        self.assertEqual([n["seq"] for n in self.client.get("/api/notifications/?after=1&limit=1").json()], [2])
        self.assertEqual(self.client.get("/api/notifications/?limit=500").status_code, 400)

    def test_a_token_sees_its_users_notifications_only(self):
        """A bearer token reads its own user's notifications: Bob has none."""
        _, secret = api_token_issue(user=self.bob)
        response = self.client.get("/api/notifications/", HTTP_AUTHORIZATION=f"Bearer {secret}")
        self.assertEqual(response.json(), [])

    def test_summary_and_mark_read(self):
        """summary counts unread; read up_to marks those read and answers the new summary."""
        _, secret = api_token_issue(user=self.ann)
        auth = {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
        self.assertEqual(self.client.get("/api/notifications/summary/", **auth).json(), {"unread": 3, "last_seq": 3})
        response = self.client.post("/api/notifications/read/", {"up_to": 2}, content_type="application/json", **auth)
        self.assertEqual(response.json(), {"unread": 1, "last_seq": 3})
        self.assertEqual([n["read"] for n in self.client.get("/api/notifications/", **auth).json()], [True, True, False])
        bad = self.client.post("/api/notifications/read/", {"up_to": -1}, content_type="application/json", **auth)
        self.assertEqual((bad.status_code, list(bad.json()["fields"])), (400, ["up_to"]))

    def test_session_posts_need_csrf(self):
        """With the session cookie, POST read needs the CSRF token (403 csrf_failed without it)."""
        client = Client(enforce_csrf_checks=True)
        client.force_login(self.ann)
        response = client.post("/api/notifications/read/", {"up_to": 3}, content_type="application/json")
        self.assertEqual((response.status_code, response.json()["error"]), (403, "csrf_failed"))
        client.get("/")
        token = client.cookies["csrftoken"].value
        response = client.post("/api/notifications/read/", {"up_to": 3}, content_type="application/json",
                               HTTP_X_CSRFTOKEN=token)
        self.assertEqual(response.json(), {"unread": 0, "last_seq": 3})

    def test_losing_access_to_a_feed_hides_its_notifications(self):
        """Notifications of a feed the user may no longer read stop showing, in the list and the counts."""
        comment_create(feed=self.club, author="", body="@ann inside", user=User.objects.create_user("boss", is_staff=True))
        self.client.force_login(self.ann)
        self.assertEqual(self.client.get("/api/notifications/summary/").json(), {"unread": 4, "last_seq": 4})
        self.club.members.remove(self.ann)
        self.assertEqual([n["feed"] for n in self.client.get("/api/notifications/").json()], ["talk"] * 3)
        self.assertEqual(self.client.get("/api/notifications/summary/").json()["unread"], 3)
        self.assertNotIn("Club", self.client.get("/notifications/").content.decode())


class PageTests(NotificationsTestCase):
    def test_the_page_lists_notifications_linked_to_their_comments(self):
        """/notifications/ lists the person's notifications, newest first, each linking to its comment."""
        first = comment_create(feed=self.feed, author="Guest", body="hi @ann")
        second = comment_create(feed=self.feed, author="Guest <b>", body="again @ann")
        self.client.force_login(self.ann)
        html = self.client.get("/notifications/").content.decode()
        links = re.findall(r'href="(/feeds/talk/#comment-\d+)"', html)
        self.assertEqual(links, [f"/feeds/talk/#comment-{second.pk}", f"/feeds/talk/#comment-{first.pk}"])
        self.assertIn("Guest &lt;b&gt; mentioned you", html)
        self.assertNotIn("<b>", html.split("</header>", 1)[1])

    def test_mark_all_read_works_without_javascript(self):
        """The "Mark all read" form posts with CSRF, marks what the page showed read, and comes back."""
        comment_create(feed=self.feed, author="Guest", body="hi @ann")
        client = Client(enforce_csrf_checks=True)
        client.force_login(self.ann)
        html = client.get("/notifications/").content.decode()
        form = re.search(r'<form method="post" action="/notifications/read/" class="mark-read">(.*?)</form>', html, re.S)
        self.assertIn('name="csrfmiddlewaretoken"', form.group(1))
        self.assertIn('name="up_to" value="1"', form.group(1))
        comment_create(feed=self.feed, author="Guest", body="arrived since @ann")
        self.assertEqual(client.post("/notifications/read/", {"up_to": 1}).status_code, 403)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.group(1)).group(1)
        response = client.post("/notifications/read/", {"up_to": 1, "csrfmiddlewaretoken": token})
        self.assertRedirects(response, "/notifications/", status_code=303, fetch_redirect_response=False)
        self.assertEqual(list(Notification.objects.order_by("seq").values_list("read", flat=True)), [True, False])

    def test_the_header_shows_the_unread_count_with_one_query(self):
        """Every page's header shows the unread count in #notification-badge; with none unread it costs one query."""
        self.client.force_login(self.ann)
        html = self.client.get("/").content.decode()
        self.assertRegex(html, r'<span id="notification-badge" class="notification-badge" data-unread="0">0')
        comment_create(feed=self.feed, author="Guest", body="hi @ann")
        comment_create(feed=self.feed, author="Guest", body="hi @ann")
        html = self.client.get("/feeds/talk/").content.decode()
        self.assertRegex(html, r'id="notification-badge"[^>]*data-unread="2">2<span class="visually-hidden"> unread')
        Notification.objects.update(read=True)
        from notifications.context_processors import unread_notifications

        request = mock.Mock(user=self.ann)
        with CaptureQueriesContext(connection) as queries:
            self.assertEqual(int(str(unread_notifications(request)["notification_unread"])), 0)
        self.assertEqual(len(queries), 1)

    def test_signed_out_readers_see_no_badge(self):
        """The badge is for signed-in users only."""
        self.assertNotIn("notification-badge", self.client.get("/").content.decode())


class HiddenNotificationsInTheStreamTests(TransactionTestCase):
    def setUp(self):
        publishing._skip_until = 0.0
        self.feed = Feed.objects.create(slug="talk", title="Talk", allow_anonymous=True)
        self.club = Feed.objects.create(slug="club", title="Club", allow_anonymous=False)
        self.ann = User.objects.create_user("ann")
        self.boss = User.objects.create_user("boss", is_staff=True)
        self.club.members.add(self.ann)
        comment_create(feed=self.feed, author="Guest", body="@ann open")  # ann's seq 1
        comment_create(feed=self.club, author="", body="@ann inside", user=self.boss)  # ann's seq 2
        self.club.members.remove(self.ann)  # seq 2 is hidden from ann now

    def test_the_last_seq_of_a_stream_is_the_newest_notification_its_user_may_still_see(self):
        bob = User.objects.create_user("bob")
        self.assertEqual(notification_last_seqs(user_ids=[self.ann.pk, bob.pk]), {self.ann.pk: 1})
        self.club.members.add(self.ann)
        self.assertEqual(notification_last_seqs(user_ids=[self.ann.pk]), {self.ann.pk: 2})
        User.objects.filter(pk=self.ann.pk).update(is_active=False)
        self.assertEqual(notification_last_seqs(user_ids=[self.ann.pk]), {}, "an inactive user's stream shows nothing")

    def test_a_read_is_placed_after_the_newest_notification_the_stream_shows(self):
        """Seq 2 is hidden from ann: her read follows seq 1 (her stream never delivers 2 to wait for)."""
        with mock.patch("notifications.publishing.publish_user_event") as publish:
            notifications_mark_read(user=self.ann, up_to=2)
        event = publish.call_args.args[1]
        self.assertEqual((event["after_seq"], event["unread"]), (1, 0))

    def test_a_staff_member_sees_the_notifications_of_feeds_he_is_no_member_of(self):
        other = User.objects.create_user("other", is_staff=True)
        comment_create(feed=self.club, author="", body="@other inside", user=self.boss)
        self.assertEqual(notification_last_seqs(user_ids=[other.pk]), {other.pk: 1})

    async def test_the_periodic_check_does_not_reread_a_stream_whose_newest_notifications_are_hidden(self):
        """Ann's stream delivered seq 1; seq 2 is of a feed she lost: the check finds nothing to fill, every time."""
        store = StreamStore(stream_kinds())
        loads = []

        async def load(after, limit):
            loads.append((after, limit))
            return await store.load_after(user_stream(self.ann.pk), after, limit)

        state = StreamState(
            user_stream(self.ann.pk), group="notifications", conf=LiveSettings(lag_grace=0.75), load=load,
            land=lambda state, events, after: state.order.offer(events, db_after=after),
        )
        state.order.open(1)
        for now in (100.0, 101.0, 102.0, 103.0):
            await check_streams([state], store, now)
            while state.filler.task is not None:
                await asyncio.sleep(0.001)
        self.assertEqual(loads, [])
        self.assertEqual(state.order.cursor, 1)
