"""Request-size limits, security headers and production settings."""
import json
import os
import secrets
import select
import socket
import subprocess
import sys
import tempfile
import time
from datetime import timedelta

from asgiref.testing import ApplicationCommunicator
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.test import Client, SimpleTestCase, TestCase, TransactionTestCase, override_settings
from django.utils import timezone
from selenium.webdriver.common.by import By

from feed.models import Comment, Feed
from livefeed.asgi import application
from livefeed.limits import RequestBodyLimitMiddleware
from tests.browser import Browser, require_browser
from tests.harness import (
    DaphneInstance,
    MultiInstanceTestCase,
    nothing_but_presence,
    receive_skipping_presence,
    subprocess_database_url,
)

LIMIT = 4096
# The API's error shape, as feed.api_errors answers a body Django itself finds too large.
TOO_LARGE = {"error": "too_large", "detail": f"The request body is larger than {LIMIT} bytes."}


def http_scope(path, *, method="POST", headers=()):
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


class SpyApp:
    """An ASGI app that reads the whole body like Django does, then answers 200."""

    def __init__(self):
        self.called = False
        self.body = b""
        self.disconnected = False

    async def __call__(self, scope, receive, send):
        self.called = True
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                return
            self.body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def exchange(app, scope, chunks, timeout=10):
    """Send body chunks (stopping once a response starts); return (status, headers, body, chunks sent)."""
    communicator = ApplicationCommunicator(app, scope)
    sent = 0
    for index, chunk in enumerate(chunks):
        if not communicator.output_queue.empty():
            break
        await communicator.send_input(
            {"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
        )
        sent += 1
    start = await communicator.receive_output(timeout)
    assert start["type"] == "http.response.start", start
    body = b""
    while True:
        message = await communicator.receive_output(timeout)
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await communicator.wait(timeout)
    return start["status"], dict(start["headers"]), body, sent


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=LIMIT)
class RequestBodyLimitMiddlewareTests(SimpleTestCase):
    async def test_a_declared_oversized_body_is_refused_before_the_app_runs(self):
        """Content-Length over the limit: 413 at once; the application never sees the request."""
        spy = SpyApp()
        scope = http_scope("/api/feeds/demo/comments/", headers=[(b"content-length", str(LIMIT + 1).encode())])
        status, headers, body, _ = await exchange(RequestBodyLimitMiddleware(spy), scope, [b"x" * 10])
        self.assertEqual(status, 413)
        self.assertFalse(spy.called)
        self.assertEqual(headers[b"content-type"], b"application/json")
        self.assertEqual(json.loads(body)["error"], "too_large")

    async def test_a_streamed_body_is_cut_off_once_it_passes_the_limit(self):
        """A chunked body is refused at the chunk that passes the limit; the app gets a disconnect."""
        spy = SpyApp()
        chunks = [b"y" * 1000] * 20
        status, _, _, _ = await exchange(RequestBodyLimitMiddleware(spy), http_scope("/api/x/"), chunks)
        self.assertEqual(status, 413)
        self.assertTrue(spy.disconnected)
        self.assertLessEqual(len(spy.body), LIMIT)

    async def test_a_body_at_the_limit_reaches_the_app(self):
        """Exactly the limit is allowed, streamed or declared."""
        for headers in ([(b"content-length", str(LIMIT).encode())], []):
            spy = SpyApp()
            status, _, _, _ = await exchange(
                RequestBodyLimitMiddleware(spy), http_scope("/", headers=headers), [b"z" * (LIMIT // 2)] * 2
            )
            self.assertEqual(status, 200)
            self.assertEqual(len(spy.body), LIMIT)

    async def test_pages_get_a_plain_text_413(self):
        """Outside /api/ the 413 is plain text, not JSON."""
        scope = http_scope("/feeds/demo/comments/", headers=[(b"content-length", b"99999999")])
        status, headers, body, _ = await exchange(RequestBodyLimitMiddleware(SpyApp()), scope, [b""])
        self.assertEqual(status, 413)
        self.assertTrue(headers[b"content-type"].startswith(b"text/plain"))
        self.assertIn(b"Payload Too Large", body)

    async def test_a_malformed_content_length_is_a_bad_request(self):
        """Content-Length that is not a number is refused with 400."""
        scope = http_scope("/api/x/", headers=[(b"content-length", b"12, 99")])
        status, _, _, _ = await exchange(RequestBodyLimitMiddleware(SpyApp()), scope, [b""])
        self.assertEqual(status, 400)

    async def test_the_served_application_is_wrapped(self):
        """livefeed.asgi's HTTP application answers 413 with Django behind it, and only once."""
        scope = http_scope("/api/feeds/demo/comments/")
        status, _, body, _ = await exchange(application, scope, [b"{" + b" " * 1000] * 10)
        self.assertEqual(status, 413)
        self.assertEqual(json.loads(body), TOO_LARGE)


def raw_http(port, head, body_chunks, *, pause=0.02, timeout=30):
    """Send a request over a raw socket, stopping as soon as the server answers.

    Return (status line, headers, body, bytes of body sent).
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sent = 0
    try:
        sock.sendall(head)
        for chunk in body_chunks:
            if select.select([sock], [], [], pause)[0]:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not select.select([sock], [], [], 0.5)[0]:
                if b"\r\n\r\n" in data:
                    break
                continue
            piece = sock.recv(65536)
            if not piece:
                break
            data += piece
    finally:
        sock.close()
    head_part, _, body = data.partition(b"\r\n\r\n")
    lines = head_part.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return lines[0], {k.lower(): v for k, v in headers.items()}, body, sent


class DaphneBodyLimitTests(TransactionTestCase):
    """A real daphne process: oversized bodies are answered while they are still arriving."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.instance = DaphneInstance(
            "limits", redis_url="", database_url=subprocess_database_url(),
            env={"DATA_UPLOAD_MAX_MEMORY_SIZE": str(LIMIT)},
        )
        cls.instance.start()
        cls.addClassCleanup(cls.instance.stop)
        cls.instance.wait_ready(90)

    def head(self, extra):
        return (
            b"POST /api/feeds/demo/comments/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\n" + extra + b"\r\n"
        )

    def test_a_huge_declared_body_is_refused_without_waiting_for_it(self):
        """Content-Length of 50 MB: 413 JSON after a few bytes; daphne does not wait for the rest."""
        status, headers, body, sent = raw_http(
            self.instance.port, self.head(b"Content-Length: 50000000\r\n"), [b"x" * 1024] * 4, pause=0.5
        )
        self.assertEqual(status, "HTTP/1.1 413 Payload Too Large", self.instance.log())
        self.assertEqual(headers["content-type"], "application/json")
        self.assertEqual(json.loads(body)["error"], "too_large")
        self.assertLess(sent, 50000000)

    def test_an_endless_chunked_body_is_cut_off(self):
        """A chunked body that never ends gets 413 once it passes the limit, long before 4 MB."""
        chunk = b"4000\r\n" + b"y" * 0x4000 + b"\r\n"
        total = 256 * len(chunk)
        status, _, body, sent = raw_http(
            self.instance.port, self.head(b"Transfer-Encoding: chunked\r\n"), [chunk] * 256
        )
        self.assertEqual(status, "HTTP/1.1 413 Payload Too Large", self.instance.log())
        self.assertEqual(json.loads(body), TOO_LARGE)
        self.assertLess(sent, total)

    def test_the_server_keeps_serving_after_refusing(self):
        """After a refused body, the next request (a small body) is served normally."""
        raw_http(self.instance.port, self.head(b"Content-Length: 9999999\r\n"), [b"x"])
        status, _, _, _ = raw_http(
            self.instance.port,
            b"GET /admin/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            [],
        )
        self.assertEqual(status, "HTTP/1.1 200 OK", self.instance.log())


def csp_directives(header):
    return {part.split()[0]: part.split()[1:] for part in header.split(";") if part.strip()}


class SecurityHeadersTests(SimpleTestCase):
    def test_pages_carry_a_content_security_policy_without_inline_script(self):
        """script and style only from this origin, no inline or eval; no framing, plugins or base tricks."""
        response = self.client.get("/admin/login/")
        policy = csp_directives(response["Content-Security-Policy"])
        self.assertEqual(policy["script-src"], ["'self'"])
        self.assertEqual(policy["style-src"], ["'self'"])
        self.assertEqual(policy["frame-ancestors"], ["'none'"])
        self.assertEqual(policy["object-src"], ["'none'"])
        self.assertEqual(policy["base-uri"], ["'self'"])
        self.assertEqual(policy["form-action"], ["'self'"])
        self.assertNotIn("unsafe", response["Content-Security-Policy"])

    def test_the_policy_allows_websockets_to_the_same_host_only(self):
        """connect-src: this origin and ws/wss of the requested host, nothing else."""
        response = self.client.get("/admin/login/", HTTP_HOST="localhost:8000")
        self.assertEqual(
            csp_directives(response["Content-Security-Policy"])["connect-src"],
            ["'self'", "ws://localhost:8000", "wss://localhost:8000"],
        )

    def test_responses_forbid_sniffing_framing_and_cross_origin_referrers(self):
        """nosniff, X-Frame-Options DENY, Referrer-Policy same-origin."""
        response = self.client.get("/admin/login/")
        self.assertEqual(response["X-Content-Type-Options"], "nosniff")
        self.assertEqual(response["X-Frame-Options"], "DENY")
        self.assertEqual(response["Referrer-Policy"], "same-origin")

    def test_error_responses_carry_the_policy_too(self):
        """A 404 is covered as well."""
        response = self.client.get("/no-such-page/")
        self.assertEqual(response.status_code, 404)
        self.assertIn("script-src 'self'", response["Content-Security-Policy"])


PRODUCTION_PROBE = """
import json
import django
django.setup()
from django.conf import settings
from django.test import Client
from django.test.utils import override_settings

# collectstatic's manifest is not built here; only static URL resolution changes.
with override_settings(STORAGES={**settings.STORAGES, "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}):
    client = Client()
    plain = client.get("/admin/login/", HTTP_HOST="feed.example.com")
    secure = client.get("/admin/login/", HTTP_HOST="feed.example.com", secure=True)
    login = client.post("/admin/login/?next=/admin/", {"username": "probe", "password": "probe-pass-123"},
                        HTTP_HOST="feed.example.com", secure=True)
print(json.dumps({
    "plain_status": plain.status_code,
    "plain_location": plain.get("Location", ""),
    "hsts": secure.get("Strict-Transport-Security", ""),
    "csrf_cookie": {"secure": bool(secure.cookies["csrftoken"]["secure"]),
                    "samesite": secure.cookies["csrftoken"]["samesite"]},
    "login_status": login.status_code,
    "session_cookie": {"secure": bool(login.cookies["sessionid"]["secure"]),
                       "httponly": bool(login.cookies["sessionid"]["httponly"]),
                       "samesite": login.cookies["sessionid"]["samesite"]},
}))
"""


STATIC_PROBE = """
import json, re
import livefeed.asgi  # what daphne loads: refuses to start without the manifest
from django.test import Client

client = Client(HTTP_HOST="feed.example.com")
page = client.get("/", secure=True)
css_url = re.search(r'href="(/static/css/feed[^"]*)"', page.content.decode()).group(1)
css = client.get(css_url, secure=True)
print(json.dumps({"page_status": page.status_code, "css_url": css_url, "css_status": css.status_code,
                  "css_type": css.headers.get("Content-Type", "")}))
"""


class ProductionSettingsTests(TransactionTestCase):
    """The settings module with DEBUG off, in a fresh process as a server would load it."""

    def production_env(self, **extra):
        env = {key: value for key, value in os.environ.items() if key not in {"DEBUG", "REDIS_URL"}}
        env.update(
            DEBUG="0",
            SECRET_KEY=secrets.token_urlsafe(64),
            ALLOWED_HOSTS="feed.example.com",
            DATABASE_URL=subprocess_database_url(),
            DJANGO_SETTINGS_MODULE="livefeed.settings",
            **extra,
        )
        for key in ("SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_HSTS_SECONDS"):
            env.pop(key, None)
        return env

    def run_python(self, args, env):
        return subprocess.run(
            [sys.executable, *args], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=120
        )

    def test_check_deploy_is_clean(self):
        """`manage.py check --deploy` reports nothing, not even warnings, for a production configuration."""
        result = self.run_python(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], self.production_env())
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("no issues", result.stdout)

    def test_production_redirects_to_https_sets_hsts_and_secure_cookies(self):
        """DEBUG off: HTTP redirects to HTTPS; HTTPS answers carry HSTS; session and CSRF cookies are Secure."""
        get_user_model().objects.create_user("probe", password="probe-pass-123", is_staff=True)
        result = self.run_python(["-c", PRODUCTION_PROBE], self.production_env())
        self.assertEqual(result.returncode, 0, result.stderr)
        probe = json.loads(result.stdout.strip().splitlines()[-1])
        self.assertEqual(probe["plain_status"], 301)
        self.assertTrue(probe["plain_location"].startswith("https://feed.example.com/"))
        self.assertIn("max-age=31536000", probe["hsts"])
        self.assertIn("includeSubDomains", probe["hsts"])
        self.assertEqual(probe["csrf_cookie"], {"secure": True, "samesite": "Lax"})
        self.assertEqual(probe["login_status"], 302)
        self.assertEqual(probe["session_cookie"], {"secure": True, "httponly": True, "samesite": "Lax"})

    def test_production_server_refuses_to_start_without_collected_static_files(self):
        """DEBUG off and no collectstatic: loading the ASGI application fails with the command to run."""
        with tempfile.TemporaryDirectory() as empty:
            result = self.run_python(["-c", "import livefeed.asgi"], self.production_env(STATIC_ROOT=empty))
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("manage.py collectstatic", result.stderr)

    def test_production_server_serves_pages_and_hashed_static_files_after_collectstatic(self):
        """DEBUG off after collectstatic: one ASGI application serves the page and its static files itself."""
        with tempfile.TemporaryDirectory() as static_root:
            env = self.production_env(STATIC_ROOT=static_root)
            collected = self.run_python(["manage.py", "collectstatic", "--noinput"], env)
            self.assertEqual(collected.returncode, 0, collected.stderr)
            result = self.run_python(["-c", STATIC_PROBE], env)
        self.assertEqual(result.returncode, 0, result.stderr)
        probe = json.loads(result.stdout.strip().splitlines()[-1])
        self.assertEqual(probe["page_status"], 200)
        self.assertRegex(probe["css_url"], r"^/static/css/feed\.[0-9a-f]{12}\.css$")
        self.assertEqual(probe["css_status"], 200)
        self.assertIn("text/css", probe["css_type"])

    def test_a_missing_secret_key_stops_production_start_up(self):
        """DEBUG off without SECRET_KEY: the settings refuse to load."""
        env = self.production_env()
        env.pop("SECRET_KEY")
        result = self.run_python(["manage.py", "check"], env)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("SECRET_KEY must be set", result.stderr)


WS_ORIGIN = (b"origin", b"http://localhost")


@override_settings(WS_SESSION_CHECK_INTERVAL=0.2)
class MembersOnlyStreamSessionTests(TransactionTestCase):
    """A members-only feed's stream ends when the session that opened it ends."""

    def setUp(self):
        self.club = Feed.objects.create(slug="club", title="Club", allow_anonymous=False)
        self.user = get_user_model().objects.create_user("member", password="member-pass-123")
        self.club.members.add(self.user)
        client = Client()
        client.force_login(self.user)
        self.session_key = client.cookies["sessionid"].value

    async def open_stream(self, slug="club", origin=WS_ORIGIN, session_key=None):
        cookie = (b"cookie", f"sessionid={session_key or self.session_key}".encode())
        communicator = WebsocketCommunicator(application, f"/ws/feeds/{slug}/?format=json", headers=[origin, cookie])
        connected, _ = await communicator.connect(timeout=10)
        return connected, communicator

    async def assert_closed_with_session_ended(self, communicator):
        output = await receive_skipping_presence(communicator, timeout=10)
        self.assertEqual(output, {"type": "websocket.close", "code": 4401})

    async def test_signing_out_closes_the_stream(self):
        """The session is deleted (sign-out): the socket is closed with 4401 within the check interval."""
        connected, communicator = await self.open_stream()
        try:
            self.assertTrue(connected)
            self.assertTrue(await nothing_but_presence(communicator, 0.7))  # checks pass while signed in
            await database_sync_to_async(SessionStore(self.session_key).delete)()
            await self.assert_closed_with_session_ended(communicator)
        finally:
            await communicator.disconnect()

    async def test_an_expired_session_closes_the_stream(self):
        """The session expires in the store: the socket is closed."""
        connected, communicator = await self.open_stream()
        try:
            self.assertTrue(connected)
            await database_sync_to_async(
                Session.objects.filter(session_key=self.session_key).update
            )(expire_date=timezone.now() - timedelta(seconds=1))
            await self.assert_closed_with_session_ended(communicator)
        finally:
            await communicator.disconnect()

    async def test_a_password_change_or_deactivation_closes_the_stream(self):
        """Changing the password (other sessions invalid) or deactivating the user ends the stream."""
        for change in ("password", "deactivate"):
            with self.subTest(change=change):
                session_key = await database_sync_to_async(self.fresh_session)()
                connected, communicator = await self.open_stream(session_key=session_key)
                try:
                    self.assertTrue(connected)
                    await database_sync_to_async(self.change_user)(change)
                    await self.assert_closed_with_session_ended(communicator)
                finally:
                    await communicator.disconnect()
                    await database_sync_to_async(get_user_model().objects.filter(pk=self.user.pk).update)(
                        is_active=True
                    )

    def change_user(self, change):
        user = get_user_model().objects.get(pk=self.user.pk)
        if change == "password":
            user.set_password(secrets.token_urlsafe(12))
        else:
            user.is_active = False
        user.save()

    def fresh_session(self):
        client = Client()
        client.force_login(get_user_model().objects.get(pk=self.user.pk))
        return client.cookies["sessionid"].value

    async def test_open_feeds_are_not_watched(self):
        """On a feed anyone may read, signing out does not close the stream."""
        await database_sync_to_async(Feed.objects.create)(slug="open", title="Open", allow_anonymous=True)
        connected, communicator = await self.open_stream(slug="open")
        try:
            self.assertTrue(connected)
            await database_sync_to_async(SessionStore(self.session_key).delete)()
            self.assertTrue(await nothing_but_presence(communicator, 1.0))
        finally:
            await communicator.disconnect()

    async def test_a_cross_site_origin_is_refused_even_with_a_valid_session(self):
        """A page on another site cannot open the stream with the member's cookie."""
        connected, _ = await self.open_stream(origin=(b"origin", b"https://evil.example"))
        self.assertFalse(connected)

    async def test_a_members_only_stream_needs_a_signed_in_user(self):
        """Without a session the members-only handshake is refused."""
        communicator = WebsocketCommunicator(application, "/ws/feeds/club/?format=json", headers=[WS_ORIGIN])
        connected, _ = await communicator.connect(timeout=10)
        self.assertFalse(connected)


class PostingRightsAndTextTests(TestCase):
    """Members-only feeds and cleaned text, end to end through the form and the API."""

    def setUp(self):
        self.club = Feed.objects.create(slug="club", title="Club", allow_anonymous=False)
        self.open = Feed.objects.create(slug="open", title="Open", allow_anonymous=True)
        self.member = get_user_model().objects.create_user("member", password="member-pass-123")
        self.outsider = get_user_model().objects.create_user("outsider", password="outsider-pass-123")
        self.club.members.add(self.member)

    def form_post(self, slug, user=None, **data):
        client = Client()
        if user is not None:
            client.force_login(user)
        return client.post(f"/feeds/{slug}/comments/", {"author": "", "body": "hello", **data})

    def test_the_form_refuses_anonymous_and_non_member_posts_to_a_members_only_feed(self):
        """No session, or signed in without membership: the 404 of an unknown feed, without its title; a member posts."""
        anonymous = self.form_post("club")
        outsider = self.form_post("club", user=self.outsider)
        member = self.form_post("club", user=self.member)
        for refused in (anonymous, outsider):
            self.assertEqual(refused.status_code, 404)
            self.assertNotIn("Club", refused.content.decode())
        self.assertEqual(member.status_code, 303)
        self.assertEqual(list(Comment.objects.values_list("author", flat=True)), ["member"])

    def test_anonymous_posters_must_give_a_display_name(self):
        """On an open feed a blank (or control-characters-only) name is refused, by form and API."""
        form = self.form_post("open", author="\x00\u202e ")
        api = self.client.post(
            "/api/feeds/open/comments/", {"author": " \x07 ", "body": "hi"}, content_type="application/json"
        )
        self.assertContains(form, "A display name is required.", status_code=422)
        self.assertEqual(api.status_code, 400)
        self.assertEqual(api.json()["fields"]["author"], ["A display name is required."])
        self.assertFalse(Comment.objects.exists())

    def test_control_characters_are_stripped_and_lengths_limited_through_the_api(self):
        """NUL, escape sequences and bidi overrides are removed; names stay on one line; limits hold."""
        response = self.client.post(
            "/api/feeds/open/comments/",
            {"author": " Ann\n\x00\u202eEvil ", "body": "a\x00b\x1b[2Jc\r\nd\u2066e"},
            content_type="application/json",
        )
        self.assertEqual(response.status_code, 201)
        self.assertEqual((response.json()["author"], response.json()["body"]), ("Ann Evil", "ab[2Jc\nde"))
        stored = Comment.objects.get()
        self.assertEqual((stored.author, stored.body), ("Ann Evil", "ab[2Jc\nde"))
        too_long = self.client.post(
            "/api/feeds/open/comments/", {"author": "A" * 81, "body": "x"}, content_type="application/json"
        )
        self.assertEqual(too_long.status_code, 400)
        self.assertIn("author", too_long.json()["fields"])


class ContentSecurityPolicyBrowserTests(MultiInstanceTestCase):
    """The pages work in Chromium under the policy, and the policy reports nothing."""

    instance_count = 1

    @classmethod
    def setUpClass(cls):
        require_browser()
        super().setUpClass()
        try:
            cls.browser = Browser()
        except BaseException:
            cls._stop_processes()
            raise
        cls.addClassCleanup(cls.browser.quit)

    def csp_reports(self):
        return [entry for entry in self.browser.console_errors() if "Content Security Policy" in entry.get("message", "")]

    def test_the_feed_page_goes_live_and_posts_without_policy_violations(self):
        """Load the page, go live, post through the form, see the comment arrive: no CSP report."""
        self.make_feed("csp")
        instance = self.instances[0]
        driver = self.browser.driver
        driver.get(instance.http_url("/feeds/csp/"))
        self.browser.wait_for(
            lambda: driver.find_element(By.CSS_SELECTOR, "#connection-state").get_attribute("data-state") == "live",
            message="the page to go live",
        )
        driver.find_element(By.CSS_SELECTOR, "form#comment-form [name='author']").send_keys("Ada")
        driver.find_element(By.CSS_SELECTOR, "form#comment-form [name='body']").send_keys("under a strict policy")
        driver.find_element(By.CSS_SELECTOR, "form#comment-form [type='submit']").click()
        self.browser.wait_for(
            lambda: any(c["body"] == "under a strict policy" for c in self.browser.comments()),
            message="the posted comment to arrive live",
        )
        self.assertEqual(self.csp_reports(), [])

    def test_inline_script_is_blocked(self):
        """An inline script injected into the page is refused by the browser, and says so."""
        self.make_feed("csp")
        self.browser.driver.get(self.instances[0].http_url("/feeds/csp/"))
        self.browser.console_errors()
        self.browser.js(
            "const s = document.createElement('script'); s.textContent = 'window.__inlineRan = true';"
            "document.body.appendChild(s);"
        )
        self.browser.wait_for(lambda: self.csp_reports(), message="a CSP report for the inline script")
        self.assertIsNone(self.browser.js("return window.__inlineRan"))
