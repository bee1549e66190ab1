"""User strings are text everywhere: on the page, in the live frames, in form errors and in the API."""
import json

from django.contrib.auth import get_user_model
from django.test import TestCase

from feed.models import Feed
from feed.rendering import comment_as_dict, render_comment
from feed.services import comment_create
from notifications.events import comment_created_event

PAYLOAD = "<img src=x onerror=alert(1)>"
ESCAPED = "&lt;img src=x onerror=alert(1)&gt;"
QUOTES = "\"'><script>alert(2)</script>"


class EscapingTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.feed = Feed.objects.create(slug="talk", title="Talk", allow_anonymous=True)

    def assertEscaped(self, html):
        self.assertIn(ESCAPED, html)
        self.assertNotIn("<img", html)
        self.assertNotIn("<script", html.split("</head>", 1)[-1])

    def test_markup_in_body_and_name_shows_as_text_on_the_page(self):
        """A body and a name holding markup appear escaped in the feed page."""
        comment_create(feed=self.feed, author=PAYLOAD, body=PAYLOAD)
        comment_create(feed=self.feed, author="ann", body=QUOTES)
        # Seen by staff, so that the page shows the remove action too.
        self.client.force_login(get_user_model().objects.create_user("root", is_staff=True))
        html = self.client.get("/feeds/talk/").content.decode()
        self.assertEscaped(html)
        # The body, the name, the name again in the reply link's label, and twice in the remove
        # action (its confirmation question and its label).
        self.assertEqual(html.count(ESCAPED), 5)
        self.assertIn("&quot;&#x27;&gt;&lt;script&gt;alert(2)&lt;/script&gt;", html)

    def test_markup_is_escaped_in_the_comment_fragment(self):
        """render_comment escapes the author and body."""
        comment = comment_create(feed=self.feed, author=PAYLOAD, body=PAYLOAD)
        html = render_comment(comment)
        self.assertEscaped(html)
        # The body, the name, the name again in the reply link's label, and twice in the remove
        # action (its confirmation question and its label).
        self.assertEqual(html.count(ESCAPED), 5)

    def test_markup_is_escaped_in_the_live_html_frame(self):
        """The WebSocket HTML frame of the published event carries the escaped text."""
        comment = comment_create(feed=self.feed, author=PAYLOAD, body=PAYLOAD)
        event = comment_created_event(comment)
        self.assertTrue(event["html"].startswith('<div id="comments" hx-swap-oob="beforeend"><article'))
        self.assertEscaped(event["html"])

    def test_markup_is_the_literal_string_in_the_json_envelope(self):
        """The JSON frame's data holds exactly what was posted."""
        comment = comment_create(feed=self.feed, author=PAYLOAD, body=PAYLOAD)
        envelope = json.loads(comment_created_event(comment)["json"])
        self.assertEqual((envelope["data"]["author"], envelope["data"]["body"]), (PAYLOAD, PAYLOAD))

    def test_markup_is_the_literal_string_in_the_api(self):
        """The API returns the posted text unchanged, as JSON strings, on POST and GET."""
        response = self.client.post(
            "/api/feeds/talk/comments/", json.dumps({"author": PAYLOAD, "body": PAYLOAD}), content_type="application/json"
        )
        self.assertEqual(response.status_code, 201)
        self.assertEqual((response.json()["author"], response.json()["body"]), (PAYLOAD, PAYLOAD))
        [listed] = self.client.get("/api/feeds/talk/comments/").json()
        self.assertEqual(listed, comment_as_dict(self.feed.comments.get()))
        self.assertEqual(listed["body"], PAYLOAD)

    def test_rejected_input_is_escaped_when_shown_back_in_the_form(self):
        """The typed text that comes back with a form error is escaped too."""
        response = self.client.post(
            "/feeds/talk/comments/", {"author": PAYLOAD, "body": "x" * 2001}, HTTP_HX_REQUEST="true"
        )
        self.assertEqual(response.status_code, 422)
        html = response.content.decode()
        self.assertIn('value="&lt;img src=x onerror=alert(1)&gt;"', html)
        self.assertNotIn("<img", html)

    def test_feed_title_is_escaped(self):
        """A feed title with markup (set by staff) is text on the index and the feed page."""
        Feed.objects.create(slug="odd", title=PAYLOAD, allow_anonymous=True)
        self.assertEscaped(self.client.get("/").content.decode())
        self.assertEscaped(self.client.get("/feeds/odd/").content.decode())
