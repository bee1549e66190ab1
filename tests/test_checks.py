"""Start-up checks: a setting that would switch off a guarantee stops `manage.py check` and daphne."""
import io
from unittest import mock

from django.core.checks import registry, run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import SimpleTestCase, override_settings

from livefeed.checks import check_settings
from notifications.conf import CHECK_HISTORY, live_settings
from notifications.backstop import LagTracker
from tests.harness import DaphneInstance, free_port

REDIS_LAYER = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": "redis://127.0.0.1:1/0", "socket_timeout": 15}], "group_expiry": 120},
    }
}


def messages(**overrides):
    with override_settings(**overrides):
        return [f"{error.id} {error.msg}" for error in check_settings()]


class SettingsCheckTests(SimpleTestCase):
    def test_the_defaults_pass(self):
        """The settings the project ships with raise nothing."""
        self.assertEqual(messages(), [])
        self.assertEqual(messages(CHANNEL_LAYERS=REDIS_LAYER, FEED_POST_RATE="30/m"), [])

    def test_the_check_is_registered_with_django(self):
        """`manage.py check` runs it and refuses a bad value."""
        self.assertIn(check_settings, registry.registry.registered_checks)
        with override_settings(LIVE_UPDATES={"check_interval": 0}):
            self.assertTrue(any(error.id == "livefeed.E002" for error in run_checks()))
            with self.assertRaisesMessage(SystemCheckError, "WS_CHECK_INTERVAL"):
                call_command("check", stdout=io.StringIO())

    def test_check_interval_out_of_range_is_refused_by_name(self):
        """0, negative, NaN, infinite or absurd check intervals are refused, naming WS_CHECK_INTERVAL."""
        for value in (0, -1, 0.001, float("nan"), float("inf"), 1e9, "1", True):
            with self.subTest(value=value):
                errors = messages(LIVE_UPDATES={"check_interval": value})
                self.assertEqual(len(errors), 1, errors)
                self.assertIn("WS_CHECK_INTERVAL", errors[0])

    def test_a_small_check_interval_keeps_the_backstop_by_default(self):
        """Without its own lag_grace, a short check interval gets a lag_grace the hub can reach."""
        for interval in (0.01, 0.02, 0.05, 1.0, 60.0):
            with self.subTest(interval=interval), override_settings(LIVE_UPDATES={"check_interval": interval}):
                self.assertEqual(check_settings(), [])
                self.assertLess(live_settings().lag_grace, (CHECK_HISTORY - 1) * interval)

    def test_a_lag_grace_the_hub_never_reaches_is_refused(self):
        """lag_grace of 15 check intervals or more would never fill a stall: refused, naming both settings."""
        errors = messages(LIVE_UPDATES={"check_interval": 0.04, "lag_grace": 0.75})
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("livefeed.E003", errors[0])
        self.assertIn("lag_grace", errors[0])
        self.assertIn("WS_CHECK_INTERVAL", errors[0])
        self.assertEqual(messages(LIVE_UPDATES={"check_interval": 0.06, "lag_grace": 0.75}), [])

    def test_values_that_lose_or_stall_events_are_refused(self):
        """A batch of 0 skips comments, a slow-reader limit below one frame closes every reader,
        soft above hard, a membership refresh slower than the groups expire: each refused by name."""
        cases = {
            "batch_size": {"batch_size": 0},
            "WS_SLOW_READER_MAX_BYTES": {"slow_reader_max_bytes": 1000},
            "slow_reader_soft_bytes": {"slow_reader_soft_bytes": 2 * 1024 * 1024},
            "live_coalesce": {"live_coalesce": 5},
            "layer_timeout": {"layer_timeout": 0},
            "WS_SHUTDOWN_GRACE": {"shutdown_grace": -1},
            "late_grace_max": {"late_grace_max": -1},
        }
        for name, live in cases.items():
            with self.subTest(name=name):
                errors = messages(LIVE_UPDATES=live)
                self.assertEqual(len(errors), 1, errors)
                self.assertIn(name, errors[0])
        errors = messages(CHANNEL_LAYERS=REDIS_LAYER, LIVE_UPDATES={"membership_refresh": 300})
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("membership_refresh", errors[0])

    def test_unknown_live_updates_keys_are_refused(self):
        self.assertIn("LIVE_UPDATES has unknown keys: check_intervall", messages(LIVE_UPDATES={"check_intervall": 1})[0])

    def test_redis_timeouts_must_keep_posts_quick_and_receives_working(self):
        """The cache's timeouts must fit in a post's 2 s; the layer's read timeout must outlast BZPOPMIN."""
        errors = messages(REDIS_CONNECT_TIMEOUT=1.0, REDIS_SOCKET_TIMEOUT=1.0)
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("REDIS_CONNECT_TIMEOUT + REDIS_SOCKET_TIMEOUT", errors[0])
        self.assertIn("REDIS_SOCKET_TIMEOUT", messages(REDIS_SOCKET_TIMEOUT=0)[0])
        layer = {"default": {**REDIS_LAYER["default"], "CONFIG": {"hosts": [{"address": "redis://x", "socket_timeout": 5}]}}}
        errors = messages(CHANNEL_LAYERS=layer)
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("CHANNEL_LAYER_SOCKET_TIMEOUT", errors[0])
        self.assertIn("CHANNEL_LAYER_CAPACITY", messages(CHANNEL_LAYER_CAPACITY=0)[0])

    def test_presence_ttl_must_let_a_dead_instance_stop_counting_within_30_seconds(self):
        """PRESENCE_TTL 3-25 s: shorter would expire live instances between heartbeats, longer breaks the 30 s."""
        self.assertEqual(messages(PRESENCE_TTL=15), [])
        for bad in (2, 26):
            self.assertIn("PRESENCE_TTL", messages(PRESENCE_TTL=bad)[0])

    def test_posting_settings_are_checked(self):
        """A malformed rate, a bad trusted proxy, both proxy settings, a zero session re-check: refused by name."""
        self.assertIn("FEED_POST_RATE", messages(FEED_POST_RATE="30 per minute")[0])
        self.assertIn("TRUSTED_PROXIES", messages(TRUSTED_PROXIES=["10.0.0.0/8", "proxy.local"])[0])
        self.assertIn("TRUSTED_PROXY_COUNT", messages(TRUSTED_PROXY_COUNT=-1)[0])
        self.assertIn("not both", messages(TRUSTED_PROXY_COUNT=1, TRUSTED_PROXIES=["10.0.0.1"])[0])
        self.assertIn("WS_SESSION_CHECK_INTERVAL", messages(WS_SESSION_CHECK_INTERVAL=0)[0])

    def test_an_sqlite_without_update_returning_is_refused(self):
        """Comments are numbered with UPDATE ... RETURNING: SQLite before 3.35 cannot run it."""
        with mock.patch("sqlite3.sqlite_version_info", (3, 34, 1)), mock.patch("sqlite3.sqlite_version", "3.34.1"):
            found = messages()
        self.assertEqual(len(found), 1)
        self.assertIn("livefeed.E026 SQLite 3.34.1 is too old", found[0])


class BackstopAtShortCheckIntervalsTests(SimpleTestCase):
    """The hub's stall detection (backstop.LagTracker) fills at every allowed check interval."""

    def test_the_check_knows_how_many_checks_the_hub_remembers(self):
        """livefeed.checks bounds lag_grace by CHECK_HISTORY: it must be what the hub keeps."""
        self.assertEqual(LagTracker(0.75).reported.maxlen, CHECK_HISTORY)

    def test_a_stalled_feed_is_filled_with_a_20_ms_check_interval(self):
        """Checks every 20 ms that keep seeing seq 5 undelivered make it due for a fill from the database."""
        with override_settings(LIVE_UPDATES={"check_interval": 0.02}):
            lag = LagTracker(live_settings().lag_grace)
        due = [lag.due(1000.0 + check * 0.02, 5) for check in range(50)]
        self.assertIn(5, due, "the database never filled the stalled feed")


class DaphneRefusesBadSettingsTests(SimpleTestCase):
    def test_daphne_exits_naming_the_bad_setting(self):
        """daphne started with WS_CHECK_INTERVAL=0.001 exits at once with a line naming it."""
        instance = DaphneInstance(
            "bad", redis_url=f"redis://127.0.0.1:{free_port()}/0", database_url="sqlite:////nonexistent/never-opened.sqlite3",
            env={"WS_CHECK_INTERVAL": "0.001"},
        )
        self.addCleanup(instance.close_log)
        self.addCleanup(instance.kill)
        instance.start()
        code = instance.wait_exit(60)
        self.assertNotEqual(code, 0)
        log = instance.log_since(0)
        self.assertRegex(
            log, r"Configuration error: livefeed\.E002: WS_CHECK_INTERVAL \(LIVE_UPDATES\['check_interval'\]\) must be between"
        )
