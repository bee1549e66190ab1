"""fan_out / send_replay / close_stalled: one reader cannot hurt the others."""
from unittest import TestCase

from notifications.conf import LiveSettings
from notifications.connection import Connection
from notifications.fanout import close_stalled, fan_out, fan_out_signal, send_replay
from notifications.streams import StreamKey
from tests.stream_fakes import FakeConnection, event

KEY = StreamKey("feed", 1)


class FanOutTests(TestCase):
    def readers(self, *fail):
        readers = [FakeConnection(KEY, fail=f) for f in fail]
        live = set(readers)
        for conn in readers:
            conn.on_close(live.discard)
        return readers, live

    def test_every_reader_gets_each_batch_in_one_write(self):
        """Consecutive events reach each reader in one socket write, in order."""
        readers, live = self.readers(False, False)
        fan_out(live, [event(1), event(2), event(3)])
        for conn in readers:
            self.assertEqual((conn.seqs, conn.writes), ([1, 2, 3], 1))

    def test_reader_whose_write_raises_is_closed_and_the_others_still_get_every_event(self):
        """A failing write between two good readers closes that reader with 1013; nobody else misses anything."""
        for events in ([event(1)], [event(1), event(2)]):  # the single-event and the batch path
            with self.subTest(batch=len(events)):
                (first, broken, last), live = self.readers(False, True, False)
                with self.assertLogs("notifications.fanout", "WARNING"):
                    fan_out(live, events)
                fan_out(live, [event(len(events) + 1)])
                expected = list(range(1, len(events) + 2))
                self.assertEqual(first.seqs, expected)
                self.assertEqual(last.seqs, expected)
                self.assertEqual(broken.close_codes, [1013])
                self.assertTrue(broken.closed)
                self.assertEqual(live, {first, last})

    def test_reader_whose_close_raises_too_is_still_detached(self):
        """Even when closing the broken reader raises, it leaves the live readers and the loop goes on."""
        (first, broken, last), live = self.readers(False, True, False)

        def close(code, *, grace=None):
            raise OSError("closing failed")

        broken.close = close
        with self.assertLogs("notifications.fanout", "WARNING"):
            fan_out(live, [event(1)])
        self.assertEqual((first.seqs, last.seqs), ([1], [1]))
        self.assertTrue(broken.closed)
        self.assertNotIn(broken, live)

    def test_replay_write_that_raises_closes_only_that_reader(self):
        """send_replay reports a failed write (the reader is closed with 1013)."""
        good, broken = FakeConnection(KEY), FakeConnection(KEY, fail=True)
        self.assertTrue(send_replay(good, [event(1), event(2)]))
        with self.assertLogs("notifications.fanout", "WARNING"):
            self.assertFalse(send_replay(broken, [event(1), event(2)]))
        self.assertEqual(good.seqs, [1, 2])
        self.assertEqual(broken.close_codes, [1013])


class CloseStalledTests(TestCase):
    def test_only_stalled_readers_are_closed_with_1013(self):
        """Readers backed up too long are closed; the others are left alone."""
        stalled, fine = FakeConnection(KEY), FakeConnection(KEY)
        stalled.stalled = True
        close_stalled([stalled, fine], now=0.0)
        self.assertEqual((stalled.close_codes, fine.close_codes), ([1013], []))


class SignalTests(TestCase):
    def test_signal_is_sent_without_moving_the_reader_in_its_stream(self):
        """An unsequenced frame goes out on the socket; sent_seq stays, so no event is skipped or repeated."""
        from tests.test_consumers import FakeProtocol

        protocol = FakeProtocol()
        conn = Connection(stream=KEY, json_mode=True, send=None, protocol=protocol, conf=LiveSettings())
        conn.write(event(1))
        fan_out_signal({conn}, event(0))
        conn.write(event(1))
        conn.write(event(2))
        self.assertEqual(conn.sent_seq, 2)
        self.assertEqual(len(protocol.transport._tempDataBuffer), 3)

    def test_signal_write_that_raises_closes_only_that_reader(self):
        """fan_out_signal is guarded like fan_out."""
        first, broken, last = (FakeConnection(KEY, fail=f) for f in (False, True, False))
        readers = {first, broken, last}
        with self.assertLogs("notifications.fanout", "WARNING"):
            fan_out_signal(readers, event(0))
        self.assertEqual((len(first.signals), len(last.signals), broken.close_codes), (1, 1, [1013]))
