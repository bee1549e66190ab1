"""A members-only feed is read and posted to by its members and staff; to anyone else it does not exist.

Every surface (index page, feed page, form post, API list, comments and post, OpenAPI, the
WebSocket handshake) is tried by the four kinds of caller: anonymous, signed-in non-member,
member and staff. A hidden feed answers exactly like an unknown slug, and no answer carries
its slug, title or comments.
"""
import re

from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client, TestCase, TransactionTestCase

from feed.auth import api_token_issue
from feed.models import Comment, Feed
from feed.selectors import feeds_readable
from feed.services import comment_create
from livefeed.asgi import application

SLUG = "hidden-club"
TITLE = "Secret Society Of Quiet Readers"
SECRET = "the-members-only-comment-body"
HTMX = {"HTTP_HX_REQUEST": "true"}
ROLES = ("anonymous", "outsider", "member", "staff")
ALLOWED = {"member", "staff"}


def without_csrf_token(content):
    """The page with its CSRF token blanked: the token is masked anew on every render."""
    return re.sub(rb'(X-CSRFToken": "|name="csrfmiddlewaretoken" value=")[^"]+', rb"\1", content)


def make_people():
    User = get_user_model()
    club = Feed.objects.create(slug=SLUG, title=TITLE, allow_anonymous=False)
    Feed.objects.create(slug="open", title="Open feed", allow_anonymous=True)
    people = {
        "outsider": User.objects.create_user("outsider", password="x"),
        "member": User.objects.create_user("member", password="x"),
        "staff": User.objects.create_user("staffer", password="x", is_staff=True),
    }
    club.members.add(people["member"])
    comment_create(feed=club, author="", body=SECRET, user=people["member"])
    return club, people


class MembersOnlySurfaceTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.club, cls.people = make_people()

    def client_for(self, role):
        client = Client()
        if role != "anonymous":
            client.force_login(self.people[role])
        return client

    def assertHidesTheFeed(self, response):
        text = response.content.decode(errors="replace")
        for secret in (SLUG, TITLE, SECRET):
            self.assertNotIn(secret, text)
        for name, value in response.items():
            if name != "Location":  # a redirect to sign in carries the visitor's own URL, as for any slug
                self.assertNotIn(SLUG, value)

    def test_index_page_lists_the_feed_to_members_and_staff_only(self):
        """The home page names the feed for members and staff; for everyone else it shows nothing of it."""
        for role in ROLES:
            with self.subTest(role=role):
                response = self.client_for(role).get("/")
                self.assertEqual(response.status_code, 200)
                if role in ALLOWED:
                    self.assertContains(response, TITLE)
                else:
                    self.assertHidesTheFeed(response)

    def test_feed_page_is_shown_to_members_and_staff_only(self):
        """Members and staff get the page; a signed-in non-member the 404 of an unknown slug; a signed-out
        visitor the sign-in redirect that an unknown slug gets too, with nothing of the feed."""
        for role in ROLES:
            with self.subTest(role=role):
                client = self.client_for(role)
                response = client.get(f"/feeds/{SLUG}/")
                unknown = client.get("/feeds/no-such-feed/")
                if role in ALLOWED:
                    self.assertContains(response, SECRET)
                    continue
                self.assertHidesTheFeed(response)
                self.assertEqual(response.status_code, unknown.status_code)
                if role == "anonymous":
                    self.assertEqual(response.status_code, 302)
                    self.assertEqual(response["Location"], unknown["Location"].replace("no-such-feed", SLUG))
                    self.assertEqual(response.content, b"")
                else:
                    self.assertEqual(response.status_code, 404)
                    self.assertEqual(without_csrf_token(response.content), without_csrf_token(unknown.content))

    def test_form_posts_are_taken_from_members_and_staff_only(self):
        """A form post (plain or htmx) by anyone else is the 404 of an unknown slug and saves nothing."""
        for role in ROLES:
            for extra in ({}, HTMX):
                with self.subTest(role=role, htmx=bool(extra)):
                    before = Comment.objects.count()
                    client = self.client_for(role)
                    data = {"author": "someone", "body": f"post by {role}"}
                    response = client.post(f"/feeds/{SLUG}/comments/", data, **extra)
                    if role in ALLOWED:
                        self.assertIn(response.status_code, (200, 303))
                        self.assertEqual(Comment.objects.count(), before + 1)
                        continue
                    unknown = client.post("/feeds/no-such-feed/comments/", data, **extra)
                    self.assertEqual(response.status_code, 404)
                    self.assertEqual(without_csrf_token(response.content), without_csrf_token(unknown.content))
                    self.assertHidesTheFeed(response)
                    self.assertEqual(Comment.objects.count(), before)

    def test_invalid_form_posts_by_others_do_not_show_the_feed_either(self):
        """Even a post that would be refused as invalid answers 404 first, never the page with its errors."""
        response = self.client_for("outsider").post(f"/feeds/{SLUG}/comments/", {"author": "", "body": ""})
        self.assertEqual(response.status_code, 404)
        self.assertHidesTheFeed(response)

    def api_clients(self):
        """(role, client, headers): session callers, and token callers for the signed-in roles."""
        for role in ROLES:
            yield role, self.client_for(role), {}
            if role != "anonymous":
                _, secret = api_token_issue(user=self.people[role])
                yield f"{role} (token)", Client(), {"HTTP_AUTHORIZATION": f"Bearer {secret}"}

    def test_api_lists_the_feed_to_members_and_staff_only(self):
        """GET /api/feeds/ names the feed only for members and staff, by session or token."""
        for role, client, headers in self.api_clients():
            with self.subTest(role=role):
                response = client.get("/api/feeds/", **headers)
                self.assertEqual(response.status_code, 200)
                slugs = [feed["slug"] for feed in response.json()]
                if role.split()[0] in ALLOWED:
                    self.assertEqual(slugs, ["demo", SLUG, "open"])
                else:
                    self.assertEqual(slugs, ["demo", "open"])
                    self.assertHidesTheFeed(response)

    def test_api_comments_are_read_by_members_and_staff_only(self):
        """GET comments: others get the JSON 404 of an unknown slug."""
        for role, client, headers in self.api_clients():
            with self.subTest(role=role):
                response = client.get(f"/api/feeds/{SLUG}/comments/", **headers)
                if role.split()[0] in ALLOWED:
                    self.assertEqual([c["body"] for c in response.json()][:1], [SECRET])
                    continue
                unknown = client.get("/api/feeds/no-such-feed/comments/", **headers)
                self.assertEqual((response.status_code, response.json()), (404, unknown.json()))
                self.assertHidesTheFeed(response)

    def test_api_posts_are_taken_from_members_and_staff_only(self):
        """POST comments: others get the JSON 404 of an unknown slug, valid body or not, and nothing is saved."""
        for role, client, headers in self.api_clients():
            for body in ({"author": "someone", "body": "hello"}, {"author": "someone", "body": " "}):
                with self.subTest(role=role, body=body["body"]):
                    before = Comment.objects.count()
                    response = client.post(
                        f"/api/feeds/{SLUG}/comments/", body, content_type="application/json", **headers
                    )
                    if role.split()[0] in ALLOWED:
                        self.assertEqual(response.status_code, 201 if body["body"].strip() else 400)
                        continue
                    unknown = client.post(
                        "/api/feeds/no-such-feed/comments/", body, content_type="application/json", **headers
                    )
                    self.assertEqual((response.status_code, response.json()), (404, unknown.json()))
                    self.assertHidesTheFeed(response)
                    self.assertEqual(Comment.objects.count(), before)

    def test_the_openapi_description_names_no_feed(self):
        """The API's description is the same for everyone and carries no feed's slug or title."""
        for role in ROLES:
            with self.subTest(role=role):
                self.assertHidesTheFeed(self.client_for(role).get("/api/openapi.json"))

    def test_a_deactivated_member_reads_nothing(self):
        """A member whose account is deactivated loses the feed (their token too)."""
        _, secret = api_token_issue(user=self.people["member"])
        get_user_model().objects.filter(pk=self.people["member"].pk).update(is_active=False)
        response = Client().get(f"/api/feeds/{SLUG}/comments/", HTTP_AUTHORIZATION=f"Bearer {secret}")
        self.assertEqual(response.status_code, 401)  # the token itself is no longer valid
        self.assertHidesTheFeed(response)
        member = get_user_model().objects.get(pk=self.people["member"].pk)
        self.assertNotIn(SLUG, [feed.slug for feed in feeds_readable(user=member)])


class FeedsReadableQueryTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.club, cls.people = make_people()
        for number in range(20):
            feed = Feed.objects.create(slug=f"f{number:02}", title=f"F{number}", allow_anonymous=number % 2 == 0)
            if number % 3 == 0:
                feed.members.add(cls.people["member"], cls.people["outsider"])

    def test_the_readable_feeds_are_listed_in_one_query_whatever_their_number(self):
        """One query per caller, with no feed repeated, and exactly the feeds the per-feed rule allows."""
        from django.contrib.auth.models import AnonymousUser

        from feed.services import feed_check_can_read

        for user in (None, AnonymousUser(), *self.people.values()):
            with self.subTest(user=str(user)):
                with self.assertNumQueries(1):
                    listed = [feed.slug for feed in feeds_readable(user=user)]
                expected = []
                for feed in Feed.objects.order_by("slug"):
                    try:
                        feed_check_can_read(feed=feed, user=user)
                    except Exception:
                        continue
                    expected.append(feed.slug)
                self.assertEqual(listed, expected)
        self.assertEqual(len(list(feeds_readable(user=self.people["staff"]))), Feed.objects.count())
        self.assertNotIn(SLUG, [feed.slug for feed in feeds_readable(user=self.people["outsider"])])


ORIGIN = (b"origin", b"http://localhost")


class MembersOnlyHandshakeTests(TransactionTestCase):
    def setUp(self):
        self.club, self.people = make_people()

    def cookie_for(self, role):
        if role == "anonymous":
            return []
        client = Client()
        client.force_login(self.people[role])
        return [(b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())]

    async def test_the_stream_opens_for_members_and_staff_only(self):
        """The handshake is refused for a visitor and a non-member (as for an unknown slug), accepted otherwise."""
        for role in ROLES:
            for fmt in ("", "?format=json"):
                with self.subTest(role=role, format=fmt):
                    headers = [ORIGIN, *await database_sync_to_async(self.cookie_for)(role)]
                    communicator = WebsocketCommunicator(application, f"/ws/feeds/{SLUG}/{fmt}", headers=headers)
                    connected, _ = await communicator.connect(timeout=10)
                    try:
                        self.assertEqual(connected, role in ALLOWED)
                    finally:
                        await communicator.disconnect()
