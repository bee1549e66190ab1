"""StreamOrder: one stream's cursor, held and recent events (pure, no server, no database)."""
from unittest import TestCase

from notifications.stream_order import StreamOrder
from tests.stream_fakes import event, seqs


def opened(cursor=0, **kwargs):
    order = StreamOrder(**kwargs)
    order.open(cursor)
    return order


class StreamOrderTests(TestCase):
    def test_next_seq_is_delivered_and_advances_the_cursor(self):
        """The event with cursor + 1 is delivered at once."""
        order = opened(4)
        self.assertEqual(seqs(order.offer([event(5)])), [5])
        self.assertEqual(order.cursor, 5)

    def test_duplicates_and_old_events_are_dropped(self):
        """An event at or below the cursor is never delivered again."""
        order = opened(0)
        order.offer([event(1), event(2)])
        self.assertEqual(order.offer([event(2), event(1), event(2)]), [])
        self.assertEqual(order.cursor, 2)

    def test_out_of_order_events_are_held_then_delivered_in_order(self):
        """3 then 2 then 1 come out as nothing, nothing, then 1, 2, 3."""
        order = opened(0)
        self.assertEqual(order.offer([event(3)]), [])
        self.assertEqual(order.offer([event(2)]), [])
        self.assertEqual(order.missing_until(), 2)
        self.assertEqual(seqs(order.offer([event(1)])), [1, 2, 3])
        self.assertIsNone(order.missing_until())
        self.assertEqual(order.held, {})

    def test_missing_until_names_the_gap_before_the_newest_held_event(self):
        """With 5 and 8 held after cursor 2, seqs up to 7 are to be read from the database."""
        order = opened(2)
        order.offer([event(8), event(5)])
        self.assertEqual(order.missing_until(), 7)

    def test_held_events_are_bounded(self):
        """Beyond max_held, events from the future are dropped (the database provides them later)."""
        order = opened(0, max_held=3)
        order.offer([event(seq) for seq in range(2, 10)])
        self.assertEqual(sorted(order.held), [2, 3, 4])

    def test_events_before_open_are_held_and_delivered_from_the_cursor(self):
        """An event published between joining the group and reading the cursor is never missed or repeated."""
        order = StreamOrder()
        self.assertEqual(order.offer([event(3), event(4)]), [])
        self.assertEqual(seqs(order.open(2)), [3, 4])
        order = StreamOrder()
        order.offer([event(3)])
        self.assertEqual(order.open(3), [])
        self.assertEqual(order.held, {}, "stale held events are forgotten")

    def test_database_read_skips_seqs_that_do_not_exist(self):
        """A database read after the cursor that starts later means the seqs between are gone."""
        order = opened(2)
        with self.assertLogs("notifications.stream_order", "WARNING"):
            self.assertEqual(seqs(order.offer([event(5), event(6)], db_after=2)), [5, 6])
        self.assertEqual(order.cursor, 6)

    def test_database_read_from_behind_the_cursor_skips_nothing(self):
        """A read for an older point (a replay) cannot make the cursor jump."""
        order = opened(2)
        self.assertEqual(order.offer([event(5)], db_after=1), [])
        self.assertEqual(order.cursor, 2)
        self.assertEqual(sorted(order.held), [5])

    def test_recent_after_serves_from_memory_only_when_it_reaches_back(self):
        """recent_after answers from memory when it holds every seq after the point, else None."""
        order = opened(0, recent_events=3)
        order.offer([event(seq) for seq in range(1, 6)])
        self.assertEqual(seqs(order.recent_after(3)), [4, 5])
        self.assertEqual(seqs(order.recent_after(2)), [3, 4, 5])
        self.assertIsNone(order.recent_after(1))
        self.assertEqual(order.recent_after(5), [])
        self.assertIsNone(StreamOrder().recent_after(0))
