"""A person's notification stream across two real daphne instances and a real Redis.

The same per-connection guarantee as a feed's (strictly increasing seq, no duplicates, none
missing) for /ws/notifications/, in JSON mode (Bearer token) and HTML mode (session cookie),
through faults (an instance killed, Redis restarted empty), and marking read on one instance
reaching the user's connections on every instance within 2 s.

The rate limit stays at its default (30/m, as outside tests): every test posts through a
signed-in poster of its own (rate-limited per user), fewer than 30 posts each.
"""
import json
import time
import urllib.request
from unittest import mock

from django.contrib.auth import get_user_model
from django.db import connection
from django.test import TestCase
from django.test.utils import CaptureQueriesContext

from feed.auth import api_token_issue
from feed.models import Feed
from feed.services import comment_create
from notifications.context_processors import unread_notifications
from notifications.models import Notification
from tests.harness import NO_PROXY, MultiInstanceTestCase, post_comment, sign_in, wait_until
from tests.test_multi_instance import DEFAULT_POST_RATE, DELIVERY_TIMEOUT, POST_DEADLINE

PASSWORD = "a-long-unusual-passphrase-42"
READ_DEADLINE = 2.0  # marking read reaches every connection of the user within this
User = get_user_model()


class NotificationLiveTests(MultiInstanceTestCase):
    instance_env = DEFAULT_POST_RATE

    def setUp(self):
        super().setUp()
        self.a, self.b = self.instances
        self.slug = f"notify-{self._testMethodName[5:35].replace('_', '-')}"
        self.make_feed(self.slug)
        self.ann = User.objects.create_user("ann", password=PASSWORD)
        _, self.ann_token = api_token_issue(user=self.ann, name="reader")
        self.ann_session = sign_in(self.a, "ann", PASSWORD)
        poster = User.objects.create_user(f"poster{time.monotonic_ns()}")
        _, self.poster_token = api_token_issue(user=poster, name="poster")

    # --- helpers ------------------------------------------------------------------

    def readers_everywhere(self):
        """JSON (token) and HTML (session) readers of ann's notifications on A and on B."""
        return [
            self.notification_reader(instance, json=json, **({"token": self.ann_token} if json else {"session": self.ann_session}))
            for instance in (self.a, self.b)
            for json in (True, False)
        ]

    def mention(self, instance, text="hello"):
        """Post a comment mentioning @ann through an instance; assert 201 within the post deadline."""
        started = time.monotonic()
        status, data = post_comment(
            instance, self.slug, author="", body=f"{text} @ann",
            headers={"Authorization": f"Bearer {self.poster_token}"},
        )
        elapsed = time.monotonic() - started
        self.assertEqual(status, 201, f"POST via {instance.name}: {status} {data}\n{self.diagnostics()}")
        self.assertLess(elapsed, POST_DEADLINE, f"POST via {instance.name} took {elapsed:.2f}s")
        return data

    def last_notification_seq(self):
        return Notification.objects.filter(user=self.ann).order_by("-seq").values_list("seq", flat=True).first() or 0

    def assertEveryReaderGetsAll(self, readers, last_seq, via, histories=None, timeout=DELIVERY_TIMEOUT):
        """Every reader has 1..last_seq, then a sentinel mention flushes the sockets: exactly 1..sentinel, in order."""
        histories = histories or {}
        for reader in readers:
            reader.wait_for_seq(last_seq, timeout)
        self.mention(via, "sentinel")
        sentinel = self.last_notification_seq()
        self.assertEqual(sentinel, last_seq + 1)
        for reader in readers:
            reader.wait_for_seq(sentinel, timeout)
        for reader in readers:
            self.assertExactlyOnceInOrder(histories.get(reader, []) + reader.seqs, list(range(1, sentinel + 1)), repr(reader))

    def mark_read(self, instance, up_to):
        request = urllib.request.Request(
            instance.http_url("/api/notifications/read/"),
            data=json.dumps({"up_to": up_to}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.ann_token}"},
            method="POST",
        )
        with NO_PROXY.open(request, timeout=10) as response:
            return response.status, json.loads(response.read())

    # --- tests --------------------------------------------------------------------

    def test_a_mention_posted_on_a_reaches_the_users_sockets_on_a_and_b_once_in_order(self):
        """Mentions posted on A (and B) reach ann's JSON/token and HTML/session sockets on A and B, each once, in seq order."""
        readers = self.readers_everywhere()
        first = self.mention(self.a, "first")
        self.mention(self.a, "second")
        self.mention(self.b, "third")

        self.assertEveryReaderGetsAll(readers, 3, via=self.a)
        json_on_b, html_on_b = readers[2], readers[3]
        envelope = json.loads(json_on_b.frames[0])
        self.assertEqual((envelope["type"], envelope["seq"], envelope["data"]["kind"]), ("notification.created", 1, "mention"))
        self.assertEqual(envelope["data"]["comment"], first)
        html = html_on_b.frames[0]
        self.assertIn('id="notification-badge"', html)
        self.assertIn('hx-swap-oob="afterbegin"', html)
        self.assertIn('data-seq="1"', html)
        self.assertEqual(html_on_b.unread, [1, 2, 3, 4])

    def test_readers_of_a_killed_instance_resume_on_the_other_without_loss(self):
        """SIGKILL on A while mentions keep coming through B: A's readers resume on B after their last seq, losing nothing."""
        on_a = [
            self.notification_reader(self.a, json=True, token=self.ann_token),
            self.notification_reader(self.a, json=False, session=self.ann_session),
        ]
        on_b = self.notification_reader(self.b, json=True, token=self.ann_token)
        for index in range(5):
            self.mention(self.a, f"before the kill {index}")
        for reader in [*on_a, on_b]:
            reader.wait_for_seq(5, DELIVERY_TIMEOUT)
        self.mention(self.b, "during 0")

        self.a.kill()
        for reader in on_a:
            self.assertNotEqual(reader.wait_closed(10), 1000, "a killed server cannot close cleanly")
        resumed = {}
        for index, reader in enumerate(on_a):
            self.mention(self.b, f"during {index + 1}")
            credentials = {"token": self.ann_token} if reader.json else {"session": self.ann_session}
            again = self.notification_reader(self.b, json=reader.json, resume_after=reader.last_seq, **credentials)
            resumed[again] = reader.seqs
        for index in range(3, 10):
            self.mention(self.b, f"during {index}")

        self.assertEveryReaderGetsAll([*resumed, on_b], 15, via=self.b, histories=resumed)
        self.assertFalse(on_b.closed.is_set(), "B's reader was disconnected")

    def test_readers_get_mentions_posted_while_redis_was_down_once_it_is_back_empty(self):
        """Redis down: mentions still post; Redis back empty: connected readers get them all (database backstop), then live."""
        readers = self.readers_everywhere()
        for index in range(3):
            self.mention(self.a, f"before the outage {index}")
        for reader in readers:
            reader.wait_for_seq(3, DELIVERY_TIMEOUT)

        self.redis.stop()
        for index in range(10):
            self.mention((self.a, self.b)[index % 2], f"during the outage {index}")
        self.assertEqual(self.last_notification_seq(), 13)
        self.redis.start()
        back = time.monotonic()

        for reader in readers:
            reader.wait_for_seq(13, timeout=max(0.1, back + 10 - time.monotonic()))
        self.assertEqual([reader for reader in readers if reader.closed.is_set()], [], "readers were disconnected")
        group = "asgi:group:notifications"
        wait_until(lambda: self.redis.command("ZCARD", group) == b":2", 10, f"A and B back in {group}")
        for index in range(3):
            self.mention((self.b, self.a)[index % 2], f"after the outage {index}")
            posted = time.monotonic()
            seq = self.last_notification_seq()
            for reader in readers:
                reader.wait_for_seq(seq, DELIVERY_TIMEOUT)
                self.assertLess(reader.arrivals[-1] - posted, 3.0, f"{reader!r} got seq {seq} late")
        self.assertEveryReaderGetsAll(readers, 16, via=self.a)
        self.assertEqual([reader for reader in readers if reader.closed.is_set()], [], "readers were disconnected")

    def test_marking_read_on_a_reaches_the_users_connections_on_a_and_b_within_2_s(self):
        """POST /api/notifications/read/ on A: every connection of ann on A and B gets notifications.read (unread 0) within 2 s."""
        readers = self.readers_everywhere()
        self.mention(self.a, "one")
        self.mention(self.b, "two")
        for reader in readers:
            reader.wait_for_seq(2, DELIVERY_TIMEOUT)
        # HTML frames carry the badge's count; JSON notification.created envelopes do not.
        self.assertEqual([reader.unread for reader in readers], [[], [1, 2], [], [1, 2]])

        started = time.monotonic()
        status, summary = self.mark_read(self.a, 2)
        self.assertEqual((status, summary["unread"]), (200, 0))
        for reader in readers:
            reader.wait_until(lambda r: r.read_frames, READ_DEADLINE * 5, "the notifications.read frame")
            elapsed = time.monotonic() - started
            self.assertLess(elapsed, READ_DEADLINE, f"{reader!r} got notifications.read after {elapsed:.2f}s")
            self.assertEqual(reader.unread[-1], 0, reader.read_frames)
        json_on_b = readers[2]
        self.assertEqual(json.loads(json_on_b.read_frames[0]), {"type": "notifications.read", "v": 1, "up_to": 2, "unread": 0})
        self.assertEqual([reader.seqs for reader in readers], [[1, 2]] * 4, "a read sends no notification again")


class LiveBadgeMarkupTests(TestCase):
    """What a page gives notifications.js: the stream element, its resume point, and nothing for guests."""

    def setUp(self):
        self.feed = Feed.objects.create(slug="talk", title="Talk", allow_anonymous=True)
        self.ann = User.objects.create_user("ann")

    def test_every_page_of_a_signed_in_user_carries_the_stream_and_its_last_seq(self):
        """The header has #notification-stream (ws-connect /ws/notifications/, data-last-seq), a polite status region and the script."""
        self.client.force_login(self.ann)
        html = self.client.get("/").content.decode()
        self.assertRegex(html, r'<span id="notification-stream" hidden hx-ext="ws" ws-connect="/ws/notifications/" data-last-seq="0"')
        self.assertRegex(html, r'id="notification-status"[^>]*role="status" aria-live="polite"')
        self.assertRegex(html, r'<script src="/static/js/notifications.js" defer></script>')
        comment_create(feed=self.feed, author="Guest", body="hi @ann")
        comment_create(feed=self.feed, author="Guest", body="again @ann")
        html = self.client.get("/feeds/talk/").content.decode()
        self.assertIn('data-last-seq="2"', html)
        self.assertRegex(html, r'id="notification-badge"[^>]*data-unread="2"')

    def test_the_header_costs_one_query_when_nothing_is_unread(self):
        """The newest seq and "anything unread?" come from one query; the count only when something is unread."""
        comment_create(feed=self.feed, author="Guest", body="hi @ann")
        Notification.objects.update(read=True)
        context = unread_notifications(mock.Mock(user=self.ann))
        with CaptureQueriesContext(connection) as queries:
            self.assertEqual((int(str(context["notification_last_seq"])), int(str(context["notification_unread"]))), (1, 0))
        self.assertEqual(len(queries), 1)

    def test_guests_get_no_stream_and_no_script(self):
        """Signed out: no notification socket is opened, no script loaded."""
        html = self.client.get("/").content.decode()
        self.assertNotIn("notification-stream", html)
        self.assertNotIn("js/notifications.js", html)

    def test_the_list_resumes_after_what_it_read_first_and_keeps_a_hidden_mark_read_form(self):
        """The list page's resume point is its summary's seq; with nothing unread the form is there, hidden, for live arrivals."""
        self.client.force_login(self.ann)
        html = self.client.get("/notifications/").content.decode()
        self.assertRegex(html, r'<form method="post" action="/notifications/read/" class="mark-read" hidden>')
        comment_create(feed=self.feed, author="Guest", body="hi @ann")
        html = self.client.get("/notifications/").content.decode()
        self.assertIn('data-last-seq="1"', html)
        self.assertIn('<form method="post" action="/notifications/read/" class="mark-read">', html)
