"""The pages and the comment form, with and without htmx, and their CSRF protection."""
import re
from html.parser import HTMLParser

from django.contrib.auth import get_user_model
from django.test import Client, TestCase, override_settings

from feed.models import Comment, Feed
from feed.services import comment_create

HTMX = {"HTTP_HX_REQUEST": "true"}


class _Tags(HTMLParser):
    """Collect every start tag with its attributes."""

    def __init__(self, html):
        super().__init__()
        self.tags = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def find(self, tag, **attrs):
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items())]


def _seqs(html):
    return [int(s) for s in re.findall(r'<article id="comment-\d+" class="comment" data-seq="(\d+)"', html)]


class FeedIndexTests(TestCase):
    def test_index_links_to_every_open_feed(self):
        """The home page lists each feed an anonymous visitor may read (the demo one included) with a link to its page."""
        Feed.objects.create(slug="second", title="Second feed", allow_anonymous=True)
        html = self.client.get("/").content.decode()
        self.assertIn('href="/feeds/demo/"', html)
        self.assertIn('href="/feeds/second/"', html)
        self.assertIn("Second feed", html)

    def test_index_hides_members_only_feeds_from_anonymous_visitors(self):
        """Visitors and non-members see the open feeds only; a member also sees the members-only one, marked so."""
        Feed.objects.create(slug="club", title="Secret club", allow_anonymous=False)
        html = self.client.get("/").content.decode()
        self.assertIn('href="/feeds/demo/"', html)
        self.assertNotIn("/feeds/club/", html)
        self.assertNotIn("Secret club", html)
        self.assertNotIn("members only", html)
        self.client.force_login(get_user_model().objects.create_user("outsider"))
        self.assertNotIn("Secret club", self.client.get("/").content.decode())
        reader = get_user_model().objects.create_user("reader")
        Feed.objects.get(slug="club").members.add(reader)
        self.client.force_login(reader)
        html = self.client.get("/").content.decode()
        self.assertIn('href="/feeds/club/"', html)
        self.assertIn("Secret club", html)
        self.assertIn("members only", html)


@override_settings(FEED_PAGE_SIZE=5)
class FeedPageTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.feed = Feed.objects.create(slug="talk", title="Talk", allow_anonymous=True)

    def post_many(self, count):
        for i in range(1, count + 1):
            comment_create(feed=self.feed, author="ann", body=f"comment {i}")

    def test_page_shows_latest_comments_oldest_first(self):
        """The live page shows the newest FEED_PAGE_SIZE comments, oldest at the top."""
        self.post_many(12)
        response = self.client.get("/feeds/talk/")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(_seqs(response.content.decode()), [8, 9, 10, 11, 12])

    def test_comments_are_inside_the_comments_container(self):
        """Every comment is an <article id="comment-<id>" data-seq> inside <div id="comments">."""
        self.post_many(2)
        html = self.client.get("/feeds/talk/").content.decode()
        container = html[html.index('<div id="comments"') :]
        # Comments hold <div>s of their own (their actions): the container ends before the form.
        container = container[: container.index('id="comment-form"')]
        for comment in Comment.objects.all():
            self.assertIn(f'<article id="comment-{comment.pk}" class="comment" data-seq="{comment.seq}">', container)

    def test_older_comments_are_reachable_without_javascript(self):
        """An "Older comments" link pages back with ?before=<seq> until the first comment."""
        self.post_many(12)
        html = self.client.get("/feeds/talk/").content.decode()
        self.assertIn('href="/feeds/talk/?before=8"', html)
        older = self.client.get("/feeds/talk/?before=8").content.decode()
        self.assertEqual(_seqs(older), [3, 4, 5, 6, 7])
        oldest = self.client.get("/feeds/talk/?before=3").content.decode()
        self.assertEqual(_seqs(oldest), [1, 2])
        self.assertNotIn('class="older"', oldest)

    def test_archive_page_links_to_newer_comments_and_is_not_live(self):
        """A ?before= page has a link forward and neither a WebSocket nor a form."""
        self.post_many(12)
        html = self.client.get("/feeds/talk/?before=3").content.decode()
        self.assertIn('href="/feeds/talk/?before=8"', html)
        self.assertNotIn("ws-connect", html)
        self.assertNotIn('id="comment-form"', html)

    def test_no_older_link_when_everything_fits(self):
        """With fewer comments than a page there is nothing older to link to."""
        self.post_many(3)
        self.assertNotIn('class="older"', self.client.get("/feeds/talk/").content.decode())

    def test_bad_before_value_shows_the_live_page(self):
        """A ?before= that is not a positive number is ignored."""
        self.post_many(6)
        for value in ("abc", "0", "-3", "", "%00"):
            with self.subTest(before=value):
                html = self.client.get(f"/feeds/talk/?before={value}").content.decode()
                self.assertEqual(_seqs(html), [2, 3, 4, 5, 6])

    def test_before_beyond_the_database_integer_range_shows_the_newest_comments(self):
        """A ?before= past 64 bits is older than nothing: the newest page, not a server error."""
        self.post_many(6)
        response = self.client.get(f"/feeds/talk/?before={10**30}")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(_seqs(response.content.decode()), [2, 3, 4, 5, 6])

    def test_unknown_feed_is_404_to_signed_in_users_and_a_sign_in_to_visitors(self):
        """A slug that names no feed is a 404 when signed in; a signed-out visitor is sent to sign in, exactly
        as for a members-only feed, so the answer does not tell which slugs exist."""
        anonymous = self.client.get("/feeds/nope/")
        self.assertEqual(anonymous.status_code, 302)
        self.assertIn("?next=/feeds/nope/", anonymous["Location"])
        self.client.force_login(get_user_model().objects.create_user("someone"))
        self.assertEqual(self.client.get("/feeds/nope/").status_code, 404)

    def test_page_declares_the_ws_extension_exactly_once(self):
        """One hx-ext="ws" (two would open two sockets), connecting to the feed's WebSocket."""
        html = self.client.get("/feeds/talk/").content.decode()
        tags = _Tags(html)
        self.assertEqual(html.count('hx-ext="ws"'), 1)
        self.assertEqual(len(tags.find("section", **{"hx-ext": "ws", "ws-connect": "/ws/feeds/talk/"})), 1)
        self.assertEqual(html.count("ws-connect"), 1)

    def test_page_shows_a_connection_state(self):
        """A visible connection state element; without JavaScript it honestly says offline."""
        tags = _Tags(self.client.get("/feeds/talk/").content.decode())
        self.assertEqual(len(tags.find("span", id="connection-state", **{"data-state": "offline"})), 1)

    def test_page_has_a_watching_element_and_a_quiet_announcement_region(self):
        """"N watching" is filled by the stream (hidden until then, not a live region); announcements go to a polite status."""
        tags = _Tags(self.client.get("/feeds/talk/").content.decode())
        [watching] = tags.find("span", id="feed-watching")
        self.assertEqual(watching.get("aria-live"), "off")
        self.assertIn("hidden", watching)
        [region] = tags.find("p", id="watching-announcement")
        self.assertEqual((region.get("role"), region.get("aria-live")), ("status", "polite"))

    def test_page_has_no_inline_script_and_loads_local_assets(self):
        """Scripts come from /static/ with defer, none inline, and htmx needs no eval or inline styles."""
        html = self.client.get("/feeds/talk/").content.decode()
        tags = _Tags(html)
        scripts = tags.find("script")
        self.assertEqual(
            [s.get("src") for s in scripts],
            [
                "/static/vendor/htmx-2.0.11.min.js",
                "/static/vendor/htmx-ext-ws-2.0.4.min.js",
                "/static/js/announce.js",
                "/static/js/feed.js",
                "/static/js/people.js",
                "/static/js/post_retry.js",
                "/static/js/presence.js",
            ],
        )
        self.assertTrue(all("defer" in s for s in scripts))
        self.assertNotRegex(html, r"<script[^>]*>\s*[^<\s]")
        self.assertNotIn("style=", html)
        self.assertNotRegex(html, r"https?://")
        [meta] = tags.find("meta", name="htmx-config")
        for setting in ('"includeIndicatorStyles": false', '"allowEval": false', '"allowScriptTags": false'):
            self.assertIn(setting, meta["content"])

    def test_htmx_requests_carry_the_csrf_token(self):
        """The body's hx-headers hold the CSRF token that the cookie matches."""
        response = self.client.get("/feeds/talk/")
        [body] = _Tags(response.content.decode()).find("body")
        self.assertRegex(body["hx-headers"], r'^\{"X-CSRFToken": "[A-Za-z0-9]{64}"\}$')
        self.assertIn("csrftoken", response.cookies)

    def test_form_posts_to_the_comment_url_with_and_without_htmx(self):
        """The form works as a plain POST (action) and with htmx (hx-post), swapping itself."""
        tags = _Tags(self.client.get("/feeds/talk/").content.decode())
        [form] = tags.find("form", id="comment-form")
        self.assertEqual((form["method"], form["action"]), ("post", "/feeds/talk/comments/"))
        self.assertEqual((form["hx-post"], form["hx-target"], form["hx-swap"]), ("/feeds/talk/comments/", "this", "outerHTML"))
        self.assertEqual(len(tags.find("input", name="csrfmiddlewaretoken")), 1)

    def test_members_only_feed_sends_anonymous_readers_to_sign_in(self):
        """A members-only feed's page is for signed-in users: anonymous readers go to the login page."""
        Feed.objects.create(slug="club", title="Club", allow_anonymous=False)
        response = self.client.get("/feeds/club/")
        self.assertEqual(response.status_code, 302)
        self.assertIn("?next=/feeds/club/", response["Location"])

    def test_members_only_feed_is_not_found_by_signed_in_non_members(self):
        """A signed-in non-member gets the 404 of an unknown feed, without the feed's title."""
        Feed.objects.create(slug="club", title="Secret club", allow_anonymous=False)
        self.client.force_login(get_user_model().objects.create_user("outsider"))
        response = self.client.get("/feeds/club/")
        self.assertEqual(response.status_code, 404)
        self.assertNotIn("Secret club", response.content.decode())


class CommentFormTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.feed = Feed.objects.create(slug="talk", title="Talk", allow_anonymous=True)

    def test_plain_post_redirects_to_the_feed_page(self):
        """Without htmx a successful post is a 303 back to the feed page, and the comment is saved."""
        response = self.client.post("/feeds/talk/comments/", {"author": "ann", "body": "hello"})
        comment = Comment.objects.get()
        self.assertEqual(response.status_code, 303)
        self.assertEqual(response["Location"], f"/feeds/talk/#comment-{comment.pk}")
        self.assertEqual((comment.author, comment.body, comment.seq), ("ann", "hello", 1))

    def test_htmx_post_returns_a_cleared_form(self):
        """With htmx the answer is the form fragment: body empty, name kept, no comment markup."""
        response = self.client.post("/feeds/talk/comments/", {"author": "ann", "body": "hello"}, **HTMX)
        self.assertEqual(response.status_code, 200)
        html = response.content.decode()
        self.assertTrue(html.lstrip().startswith('<form id="comment-form"'))
        self.assertNotIn("<html", html)
        self.assertRegex(html, r'<textarea name="body"[^>]*>\s*</textarea>')
        self.assertIn('name="author" value="ann"', html)
        self.assertNotIn("<article", html)  # the comment arrives over the WebSocket, like for everyone
        self.assertEqual(Comment.objects.get().body, "hello")

    def test_htmx_errors_are_shown_inline_with_the_typed_text_kept(self):
        """A rejected htmx post returns 422 and the fragment with the field error and the input."""
        response = self.client.post("/feeds/talk/comments/", {"author": "", "body": "kept text"}, **HTMX)
        self.assertEqual(response.status_code, 422)
        html = response.content.decode()
        self.assertTrue(html.lstrip().startswith('<form id="comment-form"'))
        self.assertIn("A display name is required.", html)
        self.assertRegex(html, r"<textarea[^>]*>\s*kept text</textarea>")
        self.assertFalse(Comment.objects.exists())

    def test_plain_post_errors_render_the_page_with_the_typed_text(self):
        """Without htmx a rejected post re-renders the whole page (422) with the error and input."""
        response = self.client.post("/feeds/talk/comments/", {"author": "ann typed", "body": "   "})
        self.assertEqual(response.status_code, 422)
        html = response.content.decode()
        self.assertIn('<div id="comments"', html)
        self.assertIn("Write something first.", html)
        self.assertIn('value="ann typed"', html)

    def test_invisible_only_name_and_body_are_inline_errors(self):
        """A name and a body of only zero-width characters are blank: 422 with both field errors, nothing saved."""
        response = self.client.post("/feeds/talk/comments/", {"author": "\u200b\u200b", "body": "\u200b"}, **HTMX)
        self.assertEqual(response.status_code, 422)
        html = response.content.decode()
        self.assertIn("A display name is required.", html)
        self.assertIn("Write something first.", html)
        response = self.client.post("/feeds/talk/comments/", {"author": "\u200e\u200f", "body": "\ufeff\u2060\u180e"})
        self.assertContains(response, "Write something first.", status_code=422)
        self.assertFalse(Comment.objects.exists())

    def test_too_long_body_is_an_inline_error(self):
        """A body over the limit is reported on the body field."""
        response = self.client.post("/feeds/talk/comments/", {"author": "ann", "body": "x" * 2001}, **HTMX)
        self.assertEqual(response.status_code, 422)
        self.assertIn("Use at most 2000 characters", response.content.decode())

    def test_members_only_feed_is_not_found_by_anonymous_or_non_member_posters(self):
        """A post by anyone but a member or staff is the 404 of an unknown feed, with htmx or without:
        no title, no comments, nothing saved."""
        club = Feed.objects.create(slug="club", title="Secret club", allow_anonymous=False)
        comment_create(feed=club, author="", body="members only secret", user=get_user_model().objects.create_superuser("boss"))
        outsider = Client()
        outsider.force_login(get_user_model().objects.create_user("outsider", password="x"))
        for who, client in (("anonymous", Client()), ("outsider", outsider)):
            for extra in ({}, HTMX):
                with self.subTest(who=who, htmx=bool(extra)):
                    response = client.post("/feeds/club/comments/", {"author": "ann", "body": "hi"}, **extra)
                    self.assertEqual(response.status_code, 404)
                    html = response.content.decode()
                    self.assertNotIn("Secret club", html)
                    self.assertNotIn("members only secret", html)
                    self.assertEqual(_seqs(html), [])
        self.assertEqual(Comment.objects.count(), 1)

    def test_signed_in_member_posts_under_username(self):
        """A member may leave the name blank; the comment is theirs."""
        club = Feed.objects.create(slug="club", title="Club", allow_anonymous=False)
        member = get_user_model().objects.create_user("member", password="x")
        club.members.add(member)
        self.client.force_login(member)
        self.assertEqual(self.client.post("/feeds/club/comments/", {"body": "hi"}).status_code, 303)
        self.assertEqual((Comment.objects.get().author, Comment.objects.get().user), ("member", member))

    def test_get_on_the_comment_url_is_not_allowed(self):
        """The comment URL only takes POST."""
        self.assertEqual(self.client.get("/feeds/talk/comments/").status_code, 405)

    def test_unknown_feed_is_404(self):
        """Posting to a feed that does not exist is a 404 and saves nothing."""
        self.assertEqual(self.client.post("/feeds/nope/comments/", {"author": "a", "body": "b"}).status_code, 404)
        self.assertFalse(Comment.objects.exists())

    def test_a_form_body_that_is_not_utf8_is_saved_with_replacement_characters(self):
        """Undecodable bytes in a form post become U+FFFD: the post is accepted, never a server error."""
        response = self.client.post(
            "/feeds/talk/comments/", b"author=ann&body=caf%E9", content_type="application/x-www-form-urlencoded"
        )
        self.assertEqual(response.status_code, 303)
        self.assertEqual(Comment.objects.get().body, "caf\ufffd")


class CsrfTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.feed = Feed.objects.create(slug="talk", title="Talk", allow_anonymous=True)

    def setUp(self):
        self.client = Client(enforce_csrf_checks=True)

    def token_from_page(self):
        html = self.client.get("/feeds/talk/").content.decode()
        return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)

    def test_post_without_csrf_token_is_refused(self):
        """A form post without the CSRF token is a 403 and saves nothing."""
        self.client.get("/feeds/talk/")
        response = self.client.post("/feeds/talk/comments/", {"author": "ann", "body": "forged"})
        self.assertEqual(response.status_code, 403)
        self.assertFalse(Comment.objects.exists())

    def test_post_with_the_forms_csrf_token_is_accepted(self):
        """The hidden field the page renders satisfies the CSRF check."""
        token = self.token_from_page()
        response = self.client.post("/feeds/talk/comments/", {"author": "ann", "body": "ok", "csrfmiddlewaretoken": token})
        self.assertEqual(response.status_code, 303)

    def test_htmx_post_with_the_csrf_header_is_accepted(self):
        """htmx requests authenticate with the X-CSRFToken header from hx-headers."""
        token = self.token_from_page()
        response = self.client.post(
            "/feeds/talk/comments/", {"author": "ann", "body": "ok"}, HTTP_X_CSRFTOKEN=token, **HTMX
        )
        self.assertEqual(response.status_code, 200)
        self.assertEqual(Comment.objects.count(), 1)
