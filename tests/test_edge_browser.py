"""The page behind the repository's nginx in a real browser: a post survives the instances restarting.

Needs Debian's chromium, chromium-driver and nginx (scripts/ensure-test-services installs them).
"""
from __future__ import annotations

import re

from selenium.webdriver.common.by import By

from feed.models import Comment
from tests.browser import WAIT, Browser, ScreenshotOnFailureMixin, require_browser
from tests.test_edge import NginxTestCase

FORM = "form#comment-form"
RECONNECT_WAIT = 45.0  # the page's WebSocket backs off (randomly, up to 10 s) between attempts


class PostRetryBrowserTests(ScreenshotOnFailureMixin, NginxTestCase):
    browser: Browser

    @classmethod
    def setUpClass(cls) -> None:
        require_browser()
        super().setUpClass()
        try:
            cls.browser = Browser()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        browser = cls.__dict__.get("browser")
        if browser is not None:
            browser.quit()
            del cls.browser
        super().tearDownClass()

    def setUp(self) -> None:
        self.addCleanup(lambda: self.browser.driver.get("about:blank"))  # before the database is flushed
        super().setUp()

    def browsers_to_capture(self) -> dict[str, Browser]:
        return {"page": self.browser}

    def find(self, css: str):
        return self.browser.driver.find_element(By.CSS_SELECTOR, css)

    def form_state(self) -> dict:
        return self.browser.js(
            """
            const form = document.querySelector(arguments[0]);
            const status = form.querySelector('[data-form-status]');
            return {busy: form.getAttribute('aria-busy'), status: status.textContent, role: status.getAttribute('role'),
                    button: form.querySelector('button[type=submit]').disabled,
                    readonly: form.querySelector('textarea[name=body]').readOnly,
                    body: form.querySelector('textarea[name=body]').value};
            """,
            FORM,
        )

    def test_post_sent_while_the_instances_restart_is_retried_and_appears_once(self):
        """The instances stop just before a post from the page: the form stays busy and says it
        is retrying (announced), and once they are back the comment appears once, saved once."""
        feed = self.make_feed("edge-browser")
        self.browser.driver.get(self.nginx.http_url("/feeds/edge-browser/"))
        self.browser.wait_for(lambda: self.find("#connection-state").get_attribute("data-state") == "live",
                              message="the page to be live")
        for instance in self.instances:
            instance.stop()
        posts_logged = self.nginx.access_offset()
        self.find(f"{FORM} [name='author']").send_keys("Ada")
        self.find(f"{FORM} [name='body']").send_keys("sent during a restart")
        self.find(f"{FORM} [type='submit']").click()

        state = self.browser.wait_for(
            lambda: (lambda s: s if "Retrying" in s["status"] else None)(self.form_state()),
            message=f"the form to say it is retrying (form: {self.form_state()})",
        )
        self.assertEqual(state["role"], "status")  # a live region: the state is announced
        self.assertEqual((state["busy"], state["button"], state["readonly"]), ("true", True, True), state)
        self.assertEqual(state["body"], "sent during a restart")

        for instance in self.instances:
            instance.start()
        for instance in self.instances:
            instance.wait_ready()
        comment = self.browser.wait_for(
            lambda: Comment.objects.filter(feed=feed).first(), timeout=30, message="the post to be saved",
        )
        self.browser.wait_for(lambda: self.browser.count_of(comment.pk) == 1, timeout=RECONNECT_WAIT,
                              message=f"the comment on the page (seqs {self.browser.seqs()})")
        self.browser.wait_for(lambda: self.form_state()["busy"] is None and self.form_state()["body"] == "",
                              message=f"the form to be cleared (form: {self.form_state()})")
        self.assertEqual(list(Comment.objects.filter(feed=feed).values_list("body", flat=True)), ["sent during a restart"])
        self.assertEqual(self.browser.count_of(comment.pk), 1)
        attempts = re.findall(r'"POST /feeds/edge-browser/comments/ [^"]*" (\d{3})', self.nginx.access_log()[posts_logged:])
        self.assertGreaterEqual(len(attempts), 2, f"the page retried the post: {attempts}")
        self.assertEqual(attempts[-1], "200", attempts)
        self.assertEqual([attempt for attempt in attempts[:-1] if attempt not in ("502", "503", "504")], [], attempts)

    def test_post_retries_keep_one_idempotency_key_per_comment(self):
        """Every attempt of one comment carries the same Idempotency-Key; the next comment a new one."""
        self.make_feed("edge-keys")
        self.browser.driver.get(self.nginx.http_url("/feeds/edge-keys/"))
        self.browser.wait_for(lambda: self.find("#connection-state").get_attribute("data-state") == "live",
                              message="the page to be live")
        # Record the header of every request the page sends (the page's own XMLHttpRequest).
        self.browser.js(
            """
            window.__keys = [];
            const setHeader = XMLHttpRequest.prototype.setRequestHeader;
            XMLHttpRequest.prototype.setRequestHeader = function (name, value) {
              if (name.toLowerCase() === 'idempotency-key') window.__keys.push(value);
              return setHeader.call(this, name, value);
            };
            """
        )
        for instance in self.instances:
            instance.stop()
        self.find(f"{FORM} [name='author']").send_keys("Ada")
        self.find(f"{FORM} [name='body']").send_keys("first")
        self.find(f"{FORM} [type='submit']").click()
        self.browser.wait_for(lambda: len(self.browser.js("return window.__keys")) >= 2, timeout=WAIT,
                              message="two attempts of the first comment")
        for instance in self.instances:
            instance.start()
        for instance in self.instances:
            instance.wait_ready()
        self.browser.wait_for(lambda: Comment.objects.filter(body="first").exists(), timeout=30, message="the first comment saved")
        self.browser.wait_for(lambda: self.form_state()["body"] == "", message="the form cleared")
        first_keys = self.browser.js("return window.__keys")
        self.find(f"{FORM} [name='body']").send_keys("second")
        self.find(f"{FORM} [type='submit']").click()
        self.browser.wait_for(lambda: Comment.objects.filter(body="second").exists(), timeout=30, message="the second comment saved")
        keys = self.browser.js("return window.__keys")
        self.assertEqual(len(set(first_keys)), 1, first_keys)
        self.assertEqual(len(keys), len(first_keys) + 1, keys)
        self.assertNotEqual(keys[-1], first_keys[0])
        self.assertRegex(keys[-1], r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
