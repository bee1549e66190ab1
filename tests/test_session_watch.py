"""A members-only stream ends (4401) soon after its reader may no longer read it, on every instance.

Signing out, deactivation and removal from the members close the reader's sockets within 2 s
on two real daphne instances sharing a real Redis; a resume is re-checked before it replays;
the check costs the same two queries however many sockets a process has.
"""
import json
import secrets
import threading
import time

from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user, get_user_model, logout
from django.contrib.sessions.backends.db import SessionStore
from django.http import Http404
from django.test import Client, RequestFactory, TestCase, TransactionTestCase, override_settings
from websockets.sync.client import connect

from feed.models import Feed
from feed.selectors import feed_readers_allowed
from feed.services import comment_create, feed_check_can_read
from livefeed.asgi import application
from notifications.session_watch import CLOSE_SESSION_ENDED, AccessWatcher, WatchedSocket, _sweep_lost
from feed.auth import api_token_issue
from tests.harness import FeedReader, MultiInstanceTestCase, post_comment, receive_skipping_presence

ORIGIN = (b"origin", b"http://localhost")


def signed_in_session(user):
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


class ReadersAllowedTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        User = get_user_model()
        cls.feeds = [Feed.objects.create(slug=f"club{n}", title=f"Club {n}", allow_anonymous=False) for n in range(4)]
        cls.users = [User.objects.create_user(f"user{n}") for n in range(5)]
        cls.users[4].is_staff = True
        cls.users[4].save()
        for n, feed in enumerate(cls.feeds):
            feed.members.add(*cls.users[: n + 1])
        cls.users[0].is_active = False
        cls.users[0].save()

    def test_the_sweep_rule_is_the_read_rule(self):
        """For every (feed, user), the one-query sweep agrees with feed_check_can_read."""
        pairs = {(feed.pk, user.pk) for feed in self.feeds for user in self.users}
        with self.assertNumQueries(1):
            allowed = feed_readers_allowed(pairs=pairs)
        for feed in self.feeds:
            for user in self.users:
                try:
                    feed_check_can_read(feed=feed, user=get_user_model().objects.get(pk=user.pk))
                    expected = True
                except Http404:
                    expected = False
                self.assertEqual((feed.pk, user.pk) in allowed, expected, f"{feed.slug} {user.username}")
        self.assertNotIn((self.feeds[3].pk, self.users[0].pk), allowed)  # a deactivated member

    def test_a_sweep_costs_two_queries_whatever_the_number_of_sockets(self):
        """Sessions in one query, users and memberships in another, for 200 sockets of many sessions."""
        sessions = [signed_in_session(user) for user in self.users[1:]]
        watcher = AccessWatcher()
        watched = [
            WatchedSocket(
                session_key=sessions[n % len(sessions)], user_pk=self.users[1 + n % 4].pk,
                feed_id=self.feeds[n % 4].pk, on_ended=lambda: None, watcher=watcher,
            )
            for n in range(200)
        ]
        SessionStore(sessions[0]).delete()
        with self.assertNumQueries(2):
            lost = _sweep_lost(watched)
        for socket in watched:
            should_go = socket.session_key == sessions[0] or (socket.feed_id, socket.user_pk) not in feed_readers_allowed(
                pairs={(socket.feed_id, socket.user_pk)}
            )
            self.assertEqual(socket in lost, should_go)
        self.assertTrue(lost)


# Sweeps far apart: only the resume's own check can close the stream in these tests.
@override_settings(WS_ACCESS_CHECK_INTERVAL=60, WS_SESSION_CHECK_INTERVAL=60)
class ResumeRecheckTests(TransactionTestCase):
    def setUp(self):
        self.club = Feed.objects.create(slug="club", title="Club", allow_anonymous=False)
        self.member = get_user_model().objects.create_user("member", password="x")
        self.club.members.add(self.member)
        comment_create(feed=self.club, author="", body="before", user=self.member)
        self.session_key = signed_in_session(self.member)

    async def open_stream(self):
        cookie = (b"cookie", f"sessionid={self.session_key}".encode())
        communicator = WebsocketCommunicator(application, "/ws/feeds/club/?format=json", headers=[ORIGIN, cookie])
        connected, _ = await communicator.connect(timeout=10)
        self.assertTrue(connected)
        return communicator

    async def assert_resume_refused(self, communicator):
        await communicator.send_json_to({"type": "resume", "after": 0})
        output = await receive_skipping_presence(communicator, timeout=10)
        self.assertEqual(output, {"type": "websocket.close", "code": CLOSE_SESSION_ENDED})

    async def test_a_resume_while_signed_in_replays(self):
        """The re-check passes for a member: the missed comment is replayed."""
        communicator = await self.open_stream()
        try:
            await communicator.send_json_to({"type": "resume", "after": 0})
            frame = json.loads((await receive_skipping_presence(communicator, timeout=10))["text"])
            self.assertEqual((frame["type"], frame["seq"]), ("comment.created", 1))
        finally:
            await communicator.disconnect()

    async def test_a_resume_after_signing_out_is_refused_without_replaying(self):
        """Session deleted (sign-out): the resume closes the socket with 4401 and sends no comment."""
        communicator = await self.open_stream()
        try:
            await database_sync_to_async(SessionStore(self.session_key).delete)()
            await self.assert_resume_refused(communicator)
        finally:
            await communicator.disconnect()

    async def test_a_resume_after_removal_from_the_members_is_refused(self):
        """No longer a member: the resume closes the socket with 4401 and sends no comment."""
        communicator = await self.open_stream()
        try:
            await database_sync_to_async(self.club.members.remove)(self.member)
            await self.assert_resume_refused(communicator)
        finally:
            await communicator.disconnect()

    async def test_a_resume_after_a_password_change_is_refused(self):
        """The password changed elsewhere (the session's hash no longer matches): 4401."""
        communicator = await self.open_stream()
        try:

            def change_password():
                user = get_user_model().objects.get(pk=self.member.pk)
                user.set_password(secrets.token_urlsafe(12))
                user.save()

            await database_sync_to_async(change_password)()
            await self.assert_resume_refused(communicator)
        finally:
            await communicator.disconnect()


class SignedInReader(FeedReader):
    """A FeedReader that sends a session cookie on the handshake."""

    def __init__(self, instance, slug, *, session_key):
        super().__init__(instance, slug, json=True)
        self.session_key = session_key

    def connect(self, resume_after=None, timeout=20):
        self._connection = connect(
            self.url, origin=self.instance.origin, open_timeout=timeout, proxy=None, compression=None,
            max_size=None, ping_interval=None, close_timeout=5,
            additional_headers={"Cookie": f"sessionid={self.session_key}"},
        )
        if resume_after is not None:
            self.send({"type": "resume", "after": resume_after})
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()
        return self



class SignOutAcrossInstancesTests(MultiInstanceTestCase):
    """Two daphne instances, one Redis: the member's sockets on both end within 2 s."""

    @classmethod
    def setUpClass(cls):
        # The instances must accept sessions this process signs in (the session hash uses SECRET_KEY).
        cls.instance_env = {"SECRET_KEY": settings.SECRET_KEY}
        super().setUpClass()

    def setUp(self):
        super().setUp()
        self.club = Feed.objects.create(slug="club", title="Club", allow_anonymous=False)
        self.member = get_user_model().objects.create_user("member", password="member-pass-123")
        self.club.members.add(self.member)
        self.session_key = signed_in_session(self.member)
        _, self.token = api_token_issue(user=self.member)

    def post(self, instance, body):
        """Post as the member through an instance's API (the test process has no Redis of its own)."""
        status, data = post_comment(
            instance, "club", author="", body=body, headers={"Authorization": f"Bearer {self.token}"}
        )
        self.assertEqual(status, 201, data)
        return data

    def open_readers(self, resume_after=0):
        readers = []
        for instance in self.instances:
            reader = SignedInReader(instance, "club", session_key=self.session_key)
            self._readers.append(reader)
            readers.append(reader.connect(resume_after=resume_after))
        return readers

    def assert_both_closed_within_2s(self, readers, changed_at):
        for reader in readers:
            code = reader.wait_closed(timeout=10)
            self.assertEqual(code, CLOSE_SESSION_ENDED, self.diagnostics())
            self.assertLess(time.monotonic() - changed_at, 2.0, f"{reader!r} closed too late")

    def wait_live(self, readers):
        """Both sockets are attached and past their first check: a comment reaches both."""
        seq = self.post(self.instances[1], "live")["seq"]
        for reader in readers:
            reader.wait_for_seq(seq, timeout=20)

    def sign_out(self):
        """Sign the member out as the site's logout view does: django.contrib.auth.logout on their request.

        (The admin's /admin/logout/ only serves staff; /accounts/logout/ is not wired on this branch.)
        """
        request = RequestFactory().post("/accounts/logout/")
        request.session = SessionStore(self.session_key)
        request.user = get_user(request)
        self.assertEqual(request.user.pk, self.member.pk)
        logout(request)

    def test_signing_out_closes_the_streams_on_both_instances(self):
        """A sign-out: the sockets on A and B close with 4401 within 2 s."""
        readers = self.open_readers()
        self.wait_live(readers)
        changed_at = time.monotonic()
        self.sign_out()
        self.assertFalse(SessionStore().exists(self.session_key))
        self.assert_both_closed_within_2s(readers, changed_at)

    def test_signing_out_closes_the_streams_while_redis_is_down(self):
        """The watch asks the database only: with Redis stopped, a sign-out still closes both within 2 s."""
        readers = self.open_readers()
        self.wait_live(readers)
        self.redis.stop()  # setUp starts it again for the next test
        changed_at = time.monotonic()
        self.sign_out()
        self.assert_both_closed_within_2s(readers, changed_at)

    def test_deactivating_the_user_closes_the_streams_on_both(self):
        """is_active turned off: both sockets close with 4401 within 2 s."""
        readers = self.open_readers()
        self.wait_live(readers)
        changed_at = time.monotonic()
        get_user_model().objects.filter(pk=self.member.pk).update(is_active=False)
        self.assert_both_closed_within_2s(readers, changed_at)

    def test_removal_from_the_members_closes_the_streams_on_both(self):
        """Removed from the feed's members: both sockets close with 4401 within 2 s."""
        readers = self.open_readers()
        self.wait_live(readers)
        changed_at = time.monotonic()
        self.club.members.remove(self.member)
        self.assert_both_closed_within_2s(readers, changed_at)

    def test_a_resume_after_signing_out_replays_nothing(self):
        """Signed out, then a resume from 0 on both instances: no comment is replayed, the socket closes 4401."""
        self.post(self.instances[0], "earlier")
        readers = self.open_readers(resume_after=None)
        # Both handshakes done and attached (an open feed would be live now); then sign out and resume at once.
        self.sign_out()
        for reader in readers:
            reader.send({"type": "resume", "after": 0})
        for reader in readers:
            self.assertEqual(reader.wait_closed(timeout=10), CLOSE_SESSION_ENDED)
            self.assertEqual(reader.seqs, [])

    def test_an_open_feed_reader_is_not_affected(self):
        """Signing out leaves a signed-in reader of an open feed connected."""
        self.make_feed("open")
        reader = SignedInReader(self.instances[0], "open", session_key=self.session_key)
        self._readers.append(reader)
        reader.connect(resume_after=0)
        self.sign_out()
        status, _ = post_comment(self.instances[1], "open", author="ann", body="still here")
        self.assertEqual(status, 201)
        reader.wait_for_seq(1, timeout=20)
        self.assertFalse(reader.closed.is_set())

