"""SIGTERM drains a real daphne under HTTP load and exits within WS_SHUTDOWN_GRACE + 5 s.

Before the drain, daphne cancelled the applications at once: a Django sync-middleware
thread then waited forever in AsyncToSync for the stopped event loop and the process hung
at exit (1 run in 2, every run with back-to-back GETs). Now requests in flight finish, new
ones get 503, feed sockets get 1012, and the process exits by itself.
"""
from __future__ import annotations

import http.client
import json
import subprocess
import threading
import time

from tests.harness import MultiInstanceTestCase, wait_until

GRACE = 3.0  # WS_SHUTDOWN_GRACE's default
EXIT_BOUND = GRACE + 5  # the contract
WORKERS = 6
ROUNDS = 3


class LoadGenerator:
    """Threads doing back-to-back GETs and POSTs, each on a new connection, recording every outcome."""

    def __init__(self, port: int, slug: str) -> None:
        self.port = port
        self.slug = slug
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.outcomes: list[tuple[float, str, object]] = []  # (start, request, status or error)
        self.threads = [threading.Thread(target=self.work, args=(index,), daemon=True) for index in range(WORKERS)]

    def request(self, index: int, number: int) -> tuple[str, object]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            if number % 3 == 2:
                body = json.dumps({"author": f"load{index}", "body": f"during shutdown {number}"})
                connection.request(
                    "POST", f"/api/feeds/{self.slug}/comments/", body=body,
                    headers={"Content-Type": "application/json", "Accept": "application/json"},
                )
                what = "POST"
            else:
                path = f"/feeds/{self.slug}/" if number % 3 else f"/api/feeds/{self.slug}/comments/"
                connection.request("GET", path)
                what = f"GET {path}"
            response = connection.getresponse()
            response.read()
            return what, response.status
        finally:
            connection.close()

    def work(self, index: int) -> None:
        number = 0
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                what, outcome = self.request(index, number)
            except (OSError, http.client.HTTPException) as error:
                what, outcome = "request", repr(error)
                if isinstance(error, ConnectionRefusedError):
                    with self.lock:
                        self.outcomes.append((started, what, outcome))
                    return  # the listener is gone: the process is exiting
            with self.lock:
                self.outcomes.append((started, what, outcome))
            number += 1

    def start(self) -> LoadGenerator:
        for thread in self.threads:
            thread.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)


class SigtermDrainTests(MultiInstanceTestCase):
    instance_count = 1
    # The user default: posts from the one test address are rate limited, which still runs
    # every request through Django's middleware (a 429 is an answer like any other).
    instance_env = {"FEED_POST_RATE": "30/m", "WS_SHUTDOWN_GRACE": str(GRACE)}

    def test_sigterm_under_http_load_exits_in_time_and_answers_requests_in_flight(self):
        """Three stops under concurrent GETs and POSTs: each exits by itself within grace + 5 s,
        requests sent before SIGTERM got an HTTP status, and readers got 1012."""
        instance = self.instances[0]
        self.make_feed("shutdown")
        for round_ in range(ROUNDS):
            with self.subTest(round=round_):
                if not instance.running:
                    instance.start()
                    instance.wait_ready()
                log_start = instance.log_offset()
                readers = [self.reader(instance, "shutdown") for _ in range(2)]
                load = LoadGenerator(instance.port, "shutdown").start()
                try:
                    wait_until(lambda: len(load.outcomes) >= 4 * WORKERS, 30, "requests under load")
                    sigterm_at = time.monotonic()
                    instance.terminate()
                    try:
                        instance.wait_exit(EXIT_BOUND)
                    except subprocess.TimeoutExpired:
                        instance.kill()
                        self.fail(f"still running {EXIT_BOUND}s after SIGTERM\n{instance.log_since(log_start)}")
                    exited_after = time.monotonic() - sigterm_at
                finally:
                    load.finish()
                log = instance.log_since(log_start)
                self.assertLess(exited_after, EXIT_BOUND)
                self.assertNotIn("exiting now", log, "the drain left a thread holding the process")
                before = [(what, outcome) for started, what, outcome in load.outcomes if started < sigterm_at]
                unanswered = [(what, outcome) for what, outcome in before if not isinstance(outcome, int)]
                self.assertEqual(unanswered, [], f"requests sent before SIGTERM got no answer\n{log}")
                self.assertTrue(all(outcome in (200, 201, 429, 503) for _, outcome in before), before)
                for reader in readers:
                    self.assertEqual(reader.wait_closed(10), 1012)
                self.assertNotIn("Traceback", log)
