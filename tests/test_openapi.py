"""The OpenAPI description at /api/openapi.json stays true: the contract is in it, and real answers fit it."""
import json
import re

from django.contrib.auth import get_user_model
from django.contrib.staticfiles import finders
from django.test import Client, TestCase, override_settings
from jsonschema import Draft202012Validator

from feed.auth import api_token_issue
from feed.models import Feed
from feed.services import comment_create

FEEDS = "/api/feeds/"
FEED = "/api/feeds/{slug}/"
COMMENTS = "/api/feeds/{slug}/comments/"
NOTIFICATIONS = "/api/notifications/"
SUMMARY = "/api/notifications/summary/"
READ = "/api/notifications/read/"

# The JSON API section of CONTRACT.md: each operation and the statuses it documents.
CONTRACT = {
    (FEEDS, "get"): {"200", "401"},
    (FEED, "get"): {"200", "401", "404"},
    (COMMENTS, "get"): {"200", "400", "401", "404"},
    (COMMENTS, "post"): {"201", "400", "401", "403", "404", "413", "415"},
    (NOTIFICATIONS, "get"): {"200", "400", "401"},
    (SUMMARY, "get"): {"200", "401"},
    (READ, "post"): {"200", "400", "401", "403", "415"},
}
# A person's notifications need credentials: no anonymous `{}` in their security.
PERSONAL = {NOTIFICATIONS, SUMMARY, READ}


class OpenApiTestCase(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.feed = Feed.objects.create(slug="talk", title="Talk", allow_anonymous=True)
        cls.club = Feed.objects.create(slug="club", title="Club", allow_anonymous=False)
        comment_create(feed=cls.feed, author="ann", body="first")

    def setUp(self):
        response = self.client.get("/api/openapi.json")
        self.assertEqual(response.status_code, 200)
        self.schema = response.json()

    def response_schema(self, path, method, status):
        """Return the JSON Schema documented for this answer, with the components it refers to."""
        responses = self.schema["paths"][path][method]["responses"]
        self.assertIn(str(status), responses, f"{method.upper()} {path} does not document {status}")
        schema = dict(responses[str(status)]["content"]["application/json"]["schema"])
        schema["components"] = self.schema["components"]
        return schema


class SchemaContentTests(OpenApiTestCase):
    def test_schema_is_openapi_3_with_valid_json_schemas(self):
        """The document is OpenAPI 3.1 and every component is a valid JSON Schema."""
        self.assertRegex(self.schema["openapi"], r"^3\.1\.")
        for name, component in self.schema["components"]["schemas"].items():
            with self.subTest(component=name):
                Draft202012Validator.check_schema(component)

    def test_every_contract_operation_is_described_with_its_responses(self):
        """Each path and method of the contract is present with every status the contract lists."""
        for (path, method), statuses in CONTRACT.items():
            with self.subTest(path=path, method=method):
                self.assertIn(path, self.schema["paths"])
                operation = self.schema["paths"][path].get(method)
                self.assertIsNotNone(operation, f"{method.upper()} {path} missing")
                self.assertLessEqual(statuses, set(operation["responses"]))
                for status in statuses - {"200", "201"}:
                    ref = operation["responses"][status]["content"]["application/json"]["schema"]["$ref"]
                    self.assertEqual(ref, "#/components/schemas/ErrorOut")

    def test_post_body_is_described(self):
        """The request body is a JSON object with `author`, an optional `reply_to` and a required `body`."""
        operation = self.schema["paths"][COMMENTS]["post"]
        ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        comment_in = self.schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
        self.assertEqual(set(comment_in["properties"]), {"author", "body", "reply_to"})
        self.assertEqual(comment_in["required"], ["body"])
        self.assertEqual(comment_in["properties"]["body"]["maxLength"], 2000)

    def test_query_parameters_are_described_with_their_limits(self):
        """`after` (>= 0) and `limit` (1..200, default 50) are documented."""
        params = {p["name"]: p["schema"] for p in self.schema["paths"][COMMENTS]["get"]["parameters"]}
        self.assertEqual((params["after"]["minimum"], params["after"]["default"]), (0, 0))
        self.assertEqual((params["limit"]["minimum"], params["limit"]["maximum"], params["limit"]["default"]), (1, 200, 50))

    def test_authentication_is_described(self):
        """Bearer tokens and the session cookie are described, and anonymous use is allowed."""
        schemes = self.schema["components"]["securitySchemes"]
        self.assertEqual(schemes["BearerToken"], {"type": "http", "scheme": "bearer"})
        self.assertEqual((schemes["SessionCookie"]["type"], schemes["SessionCookie"]["in"]), ("apiKey", "cookie"))
        for path, method in CONTRACT:
            with self.subTest(path=path, method=method):
                security = self.schema["paths"][path][method]["security"]
                self.assertIn({"BearerToken": []}, security)
                self.assertIn({"SessionCookie": []}, security)
                if path in PERSONAL:
                    self.assertNotIn({}, security)
                else:
                    self.assertIn({}, security)


class RealResponsesMatchSchemaTests(OpenApiTestCase):
    def post_to(self, path, data, client=None, **extra):
        return (client or self.client).post(path, json.dumps(data), content_type="application/json", **extra)

    def post(self, slug, data, **extra):
        body = data if isinstance(data, str) else json.dumps(data)
        return self.client.post(f"/api/feeds/{slug}/comments/", body, content_type="application/json", **extra)

    @override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1024)
    def test_every_documented_answer_validates_against_its_schema(self):
        """A real request for each documented (operation, status) returns JSON that fits its schema."""
        outsider = get_user_model().objects.create_user("outsider", password="x")
        _, outsider_token = api_token_issue(user=outsider)
        token = {"HTTP_AUTHORIZATION": f"Bearer {outsider_token}"}
        comment_create(feed=self.feed, author="bob", body="hi @outsider")
        session = Client(enforce_csrf_checks=True)
        session.force_login(outsider)
        bad_token = {"HTTP_AUTHORIZATION": "Bearer lf_not_a_token"}
        signed_in = Client(enforce_csrf_checks=True)  # a session post without the CSRF token: 403
        signed_in.force_login(outsider)
        cases = [
            (FEEDS, "get", 200, lambda: self.client.get("/api/feeds/")),
            (FEEDS, "get", 401, lambda: self.client.get("/api/feeds/", **bad_token)),
            (FEED, "get", 200, lambda: self.client.get("/api/feeds/talk/")),
            (FEED, "get", 401, lambda: self.client.get("/api/feeds/talk/", **bad_token)),
            (FEED, "get", 404, lambda: self.client.get("/api/feeds/club/")),
            (COMMENTS, "get", 200, lambda: self.client.get("/api/feeds/talk/comments/?after=0&limit=10")),
            (COMMENTS, "get", 400, lambda: self.client.get("/api/feeds/talk/comments/?limit=500")),
            (COMMENTS, "get", 401, lambda: self.client.get("/api/feeds/talk/comments/", **bad_token)),
            (COMMENTS, "get", 404, lambda: self.client.get("/api/feeds/nope/comments/")),
            (COMMENTS, "post", 201, lambda: self.post("talk", {"author": "bob", "body": "hello"})),
            (COMMENTS, "post", 400, lambda: self.post("talk", {"author": "bob", "body": " "})),
            (COMMENTS, "post", 400, lambda: self.post("talk", "{broken")),
            # A members-only feed answers others as an unknown feed does (404), never 401/403.
            (COMMENTS, "post", 404, lambda: self.post("club", {"author": "bob", "body": "hi"})),
            (COMMENTS, "post", 401, lambda: self.post("talk", {"author": "bob", "body": "hi"}, **bad_token)),
            (
                COMMENTS,
                "post",
                403,
                lambda: signed_in.post(
                    "/api/feeds/talk/comments/", json.dumps({"body": "hi"}), content_type="application/json"
                ),
            ),
            (
                COMMENTS,
                "post",
                404,
                lambda: self.post("club", {"body": "hi"}, HTTP_AUTHORIZATION=f"Bearer {outsider_token}"),
            ),
            (COMMENTS, "post", 404, lambda: self.post("nope", {"author": "bob", "body": "hi"})),
            (COMMENTS, "post", 413, lambda: self.post("talk", {"author": "bob", "body": "x" * 1500})),
            (
                COMMENTS,
                "post",
                415,
                lambda: self.client.post("/api/feeds/talk/comments/", {"author": "bob", "body": "hi"}),
            ),
            (NOTIFICATIONS, "get", 200, lambda: self.client.get("/api/notifications/?after=0", **token)),
            (NOTIFICATIONS, "get", 400, lambda: self.client.get("/api/notifications/?limit=0", **token)),
            (NOTIFICATIONS, "get", 401, lambda: self.client.get("/api/notifications/")),
            (SUMMARY, "get", 200, lambda: self.client.get("/api/notifications/summary/", **token)),
            (SUMMARY, "get", 401, lambda: self.client.get("/api/notifications/summary/")),
            (READ, "post", 200, lambda: self.post_to("/api/notifications/read/", {"up_to": 1}, **token)),
            (READ, "post", 400, lambda: self.post_to("/api/notifications/read/", {"up_to": "x"}, **token)),
            (READ, "post", 401, lambda: self.post_to("/api/notifications/read/", {"up_to": 1})),
            (READ, "post", 403, lambda: self.post_to("/api/notifications/read/", {"up_to": 1}, client=session)),
            (
                READ,
                "post",
                415,
                lambda: self.client.post("/api/notifications/read/", {"up_to": 1}, **token),
            ),
        ]
        exercised = set()
        for path, method, status, request in cases:
            with self.subTest(path=path, method=method, status=status):
                response = request()
                self.assertEqual(response.status_code, status, response.content)
                self.assertTrue(response["Content-Type"].startswith("application/json"))
                schema = self.response_schema(path, method, status)
                errors = [e.message for e in Draft202012Validator(schema).iter_errors(response.json())]
                self.assertEqual(errors, [])
                exercised.add((path, method, str(status)))
        documented = {(path, method, status) for (path, method), statuses in CONTRACT.items() for status in statuses}
        self.assertEqual(exercised, documented)

    def test_schema_rejects_a_wrong_shape(self):
        """The comment schema is strict enough to catch a missing field (so the check above can fail)."""
        schema = self.response_schema(COMMENTS, "post", 201)
        comment = self.post("talk", {"author": "bob", "body": "hello"}).json()
        del comment["seq"]
        self.assertFalse(Draft202012Validator(schema).is_valid(comment))


class DocsPageTests(TestCase):
    def test_docs_page_loads_only_local_assets(self):
        """/api/docs works offline: its scripts and styles are served from /static/, none from a CDN."""
        response = self.client.get("/api/docs")
        self.assertEqual(response.status_code, 200)
        html = response.content.decode()
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        self.assertTrue(any(a.endswith("swagger-ui-bundle.js") for a in assets), assets)
        for asset in assets:
            with self.subTest(asset=asset):
                self.assertTrue(asset.startswith("/static/"), asset)
                self.assertIsNotNone(finders.find(asset.removeprefix("/static/")), asset)
        self.assertIn("/api/openapi.json", html)
