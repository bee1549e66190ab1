"""Removing comments in a real browser, against a real daphne instance: the page's "remove" action.

Needs Debian's `chromium` and `chromium-driver` (scripts/ensure-test-services) and `redis-server`.
"""
import time

from django.contrib.auth import get_user_model
from selenium.webdriver.common.by import By

from feed.models import Comment, Feed
from feed.moderation import comment_remove
from feed.services import comment_create
from tests.browser import Browser, ScreenshotOnFailureMixin, require_browser
from tests.harness import MultiInstanceTestCase

User = get_user_model()
PASSWORD = "a-long-unusual-passphrase-42"
# The contract: a removed comment disappears from every open page within 2 s.
REMOVAL_DEADLINE = 2.0


class ModerationBrowserTests(ScreenshotOnFailureMixin, MultiInstanceTestCase):
    instance_count = 1
    window_a: Browser
    window_b: Browser
    plain: Browser

    @classmethod
    def setUpClass(cls) -> None:
        require_browser()
        super().setUpClass()
        try:
            cls.window_a = Browser()
            cls.window_b = Browser()
            cls.plain = Browser(javascript=False)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        for name in ("window_a", "window_b", "plain"):
            browser = cls.__dict__.get(name)
            if browser is not None:
                browser.quit()
                delattr(cls, name)
        super().tearDownClass()

    def setUp(self) -> None:
        self.addCleanup(self._leave_pages)
        super().setUp()
        self.instance = self.instances[0]
        self.feed = Feed.objects.create(slug="moderated", title="Moderated", allow_anonymous=True)
        self.zed = User.objects.create_user("zed", password=PASSWORD)
        self.mod = User.objects.create_user("mod", password=PASSWORD)
        self.feed.moderators.add(self.mod)
        self.keep = comment_create(feed=self.feed, author="", body="a fine comment", user=self.zed)
        self.doomed = comment_create(feed=self.feed, author="", body="a rude comment", user=self.zed)

    def browsers_to_capture(self):
        return {"window_a": self.window_a, "window_b": self.window_b, "plain": self.plain}

    def _leave_pages(self) -> None:
        for browser in (self.window_a, self.window_b, self.plain):
            browser.driver.delete_all_cookies()
            browser.driver.get("about:blank")

    def find(self, browser, css):
        return browser.driver.find_element(By.CSS_SELECTOR, css)

    def sign_in(self, browser, username):
        browser.driver.get(self.instance.http_url("/accounts/login/?next=/feeds/moderated/"))
        self.find(browser, "#id_username").send_keys(username)
        self.find(browser, "#id_password").send_keys(PASSWORD)
        self.find(browser, "form.account-form [type='submit']").click()
        browser.wait_for(lambda: browser.driver.current_url == self.instance.http_url("/feeds/moderated/"),
                         message=f"{username} signed in, back on the feed")

    def open_live(self, browser):
        if browser.driver.current_url != self.instance.http_url("/feeds/moderated/"):
            browser.driver.get(self.instance.http_url("/feeds/moderated/"))
        browser.wait_for(
            lambda: self.find(browser, "#connection-state").get_attribute("data-state") == "live",
            message="the page to be live",
        )

    def remove_visible(self, browser, comment):
        forms = browser.driver.find_elements(By.CSS_SELECTOR, f"#comment-{comment.pk} form.comment-remove")
        return bool(forms) and forms[0].is_displayed()

    def test_a_comment_removed_in_window_a_disappears_from_window_b_within_2_seconds(self):
        """A moderator removes a comment (confirming the dialog) in A; B, a guest, loses it within 2 s; the other stays."""
        self.sign_in(self.window_a, "mod")
        self.open_live(self.window_a)
        self.open_live(self.window_b)
        self.assertTrue(self.remove_visible(self.window_a, self.doomed), "a moderator sees Remove")
        self.assertFalse(self.remove_visible(self.window_b, self.doomed), "a guest does not")

        self.find(self.window_a, f"#comment-{self.doomed.pk} form.comment-remove button").click()
        alert = self.window_a.wait_for(lambda: self._alert(self.window_a), message="the confirmation dialog")
        self.assertIn("Remove this comment by zed?", alert.text)
        clicked = time.monotonic()
        alert.accept()

        self.window_b.wait_for(lambda: self.window_b.count_of(self.doomed.pk) == 0, timeout=REMOVAL_DEADLINE,
                               message="the removed comment gone from window B")
        elapsed = time.monotonic() - clicked
        # Screen readers hear it: one polite sentence in the page's announcer.
        self.window_b.wait_for(
            lambda: "A comment by zed was removed." in self.find(self.window_b, "#announcer").get_attribute("textContent"),
            message="the removal announced in window B",
        )
        self.window_a.wait_for(lambda: self.window_a.count_of(self.doomed.pk) == 0, message="gone from window A")
        self.assertLess(elapsed, REMOVAL_DEADLINE)
        for browser in (self.window_a, self.window_b):
            self.assertEqual(browser.count_of(self.keep.pk), 1)
            self.assertNotIn("a rude comment", self.find(browser, "#comments").text)
        removed = Comment.objects.get(pk=self.doomed.pk)
        self.assertEqual((removed.body, removed.removed_by), ("", self.mod))

        # A removal of a comment a page does not show (here taken off B's page by hand) is
        # dropped quietly: htmx would log its missing target as a console error.
        self.window_b.js("document.getElementById(arguments[0]).remove()", f"comment-{self.keep.pk}")
        comment_remove(comment=self.keep, by=self.mod)
        marker = comment_create(feed=self.feed, author="Guest", body="after the removals")
        for browser in (self.window_a, self.window_b):
            browser.wait_for(lambda b=browser: b.count_of(marker.pk) == 1, message="a later comment live")
            self.assertEqual(
                [e["message"] for e in browser.console_errors() if e.get("level") == "SEVERE"], [], "console errors"
            )

    def test_dismissing_the_confirmation_removes_nothing(self):
        self.sign_in(self.window_a, "mod")
        self.open_live(self.window_a)
        self.find(self.window_a, f"#comment-{self.doomed.pk} form.comment-remove button").click()
        self.window_a.wait_for(lambda: self._alert(self.window_a), message="the confirmation dialog").dismiss()
        # A posted comment arriving live proves the page kept running after the dialog.
        later = comment_create(feed=self.feed, author="Guest", body="later")
        self.window_a.wait_for(lambda: self.window_a.count_of(later.pk) == 1, message="the next comment live")
        self.assertEqual(self.window_a.count_of(self.doomed.pk), 1)
        self.assertFalse(Comment.objects.get(pk=self.doomed.pk).removed)

    def test_live_comments_show_remove_to_their_author_only(self):
        """A comment arriving live shows "Remove" on its author's page, not on another guest's."""
        self.sign_in(self.window_a, "zed")
        self.open_live(self.window_a)
        self.open_live(self.window_b)
        fresh = comment_create(feed=self.feed, author="", body="just posted", user=self.zed)
        for browser in (self.window_a, self.window_b):
            browser.wait_for(lambda b=browser: b.count_of(fresh.pk) == 1, message="the comment live")
        self.assertTrue(self.remove_visible(self.window_a, fresh))
        self.assertFalse(self.remove_visible(self.window_b, fresh))

    def test_the_author_removes_without_javascript(self):
        """Without JavaScript "Remove" is a form post that redirects back to the page without the comment."""
        self.sign_in(self.plain, "zed")
        self.find(self.plain, f"#comment-{self.doomed.pk} form.comment-remove button").click()
        self.plain.wait_for(lambda: self.plain.count_of(self.doomed.pk) == 0, message="the page without it")
        self.assertEqual(self.plain.driver.current_url, self.instance.http_url("/feeds/moderated/"))
        self.assertEqual(self.plain.count_of(self.keep.pk), 1)
        self.assertTrue(Comment.objects.get(pk=self.doomed.pk).removed)

    def _alert(self, browser):
        from selenium.common.exceptions import NoAlertPresentException

        try:
            alert = browser.driver.switch_to.alert
            alert.text  # noqa: B018 - raises when there is none yet
            return alert
        except NoAlertPresentException:
            return None
