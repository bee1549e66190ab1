"""The feed page in a real browser: headless Chromium against real daphne processes and Redis.

Run alone with `DEBUG=1 .venv/bin/python manage.py test tests.test_browser`; needs Debian's
`chromium` and `chromium-driver` (scripts/ensure-test-services installs them) and `redis-server`.
"""
import contextlib
import io
import time
import unittest

from selenium.webdriver.common.by import By

from feed.models import Comment
from tests.browser import (
    AUTHOR_FIELD,
    BLANK_BODY_ERROR,
    BODY_FIELD,
    COMMENTS,
    LONG_BODY_ERROR,
    RECONNECT_WAIT,
    STATE,
    SUBMIT,
    Browser,
    FeedPage,
    ScreenshotOnFailureMixin,
    require_browser,
    screenshot_path,
)
from tests.harness import MultiInstanceTestCase

LIVE_LIMIT = 2.0  # seconds from pressing "Post" in one window to the comment showing in the other


class LiveFeedBrowserTests(ScreenshotOnFailureMixin, MultiInstanceTestCase):
    """Two headless browsers on two daphne instances sharing one Redis and the test database."""

    writer: Browser
    reader: Browser

    @classmethod
    def setUpClass(cls) -> None:
        require_browser()
        super().setUpClass()
        try:
            cls.writer = Browser()
            cls.reader = Browser()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        for name in ("writer", "reader"):
            browser = cls.__dict__.get(name)
            if browser is not None:
                browser.quit()
                delattr(cls, name)
        super().tearDownClass()

    def setUp(self) -> None:
        # Before the test database is flushed.
        self.addCleanup(self._leave_pages)
        super().setUp()
        self.a, self.b = self.instances
        self.slug = "browser-" + self._testMethodName.removeprefix("test_")[:40].replace("_", "-")
        self.feed = self.make_feed(self.slug, title="Browser test feed")

    def browsers_to_capture(self) -> dict[str, Browser]:
        return {"writer": self.writer, "reader": self.reader}

    def _leave_pages(self) -> None:
        # Close the pages' sockets before the test database is flushed under them.
        for browser in (self.writer, self.reader):
            browser.driver.get("about:blank")

    def comment(self, **filters) -> Comment:
        return Comment.objects.get(feed=self.feed, **filters)

    def assertShownOnceEachInOrder(self, page: FeedPage, expected: list[int]) -> None:
        comments = page.browser.comments()
        seqs = [c["seq"] for c in comments]
        ids = [c["id"] for c in comments]
        self.assertEqual(seqs, expected, f"{page.instance.name} page: comments once each, in order")
        self.assertEqual(len(ids), len(set(ids)), f"{page.instance.name} page: duplicate ids {ids}")

    def test_comment_posted_in_one_window_appears_in_the_other_within_2s_exactly_once(self):
        """A comment posted through the form on instance A shows on a page open on instance B within 2 s, without a reload, once; A's form clears and A shows it once."""
        # Untimed: the first post through a fresh instance also opens its Redis connections.
        self.make_feed("browser-warm-up")
        self.post(self.a, "browser-warm-up", "warm-up")
        writer = FeedPage(self.writer, self.a, self.slug).open()
        reader = FeedPage(self.reader, self.b, self.slug).open()
        writer_mark, reader_mark = self.writer.mark_page(), self.reader.mark_page()

        clicked = writer.post("Hello from instance A", author="Ada")
        shown = reader.wait_body("Hello from instance A")
        seen = time.monotonic()
        self.assertEqual(shown["author"], "Ada")
        comment = self.comment(seq=1)
        self.assertEqual(shown["id"], f"comment-{comment.pk}")
        self.assertLessEqual(seen - clicked, LIVE_LIMIT, f"comment took {seen - clicked:.2f} s to reach instance B's page")

        writer.wait_comment(comment)
        self.writer.wait_for(lambda: writer.field_value(BODY_FIELD) == "", message="the writer's body field to clear")
        # A later comment arriving on both pages shows that nothing else (a duplicate) was still on its way.
        follow_up = self.post(self.a, self.slug, "and a second one", author="Bob")
        reader.wait_seqs([1, follow_up["seq"]])
        writer.wait_seqs([1, follow_up["seq"]])
        for page in (reader, writer):
            self.assertEqual(page.browser.count_of(comment.pk), 1)
            self.assertShownOnceEachInOrder(page, [1, 2])
        self.assertTrue(self.reader.page_has_mark(reader_mark), "the reader's page was reloaded")
        self.assertTrue(self.writer.page_has_mark(writer_mark), "the writer's page was reloaded")

    def test_page_shows_reconnecting_then_live_and_missed_comments_when_its_instance_restarts(self):
        """When the instance a page is connected to is killed and started again, the page shows "reconnecting", then "live", and the comments posted meanwhile through the other instance once each, in order."""
        self.post(self.a, self.slug, "before the restart")
        reader = FeedPage(self.reader, self.b, self.slug).open()
        reader.wait_seqs([1])
        mark = self.reader.mark_page()
        self.reader.js(
            """
            window.__states = [];
            const el = document.querySelector(arguments[0]);
            new MutationObserver(() => window.__states.push(el.dataset.state))
              .observe(el, {childList: true, characterData: true, subtree: true, attributes: true});
            """,
            STATE,
        )

        self.b.kill()
        reader.wait_state("reconnecting")
        missed = [self.post(self.a, self.slug, f"posted while B was down, {n}")["seq"] for n in range(3)]
        self.assertEqual(missed, [2, 3, 4])
        self.b.start()
        self.b.wait_ready()

        reader.wait_state("live", timeout=RECONNECT_WAIT)
        reader.wait_seqs([1, 2, 3, 4])
        after = self.post(self.a, self.slug, "after the restart")["seq"]
        reader.wait_seqs([1, 2, 3, 4, after])
        self.assertShownOnceEachInOrder(reader, [1, 2, 3, 4, 5])
        self.assertTrue(self.reader.page_has_mark(mark), "the page was reloaded")
        states = self.reader.js("return window.__states")
        self.assertIn("reconnecting", states, f"state changes: {states}")
        self.assertIn("live", states[states.index("reconnecting"):], f"state changes: {states}")
        self.assertEqual(states[-1], "live", f"state changes: {states}")

    def test_page_without_javascript_shows_comments_and_the_form_posts_and_redirects_back(self):
        """With JavaScript disabled the page lists the comments, and the form posts as a full page and comes back to the feed."""
        self.post(self.a, self.slug, "first, rendered by the server", author="Ada")
        self.post(self.a, self.slug, "second, rendered by the server", author="Bob")
        browser = Browser(javascript=False)
        self.addCleanup(browser.quit)
        self.browsers_to_capture = lambda: {"no-js": browser}  # the shared browsers play no part here
        page = FeedPage(browser, self.a, self.slug).open(live=False)

        self.assertEqual(browser.js("return typeof window.htmx"), "undefined", "JavaScript is not disabled")
        self.assertEqual(browser.seqs(), [1, 2])
        for element in browser.driver.find_elements(By.CSS_SELECTOR, f"{COMMENTS} article"):
            self.assertTrue(element.is_displayed())
        self.assertIn("second, rendered by the server", page.find(COMMENTS).text)

        mark = browser.mark_page()
        page.post("posted without JavaScript", author="Cy")
        page.wait_body("posted without JavaScript")
        self.assertFalse(browser.page_has_mark(mark), "the post was not a full-page submit")
        self.assertEqual(browser.driver.current_url.split("#")[0], page.url, "redirected back to the feed page")
        self.assertEqual(browser.seqs(), [1, 2, 3])
        self.assertEqual(self.comment(seq=3).author, "Cy")

        page.post("   ", author="Cy")
        browser.wait_for(lambda: BLANK_BODY_ERROR in page.field_errors(BODY_FIELD), message="the blank-body error")
        self.assertEqual(page.field_value(AUTHOR_FIELD), "Cy")
        self.assertEqual(Comment.objects.filter(feed=self.feed).count(), 3)

    def test_hostile_bodies_show_as_text_and_run_no_script(self):
        """Bodies with markup (an <img onerror>, a <script>) show as literal text, live and after a reload, and no script in them runs."""
        payloads = [
            "<img src=x onerror=\"window.__xss='img';document.title='pwned';console.error('xss-ran')\">",
            "<script>window.__xss='script';document.title='pwned';console.error('xss-ran')</script>",
        ]
        author = "<b onmouseover=\"window.__xss='author'\">Mallory</b>"
        writer = FeedPage(self.writer, self.a, self.slug).open()
        reader = FeedPage(self.reader, self.b, self.slug).open()
        titles = {page: page.browser.driver.title for page in (writer, reader)}

        for payload in payloads:
            writer.post(payload, author=author)
            self.writer.wait_for(lambda: writer.field_value(BODY_FIELD) == "", message="the form to clear")
        saved = list(Comment.objects.filter(feed=self.feed).order_by("seq").values_list("body", flat=True))
        self.assertEqual(saved, payloads)

        reader.wait_seqs([1, 2])
        for load in ("live", "reloaded"):
            for page in (writer, reader):
                where = f"{page.instance.name} page, {load}"
                page.wait_body(payloads[1])
                shown = page.browser.comments()
                self.assertEqual([c["body"] for c in shown], payloads, where)
                self.assertEqual({c["author"] for c in shown}, {author}, where)
                markup = page.browser.js(
                    "return document.querySelectorAll(arguments[0] + ' img, ' + arguments[0] + ' script, ' + arguments[0] + ' b').length",
                    COMMENTS,
                )
                self.assertEqual(markup, 0, f"{where}: user markup became elements")
                self.assertIsNone(page.browser.js("return window.__xss === undefined ? null : window.__xss"), where)
                self.assertEqual(page.browser.driver.title, titles[page], where)
                # With escaping broken, the CSP would still block the inline code and say so here.
                ran = [
                    e for e in page.browser.console_errors()
                    if any(sign in e["message"] for sign in ("xss-ran", f"/feeds/{self.slug}/x", "Content Security Policy"))
                ]
                self.assertEqual(ran, [], f"{where}: console shows the payload ran")
            if load == "live":
                writer.open(keep_console=True)
                reader.open(keep_console=True)

    def test_form_errors_show_inline_and_keep_the_typed_text(self):
        """A blank or too long body is refused next to the field with the typed text kept; correcting it posts and clears the form."""
        page = FeedPage(self.writer, self.a, self.slug).open()
        mark = self.writer.mark_page()

        page.post("   ", author="Ada Lovelace")
        self.writer.wait_for(lambda: BLANK_BODY_ERROR in page.field_errors(BODY_FIELD), message="the blank-body error")
        self.assertEqual(page.field_value(AUTHOR_FIELD), "Ada Lovelace")

        too_long = ("This is far too long. " * 91).strip()  # 2001 characters, over the 2000 limit
        page.fill(author="Ada Lovelace", body="")
        # Set the value as a paste would, past any maxlength on the field, to reach the server's check.
        self.writer.js("arguments[0].value = arguments[1]", page.find(BODY_FIELD), too_long)
        page.find(SUBMIT).click()
        self.writer.wait_for(lambda: LONG_BODY_ERROR in page.field_errors(BODY_FIELD), message="the too-long error")
        self.assertEqual(page.field_value(BODY_FIELD), too_long)
        self.assertEqual(page.field_value(AUTHOR_FIELD), "Ada Lovelace")
        self.assertEqual(Comment.objects.filter(feed=self.feed).count(), 0)

        page.fill(body="Short and sweet.")
        page.find(SUBMIT).click()
        page.wait_body("Short and sweet.")
        self.writer.wait_for(lambda: page.field_value(BODY_FIELD) == "", message="the form to clear")
        self.assertEqual(page.field_errors(BODY_FIELD), "")
        self.assertTrue(self.writer.page_has_mark(mark), "the page was reloaded")

    def test_failing_browser_test_saves_a_screenshot(self):
        """A browser test that fails leaves a screenshot of its browser in var/test-screenshots/."""
        FeedPage(self.reader, self.b, self.slug).open()
        reader = self.reader

        class Failing(ScreenshotOnFailureMixin, unittest.TestCase):
            def browsers_to_capture(self):
                return {"reader": reader}

            def test_fails(self):
                self.fail("deliberately")

        case = Failing("test_fails")
        path = screenshot_path(case, "-reader")
        path.unlink(missing_ok=True)
        self.addCleanup(path.unlink, missing_ok=True)
        result = unittest.TestResult()
        with contextlib.redirect_stderr(io.StringIO()) as output:
            case.run(result)

        self.assertEqual(len(result.failures), 1)
        self.assertTrue(path.is_file(), f"no screenshot at {path}")
        self.assertEqual(path.read_bytes()[:8], b"\x89PNG\r\n\x1a\n")
        self.assertIn(f"screenshot saved: {path}", output.getvalue())

    def test_live_page_shows_its_comments_the_live_state_and_the_form(self):
        """The live page shows every comment (author, body, number), says "live" in words as the status, and offers the form: in the DOM and in Chromium's accessibility tree."""
        conversation = [
            ("Ada", "Is anyone else watching the launch stream?"),
            ("Grace", "Yes! Counting down now."),
            ("Linus", "Posting from the other server instance: this arrives live, no reload."),
            ("Ada", "Liftoff! <3"),
        ]
        for author, body in conversation:
            self.post(self.a, self.slug, body, author=author)
        page = FeedPage(self.reader, self.b, self.slug).open()
        page.wait_seqs([1, 2, 3, 4])
        page.post("And this one went through the form on the page.", author="Margaret")
        page.wait_seqs([1, 2, 3, 4, 5])
        expected = [*conversation, ("Margaret", "And this one went through the form on the page.")]

        shown = self.reader.comments()
        self.assertEqual([(c["author"], c["body"]) for c in shown], expected)
        for element in self.reader.driver.find_elements(By.CSS_SELECTOR, f"{COMMENTS} article"):
            self.assertIn(f"#{element.get_attribute('data-seq')}", element.text)
        newest = self.reader.driver.find_element(By.CSS_SELECTOR, f"{COMMENTS} article:last-child")
        self.assertTrue(self.reader.js(
            "const r = arguments[0].getBoundingClientRect(), b = arguments[1].getBoundingClientRect();"
            "return r.bottom <= b.bottom + 1 && r.top >= b.top - 1", newest, page.find(COMMENTS),
        ), "the newest comment is not in view")
        self.assertEqual(page.find(STATE).text, "live")
        self.assertTrue(page.find(STATE).is_displayed())

        tree = self.reader.ax_tree()
        by_id = {node["nodeId"]: node for node in tree}

        def role(node):
            return (node.get("role") or {}).get("value")

        def name(node):
            return (node.get("name") or {}).get("value", "")

        def text_under(node):
            parts, stack = [], [node]
            while stack:
                current = stack.pop()
                if role(current) == "StaticText":
                    parts.append(name(current))
                stack.extend(by_id[child] for child in reversed(current.get("childIds", [])) if child in by_id)
            return " ".join(parts)

        status = [n for n in tree if role(n) == "status" and "live" in text_under(n).split()]
        self.assertEqual(len(status), 1, "no status node that says \"live\"")
        log = next((n for n in tree if role(n) == "log"), None)
        self.assertIsNotNone(log, "no log role in the accessibility tree")
        self.assertEqual(name(log), "Comments")
        log_text = text_under(log)
        for author, body in expected:
            self.assertIn(author, log_text)
            self.assertIn(body, log_text)
        articles = [n for n in tree if role(n) == "article"]
        self.assertEqual(len(articles), len(expected))
        textboxes = sorted(name(n) for n in tree if role(n) == "textbox")
        self.assertEqual(textboxes, ["Comment", "Name"])
        self.assertIn("Post", [name(n) for n in tree if role(n) == "button"])
