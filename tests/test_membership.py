"""Membership: the hub's one channel, group join/leave/rejoin and the receive loop, on a fake layer."""
import asyncio
from unittest import IsolatedAsyncioTestCase

from notifications.conf import LiveSettings
from notifications.membership import Membership
from tests.stream_fakes import FakeLayer


class MembershipTests(IsolatedAsyncioTestCase):
    def setUp(self):
        self.layer = FakeLayer()
        self.membership = Membership(self.layer, LiveSettings(layer_timeout=1.0, membership_refresh=30.0))

    async def test_join_and_leave_a_group_with_one_channel(self):
        """Joining adds the hub's one channel; leaving removes it."""
        await self.membership.join("feed.1", wanted=lambda: True)
        await self.membership.join("user.7", wanted=lambda: True)
        self.assertEqual(self.layer.groups["feed.1"], {"hub!1"})
        self.assertEqual(self.layer.groups["user.7"], {"hub!1"})
        await self.membership.leave("feed.1", unwanted=lambda: True)
        self.assertEqual(self.layer.groups["feed.1"], set())

    async def test_join_and_leave_respect_a_change_of_mind(self):
        """A join no longer wanted, or a leave after a reader came back, does nothing."""
        await self.membership.join("feed.1", wanted=lambda: False)
        self.assertEqual(self.layer.adds, [])
        await self.membership.join("feed.1", wanted=lambda: True)
        await self.membership.leave("feed.1", unwanted=lambda: False)
        self.assertEqual(self.layer.discards, [])

    async def test_failed_join_marks_the_layer_failed_and_rejoin_recovers(self):
        """A layer outage is logged once; the next rejoin re-adds every group and clears it."""
        self.layer.fail = True
        with self.assertLogs("notifications.membership", "WARNING"):
            await self.membership.join("feed.1", wanted=lambda: True)
        self.assertFalse(self.membership.ok)
        self.assertTrue(self.membership.rejoin_due(0.0))
        self.layer.fail = False
        with self.assertLogs("notifications.membership", "INFO"):
            await self.membership.rejoin(lambda: ["feed.1", "user.7"])
        self.assertTrue(self.membership.ok)
        self.assertFalse(self.membership.need_rejoin)
        self.assertEqual(self.layer.groups["user.7"], {"hub!1"})

    async def test_rejoin_is_due_every_membership_refresh(self):
        """Memberships are refreshed periodically, since the layer expires them."""
        await self.membership.rejoin(list)
        now = self.membership.last_rejoin
        self.assertFalse(self.membership.rejoin_due(now + 29))
        self.assertTrue(self.membership.rejoin_due(now + 31))

    async def test_messages_yields_what_arrives_and_rides_out_failed_reads(self):
        """The receive loop survives failed reads and asks for a rejoin."""
        received = []

        async def consume():
            async for message in self.membership.messages():
                received.append(message)

        task = asyncio.ensure_future(consume())
        try:
            await self.membership.join("feed.1", wanted=lambda: True)
            await self.layer.group_send("feed.1", {"type": "x", "n": 1})
            await asyncio.wait_for(self._until(lambda: len(received) == 1), 5)
            with self.assertLogs("notifications.membership", "WARNING"):
                self.layer.fail = True
                self.layer.queue.put_nowait({"type": "x", "n": "lost in a failed read"})
                await asyncio.wait_for(self._until(lambda: not self.membership.ok), 5)
                self.layer.fail = False
            self.assertTrue(self.membership.need_rejoin)
            await self.layer.group_send("feed.1", {"type": "x", "n": 2})
            await asyncio.wait_for(self._until(lambda: len(received) == 2), 5)
            self.assertEqual([m["n"] for m in received], [1, 2])
        finally:
            task.cancel()

    async def test_without_a_layer_everything_is_a_no_op(self):
        """The in-process case without a configured layer: nothing to join."""
        membership = Membership(None, LiveSettings())
        await membership.join("feed.1", wanted=lambda: True)
        await membership.leave("feed.1", unwanted=lambda: True)
        await membership.rejoin(lambda: ["feed.1"])
        self.assertFalse(membership.rejoin_due(1e9))

    @staticmethod
    async def _until(predicate):
        while not predicate():
            await asyncio.sleep(0.001)
