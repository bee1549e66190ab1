"""A JSON body nested deeper than Python's parser follows is a 400 in the API's own words."""
from __future__ import annotations

from django.test import TestCase

from feed.models import Comment, Feed


class DeeplyNestedJsonBodyTests(TestCase):
    def setUp(self):
        Feed.objects.create(slug="deep", title="Deep", allow_anonymous=True)

    def test_a_10000_deep_body_is_refused_without_pythons_error_text(self):
        body = "[" * 10_000 + "]" * 10_000
        response = self.client.post("/api/feeds/deep/comments/", body, content_type="application/json")
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json(), {"error": "invalid_json", "detail": "The JSON body is nested too deeply."})
        self.assertNotIn(b"recursion", response.content.lower())
        self.assertEqual(Comment.objects.count(), 0)

    def test_a_deep_object_value_is_refused_the_same_way(self):
        body = '{"author": "a", "body": ' + "[" * 10_000 + "]" * 10_000 + "}"
        response = self.client.post("/api/feeds/deep/comments/", body, content_type="application/json")
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json()["error"], "invalid_json")
