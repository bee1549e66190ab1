"""Replies (reply_to) and @mentions: accepted, checked, shown linked, and kept escaped."""
import json
import re

from django.contrib.auth import get_user_model
from django.test import TestCase

from feed.mentions import mention_candidates, render_body
from feed.models import Comment, Feed
from feed.rendering import render_comment
from feed.services import comment_create
from notifications.events import comment_created_event

User = get_user_model()
HTMX = {"HTTP_HX_REQUEST": "true"}


class RepliesTestCase(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.feed = Feed.objects.create(slug="talk", title="Talk", allow_anonymous=True)
        cls.other = Feed.objects.create(slug="other", title="Other", allow_anonymous=True)
        cls.parent = comment_create(feed=cls.feed, author="Zed", body="first")

    def post_api(self, data, slug="talk"):
        return self.client.post(f"/api/feeds/{slug}/comments/", json.dumps(data), content_type="application/json")


class ReplyApiTests(RepliesTestCase):
    def test_a_reply_names_the_comment_it_answers(self):
        """POST with reply_to saves it; the answer, the list and the event carry `reply_to`."""
        response = self.post_api({"author": "Bob", "body": "yes", "reply_to": self.parent.pk})
        self.assertEqual(response.status_code, 201, response.content)
        self.assertEqual(response.json()["reply_to"], self.parent.pk)
        listed = self.client.get("/api/feeds/talk/comments/").json()
        self.assertEqual([c["reply_to"] for c in listed], [None, self.parent.pk])
        reply = Comment.objects.get(pk=response.json()["id"])
        self.assertEqual(json.loads(comment_created_event(reply)["json"])["data"]["reply_to"], self.parent.pk)

    def test_an_idempotent_post_keeps_its_reply_to(self):
        """With an Idempotency-Key the reply is saved with reply_to, and the repeat answers the same."""
        data = json.dumps({"author": "Bob", "body": "yes", "reply_to": self.parent.pk})
        answers = [
            self.client.post("/api/feeds/talk/comments/", data, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k1")
            for _ in range(2)
        ]
        self.assertEqual([a.json()["reply_to"] for a in answers], [self.parent.pk] * 2)
        self.assertEqual(Comment.objects.get(body="yes").reply_to, self.parent)

    def test_reply_to_must_be_a_comment_of_the_same_feed(self):
        """Another feed's comment, a missing id, zero, a negative number or a string: 400 with fields.reply_to."""
        elsewhere = comment_create(feed=self.other, author="Zed", body="there")
        for value in (elsewhere.pk, 999999, 0, -1, "abc", 1.5):
            with self.subTest(reply_to=value):
                response = self.post_api({"author": "Bob", "body": "hi", "reply_to": value})
                self.assertEqual(response.status_code, 400, response.content)
                self.assertIn("reply_to", response.json()["fields"])
        self.assertEqual(Comment.objects.filter(feed=self.feed).count(), 1)

    def test_reply_to_is_in_the_openapi_description(self):
        """CommentIn takes reply_to; CommentOut documents reply_to and user."""
        schemas = self.client.get("/api/openapi.json").json()["components"]["schemas"]
        self.assertIn("reply_to", schemas["CommentIn"]["properties"])
        self.assertLessEqual({"reply_to", "user"}, set(schemas["CommentOut"]["properties"]))
        self.assertLessEqual({"reply_to", "user"}, set(schemas["CommentOut"]["required"]))


class ReplyPageTests(RepliesTestCase):
    def test_a_reply_shows_what_it_answers_linked(self):
        """A reply's markup links to the comment it answers: "in reply to <author>"."""
        reply = comment_create(feed=self.feed, author="Bob", body="yes", reply_to=self.parent.pk)
        expected = f'<a class="in-reply-to" href="#comment-{self.parent.pk}">in reply to Zed</a>'
        self.assertIn(expected, render_comment(reply))
        self.assertIn(expected, self.client.get("/feeds/talk/").content.decode())
        self.assertNotIn("in reply to", render_comment(self.parent))

    def test_each_comment_has_a_reply_action_with_and_without_javascript(self):
        """The reply action is a link to ?reply_to=<id>#comment-form that htmx turns into a form swap."""
        html = render_comment(self.parent)
        link = re.search(r'<a class="reply-link"[^>]*>', html).group(0)
        self.assertIn(f'href="/feeds/talk/?reply_to={self.parent.pk}#comment-form"', link)
        self.assertIn(f'hx-get="/feeds/talk/?reply_to={self.parent.pk}"', link)
        self.assertIn('hx-target="#comment-form"', link)

    def test_the_reply_link_prefills_the_form_without_javascript(self):
        """GET ?reply_to=<id> renders the page with the hidden field set, "Replying to <author> — cancel" and focus in the text."""
        html = self.client.get(f"/feeds/talk/?reply_to={self.parent.pk}").content.decode()
        self.assertIn("<html", html)
        self.assertRegex(html, rf'<input type="hidden" name="reply_to" value="{self.parent.pk}"')
        self.assertIn(f'Replying to <a href="#comment-{self.parent.pk}">Zed</a>', html)
        self.assertIn("cancel", html)
        self.assertRegex(html, r"<textarea[^>]*autofocus")
        self.assertRegex(html, r'<textarea[^>]*aria-describedby="replying-to"')
        self.assertIn('<p class="replying-to" id="replying-to">', html)

    def test_htmx_gets_only_the_form_for_a_reply(self):
        """With htmx the reply action answers the form fragment alone, set to reply; cancel gives it back blank."""
        html = self.client.get(f"/feeds/talk/?reply_to={self.parent.pk}", **HTMX).content.decode()
        self.assertTrue(html.lstrip().startswith('<form id="comment-form"'))
        self.assertNotIn("<html", html)
        self.assertIn(f'value="{self.parent.pk}"', html)
        blank = self.client.get("/feeds/talk/?reply_to=", **HTMX).content.decode()
        self.assertTrue(blank.lstrip().startswith('<form id="comment-form"'))
        self.assertNotIn("Replying to", blank)
        self.assertNotIn("autofocus", blank)

    def test_a_reply_to_another_feeds_comment_is_not_prefilled(self):
        """?reply_to= naming another feed's comment is ignored by the page."""
        elsewhere = comment_create(feed=self.other, author="Zed", body="there")
        html = self.client.get(f"/feeds/talk/?reply_to={elsewhere.pk}").content.decode()
        self.assertNotIn("Replying to", html)

    def test_the_form_posts_a_reply(self):
        """The form's reply_to is saved; a bad one is an inline error with the text kept."""
        response = self.client.post("/feeds/talk/comments/", {"author": "Bob", "body": "yes", "reply_to": self.parent.pk})
        self.assertEqual(response.status_code, 303)
        self.assertEqual(Comment.objects.get(body="yes").reply_to, self.parent)
        response = self.client.post("/feeds/talk/comments/", {"author": "Bob", "body": "kept", "reply_to": "x"}, **HTMX)
        self.assertEqual(response.status_code, 422)
        self.assertIn("This is not a comment of this feed.", response.content.decode())
        self.assertFalse(Comment.objects.filter(body="kept").exists())


class MentionTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.feed = Feed.objects.create(slug="talk", title="Talk", allow_anonymous=True)
        User.objects.create_user("ann")
        User.objects.create_user("Mary.Jo-2")
        User.objects.create_user("gone", is_active=False)

    def test_names_are_found_case_insensitively_and_not_in_email_addresses(self):
        """Candidates are lowercased, in order; an e-mail address is no mention; a trailing dot is tried off."""
        self.assertEqual(mention_candidates("hi @Ann and @mary.jo-2, mail x@ann.com"), ["ann", "mary.jo-2"])
        self.assertEqual(mention_candidates("thanks @ann."), ["ann.", "ann"])

    def test_mentions_of_active_users_are_marked(self):
        """@name of an active user (any case) is a span.mention; unknown and inactive names stay text."""
        html = str(render_body("hi @ANN, @Mary.Jo-2. @nobody @gone"))
        self.assertIn('<span class="mention" data-user="ann">@ANN</span>,', html)
        self.assertIn('<span class="mention" data-user="Mary.Jo-2">@Mary.Jo-2</span>.', html)
        self.assertIn("@nobody", html)
        self.assertNotIn('data-user="gone"', html)
        self.assertEqual(html.count('class="mention"'), 2)

    def test_markup_around_mentions_stays_escaped(self):
        """The body is escaped first: markup next to a mention is text, and line breaks become <br>."""
        html = str(render_body('<b>@ann</b>"<script>\nnext'))
        self.assertEqual(
            html,
            '&lt;b&gt;<span class="mention" data-user="ann">@ann</span>&lt;/b&gt;&quot;&lt;script&gt;<br>next',
        )

    def test_the_page_and_live_fragment_mark_mentions(self):
        """Rendered comments (page and live frame alike) carry the mention markup."""
        comment = comment_create(feed=self.feed, author="Bob", body="hello @ann")
        self.assertIn('<span class="mention" data-user="ann">@ann</span>', render_comment(comment))
        self.assertIn('<span class="mention" data-user="ann">@ann</span>', self.client.get("/feeds/talk/").content.decode())
