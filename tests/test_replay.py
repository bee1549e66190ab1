"""Resume and catch-up: replay from memory or the database, shared reads, the hand-over to live."""
import asyncio
from unittest import IsolatedAsyncioTestCase

from notifications.conf import LiveSettings
from notifications.fanout import fan_out
from notifications.replay import SharedReads, catch_up, start_replay
from notifications.stream_state import StreamState
from notifications.streams import StreamKey
from tests.stream_fakes import FakeConnection, FakeStore, event, seqs, wait_until

KEY = StreamKey("feed", 1)


class ReplayTestCase(IsolatedAsyncioTestCase):
    def setUp(self):
        self.store = FakeStore()

    def state(self, cursor, **conf):
        """An open stream at ``cursor`` whose database reads land through its order to its live readers."""

        def land(state, events, after):
            fan_out(state.live, state.order.offer(events, db_after=after))

        state = StreamState(
            KEY,
            group="feed.1",
            conf=LiveSettings(**conf),
            load=lambda after, limit: self.store.load_after(KEY, after, limit),
            land=land,
        )
        state.order.open(cursor)
        return state

    def reader(self, state, *, fail=False):
        conn = FakeConnection(KEY, fail=fail)
        state.members.add(conn)

        def detach(c):
            state.members.discard(c)
            state.live.discard(c)

        conn.on_close(detach)
        return conn


class SharedReadsTests(ReplayTestCase):
    async def test_readers_asking_for_the_same_point_share_one_read(self):
        """Concurrent fetches after the same seq make one database read; each gets its result."""
        self.store.commit(KEY, 1, 2, 3)
        self.store.gate = asyncio.Event()
        landed = []
        reads = SharedReads(
            load=lambda a, n: self.store.load_after(KEY, a, n), land=lambda e, a: landed.append(a), batch_size=10
        )
        fetches = [asyncio.ensure_future(reads.fetch(0)) for _ in range(3)]
        await wait_until(lambda: len(self.store.loads) == 1, what="read started")
        self.store.gate.set()
        results = await asyncio.gather(*fetches)
        self.assertEqual([seqs(r) for r in results], [[1, 2, 3]] * 3)
        self.assertEqual((len(self.store.loads), landed), (1, [0]))
        self.assertEqual(reads.pending, {})


class CatchUpTests(ReplayTestCase):
    async def test_replay_from_the_database_in_batches_then_live(self):
        """A reader far behind is replayed in database batches, then joins the live readers."""
        self.store.commit(KEY, *range(1, 8))
        state = self.state(7, batch_size=3)
        conn = self.reader(state)
        start_replay(state, conn, 0)
        await wait_until(lambda: conn in state.live, what="live")
        self.assertEqual(conn.seqs, list(range(1, 8)))
        self.assertEqual([after for _, after, _ in self.store.loads], [0, 3, 6])

    async def test_replay_from_recent_memory_needs_no_read(self):
        """When memory reaches back to the resume point, the replay is one write and no read."""
        state = self.state(0)
        state.order.offer([event(seq) for seq in range(1, 6)])
        conn = self.reader(state)
        start_replay(state, conn, 2)
        await wait_until(lambda: conn in state.live, what="live")
        self.assertEqual((conn.seqs, conn.writes, self.store.loads), ([3, 4, 5], 1, []))

    async def test_resume_ahead_of_the_cursor_goes_live_and_waits(self):
        """A point beyond the cursor sends nothing; the reader is live and gets only newer events."""
        state = self.state(2)
        conn = self.reader(state)
        start_replay(state, conn, 4)
        await wait_until(lambda: conn in state.live, what="live")
        fan_out(state.live, state.order.offer([event(3)]))
        fan_out(state.live, state.order.offer([event(4)]))
        fan_out(state.live, state.order.offer([event(5)]))
        self.assertEqual(conn.seqs, [5])

    async def test_deleted_events_are_skipped(self):
        """If the database has nothing after the point (events deleted), the reader skips to the cursor."""
        state = self.state(4)
        conn = self.reader(state)
        start_replay(state, conn, 1)
        await wait_until(lambda: conn in state.live, what="live")
        self.assertEqual(conn.seqs, [])
        self.assertEqual(conn.sent_seq, 4)

    async def test_a_new_resume_restarts_the_replay_at_its_point(self):
        """A second resume cancels the first replay and replays from its own point."""
        self.store.commit(KEY, 1, 2, 3)
        state = self.state(3)
        conn = self.reader(state)
        self.store.gate = asyncio.Event()
        start_replay(state, conn, 2)
        first = conn.catch_up
        start_replay(state, conn, 0)
        self.store.gate.set()
        await wait_until(lambda: conn in state.live, what="live")
        self.assertTrue(first.cancelled())
        self.assertEqual(conn.seqs, [1, 2, 3])

    async def test_replay_write_that_raises_closes_only_that_reader(self):
        """Three readers replay from one shared read; the middle one's write raises: it is closed with
        1013, the other two get the whole replay, go live, and keep receiving."""
        self.store.commit(KEY, 1, 2, 3)
        self.store.gate = asyncio.Event()
        state = self.state(3)
        first, broken, last = (self.reader(state, fail=f) for f in (False, True, False))
        for conn in (first, broken, last):
            start_replay(state, conn, 0)
        await wait_until(lambda: len(self.store.loads) == 1, what="shared read started")
        with self.assertLogs("notifications.fanout", "WARNING"):
            self.store.gate.set()
            await wait_until(lambda: first in state.live and last in state.live, what="live")
        self.assertEqual(len(self.store.loads), 1)
        self.assertEqual(broken.close_codes, [1013])
        self.assertNotIn(broken, state.members)
        fan_out(state.live, state.order.offer([event(4)]))
        self.assertEqual(first.seqs, [1, 2, 3, 4])
        self.assertEqual(last.seqs, [1, 2, 3, 4])

    async def test_live_reader_failing_while_a_read_lands_does_not_hurt_the_replays(self):
        """A database read lands on the live readers first; a live reader whose write raises there
        is closed, and the readers waiting on that read still get it."""
        self.store.commit(KEY, 1, 2, 3, 4)  # 3 and 4 never came live
        self.store.gate = asyncio.Event()
        state = self.state(2)
        broken_live, good_live = self.reader(state, fail=True), self.reader(state)
        for conn in (broken_live, good_live):
            conn.sent_seq = 2
            state.live.add(conn)
        replaying = self.reader(state)
        start_replay(state, replaying, 0)
        await wait_until(lambda: len(self.store.loads) == 1, what="read started")
        with self.assertLogs("notifications.fanout", "WARNING"):
            self.store.gate.set()
            await wait_until(lambda: replaying in state.live, what="live")
        self.assertEqual(len(self.store.loads), 1)
        self.assertEqual(good_live.seqs, [3, 4])
        self.assertEqual(replaying.seqs, [1, 2, 3, 4])
        self.assertEqual(broken_live.close_codes, [1013])

    async def test_reader_closed_during_a_read_stops_its_replay(self):
        """A reader that goes away while its replay waits on the database gets nothing more."""
        self.store.commit(KEY, 1)
        self.store.gate = asyncio.Event()
        state = self.state(1)
        conn = self.reader(state)
        conn.catch_up = asyncio.ensure_future(catch_up(state, conn))
        await wait_until(lambda: self.store.loads, what="read started")
        conn.closed = True
        self.store.gate.set()
        await wait_until(lambda: conn.catch_up is None, what="replay ended")
        self.assertEqual(conn.seqs, [])
        self.assertNotIn(conn, state.live)
