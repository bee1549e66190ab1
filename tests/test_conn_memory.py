"""What an idle WebSocket costs the server, and what it no longer keeps once it is open.

Through the real ASGI application (in process) and a real daphne: an open feed socket keeps
no frame of Channels' middleware and only the part of its scope it uses; an open socket's
autobahn state holds neither its handshake nor copies of its factory's options; daphne's
receive queue holds no deque while the socket is idle; and a real daphne holding hundreds of
idle readers grows by far less per socket than it did (about 28 KB before).
"""
from __future__ import annotations

import asyncio
import json
import sys
import time

import psutil
from channels.testing import WebsocketCommunicator
from django.test import SimpleTestCase, TransactionTestCase

from feed.models import Feed
from livefeed.asgi import application
from notifications.consumers import FeedConsumer
from notifications.server_adapter import socket_memory
from tests.harness import MultiInstanceTestCase, wait_until

ORIGIN = (b"origin", b"http://localhost")
MIDDLEWARE_FRAMES = ("CookieMiddleware", "SessionMiddleware", "AuthMiddleware", "BaseMiddleware", "URLRouter")


def await_chain(coroutine) -> list:
    """Return the coroutines a task is suspended in, outermost first."""
    chain = []
    while coroutine is not None and hasattr(coroutine, "cr_code"):
        chain.append(coroutine)
        coroutine = coroutine.cr_await
    return chain


class OpenSocketScopeTests(TransactionTestCase):
    def setUp(self):
        Feed.objects.create(slug="town", title="Town", allow_anonymous=True)

    async def test_an_open_feed_socket_keeps_no_middleware_frame_and_only_the_scope_it_uses(self):
        communicator = WebsocketCommunicator(application, "/ws/feeds/town/?format=json", headers=[ORIGIN, (b"cookie", b"a=b")])
        connected, _ = await communicator.connect(timeout=10)
        self.assertTrue(connected)
        try:
            chain = await_chain(communicator.future.get_coro())
            consumer = next(c.cr_frame.f_locals["self"] for c in chain if c.cr_code.co_qualname == "FeedConsumer.__call__")
            deadline = time.monotonic() + 10
            while "headers" in consumer.scope and time.monotonic() < deadline:  # connect() is still attaching
                await asyncio.sleep(0.01)
            chain = await_chain(communicator.future.get_coro())
            names = [coroutine.cr_code.co_qualname for coroutine in chain]
            self.assertFalse([name for name in names if name.startswith(MIDDLEWARE_FRAMES)], names)
            consumers = [c.cr_frame.f_locals["self"] for c in chain if c.cr_code.co_qualname == "FeedConsumer.__call__"]
            self.assertEqual(len(consumers), 1, names)
            consumer = consumers[0]
            self.assertIsInstance(consumer, FeedConsumer)
            self.assertLessEqual(set(consumer.scope), set(FeedConsumer.OPEN_SCOPE_KEYS))
            self.assertEqual(consumer.scope["url_route"]["kwargs"], {"slug": "town"})
            # No frame of the chain holds the full handshake scope (headers, cookies, session, user).
            for coroutine in chain:
                for value in coroutine.cr_frame.f_locals.values():
                    if isinstance(value, dict):
                        self.assertNotIn("headers", value, coroutine.cr_code.co_qualname)
        finally:
            await communicator.disconnect()


class ReceiveQueueTests(SimpleTestCase):
    async def test_messages_come_out_in_order_and_get_waits_for_the_next(self):
        queue = socket_memory.ReceiveQueue()
        queue.put_nowait({"n": 1})
        queue.put_nowait({"n": 2})
        self.assertEqual(queue.qsize(), 2)
        self.assertEqual([await queue.get(), await queue.get()], [{"n": 1}, {"n": 2}])
        waiting = asyncio.ensure_future(queue.get())
        await asyncio.sleep(0)
        self.assertFalse(waiting.done())
        queue.put_nowait({"n": 3})
        self.assertEqual(await asyncio.wait_for(waiting, 5), {"n": 3})

    async def test_an_idle_queue_holds_no_deque(self):
        queue = socket_memory.ReceiveQueue()
        queue.put_nowait({"n": 1})
        await queue.get()
        self.assertIsNone(queue._items)
        self.assertEqual(queue.qsize(), 0)

    async def test_a_cancelled_get_leaves_the_queue_usable(self):
        queue = socket_memory.ReceiveQueue()
        waiting = asyncio.ensure_future(queue.get())
        await asyncio.sleep(0)
        waiting.cancel()
        with self.assertRaises(asyncio.CancelledError):
            await waiting
        queue.put_nowait({"n": 1})
        self.assertEqual(await asyncio.wait_for(queue.get(), 5), {"n": 1})


def connected_protocol(factory, *, slim: bool):
    """A daphne WebSocketProtocol as daphne builds and connects it (on a Twisted test transport)."""
    from twisted.internet.testing import StringTransport

    protocol = factory.protocol()  # what daphne's buildProtocol does (the adapter's adds the slimming)
    protocol.factory = factory
    if slim:
        socket_memory.slim_from_start(protocol, factory)
    protocol.makeConnection(StringTransport())
    protocol.openHandshakeTimeoutCall.cancel()  # as succeedHandshake does
    protocol.openHandshakeTimeoutCall = None
    # What the handshake leaves behind (autobahn's and daphne's), as after a real one.
    protocol.http_headers = {"host": "127.0.0.1", "origin": "http://127.0.0.1"}
    protocol.http_request_data = b"GET / HTTP/1.1\r\n" * 20
    protocol.http_response_data = "HTTP/1.1 101 Switching Protocols\r\n" * 4
    protocol.clean_headers = [(b"host", b"127.0.0.1")]
    protocol.websocket_protocols = []
    protocol.state = protocol.STATE_OPEN
    return protocol


class SlimSocketTests(SimpleTestCase):
    def setUp(self):
        from daphne.ws_protocol import WebSocketFactory

        self.factory = WebSocketFactory(object, server="Daphne")
        self.factory.setProtocolOptions(maxFramePayloadSize=5120, autoPingInterval=0)

    def test_an_open_socket_keeps_neither_its_handshake_nor_copies_of_the_factory_options(self):
        plain = connected_protocol(self.factory, slim=False)
        slim = connected_protocol(self.factory, slim=True)
        socket_memory.forget_handshake(slim)
        self.assertIn("maxFramePayloadSize", vars(plain))
        for name in ("maxFramePayloadSize", "autoPingInterval", "http_headers", "http_request_data", "clean_headers", "closedByMe", "is_open"):
            self.assertNotIn(name, vars(slim))
        self.assertLess(sys.getsizeof(vars(slim)), sys.getsizeof(vars(plain)) / 2)
        self.assertLess(len(vars(slim)), 50)

    def test_a_slim_socket_reads_what_it_read_before(self):
        plain = connected_protocol(self.factory, slim=False)
        slim = connected_protocol(self.factory, slim=True)
        socket_memory.forget_handshake(slim)
        for name in type(plain).CONFIG_ATTRS:
            self.assertIs(getattr(slim, name), getattr(plain, name), name)
        # A function option is the factory's own function, not a method of the socket.
        self.assertIs(slim.perMessageCompressionAccept, self.factory.perMessageCompressionAccept)
        for name, value in socket_memory.IDLE_STATE.items():
            self.assertEqual(getattr(slim, name), value, name)
        self.assertIsNone(slim.http_headers)
        self.assertIsInstance(slim, type(plain))
        self.assertFalse(slim.send_queue)

    def test_a_slim_socket_writes_its_own_state(self):
        first = connected_protocol(self.factory, slim=True)
        second = connected_protocol(self.factory, slim=True)
        socket_memory.forget_handshake(first)
        socket_memory.forget_handshake(second)
        first.closedByMe = True
        first.closeHandshakeTimeout = 0.5
        first.send_queue.append((b"x", True))
        self.assertFalse(second.closedByMe)
        self.assertEqual(second.closeHandshakeTimeout, self.factory.closeHandshakeTimeout)
        self.assertFalse(second.send_queue)
        self.assertEqual(first.send_queue.popleft(), (b"x", True))

    def test_options_changed_on_the_factory_reach_the_sockets_built_after(self):
        before = connected_protocol(self.factory, slim=True)
        self.factory.setProtocolOptions(maxFramePayloadSize=2048)
        after = connected_protocol(self.factory, slim=True)
        self.assertEqual(before.maxFramePayloadSize, 5120)
        self.assertEqual(after.maxFramePayloadSize, 2048)


class IdleSocketMemoryTests(MultiInstanceTestCase):
    """A real daphne: the memory it grows by per idle reader (resumed, as the page does)."""

    instance_count = 1
    instance_env = {"WS_MAX_PER_CLIENT": "0"}
    readers = 400
    max_kb_per_socket = 18  # ~28 KB before; ~11-13 KB now (RSS, so with the allocator's slack)

    def setUp(self):
        super().setUp()
        Feed.objects.create(slug="idle", title="Idle", allow_anonymous=True)

    def test_an_idle_reader_costs_the_server_a_fraction_of_what_it_did(self):
        instance = self.instances[0]
        process = psutil.Process(instance.process.pid)
        asyncio.run(self._hold(instance.port, 20))  # warm-up: the first readers load code and caches
        settle(process)
        before = process.memory_info().rss
        kb = asyncio.run(self._hold(instance.port, self.readers, measure=lambda: (process.memory_info().rss - before) / 1024))
        self.assertLess(kb / self.readers, self.max_kb_per_socket, f"{kb / self.readers:.1f} KB per idle socket")

    async def _hold(self, port: int, count: int, measure=None) -> float:
        """Open `count` readers that resume, measure once the server is idle again, close them."""
        from bench.loadgen import Reader

        loop = asyncio.get_running_loop()
        hello = json.dumps({"type": "resume", "after": 0}).encode()
        gate = asyncio.Semaphore(100)
        readers = []

        async def one() -> None:
            async with gate:
                reader = Reader(host="127.0.0.1", port=port, path="/ws/feeds/idle/?format=json", hello=hello)
                await loop.create_connection(lambda: reader, "127.0.0.1", port)
                await asyncio.wait_for(reader.opened, 30)
                readers.append(reader)

        try:
            await asyncio.gather(*(one() for _ in range(count)))
            if measure is None:
                return 0.0
            await loop.run_in_executor(None, settle, psutil.Process(self.instances[0].process.pid))
            return measure()
        finally:
            for reader in readers:
                if reader.transport is not None:
                    reader.transport.abort()


def settle(process: psutil.Process, quiet: float = 0.5, timeout: float = 30) -> None:
    """Wait until the process has used (almost) no CPU for `quiet` seconds."""
    last = sum(process.cpu_times()[:2])
    since = time.monotonic()

    def quiet_enough() -> bool:
        nonlocal last, since
        now = sum(process.cpu_times()[:2])
        if now - last > 0.02:
            last, since = now, time.monotonic()
        return time.monotonic() - since >= quiet

    wait_until(quiet_enough, timeout, "the server to go quiet", interval=0.1)
