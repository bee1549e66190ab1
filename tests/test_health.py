"""/healthz and /readyz: in-process for the middleware rules, real daphne processes for the checks."""
import json
import socket
import sys
import threading
import urllib.error

from django.test import AsyncClient, SimpleTestCase, TestCase, override_settings

from livefeed import lifecycle
from tests.harness import NO_PROXY, DaphneInstance, MultiInstanceTestCase, RedisServer, wait_until


def get(url, timeout=5, headers=None):
    """Return (status, body bytes, headers) of a GET, also for 4xx/5xx answers."""
    import urllib.request

    request = urllib.request.Request(url, headers=headers or {})
    try:
        with NO_PROXY.open(request, timeout=timeout) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers


class ProbeProcess(DaphneInstance):
    """A daphne instance that may start without a working database: ready means /healthz answers."""

    def __init__(self, *args, daphne_args=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.daphne_args = list(daphne_args)

    def start(self):
        self._spawn(
            [sys.executable, "-m", "daphne", *self.daphne_args, "-e", f"tcp:port={self.port}:interface=127.0.0.1:backlog=4096", "livefeed.asgi:application"],
            env=self.env,
        )

    def wait_ready(self, timeout=60):
        def answers():
            if not self.running:
                raise AssertionError(f"daphne {self.name} exited with {self.process.returncode}:\n{self.log()}")
            try:
                return get(self.http_url("/healthz"), timeout=2)[0] == 200
            except OSError:
                return False

        wait_until(answers, timeout, f"daphne {self.name} to answer /healthz", interval=0.1)


def readiness(instance):
    status, body, _ = get(instance.http_url("/readyz"), timeout=5)
    return status, json.loads(body)


class ProbeRulesTests(TestCase):
    """The probes answer before the HTTPS redirect, the host check and the session."""

    def test_healthz_answers_ok(self):
        response = self.client.get("/healthz")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json(), {"status": "ok"})

    def test_readyz_answers_ok_with_the_database_check(self):
        response = self.client.get("/readyz")
        self.assertEqual(response.status_code, 200, response.content)
        self.assertEqual(response.json(), {"status": "ok", "checks": {"database": "ok"}})

    @override_settings(DEBUG=False, SECURE_SSL_REDIRECT=True, ALLOWED_HOSTS=["feed.example.com"])
    def test_probes_are_not_redirected_to_https_nor_host_checked(self):
        """A balancer probes by address over plain HTTP: no 301, no 400 for the unknown host."""
        for path in ("/healthz", "/readyz"):
            response = self.client.get(path, HTTP_HOST="10.0.0.5:8000")
            self.assertEqual(response.status_code, 200, (path, response.status_code))
            self.assertNotIn("Set-Cookie", response.headers)
        # The rest of the site still redirects and checks hosts: the exemption is exact.
        self.assertEqual(self.client.get("/", HTTP_HOST="feed.example.com").status_code, 301)
        self.assertEqual(self.client.get("/healthz/", HTTP_HOST="10.0.0.5:8000").status_code, 400)

    def test_readyz_is_unavailable_while_draining(self):
        lifecycle.start_draining()
        self.addCleanup(setattr, lifecycle, "_draining_since", None)  # the process-wide flag: reset for the next tests
        response = self.client.get("/readyz")
        self.assertEqual(response.status_code, 503)
        self.assertEqual(response.json()["status"], "unavailable")
        self.assertIn("draining", response.json()["checks"])
        self.assertEqual(self.client.get("/healthz").status_code, 200)  # still serving what is in flight

    async def test_async_path_answers_the_same(self):
        client = AsyncClient()
        response = await client.get("/readyz")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json()["checks"], {"database": "ok"})


class ReadinessWithRedisTests(MultiInstanceTestCase):
    """A real daphne on a throwaway Redis: /readyz follows Redis; probes stay out of the access log."""

    instance_count = 0

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        from tests.harness import subprocess_database_url

        cls.instances = [
            ProbeProcess("P", redis_url=cls.redis.url, database_url=subprocess_database_url(), daphne_args=["--access-log", "-"])
        ]
        try:
            cls.instances[0].start()
            cls.instances[0].wait_ready()
        except BaseException:
            cls._stop_processes()
            raise

    def test_readyz_names_redis_while_it_is_down_and_recovers(self):
        instance = self.instances[0]
        self.assertEqual(readiness(instance), (200, {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}))
        self.redis.stop()
        status, body = wait_until(lambda: (lambda r: r if r[0] == 503 else None)(readiness(instance)), 10, "503 from /readyz")
        self.assertEqual(body["status"], "unavailable")
        self.assertEqual(body["checks"]["database"], "ok")
        self.assertTrue(body["checks"]["redis"].startswith("error: "), body)
        self.assertEqual(get(instance.http_url("/healthz"))[0], 200)
        self.redis.start()
        wait_until(lambda: readiness(instance)[0] == 200, 10, "200 from /readyz once Redis is back")

    def test_probes_are_left_out_of_the_access_log(self):
        instance = self.instances[0]
        offset = instance.log_offset()
        for path in ("/healthz", "/readyz", "/metrics"):
            get(instance.http_url(path))
        get(instance.http_url("/api/feeds/"))  # logged: it marks the end of what the probes wrote
        log = wait_until(lambda: (lambda text: text if "/api/feeds/" in text else None)(instance.log_since(offset)), 10, "the access log line")
        self.assertIn('"GET /api/feeds/"', log)
        for path in ("/healthz", "/readyz", "/metrics"):
            self.assertNotIn(f"GET {path}", log)


class SilentServer:
    """A TCP server that accepts connections and never answers (a hung database)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.accepted.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self):
        for conn in self.accepted:
            conn.close()
        self.sock.close()


class ReadinessWithoutDatabaseTests(SimpleTestCase):
    """A real daphne whose database refuses or hangs: /readyz is 503 within about a second."""

    def start(self, database_url):
        redis = RedisServer()
        redis.start()
        self.addCleanup(redis.close_log)
        self.addCleanup(redis.kill)
        instance = ProbeProcess("D", redis_url=redis.url, database_url=database_url)
        instance.start()
        self.addCleanup(instance.close_log)
        self.addCleanup(instance.kill)
        instance.wait_ready()
        return instance

    def test_readyz_names_a_refusing_database(self):
        port = socket.socket()
        port.bind(("127.0.0.1", 0))
        closed_port = port.getsockname()[1]
        port.close()  # nothing listens there now
        instance = self.start(f"postgres://nobody@127.0.0.1:{closed_port}/nothing")
        status, body = readiness(instance)
        self.assertEqual(status, 503)
        self.assertEqual(body["checks"]["redis"], "ok")
        self.assertTrue(body["checks"]["database"].startswith("error: OperationalError"), body)
        self.assertNotIn("nobody", body["checks"]["database"])

    def test_readyz_gives_up_on_a_hung_database_after_a_second(self):
        server = SilentServer()
        self.addCleanup(server.close)
        instance = self.start(f"postgres://nobody@127.0.0.1:{server.port}/nothing")
        import time

        started = time.monotonic()
        status, body = readiness(instance)
        self.assertLess(time.monotonic() - started, 3)
        self.assertEqual(status, 503)
        self.assertEqual(body["checks"]["database"], "error: no answer within 1 s")
