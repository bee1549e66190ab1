"""The WebSocket Origin check and unrouted /ws/ paths, against a real daphne.

Allowed: the origin the handshake was made to (scheme, host and port as served; https
through a trusted proxy's X-Forwarded-Proto) or one of CSRF_TRUSTED_ORIGINS. Everything
else is refused with HTTP 403 before any consumer runs, as is a /ws/ path that is no stream,
without a traceback in the log.
"""
from __future__ import annotations

import base64
import os
import socket

from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.harness import MultiInstanceTestCase

TIMEOUT = 20


class WebSocketOriginTests(MultiInstanceTestCase):
    instance_count = 1
    instance_env = {"CSRF_TRUSTED_ORIGINS": "https://feed.example.com,https://*.trusted.example", "TRUST_X_FORWARDED_PROTO": "1"}

    def setUp(self):
        super().setUp()
        self.instance = self.instances[0]
        self.make_feed("origin")
        self.log_start = self.instance.log_offset()

    def handshake(self, origin: str | None, headers: dict[str, str] | None = None, path: str = "/ws/feeds/origin/") -> int:
        """Open a socket with this Origin; return 101 when accepted, else the refusal's HTTP status."""
        try:
            with connect(
                f"ws://127.0.0.1:{self.instance.port}{path}", origin=origin, additional_headers=headers,
                open_timeout=TIMEOUT, proxy=None, ping_interval=None, close_timeout=2,
            ):
                return 101
        except InvalidStatus as refused:
            return refused.response.status_code

    def test_other_ports_schemes_and_hosts_are_refused(self):
        """Same host on another port, https for an http server, another host, junk, none: all 403."""
        port = self.instance.port
        for origin in (
            "http://127.0.0.1:9", f"http://127.0.0.1:{port + 1}", "http://127.0.0.1", f"https://127.0.0.1:{port}",
            f"http://localhost:{port}", "https://evil.example", "null", f"http://127.0.0.1:{port}/path", None,
        ):
            with self.subTest(origin=origin):
                self.assertEqual(self.handshake(origin), 403)

    def test_the_sites_own_origin_is_accepted(self):
        self.assertEqual(self.handshake(self.instance.origin), 101)

    def test_https_behind_a_trusted_proxy_is_the_own_origin(self):
        """With TRUST_X_FORWARDED_PROTO, X-Forwarded-Proto: https makes https://host:port the own origin."""
        https_origin = f"https://127.0.0.1:{self.instance.port}"
        self.assertEqual(self.handshake(https_origin, {"X-Forwarded-Proto": "https"}), 101)
        self.assertEqual(self.handshake(self.instance.origin, {"X-Forwarded-Proto": "https"}), 403)

    def test_csrf_trusted_origins_are_accepted(self):
        """An exact trusted origin and a subdomain of a wildcard one; not the wildcard's parent or another port."""
        self.assertEqual(self.handshake("https://feed.example.com"), 101)
        self.assertEqual(self.handshake("https://live.trusted.example"), 101)
        self.assertEqual(self.handshake("https://feed.example.com:8443"), 403)
        self.assertEqual(self.handshake("http://feed.example.com"), 403)
        self.assertEqual(self.handshake("https://eviltrusted.example"), 403)

    def test_unrouted_ws_paths_are_refused_without_a_traceback(self):
        """Handshakes to /ws/ paths that are no stream get 403, repeatedly, and nothing is logged as an error."""
        for path in ("/ws/", "/ws/nothing/", "/ws/feeds/", "/ws/feeds/origin/extra/", "/ws/feeds/a%20b/") * 3:
            with self.subTest(path=path):
                self.assertIn(self.raw_handshake_status(path), (403, 404), path)
        self.assertEqual(self.handshake(self.instance.origin), 101)  # still serving
        log = self.instance.log_since(self.log_start)
        self.assertNotIn("Traceback", log)
        self.assertNotIn("No route found", log)

    def raw_handshake_status(self, path: str) -> int:
        key = base64.b64encode(os.urandom(16)).decode()
        with socket.create_connection(("127.0.0.1", self.instance.port), timeout=TIMEOUT) as sock:
            sock.sendall(
                (
                    f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.instance.port}\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                    f"Origin: {self.instance.origin}\r\n\r\n"
                ).encode()
            )
            head = b""
            while b"\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                head += chunk
        return int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
