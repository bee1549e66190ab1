"""A missing production setting is one line on stderr, not a traceback; .env is read for local runs."""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from django.conf import settings
from django.test import SimpleTestCase

BASE_DIR = Path(settings.BASE_DIR)


def run(argv, **env):
    """Run a command in the project with a clean production-like environment plus ``env``."""
    base = {key: value for key, value in os.environ.items() if key not in {"DEBUG", "SECRET_KEY", "DATABASE_URL", "REDIS_URL"}}
    return subprocess.run(
        argv, cwd=BASE_DIR, env={**base, "ENV_FILE": "", **env}, capture_output=True, text=True, timeout=60
    )


class SettingsErrorTests(SimpleTestCase):
    def assertOneLineError(self, result, *words):
        self.assertNotEqual(result.returncode, 0)
        self.assertNotIn("Traceback", result.stderr)
        lines = result.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        for word in words:
            self.assertIn(word, lines[0])

    def test_manage_py_without_secret_key_prints_one_line(self):
        result = run([sys.executable, "manage.py", "check"], DEBUG="0")
        self.assertOneLineError(result, "Configuration error", "SECRET_KEY")

    def test_the_asgi_application_without_secret_key_prints_one_line(self):
        result = run([sys.executable, "-c", "import livefeed.asgi"], DEBUG="0")
        self.assertOneLineError(result, "Configuration error", "SECRET_KEY")

    def test_an_unknown_log_format_prints_one_line(self):
        result = run([sys.executable, "manage.py", "check"], DEBUG="1", LOG_FORMAT="xml")
        self.assertOneLineError(result, "LOG_FORMAT")

    def test_a_local_env_file_supplies_debug_and_the_key(self):
        """What `make run` writes lets the README's manage.py commands run without exporting anything."""
        with tempfile.TemporaryDirectory() as directory:
            env_file = Path(directory) / ".env"
            env_file.write_text("# local\nDEBUG=1\nSECRET_KEY='a-local-key-from-the-env-file-0123456789'\n")
            result = run(
                [sys.executable, "manage.py", "shell", "-c", "from django.conf import settings; print(settings.DEBUG, settings.SECRET_KEY)"],
                ENV_FILE=str(env_file),
            )
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertEqual(result.stdout.strip().splitlines()[-1], "True a-local-key-from-the-env-file-0123456789")
            # The real environment wins over the file.
            result = run([sys.executable, "manage.py", "check"], ENV_FILE=str(env_file), DEBUG="0", SECRET_KEY="")
            self.assertOneLineError(result, "SECRET_KEY")
