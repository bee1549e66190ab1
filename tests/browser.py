"""Driving Debian's headless Chromium through Selenium for the browser tests.

Nothing here downloads anything: the browser and its driver are the system's
(`apt-get install chromium chromium-driver`, done by scripts/ensure-test-services),
given to Selenium by path, and Selenium Manager is told to stay offline.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
import unittest
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from django.conf import settings

CHROMIUM = os.environ.get("CHROMIUM_BINARY", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
SCREENSHOT_DIR = Path(settings.BASE_DIR) / "var" / "test-screenshots"
# axe-core, pinned in tests/package.json and installed by scripts/ensure-test-services (npm ci).
AXE_SCRIPT = Path(settings.BASE_DIR) / "tests" / "node_modules" / "axe-core" / "axe.min.js"
AXE_BLOCKING_IMPACTS = ("serious", "critical")
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
    # Keyboard scrolling jumps instead of animating: a key pressed during an animation
    # must not be folded into it (tests.test_accessibility presses Home, then an arrow).
    "--disable-smooth-scrolling",
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


def require_axe() -> None:
    """Skip the calling test class when axe-core is not installed; under CI, fail instead."""
    if AXE_SCRIPT.is_file():
        return
    message = f"accessibility audits need {AXE_SCRIPT} (scripts/ensure-test-services runs npm ci in tests/)"
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

    # --- the accessibility tree (Chromium's, through the DevTools protocol) -------------------

    def ax_tree(self) -> list[dict[str, Any]]:
        """Return Chromium's full accessibility tree of the page: its nodes, as CDP gives them."""
        return self.driver.execute_cdp_cmd("Accessibility.getFullAXTree", {})["nodes"]

    def ax_node(self, css: str) -> dict[str, Any] | None:
        """Return the accessibility node of the first element matching `css`, or None."""
        found = self.driver.execute_cdp_cmd(
            "Runtime.evaluate", {"expression": f"document.querySelector({json.dumps(css)})"}
        )
        object_id = found["result"].get("objectId")
        if not object_id:
            return None
        nodes = self.driver.execute_cdp_cmd(
            "Accessibility.getPartialAXTree", {"objectId": object_id, "fetchRelatives": False}
        )["nodes"]
        return nodes[0] if nodes else None

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))
        return path


# --- the feed page -----------------------------------------------------------------------

# The page's markup (templates/feed/page.html, static/js/feed.js) as the tests rely on it.
COMMENTS = "#comments"
STATE = "#connection-state"
FORM = "form#comment-form"
AUTHOR_FIELD = f"{FORM} [name='author']"
BODY_FIELD = f"{FORM} [name='body']"
SUBMIT = f"{FORM} [type='submit']"
# Messages of feed.services.comment_validate, shown next to the field.
BLANK_BODY_ERROR = "Write something first."
LONG_BODY_ERROR = "Use at most 2000 characters"

RECONNECT_WAIT = 45.0  # the ws extension backs off (randomly, up to 2^n s) between attempts


class FeedPage:
    """One browser looking at one feed page on one instance."""

    def __init__(self, browser: Browser, instance, slug: str) -> None:
        self.browser = browser
        self.instance = instance
        self.slug = slug
        self.url = instance.http_url(f"/feeds/{slug}/")

    def open(self, *, live: bool = True, keep_console: bool = False) -> "FeedPage":
        """Load the page (waiting until it is live); drain the console log unless `keep_console`."""
        self.browser.driver.get(self.url)
        if not keep_console:
            self.browser.console_errors()
        if live:
            self.wait_state("live")
        return self

    def find(self, css: str):
        return self.browser.driver.find_element("css selector", css)

    def state(self) -> str:
        """Return the connection state the page shows: its data-state, if the visible text says the same."""
        element = self.find(STATE)
        state, text = element.get_attribute("data-state"), element.text.strip().lower()
        return state if text.startswith(state) else f"{state} (text {text!r})"

    def wait_state(self, state: str, timeout: float = WAIT) -> None:
        self.browser.wait_for(
            lambda: self.state() == state, timeout=timeout,
            message=f"{self.instance.name} page to show {state!r} (shows {self.state()!r})",
        )

    def post(self, body: str, author: str = "Ada") -> float:
        """Fill in and submit the form; return time.monotonic() at the click."""
        self.fill(author=author, body=body)
        submit = self.find(SUBMIT)
        started = time.monotonic()
        submit.click()
        return started

    def fill(self, *, author: str | None = None, body: str | None = None) -> None:
        for css, value in ((AUTHOR_FIELD, author), (BODY_FIELD, body)):
            if value is None:
                continue
            field = self.find(css)
            field.clear()
            field.send_keys(value)

    def field_value(self, css: str) -> str:
        return self.find(css).get_property("value")

    def wait_comment(self, comment: Any, timeout: float = WAIT) -> float:
        """Wait until the comment is on the page; return time.monotonic() when it was seen."""
        self.browser.wait_for(
            lambda: self.browser.count_of(comment.pk) > 0, timeout=timeout,
            message=f"comment {comment.seq} on the {self.instance.name} page (seqs {self.browser.seqs()})",
        )
        return time.monotonic()

    def wait_body(self, body: str, timeout: float = WAIT) -> dict:
        """Wait until a comment with this body text is on the page; return it."""

        def shown():
            return next((c for c in self.browser.comments() if c["body"] == body), None)

        return self.browser.wait_for(shown, timeout=timeout, message=f"a comment {body!r} on the {self.instance.name} page")

    def wait_seqs(self, expected: list[int], timeout: float = WAIT) -> None:
        self.browser.wait_for(
            lambda: self.browser.seqs() == expected, timeout=timeout,
            message=f"seqs {expected} on the {self.instance.name} page (shows {self.browser.seqs()})",
        )

    def field_errors(self, css: str) -> str:
        """Return the error text shown with a field: in the same block as the field, not elsewhere."""
        return self.browser.js(
            "return Array.from(arguments[0].parentElement.querySelectorAll('.field-error')).map(e => e.innerText).join(' ')",
            self.find(css),
        )



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


def ax_value(node: dict[str, Any] | None, field: str) -> Any:
    """Return a CDP accessibility node's `role` or `name` value, or the value of one of its properties."""
    if node is None:
        return None
    if field in ("role", "name"):
        return (node.get(field) or {}).get("value")
    for prop in node.get("properties", []):
        if prop["name"] == field:
            return prop["value"].get("value")
    return None


# --- axe-core ---------------------------------------------------------------------------------

_AXE_RUN = """
const [context, options, done] = arguments;
window.axe.run(context || document, options).then(
  (results) => done({
    url: results.url,
    violations: results.violations.map((rule) => ({
      id: rule.id, impact: rule.impact, help: rule.help, helpUrl: rule.helpUrl,
      nodes: rule.nodes.map((node) => ({target: node.target, impact: node.impact, summary: node.failureSummary})),
    })),
  }),
  (error) => done({error: String(error && error.stack || error)}),
);
"""


def _driver_of(browser_or_driver: Any) -> Any:
    return getattr(browser_or_driver, "driver", browser_or_driver)


def axe_run(browser_or_driver: Any, *, include: str | None = None) -> dict[str, Any]:
    """Run axe-core on the page (or on the part `include` selects); return its url and violations.

    axe is injected with Selenium's execute_script, which the page's Content-Security-Policy
    does not govern (it forbids the page's own inline scripts, not the driver's).
    """
    driver = _driver_of(browser_or_driver)
    if not driver.execute_script("return typeof window.axe === 'object' && typeof window.axe.run === 'function'"):
        driver.execute_script(AXE_SCRIPT.read_text(encoding="utf-8"))
    driver.set_script_timeout(WAIT * 2)
    results = driver.execute_async_script(_AXE_RUN, include, {"resultTypes": ["violations"]})
    if "error" in results:
        raise AssertionError(f"axe.run failed: {results['error']}")
    return results


def assert_no_serious_axe_violations(browser_or_driver: Any, context: str, *, include: str | None = None) -> dict[str, Any]:
    """Audit the page with axe-core; fail listing every serious or critical violation.

    `context` says which page and state this is, for the failure message ("empty live feed");
    `include` limits the audit to the elements a CSS selector matches. Return axe's results.
    """
    results = axe_run(browser_or_driver, include=include)
    blocking = [rule for rule in results["violations"] if rule["impact"] in AXE_BLOCKING_IMPACTS]
    if blocking:
        lines = [f"axe-core: {len(blocking)} serious or critical violation(s) on {context} ({results['url']}):"]
        for rule in blocking:
            lines.append(f"- {rule['id']} ({rule['impact']}): {rule['help']} <{rule['helpUrl']}>")
            for node in rule["nodes"]:
                summary = " ".join((node["summary"] or "").split())
                lines.append(f"    {', '.join(map(str, node['target']))}: {summary}")
        raise AssertionError("\n".join(lines))
    return results
