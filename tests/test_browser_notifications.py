"""The live notification badge in real browsers, against two real daphne instances and Redis.

Two people in separate browser sessions (each its own Chromium profile): Bob, on instance B,
mentions Ann; Ann's badge on instance A rises without a reload, next to the feed page's own
live connection; Ann reads them in a second tab and the first tab's badge clears within 2 s.

Needs Debian's `chromium` and `chromium-driver` (scripts/ensure-test-services) and `redis-server`.
"""
import json
import time
import urllib.request

from django.contrib.auth import get_user_model
from selenium.webdriver.common.by import By

from feed.auth import api_token_issue
from feed.models import Comment, Feed
from feed.services import comment_create
from tests.browser import Browser, ScreenshotOnFailureMixin, require_browser
from tests.harness import NO_PROXY, MultiInstanceTestCase

User = get_user_model()
PASSWORD = "a-long-unusual-passphrase-42"
FORM = "form#comment-form"
CLEAR_DEADLINE = 2.0  # a read in one tab clears the badge of every other tab within this


class NotificationBadgeBrowserTests(ScreenshotOnFailureMixin, MultiInstanceTestCase):
    ann_browser: Browser
    bob_browser: Browser

    @classmethod
    def setUpClass(cls) -> None:
        require_browser()
        super().setUpClass()
        try:
            cls.ann_browser = Browser()
            cls.bob_browser = Browser()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        for name in ("ann_browser", "bob_browser"):
            browser = cls.__dict__.get(name)
            if browser is not None:
                browser.quit()
                delattr(cls, name)
        super().tearDownClass()

    def setUp(self) -> None:
        super().setUp()
        self.a, self.b = self.instances
        self.feed = Feed.objects.create(slug="talk", title="Talk", allow_anonymous=True)
        self.ann = User.objects.create_user("ann", password=PASSWORD)
        self.bob = User.objects.create_user("bob", password=PASSWORD)

    def browsers_to_capture(self):
        return {"ann": self.ann_browser, "bob": self.bob_browser}

    # --- helpers ------------------------------------------------------------------

    def find(self, browser, css):
        return browser.driver.find_element(By.CSS_SELECTOR, css)

    def sign_in(self, browser, instance, username, then):
        browser.driver.get(instance.http_url(f"/accounts/login/?next={then}"))
        self.find(browser, "#id_username").send_keys(username)
        self.find(browser, "#id_password").send_keys(PASSWORD)
        self.find(browser, "form.account-form [type='submit']").click()
        browser.wait_for(lambda: browser.driver.current_url == instance.http_url(then), message=f"{username} signed in")

    def badge(self, browser):
        return self.find(browser, "#notification-badge").get_attribute("data-unread")

    def announcements(self, browser):
        """The recent polite announcements: the site's announcer (static/js/announce.js) keeps the
        last few, and other messages (presence, removals) may land after ours; a page without the
        announcer has only the badge's own status region."""
        return browser.js(
            "var region = document.getElementById('announcer');"
            "if (region && window.LiveFeed && window.LiveFeed.announce) {"
            "  return Array.prototype.map.call(region.children, function (p) { return p.textContent; }); }"
            "return [document.getElementById('notification-status').textContent];"
        )

    def wait_notifications_live(self, browser, timeout=25):
        browser.wait_for(
            lambda: self.find(browser, "#notification-stream").get_attribute("data-state") == "live",
            timeout=timeout, message="the notification stream to be live",
        )

    def mention(self, text):
        """Bob posts through the form on his feed page (instance B)."""
        self.find(self.bob_browser, f"{FORM} [name='body']").send_keys(text)
        self.find(self.bob_browser, f"{FORM} [type='submit']").click()
        return self.bob_browser.wait_for(lambda: Comment.objects.filter(body=text).first(), message=f"{text!r} saved")

    # --- the test -----------------------------------------------------------------

    def test_a_mention_raises_the_badge_live_and_reading_in_another_tab_clears_it_within_2_s(self):
        ann, bob = self.ann_browser, self.bob_browser
        self.sign_in(ann, self.a, "ann", "/feeds/talk/")
        self.sign_in(bob, self.b, "bob", "/feeds/talk/")
        first_tab = ann.driver.current_window_handle
        self.wait_notifications_live(ann)
        ann.wait_for(lambda: self.find(ann, "#connection-state").get_attribute("data-state") == "live",
                     message="the feed page to be live too")
        self.assertEqual(self.badge(ann), "0")
        mark = ann.mark_page()

        comment = self.mention("hello @ann, look at this")
        ann.wait_for(lambda: self.badge(ann) == "1", message="the badge to rise to 1 without a reload")
        self.assertTrue(ann.page_has_mark(mark), "the page was reloaded")
        ann.wait_for(lambda: "1 unread notification" in self.announcements(ann), message="the count announced")
        # The feed's own socket kept working beside it: the comment arrived once, and live.
        ann.wait_for(lambda: ann.count_of(comment.pk) == 1, message="the comment on Ann's feed page")
        self.assertEqual(self.find(ann, "#connection-state").get_attribute("data-state"), "live")
        self.assertEqual(self.find(ann, "#notification-stream").get_attribute("data-last-seq"), "1")

        ann.driver.switch_to.new_window("tab")
        ann.driver.get(self.a.http_url("/notifications/"))
        second_tab = ann.driver.current_window_handle
        self.wait_notifications_live(ann)
        self.assertEqual(len(ann.driver.find_elements(By.CSS_SELECTOR, "#notification-list li")), 1)

        self.mention("and again @ann")
        ann.wait_for(lambda: len(ann.driver.find_elements(By.CSS_SELECTOR, "#notification-list li")) == 2,
                     message="the second notification in the open list, live")
        self.assertIn("bob mentioned you in Talk", self.find(ann, "#notification-list li:first-child").text)
        self.assertEqual(self.badge(ann), "2")
        self.assertEqual(self.find(ann, ".notifications-count").text, "2 unread")
        self.assertEqual(self.find(ann, "form.mark-read [name='up_to']").get_property("value"), "2")
        ann.driver.switch_to.window(first_tab)
        ann.wait_for(lambda: self.badge(ann) == "2", message="the first tab's badge at 2")

        ann.driver.switch_to.window(second_tab)
        self.find(ann, "form.mark-read [type='submit']").click()
        clicked = time.monotonic()
        ann.driver.switch_to.window(first_tab)
        ann.wait_for(lambda: self.badge(ann) == "0", message="the first tab's badge to clear")
        elapsed = time.monotonic() - clicked
        self.assertLess(elapsed, CLEAR_DEADLINE, f"the first tab's badge cleared after {elapsed:.2f}s")
        self.assertTrue(ann.page_has_mark(mark), "the first tab was reloaded")
        ann.wait_for(lambda: "0 unread notifications" in self.announcements(ann), message="the cleared count announced")
        self.assertEqual([entry for entry in ann.console_errors() if entry["level"] == "SEVERE"], [])
        ann.driver.switch_to.window(second_tab)
        ann.wait_for(lambda: self.badge(ann) == "0", message="the list tab's badge after its redirect")
        ann.driver.close()
        ann.driver.switch_to.window(first_tab)

    def test_a_tab_that_was_disconnected_during_a_read_shows_the_right_count_after_reconnecting(self):
        """Ann's tab loses its instance; she reads her notifications elsewhere meanwhile (its
        notifications.read reaches no socket of hers); once the tab is back, its badge says 0."""
        ann = self.ann_browser
        comment_create(feed=self.feed, author="", body="hi @ann", user=self.bob)
        comment_create(feed=self.feed, author="", body="still there, @ann?", user=self.bob)
        self.sign_in(ann, self.a, "ann", "/")
        self.wait_notifications_live(ann)
        self.assertEqual(self.badge(ann), "2")
        mark = ann.mark_page()
        _, token = api_token_issue(user=self.ann, name="elsewhere")

        self.a.kill()
        ann.wait_for(lambda: self.find(ann, "#notification-stream").get_attribute("data-state") == "reconnecting",
                     message="the tab to notice")
        request = urllib.request.Request(
            self.b.http_url("/api/notifications/read/"), data=json.dumps({"up_to": 2}).encode(), method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        with NO_PROXY.open(request, timeout=10) as response:
            self.assertEqual(json.loads(response.read())["unread"], 0)
        self.assertEqual(self.badge(ann), "2", "nothing could reach the tab")
        self.a.start()
        self.a.wait_ready()

        # The extension's jittered backoff may wait up to 10 s before the next attempt.
        self.wait_notifications_live(ann)
        ann.wait_for(lambda: self.badge(ann) == "0", timeout=10, message="the badge to show the read")
        self.assertTrue(ann.page_has_mark(mark), "the tab was reloaded")
