"""Logs: JSON lines with the request id; the request id middleware; the start-up summary."""
import io
import json
import logging

from django.test import SimpleTestCase, TestCase, override_settings

from livefeed.logging import JsonFormatter, RequestIdFilter
from tests.harness import MultiInstanceTestCase, wait_until
from tests.test_health import get


def capture_json(test, logger_name):
    """Return a stream that receives the logger's records as the JSON handler formats them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    test.addCleanup(logger.removeHandler, handler)
    return stream


class JsonFormatterTests(SimpleTestCase):
    def test_a_record_is_one_json_line_with_time_level_logger_message(self):
        stream = capture_json(self, "tests.json")
        logger = logging.getLogger("tests.json")
        logger.propagate = False
        self.addCleanup(setattr, logger, "propagate", True)
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            logger.exception("Failed %s", "here")
        lines = stream.getvalue().splitlines()
        self.assertEqual(len(lines), 1)
        entry = json.loads(lines[0])
        self.assertEqual((entry["level"], entry["logger"], entry["message"]), ("ERROR", "tests.json", "Failed here"))
        self.assertRegex(entry["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")
        self.assertIn("ValueError: boom", entry["exc_info"])
        self.assertNotIn("request_id", entry)  # outside a request


class RequestIdTests(TestCase):
    def test_each_response_has_a_new_id_and_the_request_logs_carry_it(self):
        stream = capture_json(self, "django.request")
        first = self.client.get("/no-such-page/")
        second = self.client.get("/no-such-page/")
        self.assertEqual(first.status_code, 404)
        self.assertRegex(first["X-Request-ID"], r"^[0-9a-f]{32}$")
        self.assertNotEqual(first["X-Request-ID"], second["X-Request-ID"])
        ids = [json.loads(line)["request_id"] for line in stream.getvalue().splitlines()]
        self.assertEqual(ids, [first["X-Request-ID"], second["X-Request-ID"]])

    def test_a_client_cannot_choose_its_id(self):
        response = self.client.get("/healthz/", HTTP_X_REQUEST_ID="chosen-by-client")
        self.assertNotEqual(response["X-Request-ID"], "chosen-by-client")

    @override_settings(TRUSTED_PROXIES=["127.0.0.1"])
    def test_a_trusted_proxys_id_is_kept_if_well_formed(self):
        self.assertEqual(self.client.get("/", HTTP_X_REQUEST_ID="abc-123").get("X-Request-ID"), "abc-123")
        self.assertNotEqual(self.client.get("/", HTTP_X_REQUEST_ID="bad id\u00e9").get("X-Request-ID"), "bad id\u00e9")


class ServerLogTests(MultiInstanceTestCase):
    """A real daphne with LOG_FORMAT=json: every line is JSON, and start-up says what is in force."""

    instance_count = 1
    # A rate and a collector threshold to find in the start-up lines.
    instance_env = {"LOG_FORMAT": "json", "FEED_POST_RATE": "7/m", "GC_THRESHOLD_1": "11"}

    def test_start_up_lines_are_json_and_name_database_layer_redis_and_limits(self):
        instance = self.instances[0]
        get(instance.http_url("/no-such-page/"))  # django.request logs a 404 warning
        log = wait_until(lambda: (lambda text: text if "Not Found" in text else None)(instance.log()), 10, "the 404 line")
        entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        messages = [entry["message"] for entry in entries]
        self.assertTrue(any(m.startswith("Database: sqlite") or m.startswith("Database: postgresql") for m in messages), messages)
        self.assertTrue(any(m.startswith("Channel layer: notifications.layer.LiveChannelLayer on Redis") for m in messages), messages)
        redis_line = next(m for m in messages if m.startswith("Redis: "))
        self.assertIn(f"redis://127.0.0.1:{self.redis.port}/0", redis_line)
        limits = next(m for m in messages if m.startswith("Limits: "))
        self.assertIn("FEED_POST_RATE=7/m", limits)
        self.assertIn("DATA_UPLOAD_MAX_MEMORY_SIZE=65536", limits)
        collector = next(m for m in messages if m.startswith("Garbage collector: "))
        self.assertRegex(collector, r"^Garbage collector: [1-9]\d* start-up objects frozen, thresholds \(5000, 11, 40\)$")
        not_found = next(entry for entry in entries if entry["message"].startswith("Not Found"))
        self.assertEqual(not_found["level"], "WARNING")
        self.assertRegex(not_found["request_id"], r"^[0-9a-f]{32}$")
        # Only JSON lines: daphne's start-up lines go through logging, and so does its access log.
        self.assertTrue(any(e["logger"] == "daphne.access" and '"GET /no-such-page/" 404' in e["message"] for e in entries))
        others = [line for line in log.splitlines() if line.strip() and not line.startswith(("{", "--- start"))]
        self.assertEqual(others, [])


class StartupSummaryTests(SimpleTestCase):
    @override_settings(GC_THRESHOLDS=(1234, 5, 6))
    def test_the_collector_gets_the_thresholds_and_start_up_objects_are_frozen(self):
        import gc

        from notifications.startup import tune_garbage_collector

        before = gc.get_threshold()
        self.addCleanup(gc.set_threshold, *before)
        self.addCleanup(gc.unfreeze)
        tune_garbage_collector()
        self.assertEqual(gc.get_threshold(), (1234, 5, 6))
        self.assertGreater(gc.get_freeze_count(), 1000)

    def test_redis_hosts_are_named_without_passwords(self):
        from notifications.startup import redis_hosts

        self.assertEqual(
            redis_hosts("redis://user:secret@cache-1:6380/1, rediss://:pw@[2001:db8::1]/0"),
            ["redis://cache-1:6380/1", "rediss://[2001:db8::1]:6379/0"],
        )


class RunnerOutputTests(SimpleTestCase):
    """`manage.py test` keeps log output off the console and says why tests were skipped."""

    def test_logs_go_to_a_file_and_skip_reasons_are_listed(self):
        import os
        import re
        import subprocess
        import sys

        from django.conf import settings

        result = subprocess.run(
            [sys.executable, "manage.py", "test", "tests.runner_fixture"],
            cwd=settings.BASE_DIR,
            env={**os.environ, "DEBUG": "1", "ENV_FILE": ""},
            capture_output=True,
            text=True,
            timeout=120,
        )
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 0, output)
        self.assertNotIn("Traceback", output)
        self.assertNotIn("Injected fault", output)
        self.assertIn("tests.runner_fixture.NoisyAndSkippedTests.test_skipped: no frobnicator on this machine", output)
        log_path = re.search(r"Log output of this run: (\S+)", output).group(1)
        with open(log_path) as log:
            text = log.read()
        self.assertIn("Injected fault", text)
        self.assertIn("RuntimeError: expected failure injected by the fixture", text)
