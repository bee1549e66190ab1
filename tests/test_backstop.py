"""The database backstop: lag detection, fills up to a target, the periodic check."""
import asyncio
from unittest import IsolatedAsyncioTestCase, TestCase

from notifications.backstop import Filler, LagTracker, LiveDelay, check_streams, stretched
from notifications.conf import LiveSettings
from notifications.stream_state import StreamState
from notifications.streams import StreamKey
from tests.stream_fakes import FakeStore, wait_until

KEY = StreamKey("feed", 1)


class LagTrackerTests(TestCase):
    def test_a_seq_is_due_only_once_reported_lag_grace_ago(self):
        """What the database showed at the previous check is due; what it shows now is not yet."""
        lag = LagTracker(lag_grace=0.75)
        self.assertEqual(lag.due(10.0, 5), 0, "just reported: may be in flight")
        self.assertEqual(lag.due(11.0, 7), 5, "reported a check ago: overdue")
        self.assertEqual(lag.due(12.0, 7), 7)

    def test_the_newest_overdue_report_wins(self):
        """Several reports older than the grace: the highest seq among them is due."""
        lag = LagTracker(lag_grace=1.0)
        lag.due(0.0, 3)
        lag.due(0.5, 4)
        self.assertEqual(lag.due(2.0, 9), 4)


def stream_state(store, conf=None):
    """A StreamState whose database reads land through its own order, as the hub wires it."""
    conf = conf or LiveSettings(batch_size=2)
    delivered = []

    def land(state, events, after):
        delivered.extend(e.seq for e in state.order.offer(events, db_after=after))

    state = StreamState(KEY, group="feed.1", conf=conf, load=lambda a, n: store.load_after(KEY, a, n), land=land)
    return state, delivered


class FillerTests(IsolatedAsyncioTestCase):
    async def test_fill_reads_in_batches_up_to_the_target_only(self):
        """A fill to 5 reads 1-2, 3-4, 5 and leaves newer seqs to the live path."""
        store = FakeStore()
        store.commit(KEY, *range(1, 9))
        state, delivered = stream_state(store)
        state.order.open(0)
        state.filler.request(5, 0)
        await wait_until(lambda: state.filler.task is None, what="fill done")
        self.assertEqual(delivered, [1, 2, 3, 4, 5])
        self.assertEqual([(after, limit) for _, after, limit in store.loads], [(0, 2), (2, 2), (4, 1)])

    async def test_a_failed_read_is_logged_and_a_later_request_retries(self):
        """The database being away ends the fill quietly; the next request fills."""
        store = FakeStore()
        store.commit(KEY, 1, 2)
        state, delivered = stream_state(store)
        state.order.open(0)
        store.fail = True
        with self.assertLogs("notifications.backstop", "WARNING"):
            state.filler.request(2, 0)
            await wait_until(lambda: state.filler.task is None, what="fill done")
        store.fail = False
        state.filler.request(2, 0)
        await wait_until(lambda: delivered == [1, 2], what="filled")

    async def test_requests_while_a_fill_runs_raise_its_target(self):
        """One fill task per stream; a higher target extends it."""
        store = FakeStore()
        store.commit(KEY, 1, 2, 3, 4)
        store.gate = asyncio.Event()
        state, delivered = stream_state(store, LiveSettings(batch_size=10))
        state.order.open(0)
        state.filler.request(2, 0)
        task = state.filler.task
        state.filler.request(4, 0)
        self.assertIs(state.filler.task, task)
        store.gate.set()
        await wait_until(lambda: state.filler.task is None, what="fill done")
        self.assertEqual(delivered, [1, 2, 3, 4])

    async def test_closed_stream_is_not_filled(self):
        """Once its last reader left, a stream starts no fill."""
        store = FakeStore()
        store.commit(KEY, 1)
        state, _ = stream_state(store)
        state.order.open(0)
        state.close()
        state.filler.request(1, 0)
        self.assertIsNone(state.filler.task)


class CheckStreamsTests(IsolatedAsyncioTestCase):
    async def test_a_stall_is_filled_at_the_second_check(self):
        """A seq the database showed at one check and still missing at the next is read from the database."""
        store = FakeStore()
        state, delivered = stream_state(store, LiveSettings(lag_grace=0.75))
        state.order.open(0)
        store.commit(KEY, 1, 2)
        await check_streams([state], store, now=100.0)
        self.assertIsNone(state.filler.task, "in flight: left to the live path")
        await check_streams([state], store, now=101.0)
        await wait_until(lambda: delivered == [1, 2], what="stall filled")

    async def test_streams_not_yet_open_are_skipped(self):
        """A stream whose cursor is unknown is not compared."""
        store = FakeStore()
        store.fail = True  # a query would raise
        state, _ = stream_state(store)
        await check_streams([state], store, now=1.0)


class LiveDelayTests(TestCase):
    def test_the_longest_recent_delay_counts_for_one_to_two_windows(self):
        """The current delay is the longest seen in this window and the previous one, then forgotten."""
        delay = LiveDelay(window=1.0)
        self.assertEqual(delay.current(0.0), 0.0, "nothing seen: no delay")
        delay.observe(0.3, 10.0)
        delay.observe(0.1, 10.5)
        self.assertEqual(delay.current(10.6), 0.3)
        self.assertEqual(delay.current(11.2), 0.3, "the previous window still counts")
        delay.observe(0.05, 11.3)
        self.assertEqual(delay.current(12.3), 0.05, "two windows on, 0.3 is forgotten")
        self.assertEqual(delay.current(15.0), 0.0, "a quiet spell forgets everything")

    def test_stretched_grace_follows_the_delay_within_its_bounds(self):
        self.assertEqual(stretched(0.1, 0.0, 2.0), 0.1)
        self.assertAlmostEqual(stretched(0.1, 0.4, 2.0), 0.5)
        self.assertEqual(stretched(0.1, 9.0, 2.0), 2.0, "capped, so a lost event is still filled")
        self.assertEqual(stretched(3.0, 9.0, 2.0), 3.0, "never below the configured grace")


class LateStallTests(IsolatedAsyncioTestCase):
    async def test_a_stall_waits_for_the_stretched_grace_while_live_events_are_late(self):
        """With the live path 1.5 s late, what the database showed a check ago is still in flight;
        it is filled once older than the stretched grace."""
        store = FakeStore()
        state, delivered = stream_state(store, LiveSettings(lag_grace=0.75))
        state.order.open(0)
        store.commit(KEY, 1, 2)
        await check_streams([state], store, now=100.0, lag_grace=2.25)
        await check_streams([state], store, now=101.0, lag_grace=2.25)
        await check_streams([state], store, now=102.0, lag_grace=2.25)
        self.assertEqual(store.loads, [], "merely late: left to the live path")
        await check_streams([state], store, now=103.0, lag_grace=2.25)
        await wait_until(lambda: delivered == [1, 2], what="stall filled")
