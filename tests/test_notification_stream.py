"""A person's notification socket through the real ASGI application, on the shared machinery.

The notification model is another module's; these tests stand in for its two selectors and
its event renderer (UserKind.interface) with an in-memory list, so what they prove is the
socket and the delivery: authentication, resume, live order, and notifications.read.
"""
import json
from collections import defaultdict
from types import SimpleNamespace
from unittest import mock

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client, TransactionTestCase, override_settings

from feed.auth import api_token_issue
from livefeed.asgi import application
from notifications.events import notifications_read_event, user_group_name
from notifications.hub import all_hubs
from notifications.streams import UserKind, user_stream
from tests.test_consumers import FAST, ORIGIN, wait_until


class FakeNotifications:
    """Notifications with a gap-free seq per user, as the model promises."""

    def __init__(self):
        self.rows = defaultdict(list)

    def add(self, user_id):
        row = SimpleNamespace(user_id=user_id, seq=len(self.rows[user_id]) + 1)
        self.rows[user_id].append(row)
        return self.render(row)

    def notifications_after(self, *, user_id, after_seq, limit):
        return [row for row in self.rows[user_id] if row.seq > after_seq][:limit]

    def notification_last_seqs(self, *, user_ids):
        return {user_id: len(self.rows[user_id]) for user_id in user_ids}

    @staticmethod
    def render(row):
        envelope = {"type": "notification.created", "v": 1, "seq": row.seq, "data": {"seq": row.seq}}
        return {
            "type": "notification.created",
            "v": 1,
            "user_id": row.user_id,
            "seq": row.seq,
            "json": json.dumps(envelope),
            "html": f'<li data-seq="{row.seq}">notification</li>',
        }

    def render_all(self, rows):
        return [self.render(row) for row in rows]

    def interface(self):
        return self.notifications_after, self.notification_last_seqs, self.render_all


class Socket:
    def __init__(self, *, headers=(), query=""):
        path = "/ws/notifications/" + (f"?{query}" if query else "")
        self.communicator = WebsocketCommunicator(application, path, headers=[ORIGIN, *headers])
        self.frames = []

    async def connect(self, resume_after=None):
        connected, _ = await self.communicator.connect(timeout=10)
        if connected and resume_after is not None:
            await self.communicator.send_to(text_data=json.dumps({"type": "resume", "after": resume_after}))
        return connected

    async def receive(self, count):
        for _ in range(count):
            output = await self.communicator.receive_output(timeout=10)
            assert output["type"] == "websocket.send", output
            self.frames.append(output["text"])
        return self.frames

    def seqs(self):
        return [json.loads(frame).get("seq") for frame in self.frames]


@override_settings(LIVE_UPDATES=FAST)
class NotificationSocketTests(TransactionTestCase):
    def setUp(self):
        self.fake = FakeNotifications()
        patcher = mock.patch.object(UserKind, "interface", self.fake.interface)
        patcher.start()
        self.addCleanup(patcher.stop)
        users = get_user_model().objects
        self.ann = users.create_user("ann")
        self.bob = users.create_user("bob")
        _, self.ann_token = api_token_issue(user=self.ann, name="tests")
        client = Client()
        client.force_login(self.ann)
        self.ann_cookie = (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())
        self.sockets = []

    def socket(self, **kwargs):
        socket = Socket(**kwargs)
        self.sockets.append(socket)
        return socket

    async def asyncTearDown(self):
        for socket in self.sockets:
            await socket.communicator.disconnect()

    def bearer(self, secret):
        return (b"authorization", f"Bearer {secret}".encode())

    async def publish(self, message):
        await get_channel_layer().group_send(user_group_name(message["user_id"]), message)

    async def test_anonymous_and_bad_token_handshakes_are_refused(self):
        """Nobody signed in, a wrong token or a non-Bearer header: the handshake is refused."""
        for headers in ([], [self.bearer("wrong")], [(b"authorization", b"Basic abc")]):
            with self.subTest(headers=headers):
                self.assertFalse(await self.socket(headers=headers, query="format=json").connect())

    async def test_refused_while_the_notification_model_is_missing(self):
        """Without the selectors the socket refuses handshakes rather than failing later."""
        with mock.patch.object(UserKind, "interface", side_effect=ImportError("no model yet")):
            self.assertFalse(await self.socket(headers=[self.ann_cookie]).connect())

    async def test_resume_replays_then_live_notifications_follow_in_order(self):
        """A Bearer client resuming after 1 gets 2, 3 from the database, then 4 live; nobody else's."""
        for _ in range(3):
            self.fake.add(self.ann.pk)
        socket = self.socket(headers=[self.bearer(self.ann_token)], query="format=json")
        self.assertTrue(await socket.connect(resume_after=1))
        await socket.receive(2)
        await wait_until(lambda: any(hub.is_open(user_stream(self.ann.pk)) for hub in all_hubs()))
        await self.publish(self.fake.add(self.bob.pk))
        await self.publish(self.fake.add(self.ann.pk))
        await socket.receive(1)
        self.assertEqual(socket.seqs(), [2, 3, 4])
        self.assertEqual(json.loads(socket.frames[0])["type"], "notification.created")
        self.assertTrue(await socket.communicator.receive_nothing(0.3))

    async def test_lost_live_notification_is_filled_from_the_database(self):
        """A notification whose event never arrives still reaches the reader, in order."""
        socket = self.socket(headers=[self.ann_cookie])
        self.assertTrue(await socket.connect(resume_after=0))
        await wait_until(lambda: any(hub.is_open(user_stream(self.ann.pk)) for hub in all_hubs()))
        self.fake.add(self.ann.pk)  # saved, never published
        await self.publish(self.fake.add(self.ann.pk))
        await socket.receive(2)
        self.assertEqual(socket.frames, ['<li data-seq="1">notification</li>', '<li data-seq="2">notification</li>'])

    async def test_read_reaches_every_open_connection_of_the_user_only(self):
        """notifications.read goes to each of the user's sockets (session and token), not to others'."""
        session_socket = self.socket(headers=[self.ann_cookie], query="format=json")
        token_socket = self.socket(headers=[self.bearer(self.ann_token)])
        bob_client = Client()
        await database_sync_to_async(bob_client.force_login)(self.bob)
        bob_socket = self.socket(headers=[(b"cookie", f"sessionid={bob_client.cookies['sessionid'].value}".encode())])
        for socket in (session_socket, token_socket, bob_socket):
            self.assertTrue(await socket.connect(resume_after=0))
        await wait_until(lambda: any(hub.is_open(user_stream(self.bob.pk)) for hub in all_hubs()))
        await self.publish(await database_sync_to_async(notifications_read_event)(user=self.ann, up_to=3))
        await session_socket.receive(1)
        await token_socket.receive(1)
        self.assertEqual(
            json.loads(session_socket.frames[0]), {"type": "notifications.read", "v": 1, "up_to": 3, "unread": 0}
        )
        self.assertIn('id="notification-badge"', token_socket.frames[0])
        self.assertTrue(await bob_socket.communicator.receive_nothing(0.3))
        await self.publish(self.fake.add(self.ann.pk))  # the seq order is untouched by the signal
        await session_socket.receive(1)
        self.assertEqual(session_socket.seqs(), [None, 1])

    @override_settings(WS_SESSION_CHECK_INTERVAL=0.2)
    async def test_revoked_token_or_signed_out_session_closes_the_socket_with_4401(self):
        """The socket ends when the credential that opened it does: a deleted token, a deleted session."""
        from django.contrib.sessions.backends.db import SessionStore

        from feed.models import ApiToken

        token_socket = self.socket(headers=[self.bearer(self.ann_token)], query="format=json")
        session_socket = self.socket(headers=[self.ann_cookie], query="format=json")
        for socket in (token_socket, session_socket):
            self.assertTrue(await socket.connect(resume_after=0))
        self.assertTrue(await token_socket.communicator.receive_nothing(0.5), "checks pass while valid")
        await database_sync_to_async(ApiToken.objects.filter(user=self.ann).delete)()
        self.assertEqual(await token_socket.communicator.receive_output(10), {"type": "websocket.close", "code": 4401})
        session_key = self.ann_cookie[1].decode().partition("=")[2]
        await database_sync_to_async(SessionStore(session_key).delete)()
        self.assertEqual(await session_socket.communicator.receive_output(10), {"type": "websocket.close", "code": 4401})
