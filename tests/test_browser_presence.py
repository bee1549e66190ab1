""""N watching" in a real browser, against a real daphne instance on a real Redis.

Needs Debian's `chromium` and `chromium-driver` (scripts/ensure-test-services) and `redis-server`.
"""
import time

from selenium.webdriver.common.by import By

from feed.models import Feed
from tests.browser import Browser, ScreenshotOnFailureMixin, require_browser
from tests.harness import MultiInstanceTestCase

# Record what is said politely, and when (presence.js: at most every 10 s): through the shared
# announcer (static/js/announce.js, a new paragraph per message) where the page has one, else
# through the page's own #watching-announcement.
RECORD_ANNOUNCEMENTS = """
window.__announcements = [];
var region = document.getElementById("announcer") || document.getElementById("watching-announcement");
new MutationObserver(function () {
  var said = (region.lastElementChild || region).textContent;
  if (said && /watching/.test(said)) window.__announcements.push([Date.now(), said]);
}).observe(region, {childList: true, characterData: true, subtree: true});
"""
MIN_GAP_MS = 10000


class PresenceBrowserTests(ScreenshotOnFailureMixin, MultiInstanceTestCase):
    instance_count = 1

    @classmethod
    def setUpClass(cls) -> None:
        require_browser()
        super().setUpClass()
        cls.windows = []
        try:
            cls.windows = [Browser(), Browser()]
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        for browser in cls.__dict__.get("windows", []):
            browser.quit()
        super().tearDownClass()

    def setUp(self) -> None:
        super().setUp()
        self.instance = self.instances[0]
        Feed.objects.create(slug="watched", title="Watched", allow_anonymous=True)
        self.addCleanup(lambda: [window.driver.get("about:blank") for window in self.windows])

    def browsers_to_capture(self):
        return {"a": self.windows[0], "b": self.windows[1]}

    def watching(self, window):
        element = window.driver.find_element(By.ID, "feed-watching")
        return element.text if element.is_displayed() else ""

    def open_feed(self, window):
        window.driver.get(self.instance.http_url("/feeds/watched/"))
        window.wait_for(
            lambda: window.driver.find_element(By.ID, "connection-state").get_attribute("data-state") == "live",
            message="the page to be live",
        )

    def test_watching_rises_and_falls_as_another_window_opens_and_closes_the_feed(self):
        """Window B shows "1 watching", "2 watching" while A has the feed open, and "1 watching" after A
        leaves; the polite region says each change, at most once every 10 s."""
        a, b = self.windows
        self.open_feed(b)
        b.wait_for(lambda: self.watching(b).endswith("1 watching"), message="B to show 1 watching")
        self.assertEqual(b.driver.find_element(By.ID, "feed-watching").get_attribute("aria-live"), "off")
        b.js(RECORD_ANNOUNCEMENTS)
        first_tab = a.driver.current_window_handle
        a.driver.switch_to.new_window("tab")
        self.open_feed(a)
        b.wait_for(lambda: self.watching(b).endswith("2 watching"), message="B to show 2 watching")
        a.wait_for(lambda: self.watching(a).endswith("2 watching"), message="A to show 2 watching")
        # A closes the feed's tab (navigating away may keep the page, socket and all, in the back-forward cache).
        a.driver.close()
        a.driver.switch_to.window(first_tab)
        left = time.monotonic()
        b.wait_for(lambda: self.watching(b).endswith("1 watching"), message="B to show 1 watching again")
        self.assertLess(time.monotonic() - left, 5, "the count falls within a few seconds")
        b.wait_for(lambda: len(b.js("return window.__announcements")) == 2, timeout=MIN_GAP_MS / 1000 + 5,
                   message="the second announcement")
        (first_at, first), (second_at, second) = b.js("return window.__announcements")
        self.assertEqual((first, second), ("2 people watching", "1 person watching"))
        self.assertGreaterEqual(second_at - first_at, MIN_GAP_MS - 100, "announced at most once every 10 s")
