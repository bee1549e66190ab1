"""The test runner: Django's, with log output in a file and skip reasons at the end.

Fault-injection tests make the code log warnings and tracebacks on purpose (Redis away, a
failing publish); on the console they hide the test results. Here everything logged (and
every Python warning) goes to ``test.log`` in a temporary directory named at the end; tests
that are about a log line assert it with ``assertLogs``. Skipped tests are listed with their
reason without ``-v 2``.
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
import unittest
from typing import Any, cast

from django.conf import settings
from django.test.runner import DiscoverRunner
from django.utils.log import configure_logging


class LiveFeedTestRunner(DiscoverRunner):
    log_path: str | None = None

    def setup_test_environment(self, **kwargs: Any) -> None:
        super().setup_test_environment(**kwargs)
        self.log_path = os.path.join(tempfile.mkdtemp(prefix="livefeed-tests-"), "test.log")
        # Edit LOGGING itself: every django.setup() (livefeed.asgi calls it on import) configures
        # logging again from it.
        handlers = cast("dict[str, dict[str, Any]]", settings.LOGGING.get("handlers", {}))
        for handler in handlers.values():
            if handler.get("class") == "logging.StreamHandler":
                handler.pop("stream", None)
                handler.update({"class": "logging.FileHandler", "filename": self.log_path, "encoding": "utf-8"})
        configure_logging(settings.LOGGING_CONFIG, settings.LOGGING)
        logging.captureWarnings(True)

    def run_suite(self, suite: unittest.TestSuite, **kwargs: Any) -> unittest.TextTestResult:
        result = super().run_suite(suite, **kwargs)
        if result.skipped:
            self._write(f"\nSkipped ({len(result.skipped)}):")
            for test, reason in result.skipped:
                self._write(f"  {test.id()}: {reason}")
        if self.log_path:
            self._write(f"\nLog output of this run: {self.log_path}")
        return result

    def _write(self, line: str) -> None:
        sys.stderr.write(line + "\n")
