"""Driving Debian's headless Chromium through Selenium for the browser tests.

Nothing here downloads anything: the browser and its driver are the system's
(`apt-get install chromium chromium-driver`, done by scripts/ensure-test-services),
given to Selenium by path, and Selenium Manager is told to stay offline.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import unittest
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from django.conf import settings

CHROMIUM = os.environ.get("CHROMIUM_BINARY", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
SCREENSHOT_DIR = Path(settings.BASE_DIR) / "var" / "test-screenshots"
WINDOW_SIZE = (1100, 900)

# Generous enough for a loaded 2-core machine; the tests' own limits (e.g. "within 2 s")
# are asserted separately on measured times.
WAIT = 15.0
POLL = 0.05

T = TypeVar("T")

_CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--metrics-recording-only",
    "--password-store=basic",
    # Two windows watch one feed side by side: neither may be throttled as "in the background".
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
    "--disable-renderer-backgrounding",
]


def require_browser() -> None:
    """Skip the calling test class when Chromium or its driver is missing; under CI, fail instead."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if not missing:
        return
    message = f"browser tests need {', '.join(missing)} (apt-get install chromium chromium-driver)"
    if os.environ.get("CI", "").lower() == "true":
        raise RuntimeError(message)
    raise unittest.SkipTest(message)


class Browser:
    """One headless Chromium with a throwaway profile, driven by Selenium."""

    def __init__(self, *, javascript: bool = True) -> None:
        # Imported here so that modules importing this one load without Selenium installed.
        os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch a browser or driver.
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile_dir = tempfile.mkdtemp(prefix="livefeed-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in _CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self.profile_dir}")
        options.add_argument(f"--window-size={WINDOW_SIZE[0]},{WINDOW_SIZE[1]}")
        if not javascript:
            options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
        options.set_capability("goog:loggingOptions", {"browser": "ALL"})
        service = Service(executable_path=CHROMEDRIVER, log_output=os.devnull)
        try:
            self.driver = webdriver.Chrome(service=service, options=options)
        except BaseException:
            shutil.rmtree(self.profile_dir, ignore_errors=True)
            raise
        self.driver.set_page_load_timeout(WAIT * 2)

    def quit(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile_dir, ignore_errors=True)

    # --- waiting ------------------------------------------------------------------

    def wait_for(self, condition: Callable[[], T], *, timeout: float = WAIT, message: str = "") -> T:
        """Return condition()'s first truthy value, polling; fail with `message` after `timeout` s."""
        from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        wait = WebDriverWait(
            self.driver, timeout, poll_frequency=POLL, ignored_exceptions=[StaleElementReferenceException]
        )
        try:
            return wait.until(lambda _driver: condition(), message)
        except TimeoutException as exc:
            raise AssertionError(f"{message or 'condition not met'} within {timeout} s") from exc

    # --- reading the page ---------------------------------------------------------

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def comments(self) -> list[dict[str, Any]]:
        """Return the comments in #comments, top to bottom: id attribute, seq, author, body text."""
        return self.js(
            """
            return Array.from(document.querySelectorAll('#comments article[data-seq]')).map(a => ({
              id: a.id,
              seq: Number(a.dataset.seq),
              author: (a.querySelector('.comment-author') || {}).textContent || '',
              body: (a.querySelector('.comment-body') || a).innerText,
            }));
            """
        )

    def seqs(self) -> list[int]:
        return [comment["seq"] for comment in self.comments()]

    def count_of(self, comment_id: int) -> int:
        """Return how many elements on the page carry the comment's id (must be 0 or 1)."""
        return self.js("return document.querySelectorAll('[id=\"comment-' + arguments[0] + '\"]').length", comment_id)

    def console_errors(self) -> list[dict[str, Any]]:
        """Return (and drain) the browser console entries logged since the last call."""
        return self.driver.get_log("browser")

    def mark_page(self) -> str:
        """Set a marker on the current document; it is gone once the page reloads."""
        token = os.urandom(8).hex()
        self.js("window.__livefeedMark = arguments[0]", token)
        return token

    def page_has_mark(self, token: str) -> bool:
        return self.js("return window.__livefeedMark === arguments[0]", token)

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))
        return path


def screenshot_path(test: unittest.TestCase, suffix: str = "") -> Path:
    """Return var/test-screenshots/<test id><suffix>.png."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", test.id().removeprefix("tests.")) + suffix
    return SCREENSHOT_DIR / f"{name}.png"


class ScreenshotOnFailureMixin:
    """Save a screenshot of every browser of a test that fails, to var/test-screenshots/.

    The screenshot is taken the moment the test method raises, before tearDown and cleanups
    change the page. The test class names its browsers in `browsers_to_capture()`.
    """

    def browsers_to_capture(self) -> dict[str, Browser]:
        return {}

    def _callTestMethod(self, method: Callable[[], Any]) -> None:
        # unittest's hook around the test method alone (Python 3.8+); the outcome is not
        # yet known to tearDown or cleanups, so catch the failure here.
        try:
            super()._callTestMethod(method)  # type: ignore[misc]
        except unittest.SkipTest:
            raise
        except Exception:
            self.save_screenshots()
            raise

    def save_screenshots(self) -> list[Path]:
        saved = []
        for name, browser in self.browsers_to_capture().items():
            try:
                saved.append(browser.screenshot(screenshot_path(self, f"-{name}")))  # type: ignore[arg-type]
            except Exception as exc:  # the browser may be what broke
                print(f"\nscreenshot of {name} failed: {exc}", file=sys.stderr)
        for path in saved:
            print(f"\nscreenshot saved: {path}", file=sys.stderr)
        return saved
