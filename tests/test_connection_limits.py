"""Slow and numerous connections against a real daphne: bounded in time and in number.

- A request (headers and body) or a WebSocket upgrade must arrive whole within
  HTTP_REQUEST_TIMEOUT of connecting (or of the previous response); a client trickling one
  byte at a time, or sending nothing, gets 408 and is disconnected.
- One client address may hold WS_MAX_PER_CLIENT open WebSockets; the next is closed with 4429.
  Behind trusted proxies the address is the one X-Forwarded-For names (feed.ratelimit.client_ip).
"""
from __future__ import annotations

import socket
import time

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from livefeed.ws_limits import CLOSE_TOO_MANY_SOCKETS
from tests.harness import MultiInstanceTestCase

# Short bounds so the tests wait seconds, not the defaults' 30 s and 100 sockets.
REQUEST_TIMEOUT = 2.0
MAX_PER_CLIENT = 5
TIMEOUT = 20


class SlowRequestTests(MultiInstanceTestCase):
    instance_count = 1
    instance_env = {"HTTP_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT)}

    def setUp(self):
        super().setUp()
        self.instance = self.instances[0]
        self.make_feed("slow")

    def trickle(self, data: bytes, interval: float = 0.5) -> tuple[bytes, float]:
        """Send `data` one byte per `interval` s until the server answers or closes; return (answer, seconds)."""
        started = time.monotonic()
        answer = b""
        with socket.create_connection(("127.0.0.1", self.instance.port), timeout=TIMEOUT) as sock:
            sock.settimeout(interval)
            for byte in data:
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    break
                try:
                    chunk = sock.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    break
                answer += chunk
                if not chunk or answer:
                    break
                if time.monotonic() - started > TIMEOUT:
                    break
            sock.settimeout(TIMEOUT)
            try:
                while chunk := sock.recv(4096):
                    answer += chunk
            except OSError:
                pass
        return answer, time.monotonic() - started

    def assertCutOff(self, answer: bytes, seconds: float, what: str) -> None:
        self.assertTrue(answer.startswith(b"HTTP/1.1 408"), f"{what}: answered {answer[:80]!r}")
        self.assertLess(seconds, REQUEST_TIMEOUT + 8, what)

    def test_headers_trickling_in_are_cut_off(self):
        request = f"GET /feeds/slow/ HTTP/1.1\r\nHost: 127.0.0.1:{self.instance.port}\r\n" + "X-Pad: a\r\n" * 20
        self.assertCutOff(*self.trickle(request.encode()), "slow headers")

    def test_a_body_trickling_in_is_cut_off(self):
        head = (
            f"POST /api/feeds/slow/comments/ HTTP/1.1\r\nHost: 127.0.0.1:{self.instance.port}\r\n"
            "Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
        ).encode()
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.instance.port), timeout=TIMEOUT) as sock:
            sock.sendall(head)
            answer = b""
            sock.settimeout(0.5)
            for _ in range(200):
                try:
                    sock.sendall(b" ")
                    chunk = sock.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    break
                answer += chunk
                break
        self.assertCutOff(answer, time.monotonic() - started, "slow body")

    def test_a_websocket_upgrade_trickling_in_is_cut_off(self):
        request = (
            f"GET /ws/feeds/slow/ HTTP/1.1\r\nHost: 127.0.0.1:{self.instance.port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: {self.instance.origin}\r\n\r\n"
        )
        self.assertCutOff(*self.trickle(request.encode()), "slow upgrade")

    def test_a_silent_connection_is_cut_off(self):
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.instance.port), timeout=TIMEOUT) as sock:
            answer = sock.recv(4096)
        self.assertCutOff(answer, time.monotonic() - started, "silent connection")

    def test_prompt_requests_on_a_kept_alive_connection_are_served(self):
        """Each request on a persistent connection gets its own deadline: several in a row are answered."""
        import http.client

        connection = http.client.HTTPConnection("127.0.0.1", self.instance.port, timeout=TIMEOUT)
        try:
            for _ in range(3):
                connection.request("GET", "/api/feeds/slow/comments/")
                response = connection.getresponse()
                response.read()
                self.assertEqual(response.status, 200)
                time.sleep(REQUEST_TIMEOUT / 2)  # idle between requests, within the bound
        finally:
            connection.close()


class WebSocketsPerClientTests(MultiInstanceTestCase):
    instance_count = 1
    instance_env = {"WS_MAX_PER_CLIENT": str(MAX_PER_CLIENT), "TRUSTED_PROXY_COUNT": "1"}

    def setUp(self):
        super().setUp()
        self.instance = self.instances[0]
        self.make_feed("many")
        self.sockets: list[ClientConnection] = []
        self.addCleanup(self.close_all)

    def close_all(self):
        for ws in self.sockets:
            ws.close()

    def open(self, forwarded_for: str | None = None) -> ClientConnection:
        ws = connect(
            self.instance.ws_url("many", json=True), origin=self.instance.origin, proxy=None, open_timeout=TIMEOUT,
            additional_headers={"X-Forwarded-For": forwarded_for} if forwarded_for else None,
            ping_interval=None, close_timeout=2,
        )
        self.sockets.append(ws)
        return ws

    def close_code(self, ws: ClientConnection, timeout: float = 3) -> int | None:
        """Return the close code the server sent within `timeout` s, None if the socket stays open."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ws.recv(timeout=deadline - time.monotonic())
            except TimeoutError:
                return None
            except ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd is not None else 1006
        return None

    def test_sockets_beyond_the_limit_are_closed_with_4429(self):
        first = [self.open() for _ in range(MAX_PER_CLIENT)]
        self.assertEqual(self.close_code(self.open()), CLOSE_TOO_MANY_SOCKETS)
        self.assertEqual([self.close_code(ws, 0.2) for ws in first], [None] * MAX_PER_CLIENT)
        first[0].close()
        replacement = None
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:  # the server notices the close, then has room again
            replacement = self.open()
            if self.close_code(replacement, 0.5) is None:
                break
        self.assertIsNotNone(replacement)
        self.assertIsNone(self.close_code(replacement, 0.5))

    def test_clients_behind_a_trusted_proxy_are_counted_apart(self):
        for _ in range(MAX_PER_CLIENT):
            self.open("10.0.0.1")
        self.assertEqual(self.close_code(self.open("10.0.0.1")), CLOSE_TOO_MANY_SOCKETS)
        self.assertIsNone(self.close_code(self.open("10.0.0.2")))
