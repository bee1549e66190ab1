"""Accounts, replies and the notification badge in a real browser, against a real daphne instance.

Needs Debian's `chromium` and `chromium-driver` (scripts/ensure-test-services) and `redis-server`.
"""
from urllib.parse import parse_qs, urlsplit

from django.contrib.auth import get_user_model
from selenium.webdriver.common.by import By

from feed.models import Comment, Feed
from feed.services import comment_create
from notifications.models import Notification
from tests.browser import Browser, ScreenshotOnFailureMixin, require_browser
from tests.harness import MultiInstanceTestCase

User = get_user_model()
PASSWORD = "a-long-unusual-passphrase-42"
FORM = "form#comment-form"


class PeopleBrowserTests(ScreenshotOnFailureMixin, MultiInstanceTestCase):
    instance_count = 1
    browser: Browser
    plain: Browser

    @classmethod
    def setUpClass(cls) -> None:
        require_browser()
        super().setUpClass()
        try:
            cls.browser = Browser()
            cls.plain = Browser(javascript=False)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        for name in ("browser", "plain"):
            browser = cls.__dict__.get(name)
            if browser is not None:
                browser.quit()
                delattr(cls, name)
        super().tearDownClass()

    def setUp(self) -> None:
        self.addCleanup(self._leave_pages)
        super().setUp()
        self.instance = self.instances[0]
        self.feed = Feed.objects.create(slug="people", title="People", allow_anonymous=True)
        self.zed = User.objects.create_user("zed", password=PASSWORD)
        self.parent = comment_create(feed=self.feed, author="", body="what do you think?", user=self.zed)

    def browsers_to_capture(self):
        return {"browser": self.browser, "plain": self.plain}

    def _leave_pages(self) -> None:
        for browser in (self.browser, self.plain):
            browser.driver.delete_all_cookies()
            browser.driver.get("about:blank")

    def find(self, browser, css):
        return browser.driver.find_element(By.CSS_SELECTOR, css)

    def open_feed(self, browser, query=""):
        browser.driver.get(self.instance.http_url(f"/feeds/people/{query}"))

    def wait_live(self):
        self.browser.wait_for(
            lambda: self.find(self.browser, "#connection-state").get_attribute("data-state") == "live",
            message="the page to be live",
        )

    def test_reply_with_htmx_fills_the_form_focuses_the_text_and_the_reply_arrives_linked(self):
        """"Reply" shows "Replying to zed — cancel", sets reply_to and focuses the text; the posted reply shows "in reply to zed" and notifies zed."""
        self.open_feed(self.browser)
        self.wait_live()
        self.find(self.browser, f"#comment-{self.parent.pk} .reply-link").click()
        self.browser.wait_for(lambda: "Replying to zed" in self.find(self.browser, FORM).text,
                              message="the form to say whom it replies to")
        self.assertEqual(self.browser.driver.current_url, self.instance.http_url("/feeds/people/"), "no navigation")
        self.assertEqual(self.find(self.browser, f"{FORM} [name='reply_to']").get_property("value"), str(self.parent.pk))
        self.browser.wait_for(lambda: self.browser.js("return document.activeElement.name") == "body",
                              message="focus in the comment text")
        self.find(self.browser, f"{FORM} .cancel-reply").click()
        self.browser.wait_for(lambda: "Replying to" not in self.find(self.browser, FORM).text, message="cancel")
        self.assertEqual(self.find(self.browser, f"{FORM} [name='reply_to']").get_property("value"), "")

        self.find(self.browser, f"#comment-{self.parent.pk} .reply-link").click()
        self.browser.wait_for(lambda: "Replying to zed" in self.find(self.browser, FORM).text, message="reply again")
        self.browser.wait_for(lambda: self.browser.js("return document.activeElement.name") == "body",
                              message="focus in the comment text again")
        self.browser.driver.switch_to.active_element.send_keys("I agree")
        self.find(self.browser, f"{FORM} [name='author']").send_keys("Guest")
        self.find(self.browser, f"{FORM} [type='submit']").click()
        reply = self.browser.wait_for(lambda: Comment.objects.filter(body="I agree").first(), message="the reply saved")
        self.browser.wait_for(lambda: self.browser.count_of(reply.pk) == 1, message="the reply on the page")
        link = self.find(self.browser, f"#comment-{reply.pk} a.in-reply-to")
        self.assertEqual((link.text, link.get_attribute("href")),
                         ("in reply to zed", self.instance.http_url(f"/feeds/people/#comment-{self.parent.pk}")))
        self.assertIn("(guest)", self.find(self.browser, f"#comment-{reply.pk}").text)
        self.assertEqual(list(Notification.objects.values_list("user__username", "kind")), [("zed", "reply")])

    def test_a_reply_link_whose_answer_is_not_the_form_is_followed_as_a_page(self):
        """If the reply action's answer is no form (here: the feed is gone), the page is not patched with it: the link is followed.

        A signed-out visitor of an unknown feed is sent to sign in and back, like for a
        members-only one (so the answer tells nothing), so following the link ends there.
        """
        self.open_feed(self.browser)
        self.wait_live()
        link = self.find(self.browser, f"#comment-{self.parent.pk} .reply-link").get_attribute("href")
        Feed.objects.filter(pk=self.feed.pk).delete()
        self.find(self.browser, f"#comment-{self.parent.pk} .reply-link").click()
        feed_path = urlsplit(link).path

        def followed():
            url = urlsplit(self.browser.driver.current_url)
            back_to = parse_qs(url.query).get("next", [""])[0]
            return self.browser.driver.current_url == link or (
                url.path == "/accounts/login/" and urlsplit(back_to).path == feed_path
            )

        self.browser.wait_for(followed, message=f"navigation to {link} (or to sign in and back there)")

    def test_reply_without_javascript_prefills_the_form_and_posts(self):
        """Without JavaScript the reply link opens the page with the form set to reply; the post redirects back."""
        self.open_feed(self.plain)
        self.find(self.plain, f"#comment-{self.parent.pk} .reply-link").click()
        self.assertIn("Replying to zed", self.find(self.plain, FORM).text)
        self.find(self.plain, f"{FORM} [name='author']").send_keys("Plain")
        self.find(self.plain, f"{FORM} [name='body']").send_keys("no script here")
        self.find(self.plain, f"{FORM} [type='submit']").click()
        reply = self.plain.wait_for(lambda: Comment.objects.filter(body="no script here").first(), message="saved")
        self.assertEqual(reply.reply_to, self.parent)
        self.plain.wait_for(lambda: self.plain.count_of(reply.pk) == 1, message="the page after the redirect")
        self.assertEqual(self.find(self.plain, f"#comment-{reply.pk} a.in-reply-to").text, "in reply to zed")

    def test_sign_up_post_signed_and_see_the_badge_then_sign_out(self):
        """Sign up from a feed's header, come back signed in, post under the username; a mention
        shows in the badge after a reload, the list links to it, and sign-out works (JavaScript off)."""
        browser = self.plain
        self.open_feed(browser)
        browser.driver.find_element(By.LINK_TEXT, "Sign up").click()
        self.find(browser, "#id_username").send_keys("newbie")
        self.find(browser, "#id_password1").send_keys(PASSWORD)
        self.find(browser, "#id_password2").send_keys(PASSWORD)
        self.find(browser, "form.account-form [type='submit']").click()
        browser.wait_for(lambda: browser.driver.current_url == self.instance.http_url("/feeds/people/"),
                         message="back on the feed")
        self.assertIn("Signed in as newbie", self.find(browser, ".site-header").text)
        self.assertIn("Posting as newbie", self.find(browser, FORM).text)
        self.find(browser, f"{FORM} [name='body']").send_keys("hello @zed")
        self.find(browser, f"{FORM} [type='submit']").click()
        comment = browser.wait_for(lambda: Comment.objects.filter(body="hello @zed").first(), message="saved")
        self.assertEqual((comment.author, comment.user.username), ("newbie", "newbie"))
        self.assertEqual(self.find(browser, "#notification-badge").get_attribute("data-unread"), "0")

        comment_create(feed=self.feed, author="", body="welcome @newbie", user=self.zed)
        browser.driver.refresh()
        self.assertEqual(self.find(browser, "#notification-badge").get_attribute("data-unread"), "1")
        self.find(browser, ".notifications-link").click()
        self.assertIn("zed mentioned you in People", self.find(browser, "#notification-list").text)
        self.find(browser, "form.mark-read [type='submit']").click()
        browser.wait_for(lambda: self.find(browser, "#notification-badge").get_attribute("data-unread") == "0",
                         message="all read")
        self.find(browser, "form.sign-out [type='submit']").click()
        browser.wait_for(lambda: "Sign in" in self.find(browser, ".site-header").text, message="signed out")
        self.assertNotIn("newbie", self.find(browser, ".site-header").text)
