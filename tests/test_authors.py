"""Signed authors: a signed-in user's name cannot be chosen or borrowed, and pages tell guests apart."""
import json

from django.contrib.auth import get_user_model
from django.test import TestCase

from feed.auth import api_token_issue
from feed.models import Comment, Feed
from feed.rendering import comment_as_dict, render_comment
from feed.services import comment_create
from notifications.events import comment_created_event

User = get_user_model()
HTMX = {"HTTP_HX_REQUEST": "true"}


class AuthorsTestCase(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.feed = Feed.objects.create(slug="talk", title="Talk", allow_anonymous=True)
        cls.ann = User.objects.create_user("Ann")

    def post_api(self, data, **extra):
        return self.client.post("/api/feeds/talk/comments/", json.dumps(data), content_type="application/json", **extra)


class SignedAuthorTests(AuthorsTestCase):
    def test_a_signed_in_users_author_is_their_username_whatever_they_send(self):
        """Over the API a session user's `author` is ignored: the comment carries their username as author and user."""
        self.client.force_login(self.ann)
        response = self.post_api({"author": "The Queen", "body": "hello"})
        self.assertEqual(response.status_code, 201, response.content)
        self.assertEqual((response.json()["author"], response.json()["user"]), ("Ann", "Ann"))
        self.assertEqual(Comment.objects.get().author, "Ann")

    def test_a_token_users_author_is_their_username(self):
        """The same with a bearer token."""
        _, secret = api_token_issue(user=self.ann)
        response = self.post_api({"author": "bot", "body": "hi"}, HTTP_AUTHORIZATION=f"Bearer {secret}")
        self.assertEqual((response.json()["author"], response.json()["user"]), ("Ann", "Ann"))

    def test_the_form_posts_under_the_username_and_shows_no_name_field(self):
        """Signed in, the form says who is posting, has no name field, and ignores a sent name."""
        self.client.force_login(self.ann)
        html = self.client.get("/feeds/talk/").content.decode()
        self.assertIn("Posting as <strong>Ann</strong>", html)
        self.assertNotIn('name="author"', html)
        self.client.post("/feeds/talk/comments/", {"author": "Someone else", "body": "hello"})
        self.assertEqual(Comment.objects.get().author, "Ann")

    def test_user_is_in_every_representation(self):
        """`user` is the username in the API, the JSON frame and the markup; null and absent for a guest."""
        signed = comment_create(feed=self.feed, author="", body="a", user=self.ann)
        guest = comment_create(feed=self.feed, author="Bob", body="b")
        self.assertEqual((comment_as_dict(signed)["user"], comment_as_dict(guest)["user"]), ("Ann", None))
        envelope = json.loads(comment_created_event(signed)["json"])
        self.assertEqual(envelope["data"]["user"], "Ann")
        listed = self.client.get("/api/feeds/talk/comments/").json()
        self.assertEqual([c["user"] for c in listed], ["Ann", None])
        self.assertIn('data-user="Ann"', render_comment(signed))
        self.assertNotIn("data-user", render_comment(guest))


class GuestNameTests(AuthorsTestCase):
    def test_a_guest_may_not_take_a_registered_username(self):
        """A guest's name equal to a username, in any case and after cleaning, is refused with fields.author."""
        for name in ("Ann", "ann", " ANN ", "a\u200bnn"):
            with self.subTest(name=name):
                response = self.post_api({"author": name, "body": "hello"})
                self.assertEqual(response.status_code, 400, response.content)
                self.assertEqual(response.json()["error"], "invalid")
                self.assertEqual(list(response.json()["fields"]), ["author"])
        self.assertFalse(Comment.objects.exists())

    def test_the_form_shows_the_refusal_inline(self):
        """On the form the refusal is an inline error on the name field, and nothing is saved."""
        response = self.client.post("/feeds/talk/comments/", {"author": "ANN", "body": "kept"}, **HTMX)
        self.assertEqual(response.status_code, 422)
        html = response.content.decode()
        self.assertIn('id="id_author_error"', html)
        self.assertIn("belongs to a registered user", html)
        self.assertFalse(Comment.objects.exists())

    def test_other_guest_names_are_fine(self):
        """A name that is no username (even one containing one) is accepted."""
        response = self.post_api({"author": "Annie", "body": "hello"})
        self.assertEqual(response.status_code, 201)
        self.assertIsNone(response.json()["user"])

    def test_pages_mark_guests_and_signed_in_authors_visibly(self):
        """A guest's name shows "(guest)", a signed-in author's "(signed in)", in the page and the live fragment."""
        guest = comment_create(feed=self.feed, author="Annie", body="a")
        signed = comment_create(feed=self.feed, author="", body="b", user=self.ann)
        html = self.client.get("/feeds/talk/").content.decode()
        self.assertRegex(html, r'<span class="comment-author">Annie</span> <span class="author-kind author-guest">\(guest\)</span>')
        self.assertRegex(html, r'<span class="comment-author">Ann</span> <span class="author-kind author-user">\(signed in\)</span>')
        self.assertIn("(guest)", render_comment(guest))
        self.assertNotIn("(guest)", render_comment(signed))
