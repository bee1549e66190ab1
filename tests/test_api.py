"""The JSON API: every success and error status of the contract, in the one error shape."""
import io
import json
from datetime import datetime, timezone

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client, TestCase, override_settings

from feed.auth import api_token_issue
from feed.models import ApiToken, Comment, Feed
from feed.services import comment_create

# `deleted` came with moderation (issue 12): false until the comment is removed.
COMMENT_KEYS = {"id", "seq", "feed", "author", "user", "body", "reply_to", "created_at", "deleted"}


class ApiTestCase(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.feed = Feed.objects.create(slug="talk", title="Talk", allow_anonymous=True)
        cls.club = Feed.objects.create(slug="club", title="Club", allow_anonymous=False)

    def post_json(self, path, data, client=None, **extra):
        body = data if isinstance(data, (str, bytes)) else json.dumps(data)
        return (client or self.client).post(path, body, content_type="application/json", **extra)

    def assertError(self, response, status, code, fields=None):
        """The response has this status and the JSON error shape with this code (and fields)."""
        self.assertEqual(response.status_code, status, response.content)
        self.assertEqual(response["Content-Type"], "application/json; charset=utf-8")
        body = response.json()
        self.assertEqual(body["error"], code)
        self.assertIsInstance(body["detail"], str)
        self.assertTrue(body["detail"])
        self.assertLessEqual(set(body), {"error", "detail", "fields"})
        if fields is None:
            self.assertNotIn("fields", body)
        else:
            self.assertEqual(set(body["fields"]), set(fields))
            for messages in body["fields"].values():
                self.assertTrue(messages and all(isinstance(m, str) for m in messages))
        return body


class FeedListTests(ApiTestCase):
    def test_lists_feeds_with_slug_title_and_last_seq(self):
        """GET /api/feeds/ lists every feed a member may read with slug, title and last_seq, by slug."""
        comment_create(feed=self.feed, author="ann", body="one")
        reader = get_user_model().objects.create_user("reader")
        self.club.members.add(reader)
        self.client.force_login(reader)
        response = self.client.get("/api/feeds/")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(
            response.json(),
            [
                {"slug": "club", "title": "Club", "last_seq": 0, "watching": 0},
                {"slug": "demo", "title": "Demo feed", "last_seq": 0, "watching": 0},
                {"slug": "talk", "title": "Talk", "last_seq": 1, "watching": 0},
            ],
        )

    def test_members_only_feeds_are_not_listed_to_anonymous_callers(self):
        """Without credentials only the open feeds are listed: a members-only feed's slug, title and last_seq stay hidden."""
        comment_create(feed=self.club, author="", body="inside", user=get_user_model().objects.create_superuser("boss"))
        response = self.client.get("/api/feeds/")
        self.assertEqual(response.status_code, 200)
        self.assertEqual([f["slug"] for f in response.json()], ["demo", "talk"])
        self.assertNotIn("Club", response.content.decode())

    def test_members_only_feeds_are_listed_to_member_token_callers(self):
        """A token of a member lists the members-only feed; a token of anyone else does not."""
        bot = get_user_model().objects.create_user("bot")
        _, secret = api_token_issue(user=bot)
        response = self.client.get("/api/feeds/", HTTP_AUTHORIZATION=f"Bearer {secret}")
        self.assertEqual([f["slug"] for f in response.json()], ["demo", "talk"])
        self.club.members.add(bot)
        response = self.client.get("/api/feeds/", HTTP_AUTHORIZATION=f"Bearer {secret}")
        self.assertEqual([f["slug"] for f in response.json()], ["club", "demo", "talk"])


class FeedDetailTests(ApiTestCase):
    def test_one_feed_with_slug_title_last_seq_and_watching(self):
        """GET /api/feeds/<slug>/ answers the feed as the list does (watching: 0 with no live reader)."""
        comment_create(feed=self.feed, author="ann", body="one")
        response = self.client.get("/api/feeds/talk/")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json(), {"slug": "talk", "title": "Talk", "last_seq": 1, "watching": 0})

    def test_unknown_and_hidden_feeds_answer_404_alike(self):
        """An unknown feed and a members-only feed the caller may not read are both 404 not_found."""
        self.assertError(self.client.get("/api/feeds/nope/"), 404, "not_found")
        self.assertError(self.client.get("/api/feeds/club/"), 404, "not_found")
        member = get_user_model().objects.create_user("member")
        self.club.members.add(member)
        self.client.force_login(member)
        self.assertEqual(self.client.get("/api/feeds/club/").json()["slug"], "club")


class CommentListTests(ApiTestCase):
    def post_many(self, count):
        return [comment_create(feed=self.feed, author="ann", body=f"c{i}") for i in range(count)]

    def test_returns_comments_after_seq_in_ascending_order(self):
        """?after=N returns the comments with seq > N, oldest first, in the contract's shape."""
        comments = self.post_many(5)
        response = self.client.get("/api/feeds/talk/comments/?after=2")
        self.assertEqual(response.status_code, 200)
        data = response.json()
        self.assertEqual([c["seq"] for c in data], [3, 4, 5])
        self.assertEqual(set(data[0]), COMMENT_KEYS)
        self.assertEqual(data[0]["id"], comments[2].pk)
        self.assertEqual((data[0]["feed"], data[0]["author"], data[0]["body"]), ("talk", "ann", "c2"))
        created = datetime.fromisoformat(data[0]["created_at"].replace("Z", "+00:00"))
        self.assertEqual(created.utcoffset(), timezone.utc.utcoffset(None))

    def test_after_defaults_to_the_beginning(self):
        """Without ?after every comment is returned from seq 1."""
        self.post_many(3)
        self.assertEqual([c["seq"] for c in self.client.get("/api/feeds/talk/comments/").json()], [1, 2, 3])

    def test_limit_defaults_to_50_and_caps_the_answer(self):
        """limit defaults to 50; ?limit=n returns at most n, continuing from ?after."""
        self.post_many(60)
        self.assertEqual(len(self.client.get("/api/feeds/talk/comments/").json()), 50)
        page = self.client.get("/api/feeds/talk/comments/?after=50&limit=5").json()
        self.assertEqual([c["seq"] for c in page], [51, 52, 53, 54, 55])

    def test_limit_200_is_allowed(self):
        """The maximum limit, 200, is accepted."""
        self.assertEqual(self.client.get("/api/feeds/talk/comments/?limit=200").status_code, 200)

    def test_bad_query_values_are_400_with_fields(self):
        """limit outside 1..200, a negative or non-numeric after: 400 naming the field."""
        for query, field in [
            ("limit=201", "limit"),
            ("limit=0", "limit"),
            ("limit=ten", "limit"),
            ("after=-1", "after"),
            ("after=x", "after"),
        ]:
            with self.subTest(query=query):
                self.assertError(self.client.get(f"/api/feeds/talk/comments/?{query}"), 400, "invalid", fields=[field])

    def test_after_beyond_the_database_integer_range_is_an_empty_answer(self):
        """An `after` larger than any seq can be (past 64 bits) is simply caught up, not a server error."""
        self.post_many(2)
        for after in (2**63 - 1, 2**63, 10**30):
            with self.subTest(after=after):
                response = self.client.get(f"/api/feeds/talk/comments/?after={after}")
                self.assertEqual((response.status_code, response.json()), (200, []))

    def test_unknown_feed_is_json_404(self):
        """An unknown slug is a JSON 404, not the HTML page."""
        self.assertError(self.client.get("/api/feeds/nope/comments/"), 404, "not_found")

    def test_members_only_feed_is_read_only_by_members(self):
        """Anonymous and non-member reads of a members-only feed are the 404 of an unknown feed; a member reads it."""
        comment_create(feed=self.club, author="", body="inside", user=get_user_model().objects.create_superuser("boss"))
        self.assertError(self.client.get("/api/feeds/club/comments/"), 404, "not_found")
        self.client.force_login(get_user_model().objects.create_user("outsider"))
        self.assertError(self.client.get("/api/feeds/club/comments/"), 404, "not_found")
        member = get_user_model().objects.create_user("reader")
        self.club.members.add(member)
        self.client.force_login(member)
        response = self.client.get("/api/feeds/club/comments/")
        self.assertEqual((response.status_code, [c["body"] for c in response.json()]), (200, ["inside"]))


class CommentCreateTests(ApiTestCase):
    def test_post_creates_comment_and_returns_201(self):
        """POST with author and body answers 201 with the stored comment in the contract's shape."""
        response = self.post_json("/api/feeds/talk/comments/", {"author": "ann", "body": "hello"})
        self.assertEqual(response.status_code, 201, response.content)
        data = response.json()
        comment = Comment.objects.get()
        self.assertEqual(set(data), COMMENT_KEYS)
        self.assertEqual(
            (data["id"], data["seq"], data["feed"], data["author"], data["body"]),
            (comment.pk, 1, "talk", "ann", "hello"),
        )
        self.assertIsNone(comment.user)

    def test_charset_in_content_type_is_accepted(self):
        """application/json with a charset parameter is JSON too."""
        response = self.client.post(
            "/api/feeds/talk/comments/",
            json.dumps({"author": "ann", "body": "hé"}).encode(),
            content_type="application/json; charset=utf-8",
        )
        self.assertEqual(response.status_code, 201)

    def test_invalid_json_is_400(self):
        """A body that is not JSON is 400 invalid_json."""
        self.assertError(self.post_json("/api/feeds/talk/comments/", "{not json"), 400, "invalid_json")
        self.assertFalse(Comment.objects.exists())

    def test_non_utf8_body_is_400(self):
        """Bytes that are not UTF-8 are 400 invalid_json."""
        self.assertError(self.post_json("/api/feeds/talk/comments/", b'{"body": "\xff"}'), 400, "invalid_json")

    def test_json_that_is_not_an_object_is_400(self):
        """A JSON array, string, number or null is not a comment: 400, and nothing is saved."""
        for body in ("[1, 2]", '"hello"', "42", "null"):
            with self.subTest(body=body):
                self.assertError(self.post_json("/api/feeds/talk/comments/", body), 400, "invalid")
        self.assertFalse(Comment.objects.exists())

    def test_missing_body_field_is_400_with_fields(self):
        """Leaving out `body` is 400 naming the field."""
        self.assertError(self.post_json("/api/feeds/talk/comments/", {"author": "ann"}), 400, "invalid", fields=["body"])

    def test_wrong_field_type_is_400_with_fields(self):
        """A number (or null, or a list) where a string belongs is 400 naming the field; it is not coerced."""
        for data, field in [
            ({"author": "ann", "body": 5}, "body"),
            ({"author": 5, "body": "hello"}, "author"),
            ({"author": None, "body": "hello"}, "author"),
            ({"author": ["ann"], "body": "hello"}, "author"),
        ]:
            with self.subTest(data=data):
                self.assertError(self.post_json("/api/feeds/talk/comments/", data), 400, "invalid", fields=[field])
        self.assertFalse(Comment.objects.exists())

    def test_blank_body_and_missing_name_are_400_with_fields(self):
        """The service's validation errors come back per field."""
        response = self.post_json("/api/feeds/talk/comments/", {"author": " ", "body": "  "})
        body = self.assertError(response, 400, "invalid", fields=["author", "body"])
        self.assertEqual(body["fields"]["body"], ["Write something first."])

    def test_invisible_only_name_and_body_are_400_with_fields(self):
        """A name and a body of only zero-width and bidi characters are blank: 400 per field, nothing saved."""
        response = self.post_json("/api/feeds/talk/comments/", {"author": "\u200b\u200b", "body": "\u200b"})
        body = self.assertError(response, 400, "invalid", fields=["author", "body"])
        self.assertEqual(body["fields"], {"author": ["A display name is required."], "body": ["Write something first."]})
        response = self.post_json("/api/feeds/talk/comments/", {"author": "\u200e\u3164\u2060", "body": "\ufeff\u200f \u2064"})
        self.assertError(response, 400, "invalid", fields=["author", "body"])
        self.assertFalse(Comment.objects.exists())

    def test_invisible_format_characters_are_not_stored_but_emoji_joiners_are(self):
        """Zero-width spaces and bidi marks are dropped from what is stored and returned; 👩‍💻 stays whole."""
        response = self.post_json(
            "/api/feeds/talk/comments/", {"author": "\u200eAnn\u200b", "body": "hi \u2060👩\u200d💻\ufeff"}
        )
        self.assertEqual(response.status_code, 201, response.content)
        self.assertEqual((response.json()["author"], response.json()["body"]), ("Ann", "hi 👩\u200d💻"))
        self.assertEqual(Comment.objects.get().body, "hi 👩\u200d💻")

    def test_too_long_body_is_400(self):
        """A body over 2000 characters is 400 naming the field, and nothing is saved."""
        response = self.post_json("/api/feeds/talk/comments/", {"author": "ann", "body": "x" * 2001})
        self.assertError(response, 400, "invalid", fields=["body"])
        self.assertFalse(Comment.objects.exists())

    def test_form_encoded_body_is_415(self):
        """A body that is not JSON by content type is 415."""
        response = self.client.post("/api/feeds/talk/comments/", {"author": "ann", "body": "hi"})
        self.assertError(response, 415, "unsupported_media_type")
        self.assertFalse(Comment.objects.exists())

    def test_text_plain_body_is_415(self):
        """text/plain, even holding JSON, is 415 (it is what cross-site forms can send)."""
        response = self.client.post("/api/feeds/talk/comments/", '{"author":"a","body":"b"}', content_type="text/plain")
        self.assertError(response, 415, "unsupported_media_type")

    @override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1024)
    def test_body_over_the_size_limit_is_413(self):
        """A body larger than DATA_UPLOAD_MAX_MEMORY_SIZE is 413, as the ASGI limit words it, and nothing is saved."""
        response = self.post_json("/api/feeds/talk/comments/", {"author": "ann", "body": "x" * 2000})
        body = self.assertError(response, 413, "too_large")
        self.assertEqual(body["detail"], "The request body is larger than 1024 bytes.")
        self.assertFalse(Comment.objects.exists())

    def test_unknown_feed_is_404(self):
        """Posting to an unknown feed is a JSON 404."""
        self.assertError(self.post_json("/api/feeds/nope/comments/", {"author": "a", "body": "b"}), 404, "not_found")

    def test_unsupported_methods_are_json_405(self):
        """PUT, PATCH and DELETE are 405 in the error shape, with an Allow header."""
        for method in ("put", "patch", "delete"):
            with self.subTest(method=method):
                response = getattr(self.client, method)("/api/feeds/talk/comments/")
                self.assertError(response, 405, "method_not_allowed")
                self.assertEqual(set(response["Allow"].replace(" ", "").split(",")), {"GET", "POST"})
        self.assertError(self.post_json("/api/feeds/", {}), 405, "method_not_allowed")

    def test_unknown_api_path_is_json_404(self):
        """Any other /api/ path is a JSON 404, for GET and POST alike."""
        self.assertError(self.client.get("/api/nothing/here/"), 404, "not_found")
        self.assertError(self.post_json("/api/feeds/talk/comments", {"author": "a", "body": "b"}), 404, "not_found")

    def test_api_root_points_at_the_entry_points(self):
        """GET /api/ answers JSON with the feeds, OpenAPI and docs URLs; other methods get a JSON 405."""
        self.assertEqual(
            self.client.get("/api/").json(),
            {"feeds": "/api/feeds/", "openapi": "/api/openapi.json", "docs": "/api/docs"},
        )
        self.assertError(Client(enforce_csrf_checks=True).post("/api/"), 405, "method_not_allowed")

    def test_anonymous_post_to_members_only_feed_is_404(self):
        """Without credentials a members-only feed does not exist: the 404 of an unknown feed."""
        response = self.post_json("/api/feeds/club/comments/", {"author": "ann", "body": "hi"})
        self.assertError(response, 404, "not_found")
        self.assertFalse(Comment.objects.exists())


class TokenAuthTests(ApiTestCase):
    @classmethod
    def setUpTestData(cls):
        super().setUpTestData()
        User = get_user_model()
        cls.member = User.objects.create_user("member", password="x")
        cls.outsider = User.objects.create_user("outsider", password="x")
        cls.club.members.add(cls.member)

    def bearer(self, secret):
        return {"HTTP_AUTHORIZATION": f"Bearer {secret}"}

    def test_valid_token_posts_as_its_user(self):
        """A member's token posts to a members-only feed; the comment is the user's, named after them."""
        _, secret = api_token_issue(user=self.member)
        response = self.post_json("/api/feeds/club/comments/", {"body": "from a program"}, **self.bearer(secret))
        self.assertEqual(response.status_code, 201, response.content)
        comment = Comment.objects.get()
        self.assertEqual((comment.user, comment.author, response.json()["author"]), (self.member, "member", "member"))

    def test_valid_token_of_non_member_finds_no_feed(self):
        """A valid token whose user is not a member gets the 404 of an unknown feed."""
        _, secret = api_token_issue(user=self.outsider)
        response = self.post_json("/api/feeds/club/comments/", {"body": "hi"}, **self.bearer(secret))
        self.assertError(response, 404, "not_found")

    def test_unknown_token_is_401_even_where_anonymous_may_post(self):
        """A wrong token is refused outright, not treated as anonymous."""
        response = self.post_json("/api/feeds/talk/comments/", {"author": "a", "body": "b"}, **self.bearer("lf_wrong"))
        self.assertError(response, 401, "invalid_token")
        self.assertEqual(response["WWW-Authenticate"], 'Bearer error="invalid_token"')
        self.assertFalse(Comment.objects.exists())

    def test_invalid_token_is_401_on_reads_too(self):
        """Reads with a wrong token are 401 as well."""
        self.assertError(self.client.get("/api/feeds/", **self.bearer("lf_wrong")), 401, "invalid_token")

    def test_malformed_authorization_header_is_401(self):
        """An Authorization header that is not `Bearer <token>` is 401."""
        for header in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "token"):
            with self.subTest(header=header):
                response = self.client.get("/api/feeds/", HTTP_AUTHORIZATION=header)
                self.assertError(response, 401, "invalid_token")

    def test_missing_token_is_anonymous(self):
        """No Authorization header: reads work and open feeds take the post anonymously."""
        self.assertEqual(self.client.get("/api/feeds/").status_code, 200)
        self.assertEqual(self.post_json("/api/feeds/talk/comments/", {"author": "a", "body": "b"}).status_code, 201)

    def test_revoked_token_is_401(self):
        """Deleting a token (the admin's way to revoke it) makes it invalid."""
        token, secret = api_token_issue(user=self.member)
        token.delete()
        self.assertError(self.client.get("/api/feeds/", **self.bearer(secret)), 401, "invalid_token")

    def test_token_of_inactive_user_is_401(self):
        """Deactivating a user disables their tokens."""
        _, secret = api_token_issue(user=self.member)
        self.member.is_active = False
        self.member.save()
        self.assertError(self.client.get("/api/feeds/", **self.bearer(secret)), 401, "invalid_token")

    def test_only_a_hash_of_the_token_is_stored(self):
        """The secret itself appears nowhere in the token's row."""
        token, secret = api_token_issue(user=self.member, name="ci")
        row = ApiToken.objects.filter(pk=token.pk).values().get()
        self.assertNotIn(secret, [str(v) for v in row.values()])
        self.assertTrue(secret.startswith(row["key_prefix"]))
        self.assertEqual(len(row["key_hash"]), 64)

    def test_token_use_is_recorded(self):
        """Using a token sets its last_used_at."""
        token, secret = api_token_issue(user=self.member)
        self.client.get("/api/feeds/", **self.bearer(secret))
        token.refresh_from_db()
        self.assertIsNotNone(token.last_used_at)

    def test_issue_token_command_prints_a_working_token(self):
        """`manage.py issue_token <username>` prints a token that authenticates as that user."""
        out = io.StringIO()
        call_command("issue_token", "member", "--name", "ci", stdout=out)
        secret = out.getvalue().strip()
        self.assertEqual(ApiToken.objects.get().name, "ci")
        response = self.post_json("/api/feeds/club/comments/", {"body": "hi"}, **self.bearer(secret))
        self.assertEqual(response.status_code, 201)

    def test_issue_token_command_refuses_a_name_over_the_limit(self):
        """A --name longer than the token's name field is an error, and no token is made."""
        with self.assertRaises(CommandError):
            call_command("issue_token", "member", "--name", "n" * 101, stdout=io.StringIO())
        self.assertFalse(ApiToken.objects.exists())

    def test_issue_token_command_refuses_an_inactive_user(self):
        """An inactive user's token would be refused, so none is made."""
        get_user_model().objects.create_user("gone", is_active=False)
        with self.assertRaises(CommandError):
            call_command("issue_token", "gone", stdout=io.StringIO())
        self.assertFalse(ApiToken.objects.exists())

    def test_issue_token_command_refuses_unknown_user(self):
        """An unknown username is an error, and no token is made."""
        with self.assertRaises(CommandError):
            call_command("issue_token", "nobody", stdout=io.StringIO())
        self.assertFalse(ApiToken.objects.exists())


class SessionAuthTests(ApiTestCase):
    @classmethod
    def setUpTestData(cls):
        super().setUpTestData()
        cls.member = get_user_model().objects.create_user("member", password="x")
        cls.club.members.add(cls.member)

    def setUp(self):
        self.browser = Client(enforce_csrf_checks=True)
        self.browser.force_login(self.member)

    def test_session_post_without_csrf_token_is_403(self):
        """A signed-in browser's unsafe request needs the CSRF token: 403 csrf_failed without it."""
        response = self.post_json("/api/feeds/club/comments/", {"body": "forged"}, client=self.browser)
        self.assertError(response, 403, "csrf_failed")
        self.assertFalse(Comment.objects.exists())

    def test_session_post_with_csrf_header_is_accepted(self):
        """With the csrftoken cookie's value in X-CSRFToken the session posts as its user."""
        self.browser.get("/feeds/club/")
        token = self.browser.cookies["csrftoken"].value
        response = self.post_json(
            "/api/feeds/club/comments/", {"body": "from the browser"}, client=self.browser, HTTP_X_CSRFTOKEN=token
        )
        self.assertEqual(response.status_code, 201, response.content)
        self.assertEqual(Comment.objects.get().user, self.member)

    def test_session_reads_need_no_csrf_token(self):
        """Safe methods are not CSRF-checked."""
        self.assertEqual(self.browser.get("/api/feeds/club/comments/").status_code, 200)

    def test_bearer_token_needs_no_csrf_token(self):
        """A token is not sent by browsers on their own, so token requests skip the CSRF check."""
        _, secret = api_token_issue(user=self.member)
        response = self.post_json(
            "/api/feeds/club/comments/", {"body": "x"}, client=self.browser, HTTP_AUTHORIZATION=f"Bearer {secret}"
        )
        self.assertEqual(response.status_code, 201)
