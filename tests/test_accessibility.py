"""Accessibility of the pages in a real browser: axe-core audits of every page in its states,
live announcements as Chromium's accessibility tree exposes them, keyboard use and contrast.

Run with `make test TESTS=tests.test_accessibility`; needs Chromium (like tests.test_browser)
and axe-core (`npm ci` in tests/, done by scripts/ensure-test-services).
"""
from django.contrib.auth import get_user_model
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys

from feed.models import Feed
from feed.services import comment_create
from tests.browser import (
    AUTHOR_FIELD,
    BLANK_BODY_ERROR,
    BODY_FIELD,
    COMMENTS,
    STATE,
    Browser,
    FeedPage,
    ScreenshotOnFailureMixin,
    assert_no_serious_axe_violations,
    ax_value,
    require_axe,
    require_browser,
)
from tests.harness import MultiInstanceTestCase

STAFF_PASSWORD = "a-long-test-password-1"
ANNOUNCER = "#announcer"

# WCAG 2.1 relative luminance and contrast ratio of an element's colour against the first
# opaque background behind it (the page has no images or gradients behind text or controls).
CONTRAST_JS = """
function rgb(value) { return (value.match(/[\\d.]+/g) || []).map(Number); }
function luminance(c) {
  const [r, g, b] = c.slice(0, 3).map((v) => { v /= 255; return v <= 0.04045 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}
function background(el) {
  for (; el; el = el.parentElement) {
    const c = rgb(getComputedStyle(el).backgroundColor);
    if (c.length === 3 || (c.length === 4 && c[3] === 1)) return c;
  }
  return [255, 255, 255];
}
function contrast(a, b) { const [x, y] = [luminance(a), luminance(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); }
"""


class BrowserAccessibilityTestCase(ScreenshotOnFailureMixin, MultiInstanceTestCase):
    """One headless Chromium on one real daphne instance (with a throwaway Redis)."""

    instance_count = 1
    browser: Browser

    @classmethod
    def setUpClass(cls) -> None:
        require_browser()
        require_axe()
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
        # Before the test database is flushed: leave the page (closing its socket), sign out.
        self.addCleanup(self._leave_page)
        super().setUp()
        self.server = self.instances[0]
        self.slug = "a11y-" + self._testMethodName.removeprefix("test_")[:40].replace("_", "-")

    def _leave_page(self) -> None:
        driver = self.browser.driver
        driver.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
        driver.delete_all_cookies()
        driver.get("about:blank")

    def browsers_to_capture(self) -> dict[str, Browser]:
        return {"browser": self.browser}

    def open_feed(self, slug: str | None = None, *, live: bool = True, query: str = "") -> FeedPage:
        page = FeedPage(self.browser, self.server, slug or self.slug)
        if query:
            page.url += query
        return page.open(live=live)

    def make_comments(self, count: int, slug: str | None = None) -> None:
        self.post_many([(self.server, count)], slug or self.slug, body=lambda poster, n: f"Comment number {n + 1}, long enough to take a line of its own.")

    def audit(self, context: str) -> None:
        assert_no_serious_axe_violations(self.browser, context)

    def sign_in_as_staff(self) -> None:
        """Sign in through the admin's login page, as a person would."""
        get_user_model().objects.create_user("staffer", password=STAFF_PASSWORD, is_staff=True)
        driver = self.browser.driver
        driver.get(self.server.http_url("/admin/login/?next=/"))
        driver.find_element("id", "id_username").send_keys("staffer")
        driver.find_element("id", "id_password").send_keys(STAFF_PASSWORD, Keys.ENTER)
        self.browser.wait_for(lambda: "Signed in as staffer" in driver.find_element("css selector", ".site-nav").text, message="the feed list, signed in")

    def scroll_metrics(self) -> dict:
        return self.browser.js("const b = document.querySelector(arguments[0]); return {top: b.scrollTop, height: b.scrollHeight, client: b.clientHeight}", COMMENTS)


class AxeAuditTests(BrowserAccessibilityTestCase):
    """axe-core finds no serious or critical violation on any page, in any of its states."""

    def test_audit_reports_a_violation_it_is_shown_and_runs_despite_the_pages_csp(self):
        """The audit fails on a planted low-contrast text, although the page's CSP blocks inline scripts."""
        Feed.objects.create(slug=self.slug, title="Audit check", allow_anonymous=True)
        self.open_feed()
        self.browser.js(
            "const s = document.createElement('script'); s.textContent = 'window.__inline = 1'; document.head.appendChild(s);"
            "const p = document.createElement('p'); p.className = 'planted'; p.textContent = 'barely visible';"
            "p.style.color = '#bbbbbb'; p.style.background = '#ffffff'; document.querySelector('main').appendChild(p);"
        )
        self.assertIsNone(self.browser.js("return window.__inline === undefined ? null : window.__inline"), "the CSP let an inline script run")
        with self.assertRaises(AssertionError) as raised:
            self.audit("a page with planted low-contrast text")
        self.assertRegex(str(raised.exception), r"color-contrast \(serious\)[^\n]*\n(\s+.*\n)*\s+\.planted: ")

    def test_feed_list_signed_out(self):
        """The list of feeds, signed out, with a public and a members-only feed."""
        Feed.objects.create(slug="public", title="Public", allow_anonymous=True)
        Feed.objects.create(slug="private", title="Members", allow_anonymous=False)
        self.browser.driver.get(self.server.http_url("/"))
        self.audit("the feed list, signed out")

    def test_feed_list_without_feeds(self):
        """The list of feeds when there is none."""
        self.browser.driver.get(self.server.http_url("/"))
        self.assertIn("No feeds yet", self.browser.driver.find_element("css selector", "main").text)
        self.audit("the empty feed list")

    def test_empty_live_feed(self):
        """A live feed without comments."""
        Feed.objects.create(slug=self.slug, title="Empty", allow_anonymous=True)
        self.open_feed()
        self.audit("an empty live feed")

    def test_long_live_feed_that_scrolls(self):
        """A live feed whose comment list scrolls, with the "Older comments" link."""
        Feed.objects.create(slug=self.slug, title="Long", allow_anonymous=True)
        self.make_comments(60)
        self.open_feed()
        metrics = self.scroll_metrics()
        self.assertGreater(metrics["height"], metrics["client"], "the comment list does not scroll")
        self.audit("a long live feed that scrolls")

    def test_older_comments_page(self):
        """An archive page (?before=N), which is not live and has no form."""
        Feed.objects.create(slug=self.slug, title="Archive", allow_anonymous=True)
        self.make_comments(60)
        self.open_feed(live=False, query="?before=11")
        self.assertEqual(self.browser.seqs(), list(range(1, 11)))
        self.audit("an older-comments page")

    def test_reconnecting_state(self):
        """A live feed whose server went away: "reconnecting…"."""
        Feed.objects.create(slug=self.slug, title="Reconnecting", allow_anonymous=True)
        self.make_comments(3)
        page = self.open_feed()
        self.server.kill()
        page.wait_state("reconnecting")
        self.audit("a feed that is reconnecting")

    def test_offline_state(self):
        """A live feed in a browser that went offline."""
        Feed.objects.create(slug=self.slug, title="Offline", allow_anonymous=True)
        self.make_comments(3)
        page = self.open_feed()
        self.browser.driver.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
        page.wait_state("offline")
        self.audit("an offline feed")

    def test_form_with_errors(self):
        """The form after a refused post (htmx): errors next to the fields."""
        Feed.objects.create(slug=self.slug, title="Errors", allow_anonymous=True)
        page = self.open_feed()
        page.post("   ", author="Ada")
        self.browser.wait_for(lambda: BLANK_BODY_ERROR in page.field_errors(BODY_FIELD), message="the blank-body error")
        self.audit("the form with errors")

    def test_form_with_errors_as_a_full_page(self):
        """The full page a refused post answers without htmx (as without JavaScript)."""
        Feed.objects.create(slug=self.slug, title="Full page", allow_anonymous=True)
        page = self.open_feed()
        page.fill(author="Ada", body="   ")
        # HTMLFormElement.submit() fires no submit event: htmx stays out, as if JavaScript were off.
        self.browser.js("document.querySelector('#comment-form').submit()")
        self.browser.wait_for(lambda: self.browser.driver.current_url.endswith("/comments/") and BLANK_BODY_ERROR in page.field_errors(BODY_FIELD), message="the page with the blank-body error")
        self.audit("the full page with form errors")

    def test_members_only_refusal_page(self):
        """The page a signed-out post to a members-only feed gets without htmx: not found, as for an unknown feed."""
        Feed.objects.create(slug="open", title="Open", allow_anonymous=True)
        Feed.objects.create(slug=self.slug, title="Members only", allow_anonymous=False)
        page = self.open_feed("open")
        page.fill(author="Eve", body="let me in")
        self.browser.js("const f = document.querySelector('#comment-form'); f.action = arguments[0]; f.submit()", f"/feeds/{self.slug}/comments/")
        self.browser.wait_for(
            lambda: self.browser.driver.current_url.endswith(f"/feeds/{self.slug}/comments/"), message="the refusal page"
        )
        self.assertNotIn("Members only", self.browser.driver.page_source)
        self.audit("the members-only refusal page (not found)")

    def test_signed_in_pages(self):
        """Signed in as staff (through /admin/login/): the feed list and a members-only live feed."""
        Feed.objects.create(slug=self.slug, title="Members only", allow_anonymous=False)
        self.sign_in_as_staff()
        self.audit("the feed list, signed in")
        feed = Feed.objects.get(slug=self.slug)
        for n in range(3):
            comment_create(feed=feed, author="staffer", body=f"members' comment {n}", user=get_user_model().objects.get(username="staffer"))
        page = self.open_feed()
        self.assertTrue(page.find(BODY_FIELD).is_displayed(), "a member cannot post")
        self.audit("a members-only live feed, signed in")

    def test_account_pages_with_and_without_errors(self):
        """Sign-in and sign-up, blank and after a failed attempt (errors shown inline)."""
        driver = self.browser.driver
        for path, what in (("/accounts/login/", "sign-in"), ("/accounts/signup/", "sign-up")):
            driver.get(self.server.http_url(path))
            self.browser.wait_for(lambda: driver.find_elements("css selector", "main form"), message=f"the {what} form")
            self.audit(f"the {what} page")
            driver.find_element("id", "id_username").send_keys("nobody")
            for password in driver.find_elements("css selector", "main input[type='password']"):
                password.send_keys("x")  # wrong, or too short and common: the server says so inline
            driver.find_element("css selector", "main form button[type='submit']").click()
            self.browser.wait_for(
                lambda: driver.find_elements("css selector", "[aria-invalid='true'], .errorlist, [role='alert']"),
                message=f"the {what} errors",
            )
            self.audit(f"the {what} page with errors")

    def test_notifications_ops_and_reply_pages_signed_in(self):
        """The notifications list (with an unread mention), the operations page and a reply form, as staff."""
        feed = Feed.objects.create(slug=self.slug, title="Talk", allow_anonymous=True)
        self.sign_in_as_staff()
        staffer = get_user_model().objects.get(username="staffer")
        first = comment_create(feed=feed, author="Ann", body="hello @staffer")
        driver = self.browser.driver
        driver.get(self.server.http_url("/notifications/"))
        self.browser.wait_for(lambda: "hello" in driver.find_element("css selector", "main").text, message="the mention listed")
        self.audit("the notifications page, one unread")
        driver.get(self.server.http_url("/ops/"))
        self.browser.wait_for(lambda: driver.find_elements("css selector", "main table"), message="the operations page")
        self.audit("the operations page")
        self.open_feed(query=f"?reply_to={first.pk}")
        self.assertIn("Replying to Ann", driver.find_element("id", "comment-form").text)
        self.assertTrue(staffer.is_staff)
        self.audit("a feed page replying to a comment, with remove actions")


class LiveAnnouncementTests(BrowserAccessibilityTestCase):
    """New comments reach screen readers once each, politely; other code can announce too."""

    def test_comment_list_is_a_polite_log_of_additions_named_comments(self):
        """Chromium exposes the list as a focusable log named "Comments", a polite live region for additions only."""
        Feed.objects.create(slug=self.slug, title="Log", allow_anonymous=True)
        self.open_feed()
        node = self.browser.ax_node(COMMENTS)
        self.assertEqual(ax_value(node, "role"), "log")
        self.assertEqual(ax_value(node, "name"), "Comments")
        self.assertEqual(ax_value(node, "live"), "polite")
        self.assertEqual(ax_value(node, "relevant"), "additions")
        self.assertFalse(ax_value(node, "atomic"), "an atomic log would be read whole on every addition")
        self.assertTrue(ax_value(node, "focusable"))

    def test_each_new_comment_is_added_once_and_the_shown_ones_are_left_alone(self):
        """A live comment is one added article in the log: nothing shown is removed or rewritten, so only it is read."""
        Feed.objects.create(slug=self.slug, title="Additions", allow_anonymous=True)
        self.make_comments(3)
        page = self.open_feed()
        self.browser.js(
            """
            window.__changes = [];
            const log = document.querySelector(arguments[0]);
            log.querySelectorAll('article').forEach((a) => { a.__shownAtLoad = true; });
            new MutationObserver((records) => records.forEach((r) => {
              r.addedNodes.forEach((n) => n.nodeType === 1 && window.__changes.push('added ' + (n.dataset.seq || n.tagName)));
              r.removedNodes.forEach((n) => n.nodeType === 1 && window.__changes.push('removed ' + (n.dataset.seq || n.tagName)));
              if (r.type === 'characterData' || r.type === 'attributes' && r.target !== log && !r.attributeName.startsWith('class'))
                window.__changes.push(r.type + ' ' + (r.attributeName || ''));
            })).observe(log, {childList: true, subtree: true, characterData: true, attributes: true});
            """,
            COMMENTS,
        )
        self.post(self.server, self.slug, "the fourth, live", author="Ada")
        self.post(self.server, self.slug, "the fifth, live", author="Bob")
        page.wait_seqs([1, 2, 3, 4, 5])
        self.assertEqual(self.browser.js("return window.__changes"), ["added 4", "added 5"])
        kept = self.browser.js("return Array.from(document.querySelectorAll(arguments[0] + ' article')).map((a) => !!a.__shownAtLoad)", COMMENTS)
        self.assertEqual(kept, [True, True, True, False, False], "comments shown before were replaced")
        node = self.browser.ax_node(f"{COMMENTS} article[data-seq='5']")
        self.assertIn("the fifth, live", " ".join(n.get("name", {}).get("value", "") for n in self.browser.ax_tree() if n.get("role", {}).get("value") == "StaticText"))
        self.assertEqual(ax_value(node, "role"), "article")
        self.assertEqual(ax_value(self.browser.ax_node(COMMENTS), "role"), "log", "the live swap changed the list's role")

    def test_announce_speaks_each_message_and_throttles_by_key(self):
        """LiveFeed.announce adds each message to a polite live region; with a key, at most one per interval, the latest winning."""
        Feed.objects.create(slug=self.slug, title="Announcer", allow_anonymous=True)
        self.open_feed()
        node = self.browser.ax_node(ANNOUNCER)
        self.assertEqual(ax_value(node, "live"), "polite")
        self.assertEqual(ax_value(node, "relevant"), "additions")
        self.browser.js(
            """
            window.__spoken = [];
            new MutationObserver((records) => records.forEach((r) => r.addedNodes.forEach((n) =>
              window.__spoken.push([n.textContent, performance.now()])))).observe(document.querySelector(arguments[0]), {childList: true});
            window.__start = performance.now();
            for (const n of [3, 4, 5]) LiveFeed.announce(n + ' watching', {key: 'presence', every: 1000});
            LiveFeed.announce('Comment removed');
            LiveFeed.announce('Comment removed');
            """,
            ANNOUNCER,
        )
        spoken = self.browser.wait_for(lambda: (s := self.browser.js("return window.__spoken")) and len(s) >= 4 and s, message="four announcements")
        texts = [text for text, _at in spoken]
        self.assertEqual(texts, ["3 watching", "Comment removed", "Comment removed", "5 watching"])
        start = self.browser.js("return window.__start")
        self.assertGreaterEqual(spoken[3][1] - start, 1000, "the second presence message came within the interval")
        self.assertLess(spoken[0][1] - start, 500, "the first message waited")
        self.assertIn("5 watching", self.browser.js("return document.querySelector(arguments[0]).textContent", ANNOUNCER))
        visible = self.browser.js("const r = document.querySelector(arguments[0]).getBoundingClientRect(); return r.width > 1 || r.height > 1", ANNOUNCER)
        self.assertFalse(visible, "the announcer is visible")


class KeyboardTests(BrowserAccessibilityTestCase):
    """Everything works with the keyboard alone, focus always shows and stays where it was left."""

    def focused(self) -> str:
        return self.browser.js(
            "const e = document.activeElement; return e === document.body ? 'body' : (e.id ? '#' + e.id : e.tagName.toLowerCase() + (e.getAttribute('href') ? '[href=' + e.getAttribute('href') + ']' : ''))"
        )

    def focus_ring(self) -> dict:
        return self.browser.js(
            CONTRAST_JS + "const e = document.activeElement, s = getComputedStyle(e);"
            "return {style: s.outlineStyle, width: parseFloat(s.outlineWidth), contrast: contrast(rgb(s.outlineColor), background(e.parentElement))};"
        )

    def test_tab_reaches_every_control_with_a_visible_focus_ring_and_ctrl_enter_posts(self):
        """Tab goes through the header links, the older-comments link, the comment list (and what is in it), the fields and the button, each with a 3:1 focus ring; typing and Ctrl+Enter posts."""
        Feed.objects.create(slug=self.slug, title="Keyboard", allow_anonymous=True)
        self.make_comments(60)
        page = self.open_feed()
        order = []
        actions = ActionChains(self.browser.driver)
        for _ in range(120):  # links inside the comments (e.g. one per comment) come after the list
            actions.send_keys(Keys.TAB).perform()
            order.append(self.focused())
            ring = self.focus_ring()
            self.assertNotEqual(ring["style"], "none", f"{order[-1]} has no focus ring")
            self.assertGreaterEqual(ring["width"], 2, f"{order[-1]}'s focus ring is thin")
            self.assertGreaterEqual(ring["contrast"], 3, f"{order[-1]}'s focus ring contrast")
            if order[-1] in ("#id_body", "button"):
                break
        self.assertEqual(order[-2:], ["#id_author", "#id_body"], f"tab order {order}")
        older = f"a[href=/feeds/{self.slug}/?before=11]"
        self.assertIn(older, order, f"tab order {order}")
        self.assertIn("#comments", order, f"tab order {order}")
        self.assertLess(order.index(older), order.index("#comments"), f"tab order {order}")
        actions.send_keys(Keys.TAB).perform()
        self.assertEqual(self.focused(), "button")
        self.assertGreaterEqual(self.focus_ring()["contrast"], 3, "the button's focus ring")

        # A blank comment: the server refuses it and focus goes to it, with the error read out.
        actions.key_down(Keys.SHIFT).send_keys(Keys.TAB).send_keys(Keys.TAB).key_up(Keys.SHIFT).perform()
        self.assertEqual(self.focused(), "#id_author")
        actions.send_keys("Kim", Keys.TAB, "   ").key_down(Keys.CONTROL).send_keys(Keys.ENTER).key_up(Keys.CONTROL).perform()
        self.browser.wait_for(lambda: BLANK_BODY_ERROR in page.field_errors(BODY_FIELD), message="the blank-body error")
        self.assertEqual(self.focused(), "#id_body", "focus did not move to the field in error")
        self.assertEqual(page.find(BODY_FIELD).get_attribute("aria-invalid"), "true")
        described_by = page.find(BODY_FIELD).get_attribute("aria-describedby")
        self.assertIn(BLANK_BODY_ERROR, self.browser.js("return document.getElementById(arguments[0]).textContent", described_by))
        actions.send_keys("a body typed at the keyboard").key_down(Keys.CONTROL).send_keys(Keys.ENTER).key_up(Keys.CONTROL).perform()
        page.wait_body("a body typed at the keyboard")
        self.browser.wait_for(lambda: page.field_value(BODY_FIELD) == "", message="the form to clear")
        self.assertEqual(self.focused(), "#id_body")
        self.assertEqual(page.browser.comments()[-1]["author"], "Kim")

    def test_arrow_keys_home_and_end_scroll_the_focused_comment_list(self):
        """With the list focused, Home scrolls to the oldest comment and End back to the newest."""
        Feed.objects.create(slug=self.slug, title="Scrolling", allow_anonymous=True)
        self.make_comments(60)
        self.open_feed()
        self.browser.wait_for(lambda: self.scroll_metrics()["top"] > 0, message="the list to start at the newest comment")
        self.browser.driver.find_element("css selector", COMMENTS).click()
        actions = ActionChains(self.browser.driver)
        self.assertEqual(self.focused(), "#comments")
        actions.send_keys(Keys.HOME).perform()
        self.browser.wait_for(lambda: self.scroll_metrics()["top"] == 0, message="Home to scroll to the top")
        actions.send_keys(Keys.ARROW_DOWN).perform()
        self.browser.wait_for(lambda: self.scroll_metrics()["top"] > 0, message="the down arrow to scroll")
        actions.send_keys(Keys.END).perform()
        self.browser.wait_for(lambda: (m := self.scroll_metrics())["height"] - m["top"] - m["client"] < 2, message="End to scroll to the bottom")

    def test_live_comment_leaves_focus_caret_and_a_scrolled_up_reader_in_place(self):
        """A comment arriving while someone types keeps their focus and text; one who scrolled up stays where they were."""
        Feed.objects.create(slug=self.slug, title="Stay", allow_anonymous=True)
        self.make_comments(60)
        page = self.open_feed()
        body = page.find(BODY_FIELD)
        body.send_keys("half a thought")
        self.browser.js("arguments[0].setSelectionRange(4, 4)", body)
        self.post(self.server, self.slug, "arrives while typing")
        page.wait_body("arrives while typing")
        self.assertEqual(self.focused(), "#id_body")
        self.assertEqual(self.browser.js("return [arguments[0].value, arguments[0].selectionStart]", body), ["half a thought", 4])

        self.browser.js("document.querySelector(arguments[0]).focus(); document.querySelector(arguments[0]).scrollTop = 200", COMMENTS)
        self.post(self.server, self.slug, "arrives while reading older ones")
        page.wait_body("arrives while reading older ones")
        self.assertEqual(self.scroll_metrics()["top"], 200, "the reader was pulled down")
        self.assertEqual(self.focused(), "#comments")

        self.browser.js("const b = document.querySelector(arguments[0]); b.scrollTop = b.scrollHeight", COMMENTS)
        self.post(self.server, self.slug, "arrives at the bottom")
        page.wait_body("arrives at the bottom")
        self.browser.wait_for(lambda: (m := self.scroll_metrics())["height"] - m["top"] - m["client"] < 2, message="a reader at the bottom to see the newest")


class ContrastAndMotionTests(BrowserAccessibilityTestCase):
    """Colours and motion: WCAG 2.1 AA contrast in every connection state, reduced motion honoured."""

    def test_connection_state_text_meets_4_5_to_1_and_its_dot_differs_in_shape(self):
        """Live, reconnecting and offline each have text of at least 4.5:1 and a dot of their own shape, hidden from the accessibility tree."""
        Feed.objects.create(slug=self.slug, title="States", allow_anonymous=True)
        page = self.open_feed()
        shapes = {}
        for state in ("live", "reconnecting", "offline"):
            if state == "reconnecting":
                self.server.kill()
            if state == "offline":
                self.browser.driver.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
            page.wait_state(state)
            found = self.browser.js(
                CONTRAST_JS + "const e = document.querySelector(arguments[0]);"
                "return {contrast: contrast(rgb(getComputedStyle(e).color), background(e)), dot: getComputedStyle(e, '::before').content};",
                STATE,
            )
            self.assertGreaterEqual(found["contrast"], 4.5, f"{state}: contrast {found['contrast']:.2f}")
            shapes[state] = found["dot"]
            names = [n.get("name", {}).get("value", "") for n in self.browser.ax_tree()]
            self.assertFalse([n for n in names if any(dot in n for dot in "●◐○")], f"{state}: the dot is read out")
        self.assertEqual(len(set(shapes.values())), 3, f"dots {shapes}")

    def test_fields_have_outlines_of_3_to_1(self):
        """The name and comment fields' borders stand out 3:1 from the form around them, also when invalid."""
        Feed.objects.create(slug=self.slug, title="Outlines", allow_anonymous=True)
        page = self.open_feed()
        measure = CONTRAST_JS + "const e = document.querySelector(arguments[0]); return contrast(rgb(getComputedStyle(e).borderTopColor), background(e.parentElement));"
        for field in (AUTHOR_FIELD, BODY_FIELD):
            self.assertGreaterEqual(self.browser.js(measure, field), 3, field)
        page.post("   ", author="Ada")
        self.browser.wait_for(lambda: page.field_errors(BODY_FIELD), message="the error")
        self.assertGreaterEqual(self.browser.js(measure, BODY_FIELD), 3, f"{BODY_FIELD}, invalid")

    def test_new_comment_highlight_fades_only_without_reduced_motion(self):
        """The highlight of a new comment fades in 1 s, and appears at once for people who prefer reduced motion."""
        Feed.objects.create(slug=self.slug, title="Motion", allow_anonymous=True)
        self.make_comments(1)
        self.open_feed()
        duration = "return getComputedStyle(document.querySelector(arguments[0] + ' article')).transitionDuration"
        self.assertEqual(self.browser.js(duration, COMMENTS), "1s")
        self.browser.driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-reduced-motion", "value": "reduce"}]})
        self.assertEqual(self.browser.js(duration, COMMENTS), "0s")
