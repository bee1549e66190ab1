"""/ops/: staff only; what every instance's heartbeat says, summed, live, and accessible."""
import re

from django.contrib.auth import get_user_model
from django.test import TestCase, override_settings

from ops.sparkline import sparkline
from tests.harness import MultiInstanceTestCase, wait_until


class OpsAccessTests(TestCase):
    def test_anonymous_and_non_staff_users_are_sent_to_sign_in(self):
        response = self.client.get("/ops/")
        self.assertEqual(response.status_code, 302)
        self.assertIn("/admin/login/", response["Location"])
        user = get_user_model().objects.create_user("reader", password="x-long-password")
        self.client.force_login(user)
        response = self.client.get("/ops/")
        self.assertEqual(response.status_code, 302)
        self.assertIn("/admin/login/", response["Location"])

    def test_staff_see_the_page_with_this_process_and_the_feeds(self):
        staff = get_user_model().objects.create_user("ops", password="x-long-password", is_staff=True)
        self.client.force_login(staff)
        response = self.client.get("/ops/")
        self.assertEqual(response.status_code, 200)
        html = response.content.decode()
        self.assertIn('hx-trigger="every 2s"', html)
        self.assertIn('<th scope="col">Watching</th>', html)
        self.assertIn('data-feed="demo"', html)  # the demo feed of the initial migration
        self.assertNotIn("<style", html)
        self.assertNotRegex(html, r"<script(?![^>]*\bsrc=)")  # no inline script (CSP)
        self.assertNotRegex(html, r"\sstyle=")
        self.assertNotRegex(html, r"\son[a-z]+=")

    def test_the_htmx_request_gets_only_the_live_part(self):
        staff = get_user_model().objects.create_user("ops", password="x-long-password", is_staff=True)
        self.client.force_login(staff)
        response = self.client.get("/ops/", HTTP_HX_REQUEST="true")
        self.assertEqual(response.status_code, 200)
        self.assertNotIn(b"<html", response.content)
        self.assertIn(b"Instances alive", response.content)

    def test_the_page_costs_one_query(self):
        staff = get_user_model().objects.create_user("ops", password="x-long-password", is_staff=True)
        self.client.force_login(staff)
        from ops.selectors import ops_summary

        with self.assertNumQueries(1):
            ops_summary()


class SparklineTests(TestCase):
    def test_a_sparkline_has_points_and_a_text_alternative(self):
        chart = sparkline([1, 3, 2], label="Open connections", unit="")
        self.assertEqual(len(chart.points.split()), 3)
        self.assertEqual(chart.label, "Open connections: from 1 to 2, lowest 1, highest 3")
        self.assertIsNone(sparkline([5], label="too short"))


class OpsAcrossInstancesTests(MultiInstanceTestCase):
    """Two real daphne processes write heartbeats to the shared Redis; the page adds them up."""

    def test_the_page_shows_both_instances_and_who_watches_which_feed(self):
        a, b = self.instances
        self.make_feed("watched", title="Watched feed")
        self.make_feed("quiet", title="Quiet feed")
        self.reader(a, "watched")
        self.reader(a, "watched")
        self.reader(b, "watched")
        self.reader(b, "quiet")
        for index in range(3):
            self.post(a, "watched", f"comment {index}")
        staff = get_user_model().objects.create_user("ops", password="x-long-password", is_staff=True)
        self.client.force_login(staff)
        shared_cache = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": self.redis.url}}

        def page():
            with override_settings(CACHES=shared_cache):
                return self.client.get("/ops/", HTTP_HX_REQUEST="true").content.decode()

        def shows_everything():
            html = page()
            watched = re.search(r'data-feed="watched">.*?data-metric="watching">(\d+)<.*?data-metric="last-minute">(\d+)<.*?data-metric="last-seq">(\d+)<', html, re.S)
            quiet = re.search(r'data-feed="quiet">.*?data-metric="watching">(\d+)<', html, re.S)
            both = f":{a.pid}\"" in html and f":{b.pid}\"" in html
            delivered = re.search(r'data-metric="delivery">≤ [0-9,.]+ m?s<', html)
            return html if both and delivered and watched and watched.groups() == ("3", "3", "3") and quiet and quiet.group(1) == "1" else None

        html = wait_until(shows_everything, 15, "both instances' heartbeats on /ops/")
        connections = int(re.search(r'data-metric="connections">(\d+)<', html).group(1))
        self.assertEqual(connections, 4)
        self.assertIn('data-metric="events">0.05<', html)  # 3 comments in the last minute
        self.assertIn("Instances alive (3)", html)  # A, B and this test process itself

        # An instance that dies leaves the page once its heartbeat expires.
        b.kill()
        wait_until(lambda: f":{b.pid}\"" not in page(), 20, "B's heartbeat to expire")

        # With Redis away the page still answers, with this process and a note.
        self.redis.stop()
        html = page()
        self.assertIn("The shared cache (Redis) does not answer", html)
        self.assertIn("Instances alive (1)", html)
