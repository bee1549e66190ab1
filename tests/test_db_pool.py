"""PostgreSQL through Django's connection pool: settings, and a real daphne holding a bounded set of connections.

The settings tests need no database. The daphne test needs the test database on PostgreSQL:
run with ``DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres`` (the PostgreSQL line of
``.ci/run``); on SQLite it is skipped, there being no pool.
"""
import json
import os
import subprocess
import sys
import threading
import unittest
from pathlib import Path

import psutil
from django.conf import settings
from django.db import connection
from django.test import SimpleTestCase

from tests.harness import MultiInstanceTestCase, post_comment, wait_until

BASE_DIR = Path(settings.BASE_DIR)
POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/postgres"
PRINT_DATABASE = (
    "import json; from django.conf import settings; db = settings.DATABASES['default']; "
    "print(json.dumps({'pool': db.get('OPTIONS', {}).get('pool'), 'conn_max_age': db['CONN_MAX_AGE']}))"
)


def database_settings(**env):
    """Return the pool options and CONN_MAX_AGE that the settings build from `env` (a fresh process)."""
    base = {key: value for key, value in os.environ.items() if not key.startswith("DATABASE_")}
    result = subprocess.run(
        [sys.executable, "-c", f"import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'livefeed.settings'; django.setup(); {PRINT_DATABASE}"],
        cwd=BASE_DIR, env={**base, "ENV_FILE": "", "DEBUG": "1", **env}, capture_output=True, text=True, timeout=60,
    )
    return result


class PoolSettingsTests(SimpleTestCase):
    def test_postgresql_gets_the_pool_and_no_persistent_connections(self):
        result = database_settings(DATABASE_URL=POSTGRES_URL, DATABASE_POOL_MIN_SIZE="3", DATABASE_POOL_MAX_SIZE="7")
        self.assertEqual(result.returncode, 0, result.stderr)
        values = json.loads(result.stdout.strip().splitlines()[-1])
        self.assertEqual(values, {"pool": {"min_size": 3, "max_size": 7, "timeout": 10.0}, "conn_max_age": 0})

    def test_database_pool_0_turns_it_off(self):
        result = database_settings(DATABASE_URL=POSTGRES_URL, DATABASE_POOL="0")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(json.loads(result.stdout.strip().splitlines()[-1]), {"pool": None, "conn_max_age": 60})

    def test_sqlite_has_no_pool(self):
        result = database_settings()
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(json.loads(result.stdout.strip().splitlines()[-1]), {"pool": None, "conn_max_age": 60})

    def test_impossible_sizes_are_refused_by_name(self):
        result = database_settings(DATABASE_URL=POSTGRES_URL, DATABASE_POOL_MIN_SIZE="9", DATABASE_POOL_MAX_SIZE="4")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("DATABASE_POOL_MIN_SIZE (9) must be between 0 and DATABASE_POOL_MAX_SIZE (4)", result.stderr)


@unittest.skipUnless(connection.vendor == "postgresql", "the pool is PostgreSQL's: run with DATABASE_URL=postgres://...")
class PooledInstanceTests(MultiInstanceTestCase):
    """One real daphne on the PostgreSQL test database, with a pool of 2 to 3 connections."""

    instance_count = 1
    instance_env = {"DATABASE_POOL_MIN_SIZE": "2", "DATABASE_POOL_MAX_SIZE": "3"}

    def database_connections(self):
        """Return how many TCP connections the daphne process has open to PostgreSQL."""
        process = psutil.Process(self.instances[0].pid)
        return sum(1 for conn in process.net_connections(kind="tcp") if conn.raddr and conn.raddr.port == 5432 and conn.status == "ESTABLISHED")

    def test_concurrent_posts_share_the_pool_s_connections(self):
        (instance,) = self.instances
        self.make_feed("pooled")
        statuses, peak, done = [], [0], threading.Event()
        lock = threading.Lock()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], self.database_connections())
                done.wait(0.01)  # a sampling period, not a synchronisation

        def poster(number):
            for index in range(5):
                status, _ = post_comment(instance, "pooled", author=f"p{number}", body=f"pooled {number}.{index}")
                with lock:
                    statuses.append(status)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        threads = [threading.Thread(target=poster, args=(number,)) for number in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        done.set()
        sampler.join(5)
        self.assertEqual(statuses, [201] * 60, self.diagnostics())
        # Twelve requests at once, each on a thread of its own: without the pool each thread
        # opens (and keeps, CONN_MAX_AGE) a connection; with it they share at most three.
        self.assertLessEqual(peak[0], 3, f"{peak[0]} connections to PostgreSQL")
        self.assertGreaterEqual(peak[0], 1)
        # The pool keeps its minimum open between requests.
        wait_until(lambda: self.database_connections() >= 2, 10, "the pool's two idle connections")
