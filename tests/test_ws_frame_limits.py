"""Oversized client frames on a real daphne: closed with 4413, nothing buffered, nobody else hurt.

The consumer refuses client frames over MAX_CLIENT_FRAME_BYTES with 4413. Frames far larger
are refused by autobahn itself (daphne's --websocket-max-message-size, with the 4413 hook of
notifications.server_adapter) as soon as their header arrives,
with the same close code, instead of being buffered up to daphne's 1 MiB default or dropped
without a close frame (1006) above it.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from notifications.server_adapter.daphne import MAX_CLIENT_PAYLOAD_BYTES
from tests.harness import DAPHNE_LIMITS
from notifications.frames import CLOSE_BAD_FRAME, CLOSE_FRAME_TOO_LARGE, MAX_CLIENT_FRAME_BYTES
from tests.harness import MultiInstanceTestCase

CLOSE_TIMEOUT = 20  # generous for a loaded 2-core machine
MIB = 2**20
CONCURRENT_SENDERS = 8
PEAK_GROWTH_LIMIT = 4 * MIB  # the senders below send 8 MB at once


def peak_rss(pid: int) -> int | None:
    """Return the process's peak resident set size in bytes (Linux VmHWM), None if unknown."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


class WebSocketFrameLimitTests(MultiInstanceTestCase):
    """One daphne instance; every oversized frame gets 4413 while a bystander keeps reading."""

    instance_count = 1

    def setUp(self):
        super().setUp()
        self.instance = self.instances[0]
        self.slug = f"limits-{self._testMethodName[5:40].replace('_', '-')}"
        self.make_feed(self.slug)
        self.bystander = self.reader(self.instance, self.slug, json=True)
        self.post(self.instance, self.slug, "before the big frames")
        self.bystander.wait_for_seq(1, CLOSE_TIMEOUT)
        self.log_start = self.instance.log_offset()

    def open(self) -> ClientConnection:
        return connect(
            self.instance.ws_url(self.slug, json=True), origin=self.instance.origin, proxy=None,
            open_timeout=CLOSE_TIMEOUT, compression=None, max_size=None, ping_interval=None, close_timeout=10,
        )

    def close_code_after(self, send: Callable[[ClientConnection], None]) -> int:
        """Open a socket, run `send` on it and return the close code the server answers with."""
        with self.open() as ws:
            try:
                send(ws)
            except (ConnectionClosed, OSError):
                pass  # the server closed while the client was still sending: the code is read below
            deadline = time.monotonic() + CLOSE_TIMEOUT
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.fail(f"the server did not close the socket within {CLOSE_TIMEOUT}s\n{self.diagnostics()}")
                try:
                    ws.recv(timeout=remaining)
                except TimeoutError:
                    continue
                except ConnectionClosed as closed:
                    return closed.rcvd.code if closed.rcvd is not None else 1006

    def assertBystanderStillServed(self):
        self.assertFalse(self.bystander.closed.is_set(), f"the bystander was closed with {self.bystander.close_code}")
        seq = self.post(self.instance, self.slug, "after the big frames")["seq"]
        self.bystander.wait_for_seq(seq, CLOSE_TIMEOUT)
        self.assertExactlyOnceInOrder(self.bystander, list(range(1, seq + 1)))
        self.assertTrue(self.instance.running)
        self.assertNotIn("Traceback", self.instance.log_since(self.log_start))

    def test_the_socket_limit_sits_just_above_the_consumers(self):
        """One number: autobahn's limit is derived from the consumer's, a little above it."""
        self.assertGreater(MAX_CLIENT_PAYLOAD_BYTES, MAX_CLIENT_FRAME_BYTES)
        self.assertLessEqual(MAX_CLIENT_PAYLOAD_BYTES, 2 * MAX_CLIENT_FRAME_BYTES)
        self.assertEqual(
            DAPHNE_LIMITS,
            ["--websocket-max-message-size", str(MAX_CLIENT_PAYLOAD_BYTES), "--websocket-max-frame-size", str(MAX_CLIENT_PAYLOAD_BYTES)],
        )

    def test_daphne_reports_no_missing_limit_option(self):
        """Started with the Makefile's options, daphne logs no livefeed.W102 (frames buffered before refusal)."""
        self.assertNotIn("livefeed.W102", self.instance.log())
        self.assertNotIn("livefeed.E1", self.instance.log())

    def test_a_frame_at_the_limit_is_read_and_judged_by_the_consumer(self):
        """A 4096-byte frame is not too large: it reaches the consumer, which refuses the garbage with 4400."""
        code = self.close_code_after(lambda ws: ws.send("x" * MAX_CLIENT_FRAME_BYTES))
        self.assertEqual(code, CLOSE_BAD_FRAME)
        self.assertBystanderStillServed()

    def test_deeply_nested_json_is_closed_with_4400_without_a_traceback(self):
        """1,000 '[' then 1,000 ']' (under the size limit) nests past Python's parser: 4400, not 1011."""
        code = self.close_code_after(lambda ws: ws.send("[" * 1000 + "]" * 1000))
        self.assertEqual(code, CLOSE_BAD_FRAME)
        self.assertBystanderStillServed()

    def test_text_frames_over_the_limit_are_closed_with_4413_at_every_size(self):
        """5 KB (the consumer refuses it), just over autobahn's limit, just over 1 MiB, 2 MiB: all 4413."""
        sizes = [5000, MAX_CLIENT_PAYLOAD_BYTES + 1, MIB + 1, 2 * MIB]
        for size in sizes:
            with self.subTest(size=size):
                code = self.close_code_after(lambda ws: ws.send("x" * size))
                self.assertEqual(code, CLOSE_FRAME_TOO_LARGE, f"a {size}-byte text frame")
        self.assertBystanderStillServed()

    def test_a_large_binary_frame_is_closed_with_4413(self):
        code = self.close_code_after(lambda ws: ws.send(b"\0" * (2 * MIB)))
        self.assertEqual(code, CLOSE_FRAME_TOO_LARGE)
        self.assertBystanderStillServed()

    def test_a_2_mib_message_in_continuation_fragments_is_closed_with_4413(self):
        """Fragments each under the limit (the message total trips it) and 64 KiB fragments alike."""
        for fragment in (4000, 64 * 1024):
            with self.subTest(fragment=fragment):
                count = 2 * MIB // fragment + 1
                code = self.close_code_after(lambda ws: ws.send(iter(["y" * fragment] * count)))
                self.assertEqual(code, CLOSE_FRAME_TOO_LARGE, f"{count} fragments of {fragment} bytes")
        self.assertBystanderStillServed()

    def test_the_server_does_not_buffer_oversized_frames(self):
        """8 sockets each send a 1,000,000-byte frame at once (under daphne's 1 MiB default): the
        server's peak RSS grows by far less than the 8 MB sent, and every one gets 4413."""
        before = peak_rss(self.instance.pid)
        if before is None:
            self.skipTest("no /proc/<pid>/status VmHWM on this platform")
        codes: list[int] = []
        errors: list[BaseException] = []
        lock = threading.Lock()
        start = threading.Barrier(CONCURRENT_SENDERS)

        def sender() -> None:
            try:
                frame = "z" * 1_000_000

                def send(ws: ClientConnection) -> None:
                    start.wait(CLOSE_TIMEOUT)
                    ws.send(frame)

                code = self.close_code_after(send)
                with lock:
                    codes.append(code)
            except BaseException as error:  # reported below, from the test's thread
                with lock:
                    errors.append(error)

        threads = [threading.Thread(target=sender) for _ in range(CONCURRENT_SENDERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(CLOSE_TIMEOUT * 3)
        self.assertEqual(errors, [])
        self.assertEqual(codes, [CLOSE_FRAME_TOO_LARGE] * CONCURRENT_SENDERS)
        growth = peak_rss(self.instance.pid) - before
        self.assertLess(growth, PEAK_GROWTH_LIMIT, f"peak RSS grew by {growth} bytes")
        self.assertBystanderStillServed()
