"""The edge: the repository's own deploy/nginx.conf, run by a real nginx in front of real daphne instances.

nginx is Debian's package (scripts/ensure-test-services installs it); tests/harness.py
NginxServer renders the file with loopback addresses and runs it in the foreground.
"""
from __future__ import annotations

import http.client
import http.cookiejar
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

import psutil
from django.conf import settings
from django.test import SimpleTestCase, TestCase
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import ClientConnection, connect

from feed.models import Comment, Feed
from tests.harness import (
    NGINX_CONF,
    NO_PROXY,
    MultiInstanceTestCase,
    NginxServer,
    comment_seqs,
    nginx_binary,
    wait_until,
)

RETRY_STATUSES = {0, 502, 503, 504}  # 0: no HTTP answer at all (connection refused, reset, timeout)
SHUTDOWN_GRACE = 3.0  # WS_SHUTDOWN_GRACE of the instances


def require_nginx() -> None:
    """Skip when nginx is missing; under CI, fail instead (ensure-test-services installs it)."""
    if nginx_binary():
        return
    message = "the edge tests need nginx (apt-get install nginx-light; scripts/ensure-test-services does)"
    if os.environ.get("CI", "").lower() == "true":
        raise RuntimeError(message)
    raise unittest.SkipTest(message)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def request(
    url: str, *, method: str = "GET", data: bytes | None = None, headers: dict[str, str] | None = None,
    opener: urllib.request.OpenerDirector | None = None, timeout: float = 30,
) -> tuple[int, dict[str, str], bytes]:
    """Send one request without following redirects; return (status, headers, body)."""
    opener = opener or urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with opener.open(req, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


class NginxTestCase(MultiInstanceTestCase):
    """Real daphne instances (MultiInstanceTestCase) with the repository's nginx in front."""

    nginx: NginxServer
    nginx_worker_processes: int | None = None  # None: the file's own (auto)

    @classmethod
    def setUpClass(cls) -> None:
        require_nginx()
        super().setUpClass()
        try:
            cls.nginx = NginxServer(cls.instances, worker_processes=cls.nginx_worker_processes)
            cls.nginx.start()
        except BaseException:
            cls._stop_processes()
            super().tearDownClass()
            raise

    @classmethod
    def _stop_processes(cls) -> None:
        nginx = getattr(cls, "nginx", None)
        if nginx is not None:
            nginx.kill()
            nginx.close_log()
        super()._stop_processes()

    def setUp(self) -> None:
        super().setUp()
        # A previous test may have left nginx counting both instances as failed (fail_timeout).
        wait_until(lambda: self.via_nginx("/api/feeds/")[0] == 200, 15, f"nginx to reach an instance\n{self.diagnostics()}")

    def via_nginx(self, path: str, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
        return request(self.nginx.http_url(path), **kwargs)

    def diagnostics(self) -> str:
        return f"{super().diagnostics()}\n--- nginx (port {self.nginx.port}) log:\n{self.nginx.log(4000)}"


class ResumingReader(threading.Thread):
    """A JSON feed reader through nginx that reconnects when closed and resumes at its last seq."""

    def __init__(self, nginx: NginxServer, slug: str, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.nginx = nginx
        self.url = nginx.ws_url(slug, json=True)
        self.seqs: list[int] = []
        self.connections = 0
        self.close_codes: list[int | None] = []
        self.failed_handshakes: list[str] = []
        self._halt = threading.Event()
        self._changed = threading.Condition()
        self._connection: ClientConnection | None = None

    @property
    def last_seq(self) -> int:
        return self.seqs[-1] if self.seqs else 0

    def run(self) -> None:
        backoff = 0.05
        while not self._halt.is_set():
            try:
                connection = connect(
                    self.url, origin=self.nginx.origin, open_timeout=10, proxy=None, compression=None,
                    max_size=None, ping_interval=None, close_timeout=2,
                )
            except (OSError, InvalidHandshake, TimeoutError) as error:
                self.failed_handshakes.append(repr(error))
                self._halt.wait(backoff)  # backoff between attempts, not a synchronisation
                backoff = min(backoff * 2, 1.0)
                continue
            backoff = 0.05
            self._connection = connection
            self.connections += 1
            try:
                connection.send(json.dumps({"type": "resume", "after": self.last_seq}))
                for frame in connection:
                    seqs = comment_seqs(frame)
                    with self._changed:
                        self.seqs.extend(seqs)
                        self._changed.notify_all()
            except ConnectionClosed:
                pass
            self.close_codes.append(connection.close_code)
            connection.close()

    def wait_for_seq(self, seq: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.last_seq < seq:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{self.name}: no seq {seq} after {timeout:.0f}s; last {self.last_seq}, close codes {self.close_codes}")
                self._changed.wait(min(remaining, 0.5))

    def stop(self) -> None:
        self._halt.set()
        if self._connection is not None:
            self._connection.close()
        self.join(timeout=10)


class Poster(threading.Thread):
    """Posts through nginx, one comment after another, each with its own Idempotency-Key.

    Like a careful client (and the page): a network error, a timeout or a 502/503/504 is
    retried with the same key and body until the server answers.
    """

    def __init__(self, nginx: NginxServer, slug: str) -> None:
        super().__init__(name="poster", daemon=True)
        self.url = nginx.http_url(f"/api/feeds/{slug}/comments/")
        self.posts: list[dict[str, Any]] = []  # one per comment: key, body, statuses, result
        self.attempts = 0  # requests sent, retries included
        self.failures: list[str] = []
        self._halt = threading.Event()
        self._changed = threading.Condition()

    def run(self) -> None:
        number = 0
        while not self._halt.is_set():
            self.post_until_answered(f"rolling restart comment {number}")
            number += 1
            self._halt.wait(0.05)  # about 10 posts a second: pacing, not a synchronisation

    def post_until_answered(self, body: str) -> None:
        key = str(uuid.uuid4())
        data = json.dumps({"author": "poster", "body": body}).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json", "Idempotency-Key": key}
        statuses: list[int] = []
        delay = 0.05
        started = time.monotonic()
        deadline = started + 90
        while True:
            self.attempts += 1
            try:
                status, response_headers, raw = request(self.url, method="POST", data=data, headers=headers, timeout=20)
            except OSError as error:
                status, response_headers, raw = 0, {}, repr(error).encode()
            statuses.append(status)
            if status in RETRY_STATUSES and time.monotonic() < deadline:
                time.sleep(delay)  # client backoff before the retry
                delay = min(delay * 2, 1.0)
                continue
            break
        post = {
            "key": key, "body": body, "statuses": statuses, "seconds": round(time.monotonic() - started, 2),
            "replayed": response_headers.get("Idempotent-Replayed") == "true",
        }
        if status == 201:
            post["comment"] = json.loads(raw)
        else:
            self.failures.append(f"{body!r} key {key}: statuses {statuses}, last answer {raw[:300]!r}")
        with self._changed:
            self.posts.append(post)
            self._changed.notify_all()

    def wait_for_posts(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.posts) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"only {len(self.posts)} of {count} posts answered after {timeout:.0f}s: {self.failures[-5:]}")
                self._changed.wait(min(remaining, 0.5))

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=120)


class RollingRestartTests(NginxTestCase):
    instance_env = {
        # The user default is 30 posts a minute per client; the poster is one client posting
        # about 10 a second for the whole restart, so it gets a higher limit, still enforced
        # (per client, from nginx's X-Forwarded-For: TRUSTED_PROXY_COUNT=1 as the README says).
        "FEED_POST_RATE": "3000/m",
        "TRUSTED_PROXY_COUNT": "1",
        "WS_SHUTDOWN_GRACE": str(SHUTDOWN_GRACE),
    }

    def test_rolling_restart_behind_nginx_loses_no_post_and_no_delivery(self):
        """Both instances restart one at a time (SIGTERM, exit, start, ready) behind nginx while a
        client posts with Idempotency-Keys and readers stay connected: every post ends in 201 (or
        its replay), each comment exists once, every reader gets every comment once, in order,
        and no instance needs SIGKILL."""
        feed = self.make_feed("rolling")
        readers = [ResumingReader(self.nginx, "rolling", f"reader-{index}") for index in range(4)]
        for reader in readers:
            reader.start()
        poster = Poster(self.nginx, "rolling")
        needed_sigkill: list[str] = []
        windows: list[int] = []
        try:
            wait_until(lambda: all(reader.connections for reader in readers), 20, "every reader to connect through nginx")
            poster.start()
            for instance in self.instances:
                poster.wait_for_posts(len(poster.posts) + 10, 30)
                attempts_before = poster.attempts
                instance.terminate()
                try:
                    instance.wait_exit(SHUTDOWN_GRACE + 5)
                except subprocess.TimeoutExpired:
                    needed_sigkill.append(f"{instance.name} still running {SHUTDOWN_GRACE + 5:.0f}s after SIGTERM:\n{instance.log(3000)}")
                    instance.kill()  # to go on; the test fails below
                offset = self.nginx.access_offset()
                instance.start()
                instance.wait_ready()
                windows.append(poster.attempts - attempts_before)
                # The README's procedure: stop the next instance only once nginx uses this one again.
                wait_until(lambda: self.nginx.answered_by(instance, offset), 20, f"nginx to send {instance.name} traffic again")
            poster.wait_for_posts(len(poster.posts) + 10, 30)
        finally:
            poster.stop()
        try:
            self.assertEqual(poster.failures, [], self.diagnostics())
            self.assertEqual(needed_sigkill, [])
            expected = list(Comment.objects.filter(feed=feed).order_by("seq").values_list("seq", flat=True))
            bodies = list(Comment.objects.filter(feed=feed).values_list("body", flat=True))
            self.assertEqual(len(bodies), len(set(bodies)), "a comment was saved twice")
            self.assertEqual(sorted(bodies), sorted(post["body"] for post in poster.posts), "saved comments differ from the posts")
            self.assertEqual(sorted(post["comment"]["seq"] for post in poster.posts), expected)
            for reader in readers:
                reader.wait_for_seq(expected[-1], 30)
            for reader in readers:
                self.assertExactlyOnceInOrder(reader.seqs, expected, reader.name)
                self.assertGreaterEqual(reader.connections, 2, f"{reader.name} was never closed by a restart")
        finally:
            for reader in readers:
                reader.stop()
        self.assertTrue(all(window > 0 for window in windows), f"posts sent while each instance restarted: {windows}")
        retried = [post for post in poster.posts if len(post["statuses"]) > 1]
        slowest = max(poster.posts, key=lambda post: post["seconds"])
        print(  # noqa: T201 - the figures of the run, for whoever reads the test output
            f"\nrolling restart: {len(poster.posts)} posts, {len(retried)} retried "
            f"({sum(post['statuses'].count(502) for post in poster.posts)} answers 502, "
            f"{sum(post['replayed'] for post in poster.posts)} replays), requests sent per restart {windows}, "
            f"slowest post {slowest['seconds']} s {slowest['statuses']}, "
            f"reader connections {[reader.connections for reader in readers]}"
        )

    def test_api_body_over_the_limits_gets_json_413_from_the_app_and_from_nginx(self):
        """A body between the app's limit (64 KiB) and nginx's (128 KiB) gets the app's JSON 413;
        a larger one nginx's, also JSON in the contract's shape."""
        self.make_feed("limits")
        url = "/api/feeds/limits/comments/"
        headers = {"Content-Type": "application/json"}
        status, response_headers, raw = self.via_nginx(url, method="POST", data=b"{" + b" " * 100_000 + b"}", headers=headers)
        self.assertEqual((status, response_headers.get("Content-Type")), (413, "application/json"), raw[:300])
        self.assertEqual(json.loads(raw)["error"], "too_large")
        self.assertIn("65536", json.loads(raw)["detail"])  # the application answered
        status, response_headers, raw = self.via_nginx(url, method="POST", data=b"{" + b" " * 300_000 + b"}", headers=headers)
        self.assertEqual((status, response_headers.get("Content-Type")), (413, "application/json"), raw[:300])
        self.assertEqual(set(json.loads(raw)), {"error", "detail"})
        self.assertEqual(json.loads(raw)["error"], "too_large")
        self.assertIn("load balancer", json.loads(raw)["detail"])  # nginx answered, the app never saw it

    def test_chunked_api_body_over_the_limits_gets_json_413_too(self):
        """A chunked body (no Content-Length) is refused the same way: nginx buffers it and passes
        its length on, so the app answers in between the limits, nginx beyond."""
        self.make_feed("chunked")
        for size, answered_by in ((100_000, "65536"), (300_000, "load balancer")):
            connection = http.client.HTTPConnection("127.0.0.1", self.nginx.port, timeout=30)
            chunks = (b"{" + b" " * (size - 2) + b"}")
            connection.request(
                "POST", "/api/feeds/chunked/comments/", body=iter([chunks[i:i + 8192] for i in range(0, size, 8192)]),
                headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"}, encode_chunked=True,
            )
            response = connection.getresponse()
            raw = response.read()
            connection.close()
            self.assertEqual((response.status, response.getheader("Content-Type")), (413, "application/json"), raw[:300])
            self.assertEqual(json.loads(raw)["error"], "too_large")
            self.assertIn(answered_by, json.loads(raw)["detail"])

    def test_api_gets_json_502_when_both_instances_are_down(self):
        """With no instance answering, nginx's own 502 on /api/ is JSON (retry advice included)."""
        for instance in self.instances:
            instance.stop()
        for method, data in (("GET", None), ("POST", b'{"author": "a", "body": "b"}')):
            status, headers, raw = self.via_nginx(
                "/api/feeds/demo/comments/", method=method, data=data, headers={"Content-Type": "application/json"},
            )
            self.assertEqual((status, headers.get("Content-Type")), (502, "application/json"), raw[:300])
            self.assertEqual(json.loads(raw)["error"], "bad_gateway")
            self.assertTrue(json.loads(raw)["detail"])

    def test_post_in_flight_when_its_instance_dies_gets_json_502_and_its_retry_creates_it_once(self):
        """nginx does not resend a POST that reached an instance which then died (it may have been
        saved): the client gets JSON 502, retries with its Idempotency-Key, and the comment exists once."""
        feed = self.make_feed("in-flight")
        victim, other = self.instances
        other.stop()
        # Until nginx counts `other` as failed (max_fails), so that the post goes to the victim.
        errors_since = self.nginx.log_offset()
        wait_until(
            lambda: self.via_nginx("/api/feeds/")[0] == 200
            and self.nginx.log_since(errors_since).count(f"127.0.0.1:{other.port}/api/feeds/") >= 3,
            10, "nginx to mark the stopped instance as failed",
        )
        key = str(uuid.uuid4())
        url = self.nginx.http_url("/api/feeds/in-flight/comments/")
        data = json.dumps({"author": "ann", "body": "in flight"}).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": key}
        answer: list[tuple[int, dict[str, str], bytes]] = []
        os.kill(victim.pid, signal.SIGSTOP)  # it accepts no more; the kernel still queues connections
        try:
            poster = threading.Thread(target=lambda: answer.append(request(url, method="POST", data=data, headers=headers)))
            poster.start()
            wait_until(lambda: self.nginx_connections_to(victim), 10, "nginx to send the post to the stopped instance")
            # The other instance is back before the victim dies: nginx could resend the post
            # there, and must not (no `non_idempotent`): the victim may have saved it.
            other.start()
            other.wait_ready()
        finally:
            victim.kill()  # dies with the post unanswered
        poster.join(timeout=30)
        status, response_headers, raw = answer[0]
        self.assertEqual((status, response_headers.get("Content-Type")), (502, "application/json"), raw[:300])
        self.assertEqual(json.loads(raw)["error"], "bad_gateway")
        victim.start()
        victim.wait_ready()
        replies = [request(url, method="POST", data=data, headers=headers) for _ in range(2)]
        self.assertEqual([reply[0] for reply in replies], [201, 201], [reply[2][:200] for reply in replies])
        self.assertEqual(json.loads(replies[0][2])["id"], json.loads(replies[1][2])["id"])
        self.assertEqual(replies[1][1].get("Idempotent-Replayed"), "true")
        self.assertEqual(Comment.objects.filter(feed=feed).count(), 1)

    def nginx_connections_to(self, instance) -> int:
        """Return how many connections nginx's workers hold to the instance's port."""
        count = 0
        for worker in psutil.Process(self.nginx.pid).children():
            try:
                count += sum(1 for conn in worker.net_connections(kind="tcp") if conn.raddr and conn.raddr.port == instance.port)
            except psutil.Error:
                continue
        return count

    def test_form_post_with_csrf_works_on_a_non_default_port(self):
        """nginx keeps the port in Host, so a form post's Origin (host:port) matches without
        CSRF_TRUSTED_ORIGINS; the form's hidden Idempotency-Key makes a resubmission create nothing."""
        self.make_feed("forms")
        self.assertNotEqual(self.nginx.port, 80)
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect(), urllib.request.HTTPCookieProcessor(jar))
        status, _, page = self.via_nginx("/feeds/forms/", opener=opener)
        self.assertEqual(status, 200)
        html = page.decode()
        fields = {
            name: re.search(rf'name="{name}" value="([^"]+)"', html).group(1)
            for name in ("csrfmiddlewaretoken", "idempotency_key")
        }
        form = urllib.parse.urlencode({**fields, "author": "Ann", "body": "through nginx"}).encode()
        headers = {"Origin": self.nginx.origin, "Referer": self.nginx.http_url("/feeds/forms/"),
                   "Content-Type": "application/x-www-form-urlencoded"}
        for _ in range(2):  # the browser's "resubmit form": same fields, same key
            status, response_headers, raw = self.via_nginx("/feeds/forms/comments/", method="POST", data=form, headers=headers, opener=opener)
            self.assertEqual(status, 303, raw[:500])
        self.assertEqual(list(Comment.objects.filter(feed__slug="forms").values_list("body", flat=True)), ["through nginx"])


class WebSocketCapacityTests(NginxTestCase):
    # One worker takes every connection: the worst case of the kernel's spreading.
    nginx_worker_processes = 1
    sockets = 1200  # 2,400 connections in one worker: more than the 1,024 nginx defaults to

    @classmethod
    def setUpClass(cls) -> None:
        # Room for the sockets in this process and in the children started after this.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = 4 * cls.sockets
        if soft < wanted:
            if hard != resource.RLIM_INFINITY and hard < wanted:
                raise unittest.SkipTest(f"needs {wanted} open files, the hard limit is {hard}")
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        super().setUpClass()

    def test_one_nginx_worker_holds_many_proxied_websockets(self):
        """1,200 WebSockets through one nginx worker all open (each takes two of its connections),
        and the worker reports no shortage; the file's worker_connections allows 16,384."""
        self.make_feed("capacity")
        request_bytes = (
            f"GET /ws/feeds/capacity/?format=json HTTP/1.1\r\nHost: 127.0.0.1:{self.nginx.port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\nOrigin: {self.nginx.origin}\r\n\r\n"
        ).encode()
        log_offset = self.nginx.log_offset()
        sockets: list[socket.socket] = []
        answers: list[bytes] = []
        try:
            # In batches of 100, each answered before the next: capacity, not a handshake storm
            # (daphne gives a handshake 5 s, which a 2-core machine under a storm can exceed).
            for _ in range(0, self.sockets, 100):
                batch = [socket.create_connection(("127.0.0.1", self.nginx.port), timeout=30) for _ in range(100)]
                sockets.extend(batch)
                for sock in batch:
                    sock.sendall(request_bytes)
                for sock in batch:
                    head = b""
                    while b"\r\n\r\n" not in head:
                        chunk = sock.recv(4096)
                        if not chunk:
                            break
                        head += chunk
                    answers.append(head.split(b"\r\n", 1)[0])
            refused = [answer for answer in answers if not answer.startswith(b"HTTP/1.1 101")]
            self.assertEqual(refused, [], f"{len(refused)} of {self.sockets} handshakes failed\n{self.nginx.log_since(log_offset)[-3000:]}")
            self.assertNotIn("worker_connections are not enough", self.nginx.log_since(log_offset))
        finally:
            for sock in sockets:
                sock.close()


class TrustedTerminatorTests(NginxTestCase):
    instance_count = 1
    instance_env = {
        # Production defaults (DEBUG off: HTTPS redirect, secure cookies, HSTS) behind a TLS
        # terminator whose X-Forwarded-Proto is trusted: the README's terminator layout.
        "DEBUG": "0",
        "TRUST_X_FORWARDED_PROTO": "1",
        "TRUSTED_PROXY_COUNT": "2",
    }

    @classmethod
    def setUpClass(cls) -> None:
        # DEBUG off serves only collected static files: collect them once, as a release does.
        cls.static_root = tempfile.mkdtemp(prefix="livefeed-static-")
        env = {**os.environ, "DEBUG": "0", "STATIC_ROOT": cls.static_root, "SECRET_KEY": "edge-test-collectstatic-only"}
        collected = subprocess.run(
            [sys.executable, "manage.py", "collectstatic", "--noinput"], cwd=settings.BASE_DIR, env=env,
            capture_output=True, text=True, timeout=120,
        )
        if collected.returncode != 0:
            raise AssertionError(f"collectstatic failed: {collected.stderr}")
        cls.instance_env = {**cls.instance_env, "STATIC_ROOT": cls.static_root}
        super().setUpClass()

    @classmethod
    def tearDownClass(cls) -> None:
        super().tearDownClass()
        shutil.rmtree(cls.static_root, ignore_errors=True)

    def setUp(self) -> None:
        # MultiInstanceTestCase's setUp, with nginx readiness checked as the terminator would.
        super(NginxTestCase, self).setUp()
        wait_until(
            lambda: self.via_nginx("/api/feeds/", headers={"X-Forwarded-Proto": "https"})[0] == 200, 15,
            f"nginx to reach the instance\n{self.diagnostics()}",
        )

    def test_terminator_https_passes_through_nginx_without_a_redirect_loop(self):
        """X-Forwarded-Proto: https from the terminator reaches the app (no redirect); a plain
        request without it is redirected to https on the same host and port."""
        status, headers, raw = self.via_nginx("/api/feeds/", headers={"X-Forwarded-Proto": "https"})
        self.assertEqual(status, 200, f"{headers} {raw[:300]!r}")
        self.assertIn("max-age=", headers.get("Strict-Transport-Security", ""))  # the app saw https
        status, headers, _ = self.via_nginx("/api/feeds/")
        self.assertEqual(status, 301)
        self.assertEqual(headers["Location"], f"https://127.0.0.1:{self.nginx.port}/api/feeds/")


class NginxConfigTests(SimpleTestCase):
    """What deploy/nginx.conf promises that a short test cannot load: checked in the file itself."""

    def setUp(self) -> None:
        self.text = re.sub(r"#[^\n]*", "", NGINX_CONF.read_text())

    def directive(self, name: str) -> list[str]:
        return re.findall(rf"(?:^|[;{{}}\s]){name}\s+([^;]+);", self.text)

    def test_one_nginx_holds_10000_websockets(self):
        """Each proxied WebSocket takes 2 connections of one worker: 20,000 and the files for them."""
        connections = int(self.directive("worker_connections")[0])
        self.assertGreaterEqual(connections, 2 * 10_000)
        self.assertGreaterEqual(int(self.directive("worker_rlimit_nofile")[0]), connections)

    def test_every_nginx_error_on_the_api_is_json_in_the_contract_shape(self):
        """/api/ maps 413, 502, 503 and 504 to named locations that answer that status in JSON."""
        api = re.search(r"location /api/ \{(.*?)\}", self.text, re.DOTALL).group(1)
        for code in (413, 502, 503, 504):
            target = re.search(rf"error_page {code} = (@\w+);", api)
            self.assertIsNotNone(target, f"no error_page for {code} in location /api/")
            body = re.search(rf"location {target.group(1)} \{{(.*?)\n\s*\}}", self.text, re.DOTALL).group(1)
            self.assertIn("default_type application/json;", body)
            answer = re.search(rf"return {code} '([^']*)';", body)
            self.assertIsNotNone(answer, f"{target.group(1)} does not return {code}")
            error = json.loads(answer.group(1).replace("\\n", ""))
            self.assertEqual(set(error), {"error", "detail"})

    def test_upstream_state_is_shared_by_the_workers(self):
        """The upstream has a zone: failure state and least_conn counts are per nginx, not per worker."""
        upstream = re.search(r"upstream livefeed \{(.*?)\}", self.text, re.DOTALL).group(1)
        self.assertRegex(upstream, r"\bzone livefeed \d+k;")
        self.assertEqual(re.findall(r"server (\S+)", upstream), ["web1:8000", "web2:8000"])


class FormIdempotencyTests(TestCase):
    """The form view (with htmx or without) takes an Idempotency-Key like the API does."""

    @classmethod
    def setUpTestData(cls):
        cls.feed = Feed.objects.create(slug="keys", title="Keys", allow_anonymous=True)

    def post(self, body: str, *, key: str | None = None, field: str | None = None, htmx: bool = True):
        data = {"author": "Ann", "body": body, **({"idempotency_key": field} if field else {})}
        headers = {**({"HTTP_HX_REQUEST": "true"} if htmx else {}), **({"HTTP_IDEMPOTENCY_KEY": key} if key else {})}
        return self.client.post("/feeds/keys/comments/", data, **headers)

    def test_repeated_htmx_post_with_the_same_key_creates_one_comment_and_answers_like_a_success(self):
        key = str(uuid.uuid4())
        first, again = self.post("once", key=key), self.post("once", key=key)
        self.assertEqual((first.status_code, again.status_code), (200, 200))
        self.assertNotContains(again, "form-errors")
        self.assertEqual(Comment.objects.filter(feed=self.feed).count(), 1)

    def test_resubmitted_plain_form_with_its_hidden_key_creates_one_comment(self):
        page = self.client.get("/feeds/keys/").content.decode()
        key = re.search(r'name="idempotency_key" value="([^"]+)"', page).group(1)
        self.assertNotEqual(key, re.search(r'name="idempotency_key" value="([^"]+)"', self.client.get("/feeds/keys/").content.decode()).group(1))
        for _ in range(2):
            self.assertEqual(self.post("plain", field=key, htmx=False).status_code, 303)
        self.assertEqual(Comment.objects.filter(feed=self.feed).count(), 1)

    def test_the_header_wins_over_the_hidden_field(self):
        self.post("a", key="header-key", field="field-key")
        self.post("a", key="header-key", field="another-field-key")
        self.assertEqual(Comment.objects.filter(feed=self.feed).count(), 1)

    def test_same_key_for_another_comment_is_refused_inline(self):
        key = str(uuid.uuid4())
        self.post("one", key=key)
        response = self.post("two", key=key)
        self.assertEqual(response.status_code, 422)
        self.assertContains(response, "already used", status_code=422)
        self.assertEqual(Comment.objects.filter(feed=self.feed).count(), 1)

    def test_malformed_key_is_refused_inline(self):
        response = self.post("x", key="bad key with spaces")
        self.assertContains(response, "Idempotency-Key", status_code=400)
        self.assertFalse(Comment.objects.exists())
