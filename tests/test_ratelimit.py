"""Posting rate limits: the rate setting, who a client is, counting in a real Redis, the API and form."""
import json
import time
import urllib.error
import urllib.request
import uuid

from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.test import RequestFactory, SimpleTestCase, TestCase, override_settings

from feed.auth import api_token_issue
from feed.models import Comment, Feed

from feed import ratelimit
from feed.ratelimit import (
    Rate,
    client_bucket,
    client_identity,
    client_ip,
    parse_rate,
    post_rate_limit_hit,
    rate_limit_hit,
)
from livefeed.metrics import RATE_LIMIT_FAILURES_TOTAL
from tests.harness import NO_PROXY, MultiInstanceTestCase, RedisServer, SilentServer, free_port


class ParseRateTests(SimpleTestCase):
    def test_rates_per_second_minute_and_hour_are_understood(self):
        """`5/s`, `30/m` and `100/h` give the count and the period in seconds."""
        self.assertEqual(parse_rate("5/s"), Rate(limit=5, period=1))
        self.assertEqual(parse_rate("30/m"), Rate(limit=30, period=60))
        self.assertEqual(parse_rate(" 100 / hour "), Rate(limit=100, period=3600))

    def test_off_disables_the_limit(self):
        """`off` means no limit at all."""
        self.assertIsNone(parse_rate("off"))
        self.assertIsNone(parse_rate("OFF"))

    def test_a_malformed_rate_fails_loudly(self):
        """A typo in FEED_POST_RATE is a configuration error, not a silent default."""
        for value in ["30", "thirty/m", "30/d", "0/m", "-1/m", "30/m/s"]:
            with self.subTest(value=value), self.assertRaises(ImproperlyConfigured):
                parse_rate(value)


class ClientIpTests(SimpleTestCase):
    def request(self, remote="203.0.113.9", forwarded=None):
        extra = {"REMOTE_ADDR": remote}
        if forwarded is not None:
            extra["HTTP_X_FORWARDED_FOR"] = forwarded
        return RequestFactory().post("/api/feeds/demo/comments/", **extra)

    @override_settings(TRUSTED_PROXY_COUNT=0, TRUSTED_PROXIES=[])
    def test_without_trusted_proxies_x_forwarded_for_is_ignored(self):
        """By default only the socket peer counts: anyone can send X-Forwarded-For."""
        self.assertEqual(client_ip(self.request(forwarded="198.51.100.1")), "203.0.113.9")

    @override_settings(TRUSTED_PROXY_COUNT=1, TRUSTED_PROXIES=[])
    def test_behind_one_proxy_the_right_most_forwarded_entry_is_the_client(self):
        """The load balancer appends the address it saw; what the client wrote to the left is ignored."""
        request = self.request(remote="10.0.0.2", forwarded="1.1.1.1, 2.2.2.2, 198.51.100.7")
        self.assertEqual(client_ip(request), "198.51.100.7")

    @override_settings(TRUSTED_PROXY_COUNT=2, TRUSTED_PROXIES=[])
    def test_behind_two_proxies_the_second_entry_from_the_right_is_the_client(self):
        """With two proxies the last entry is the first proxy's address, the one before it the client."""
        request = self.request(remote="10.0.0.2", forwarded="6.6.6.6, 198.51.100.7, 10.0.0.1")
        self.assertEqual(client_ip(request), "198.51.100.7")

    @override_settings(TRUSTED_PROXY_COUNT=1, TRUSTED_PROXIES=[])
    def test_a_request_that_bypassed_the_proxy_counts_as_its_peer(self):
        """No X-Forwarded-For at all: the request came straight in, the peer is the client."""
        self.assertEqual(client_ip(self.request(remote="198.51.100.8")), "198.51.100.8")

    @override_settings(TRUSTED_PROXY_COUNT=0, TRUSTED_PROXIES=["10.0.0.0/8", "192.0.2.1"])
    def test_with_trusted_proxy_networks_the_right_most_untrusted_address_is_the_client(self):
        """Trusted proxy hops are skipped from the right; the first address not among them is the client."""
        request = self.request(remote="10.0.0.2", forwarded="6.6.6.6, 198.51.100.7, 192.0.2.1, 10.1.2.3")
        self.assertEqual(client_ip(request), "198.51.100.7")

    @override_settings(TRUSTED_PROXY_COUNT=0, TRUSTED_PROXIES=["10.0.0.0/8"])
    def test_an_untrusted_peer_cannot_claim_an_address(self):
        """A client talking to the server directly is itself, whatever X-Forwarded-For says."""
        request = self.request(remote="198.51.100.9", forwarded="10.0.0.5")
        self.assertEqual(client_ip(request), "198.51.100.9")

    @override_settings(TRUSTED_PROXY_COUNT=1, TRUSTED_PROXIES=[])
    def test_a_forwarded_entry_that_is_no_address_counts_as_the_peer(self):
        """Made-up text in X-Forwarded-For cannot make a client new: the peer address counts instead."""
        for made_up in ("not-an-ip-1", "not-an-ip-2", "unknown", "999.1.1.1", "_hidden"):
            request = self.request(remote="192.0.2.7", forwarded=f"198.51.100.1, {made_up}")
            self.assertEqual(client_ip(request), "192.0.2.7", made_up)

    @override_settings(TRUSTED_PROXY_COUNT=0, TRUSTED_PROXIES=["10.0.0.0/8"])
    def test_with_trusted_proxy_networks_a_made_up_entry_counts_as_the_peer(self):
        """Behind trusted proxies, the first untrusted entry must be an address, else the peer counts."""
        request = self.request(remote="10.0.0.2", forwarded="not-an-ip-3, 10.0.0.9")
        self.assertEqual(client_ip(request), "10.0.0.2")
        request = self.request(remote="10.0.0.2", forwarded="not-an-ip-4, 203.0.113.5, 10.0.0.9")
        self.assertEqual(client_ip(request), "203.0.113.5")

    def test_ipv6_clients_share_a_bucket_per_64_network(self):
        """One IPv6 subscriber holds a /64: addresses in it count as one client; IPv4 stays per address."""
        self.assertEqual(client_bucket("2001:db8:1:2::5"), client_bucket("2001:db8:1:2:ffff::9"))
        self.assertNotEqual(client_bucket("2001:db8:1:2::5"), client_bucket("2001:db8:1:3::5"))
        self.assertEqual(client_bucket("198.51.100.7:5123"), "198.51.100.7")
        self.assertEqual(client_bucket("::ffff:198.51.100.7"), "198.51.100.7")


class ClientIdentityTests(SimpleTestCase):
    class User:
        is_authenticated = True
        pk = 42

    def test_a_signed_in_user_is_counted_by_account_not_address(self):
        """The same user from two addresses is one client."""
        first = RequestFactory().post("/", REMOTE_ADDR="198.51.100.1")
        second = RequestFactory().post("/", REMOTE_ADDR="198.51.100.2")
        self.assertEqual(client_identity(first, user=self.User()), "user:42")
        self.assertEqual(client_identity(second, user=self.User()), "user:42")

    def test_anonymous_clients_are_counted_by_address(self):
        """Without an account or token the client address is the identity."""
        request = RequestFactory().post("/", REMOTE_ADDR="198.51.100.3")
        self.assertEqual(client_identity(request), "ip:198.51.100.3")


class RateLimitHitTests(SimpleTestCase):
    """Counting in a real (throwaway) Redis through Django's Redis cache backend."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = RedisServer()
        cls.redis.start()
        cls.addClassCleanup(cls.redis.stop)
        cls.enterClassContext(
            override_settings(
                CACHES={"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": cls.redis.url}}
            )
        )

    def setUp(self):
        cache.clear()

    def test_posts_over_the_limit_are_refused_with_a_retry_time(self):
        """Three per minute: three posts pass, the fourth is refused and told when to retry."""
        rate = Rate(limit=3, period=60)
        start = 6000.0  # the start of a window
        decisions = [rate_limit_hit(scope="t", client="a", rate=rate, now=start + i) for i in range(4)]
        self.assertEqual([d.allowed for d in decisions], [True, True, True, False])
        # The window ends in 57 s; then its 3 posts slide out, and one more fits once a third has.
        self.assertEqual(decisions[3].retry_after, 57 + 20)

    def test_clients_are_counted_separately(self):
        """One client hitting the limit does not limit another."""
        rate = Rate(limit=1, period=60)
        self.assertTrue(rate_limit_hit(scope="t", client="a", rate=rate, now=6000).allowed)
        self.assertFalse(rate_limit_hit(scope="t", client="a", rate=rate, now=6001).allowed)
        self.assertTrue(rate_limit_hit(scope="t", client="b", rate=rate, now=6001).allowed)

    def test_a_client_may_post_again_after_retry_after(self):
        """Retrying exactly when told succeeds; a second earlier is still refused."""
        rate = Rate(limit=2, period=60)
        for at in (6010.0, 6040.0, 6059.0):
            rate_limit_hit(scope="t", client="a", rate=rate, now=at)
        refused = rate_limit_hit(scope="t", client="a", rate=rate, now=6062.0)
        self.assertFalse(refused.allowed)
        retry_at = 6062.0 + refused.retry_after
        self.assertFalse(rate_limit_hit(scope="t", client="a", rate=rate, now=retry_at - 1).allowed)
        self.assertTrue(rate_limit_hit(scope="t", client="a", rate=rate, now=retry_at).allowed)

    def test_refused_posts_do_not_count(self):
        """A client hammering while limited is let in as soon as its accepted posts allow."""
        rate = Rate(limit=2, period=10)
        rate_limit_hit(scope="t", client="a", rate=rate, now=100.0)
        rate_limit_hit(scope="t", client="a", rate=rate, now=101.0)
        for i in range(50):
            self.assertFalse(rate_limit_hit(scope="t", client="a", rate=rate, now=102.0 + i * 0.01).allowed)
        # With only the two accepted posts counted, the previous window weighs 2 * (1 - 5/10) = 1 at 115.
        self.assertTrue(rate_limit_hit(scope="t", client="a", rate=rate, now=115.0).allowed)

    def test_a_burst_across_a_window_boundary_is_still_limited(self):
        """Posting the whole allowance at the end of one window leaves little at the start of the next."""
        rate = Rate(limit=10, period=60)
        for i in range(10):
            self.assertTrue(rate_limit_hit(scope="t", client="a", rate=rate, now=6059.0 + i * 0.01).allowed)
        allowed_after = sum(rate_limit_hit(scope="t", client="a", rate=rate, now=6061.0).allowed for _ in range(10))
        self.assertEqual(allowed_after, 0)

    def test_the_count_is_shared_by_every_connection_to_the_cache(self):
        """Instances share one counter: another Redis cache client sees the first one's posts."""
        from django.core.cache.backends.redis import RedisCache

        from feed.ratelimit import _window_key

        rate = Rate(limit=2, period=60)
        rate_limit_hit(scope="t", client="a", rate=rate, now=6000)
        rate_limit_hit(scope="t", client="a", rate=rate, now=6001)
        other_instance = RedisCache(self.redis.url, {})
        self.assertEqual(other_instance.get(_window_key("t", "a", 6000 // 60)), 2)
        self.assertFalse(rate_limit_hit(scope="t", client="a", rate=rate, now=6002).allowed)

    @override_settings(FEED_POST_RATE="off")
    def test_off_lets_every_post_through(self):
        """FEED_POST_RATE=off: no post is refused and nothing is counted."""
        self.assertTrue(all(post_rate_limit_hit(client="a", now=6000).allowed for _ in range(100)))

    @override_settings(FEED_POST_RATE="2/m")
    def test_post_limit_follows_the_setting(self):
        """FEED_POST_RATE=2/m allows two posts a minute per client."""
        results = [post_rate_limit_hit(client="a", now=6000 + i).allowed for i in range(3)]
        self.assertEqual(results, [True, True, False])


class FailOpenTests(SimpleTestCase):
    """A cache (Redis) that fails lets posts through uncounted, quickly, with one warning per outage."""

    def setUp(self):
        ratelimit._backend = ratelimit._Backend()
        self.addCleanup(setattr, ratelimit, "_backend", ratelimit._Backend())

    def redis_cache(self, url):
        return override_settings(
            CACHES={
                "default": {
                    "BACKEND": "django.core.cache.backends.redis.RedisCache",
                    "LOCATION": url,
                    "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
                }
            }
        )

    def failures(self):
        return RATE_LIMIT_FAILURES_TOTAL._value.get()

    def test_posts_are_allowed_and_counted_as_failures_when_redis_refuses_connections(self):
        """Nothing listening: every post is allowed, each counted in the metric, one warning logged."""
        before = self.failures()
        with self.redis_cache(f"redis://127.0.0.1:{free_port()}/0"):
            with self.assertLogs("feed.ratelimit", "WARNING") as logs:
                decisions = [rate_limit_hit(scope="t", client="a", rate=Rate(1, 60)) for _ in range(5)]
        self.assertEqual([decision.allowed for decision in decisions], [True] * 5)
        self.assertEqual(self.failures() - before, 5)
        self.assertEqual(len(logs.output), 1, logs.output)

    def test_a_redis_that_never_answers_costs_one_timeout_per_retry_period(self):
        """A silent Redis: the first post waits for the socket timeout, the next ones not at all."""
        silent = SilentServer()
        silent.start()
        self.addCleanup(silent.stop)
        with self.redis_cache(silent.url), self.assertLogs("feed.ratelimit", "WARNING"):
            started = time.monotonic()
            self.assertTrue(rate_limit_hit(scope="t", client="a", rate=Rate(1, 60)).allowed)
            first = time.monotonic() - started
            started = time.monotonic()
            for _ in range(20):
                self.assertTrue(rate_limit_hit(scope="t", client="a", rate=Rate(1, 60)).allowed)
            rest = time.monotonic() - started
        self.assertLess(first, 1.5)
        self.assertLess(rest, 0.2)

    def test_counting_resumes_once_the_cache_answers_again(self):
        """After the retry period the cache is tried again and the limit holds again."""
        redis = RedisServer()
        with self.redis_cache(redis.url):
            with self.assertLogs("feed.ratelimit", "WARNING"):
                self.assertTrue(rate_limit_hit(scope="t", client="a", rate=Rate(1, 60)).allowed)
            redis.start()
            self.addCleanup(redis.stop)
            ratelimit._backend.retry_at = 0.0  # the retry period is over
            with self.assertLogs("feed.ratelimit", "INFO") as logs:
                decisions = [rate_limit_hit(scope="t", client="a", rate=Rate(1, 60)).allowed for _ in range(2)]
        self.assertEqual(decisions, [True, False])
        self.assertIn("answers again", logs.output[0])


@override_settings(FEED_POST_RATE="3/m", TRUSTED_PROXY_COUNT=0, TRUSTED_PROXIES=[])
class PostingRateLimitTests(TestCase):
    """The limit on the real API and form views (in-process cache)."""

    def setUp(self):
        cache.clear()
        self.feed = Feed.objects.create(slug="open", title="Open", allow_anonymous=True)

    def api_post(self, body="hi", **extra):
        return self.client.post(
            "/api/feeds/open/comments/", {"author": "Ann", "body": body}, content_type="application/json", **extra
        )

    def test_the_api_answers_429_with_retry_after_over_the_limit(self):
        """Three posts a minute pass; the fourth gets 429, a JSON error and Retry-After, and saves nothing."""
        statuses = [self.api_post(f"post {i}").status_code for i in range(3)]
        refused = self.api_post("one too many")
        self.assertEqual(statuses, [201, 201, 201])
        self.assertEqual(refused.status_code, 429)
        self.assertEqual(refused.json()["error"], "too_many_requests")
        self.assertGreaterEqual(int(refused["Retry-After"]), 1)
        self.assertLessEqual(int(refused["Retry-After"]), 120)
        self.assertEqual(Comment.objects.count(), 3)

    @override_settings(TRUSTED_PROXY_COUNT=1)
    def test_clients_behind_the_load_balancer_are_counted_apart(self):
        """Two clients behind one proxy each get their own allowance; a forged X-Forwarded-For prefix changes nothing."""
        def post_as(client_ip, forged):
            return self.api_post(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR=f"{forged}, {client_ip}").status_code

        first = [post_as("198.51.100.1", f"1.2.3.{i}") for i in range(4)]
        second = [post_as("198.51.100.2", "1.2.3.4") for _ in range(3)]
        self.assertEqual(first, [201, 201, 201, 429])
        self.assertEqual(second, [201, 201, 201])

    def test_a_token_user_is_counted_across_addresses(self):
        """A program posting with its token is one client, from whichever address."""
        user = get_user_model().objects.create_user("bot")
        _, secret = api_token_issue(user=user)
        statuses = [
            self.api_post(REMOTE_ADDR=f"198.51.100.{i}", HTTP_AUTHORIZATION=f"Bearer {secret}").status_code
            for i in range(4)
        ]
        self.assertEqual(statuses, [201, 201, 201, 429])

    def test_invalid_api_posts_do_not_use_up_the_limit(self):
        """Posts refused as invalid (400) or not allowed (404: a members-only feed) are not counted: the next valid post is 201.

        Valid posts are still limited: the fourth within the minute gets 429 with Retry-After.
        """
        Feed.objects.create(slug="club", title="Club", allow_anonymous=False)
        refused = [self.api_post("   ").status_code for _ in range(5)]
        refused.append(self.api_post("x" * 2001).status_code)
        refused.append(
            self.client.post(
                "/api/feeds/open/comments/", {"author": "", "body": "no name"}, content_type="application/json"
            ).status_code
        )
        refused.append(
            self.client.post(
                "/api/feeds/club/comments/", {"author": "Ann", "body": "members only"}, content_type="application/json"
            ).status_code
        )
        self.assertEqual(refused, [400] * 7 + [404])
        accepted = [self.api_post(f"valid {i}").status_code for i in range(3)]
        over = self.api_post("one too many")
        self.assertEqual(accepted, [201, 201, 201])
        self.assertEqual(over.status_code, 429)
        self.assertEqual(over.json()["error"], "too_many_requests")
        self.assertGreaterEqual(int(over["Retry-After"]), 1)
        self.assertEqual(Comment.objects.count(), 3)

    def test_invalid_form_posts_do_not_use_up_the_limit(self):
        """Form posts shown an inline error (422) are not counted; valid ones still get 429 over the limit."""
        def form_post(author, body):
            return self.client.post("/feeds/open/comments/", {"author": author, "body": body}, HTTP_HX_REQUEST="true")

        refused = [form_post("Ann", "  ").status_code for _ in range(5)] + [form_post("", "no name").status_code]
        self.assertEqual(refused, [422] * 6)
        accepted = [form_post("Ann", f"valid {i}").status_code for i in range(3)]
        over = form_post("Ann", "too fast")
        self.assertEqual(accepted, [200, 200, 200])
        self.assertEqual(over.status_code, 429)
        self.assertIn("Retry-After", over)
        self.assertContains(over, "Too many posts; try again in", status_code=429)
        self.assertEqual(Comment.objects.count(), 3)

    def test_the_form_shows_the_wait_inline_with_429(self):
        """Over the limit the htmx form fragment says how long to wait; status 429 with Retry-After."""
        for i in range(3):
            self.client.post("/feeds/open/comments/", {"author": "Ann", "body": f"form {i}"}, HTTP_HX_REQUEST="true")
        response = self.client.post(
            "/feeds/open/comments/", {"author": "Ann", "body": "too fast"}, HTTP_HX_REQUEST="true"
        )
        self.assertEqual(response.status_code, 429)
        self.assertIn("Retry-After", response)
        self.assertContains(response, "Too many posts; try again in", status_code=429)
        self.assertContains(response, "too fast", status_code=429)  # what was typed is kept
        self.assertEqual(Comment.objects.count(), 3)

    def test_the_form_without_javascript_gets_the_page_with_the_message(self):
        """A full-page post over the limit gets the page (429) with the message, not a redirect."""
        for i in range(3):
            self.client.post("/feeds/open/comments/", {"author": "Ann", "body": f"page {i}"})
        response = self.client.post("/feeds/open/comments/", {"author": "Ann", "body": "page 4"})
        self.assertEqual(response.status_code, 429)
        self.assertContains(response, "Too many posts", status_code=429)
        self.assertContains(response, 'id="comments"', status_code=429)


def post_with_headers(instance, slug, body, headers=None):
    """POST a comment to an instance; return (status, headers, JSON body)."""
    request = urllib.request.Request(
        instance.http_url(f"/api/feeds/{slug}/comments/"),
        data=json.dumps({"author": "Ann", "body": body}).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    try:
        with NO_PROXY.open(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


class RateLimitAcrossInstancesTests(MultiInstanceTestCase):
    """Two daphne instances sharing one Redis enforce one limit per client."""

    instance_env = {"FEED_POST_RATE": "4/m"}

    def test_the_limit_holds_across_instances(self):
        """Posts alternating between instances share one count: the fifth is refused on either."""
        self.make_feed("shared-limit")
        statuses = [post_with_headers(self.instances[i % 2], "shared-limit", f"p{i}")[0] for i in range(5)]
        self.assertEqual(statuses, [201, 201, 201, 201, 429], self.diagnostics())
        status, headers, error = post_with_headers(self.instances[0], "shared-limit", "again")
        self.assertEqual((status, error["error"]), (429, "too_many_requests"))
        self.assertGreaterEqual(int(headers["Retry-After"]), 1)
        self.assertEqual(Comment.objects.filter(feed__slug="shared-limit").count(), 4)


class ForwardedGarbageThroughTheServerTests(MultiInstanceTestCase):
    """One daphne instance behind a (pretended) proxy, with the default rate limit."""

    instance_count = 1
    # The harness turns the rate limit off; this runs with the default and one trusted proxy.
    instance_env = {"FEED_POST_RATE": "30/m", "TRUSTED_PROXY_COUNT": "1"}

    def test_made_up_forwarded_addresses_do_not_escape_the_limit(self):
        """40 posts, each claiming a new made-up X-Forwarded-For: the peer's 30 a minute hold."""
        self.make_feed("garbage")
        statuses = [
            post_with_headers(self.instances[0], "garbage", f"p{i}", {"X-Forwarded-For": f"not-an-ip-{uuid.uuid4()}"})[0]
            for i in range(40)
        ]
        self.assertEqual(statuses.count(201), 30, f"{statuses}\n{self.diagnostics()}")
        self.assertEqual(statuses[30:], [429] * 10)
        self.assertEqual(Comment.objects.filter(feed__slug="garbage").count(), 30)
