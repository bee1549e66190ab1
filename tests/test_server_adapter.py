"""The server adapter: its start-up check, and its socket operations under TLS on a real daphne.

The check names every private attribute of daphne, Twisted, autobahn and asgiref the live
path uses; a missing one is an Error (daphne refuses to start) or, for the fast path only, a
Warning that turns the fast path off. Under TLS (``daphne -e ssl:...``) frames are encrypted
by Twisted and unsent bytes are counted through the TLS wrapper, so slow readers get 1013.
"""
from __future__ import annotations

import datetime
import http.client
import json
import socket
import ssl
import tempfile
import urllib.error
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import SimpleTestCase

from notifications.server_adapter import checks, sockets
from notifications.startup import check_server_adapter
from tests.harness import (
    DaphneInstance,
    FeedReader,
    MultiInstanceTestCase,
    StalledReader,
    subprocess_database_url,
    wait_until,
)

TIMEOUT = 30


@contextmanager
def removed(cls: type, name: str):
    """Remove an attribute from every class in cls's MRO that defines it, for the block.

    Every one: the adapter may have set its own version on a subclass (daphne's) of the
    class that defines the original (autobahn's).
    """
    owners = [(klass, vars(klass)[name]) for klass in cls.__mro__ if name in vars(klass)]
    for owner, _ in owners:
        delattr(owner, name)
    try:
        yield
    finally:
        for owner, value in owners:
            setattr(owner, name, value)


class StartupCheckTests(SimpleTestCase):
    def tearDown(self):
        checks.check_server_internals()  # back to the installed versions' state

    def test_the_pinned_versions_have_every_name(self):
        self.assertEqual(checks.check_server_internals(), [])
        self.assertTrue(sockets.fast_path["raw_writes"])

    def test_a_missing_required_name_is_an_error_that_stops_the_start(self):
        from daphne.ws_protocol import WebSocketProtocol

        with removed(WebSocketProtocol, "_max_message_size_exceeded"):
            messages = checks.check_server_internals()
            self.assertEqual([message.id for message in messages], ["livefeed.E101"])
            self.assertIn("WebSocketProtocol._max_message_size_exceeded", messages[0].msg)
            with self.assertRaisesMessage(SystemCheckError, "livefeed.E101"):
                call_command("check")
            with self.assertRaisesMessage(ImproperlyConfigured, "livefeed.E101"):
                check_server_adapter()

    def test_a_missing_fast_path_name_turns_the_fast_path_off_loudly(self):
        from autobahn.websocket.protocol import PreparedMessage

        with mock.patch.object(PreparedMessage, "__init__", lambda self, *args, **kwargs: None):
            messages = checks.check_server_internals()
        self.assertEqual([message.id for message in messages], ["livefeed.W101"])
        self.assertIn("Fast path OFF", messages[0].msg)
        self.assertFalse(sockets.fast_path["raw_writes"])

    def test_a_missing_slimming_name_keeps_open_sockets_whole_loudly(self):
        from autobahn.websocket.protocol import WebSocketServerProtocol

        with removed(WebSocketServerProtocol, "CONFIG_ATTRS"):
            messages = checks.check_server_internals()
        self.assertEqual([message.id for message in messages], ["livefeed.W103"])
        self.assertFalse(sockets.fast_path["slim_sockets"])

    def test_a_session_middleware_that_acts_on_websocket_messages_is_an_error(self):
        """livefeed.ws_stack gives consumers daphne's send, skipping SessionMiddleware's wrapper."""
        from channels.sessions import InstanceSessionWrapper

        with mock.patch.object(InstanceSessionWrapper, "save_message_types", ["http.response.start", "websocket.accept"]):
            messages = checks.check_server_internals()
        self.assertEqual([message.id for message in messages], ["livefeed.E101"])
        self.assertIn("InstanceSessionWrapper.save_message_types", messages[0].msg)

    def test_daphne_started_without_the_message_size_options_is_warned_about(self):
        with mock.patch.dict(checks.started_options, {"websocket_max_message_size": 1024 * 1024}):
            self.assertEqual([message.id for message in checks.daphne_option_messages()], ["livefeed.W102"])
        with mock.patch.dict(checks.started_options, {"websocket_max_message_size": 5120}):
            self.assertEqual(checks.daphne_option_messages(), [])


class HandshakeLoggingTests(SimpleTestCase):
    def test_autobahn_formats_a_sockets_options_only_while_it_logs_at_debug_level(self):
        """autobahn pretty-prints every new socket's options for a debug line: skipped unless debug is on."""
        import txaio
        from autobahn.websocket import protocol as autobahn_protocol

        from notifications.server_adapter.daphne import _pformat_when_debugging

        level = txaio.get_global_log_level()
        self.addCleanup(txaio.set_global_log_level, level)
        options = [("autoPingInterval", 0, "WebSocketServerFactory")]
        with mock.patch.object(autobahn_protocol, "pformat", _pformat_when_debugging):
            txaio.set_global_log_level("info")
            self.assertEqual(autobahn_protocol.pformat(options), "")
            txaio.set_global_log_level("debug")
            self.assertEqual(autobahn_protocol.pformat(options), "[('autoPingInterval', 0, 'WebSocketServerFactory')]")


class DaphneOptionWarningTests(SimpleTestCase):
    def test_daphne_started_without_the_size_options_says_so_at_start(self):
        """A plain `daphne -p ...` (1 MiB messages) logs livefeed.W102 before it listens."""
        import os
        import subprocess
        import sys
        import threading

        from tests.harness import BASE_DIR, free_port

        env = {key: value for key, value in os.environ.items() if "PROXY" not in key.upper()}
        env.update(DEBUG="1", DJANGO_SETTINGS_MODULE="livefeed.settings", PYTHONUNBUFFERED="1")
        process = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(free_port()), "livefeed.asgi:application"],
            cwd=BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(line.decode(errors="replace") for line in process.stdout), daemon=True)
        reader.start()
        try:
            wait_until(lambda: any("Listening on" in line for line in lines), TIMEOUT, f"daphne to listen: {lines}")
        finally:
            process.terminate()
            process.wait(TIMEOUT)
            reader.join(5)
        warnings = [line for line in lines if "livefeed.W102" in line]
        self.assertEqual(len(warnings), 1, "".join(lines))
        self.assertIn("--websocket-max-message-size=1048576", warnings[0])


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """Write a throwaway key and certificate for 127.0.0.1; return their paths."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def client_context(cert_path: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert_path))


class TlsDaphne(DaphneInstance):
    """A DaphneInstance serving TLS (``-e ssl:...``) with a throwaway certificate."""

    def __init__(self, *args, cert_path: Path, **kwargs):
        super().__init__(*args, **kwargs)
        self.context = client_context(cert_path)

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def ws_url(self, slug: str, json: bool = False) -> str:
        return f"wss://127.0.0.1:{self.port}/ws/feeds/{slug}/" + ("?format=json" if json else "")

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=TIMEOUT, context=self.context)
        try:
            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            connection.request(method, path, body=json.dumps(body) if body else None, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def wait_ready(self, timeout: float = 60) -> None:
        def answers() -> bool:
            if not self.running:
                raise AssertionError(f"daphne {self.name} exited:\n{self.log()}")
            try:
                return self.request("GET", "/api/feeds/")[0] < 500
            except (OSError, urllib.error.URLError):
                return False

        wait_until(answers, timeout, f"TLS daphne on port {self.port}", interval=0.1)


class TlsReader(FeedReader):
    def connect(self, resume_after: int | None = None, timeout: float = 20) -> FeedReader:
        from websockets.sync.client import connect

        self._connection = connect(
            self.url, origin=self.instance.origin, open_timeout=timeout, proxy=None, ssl=self.instance.context,
            compression=None, max_size=None, ping_interval=None, close_timeout=5,
        )
        if resume_after is not None:
            self.send({"type": "resume", "after": resume_after})
        import threading

        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()
        return self


class TlsSlowReaderTests(MultiInstanceTestCase):
    """One daphne serving TLS: frames arrive intact, and a reader that stops reading gets 1013."""

    instance_count = 0

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.certs = tempfile.TemporaryDirectory()
        key_path, cert_path = self_signed_certificate(Path(cls.certs.name))
        cls.tls = TlsDaphne(
            "TLS", redis_url=cls.redis.url, database_url=subprocess_database_url(), cert_path=cert_path,
            endpoint=f"ssl:port={{port}}:interface=127.0.0.1:privateKey={key_path}:certKey={cert_path}",
            env={"WS_SLOW_READER_MAX_BYTES": str(256 * 1024)},
        )
        cls.instances.append(cls.tls)
        cls.tls.start()
        cls.tls.wait_ready()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls.certs.cleanup()

    def post(self, body: str) -> int:
        status, raw = self.tls.request("POST", "/api/feeds/tls/comments/", {"author": "tls", "body": body})
        self.assertEqual(status, 201, raw)
        return json.loads(raw)["seq"]

    def test_frames_reach_a_tls_reader_intact_and_a_stalled_one_gets_1013(self):
        self.make_feed("tls")
        reader = TlsReader(self.tls, "tls", json=True).connect(resume_after=0)
        self._readers.append(reader)
        stalled = StalledReader(self.tls, "tls")
        stalled.sock = self.tls.context.wrap_socket(stalled.sock, server_hostname="127.0.0.1")
        self._readers.append(stalled)
        stalled.connect()
        start = self.tls.log_offset()
        posted = 0
        while "Closing a slow reader" not in self.tls.log_since(start) and posted < 400:
            posted = self.post("&" * 1990)  # ~10 KB HTML frames ('&' is escaped)
        self.assertIn("Closing a slow reader", self.tls.log_since(start), f"no 1013 after {posted} posts")
        closed_after = posted
        for _ in range(3):  # the closed reader is detached: none of these reach it
            posted = self.post("after the close")
        reader.wait_for_seq(posted, TIMEOUT)
        self.assertExactlyOnceInOrder(reader, list(range(1, posted + 1)))
        seqs, code = stalled.drain(TIMEOUT)
        self.assertEqual(code, 1013)
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)))
        self.assertLessEqual(len(seqs), closed_after)
