"""Idempotent posts: a repeated Idempotency-Key returns the first answer and creates nothing."""
import json
import threading
import urllib.request
from datetime import timedelta
from unittest import mock

from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import connection
from django.test import TestCase, TransactionTestCase, override_settings

from feed import idempotency, services
from feed.models import Comment, Feed, IdempotencyKey
from feed.ratelimit import RateLimited
from feed.idempotency import IdempotencyKeyInvalid, IdempotencyKeyReused
from feed.services import comment_submit
from tests.harness import NO_PROXY, MultiInstanceTestCase, post_comment


class IdempotentSubmitTests(TestCase):
    def setUp(self):
        self.feed = Feed.objects.create(slug="open", title="Open", allow_anonymous=True)

    def post(self, body="hello", *, key="key-1", client="ip:198.51.100.1", author="Ann"):
        with self.captureOnCommitCallbacks(execute=True):
            return comment_submit(feed=self.feed, author=author, body=body, client=client, idempotency_key=key)

    def test_a_repeated_key_returns_the_first_answer_and_creates_nothing(self):
        """The second post with the key gets the same comment back, marked as a replay."""
        first = self.post()
        second = self.post()
        self.assertEqual(Comment.objects.filter(feed=self.feed).count(), 1)
        self.assertEqual((first.status, first.replayed), (201, False))
        self.assertEqual((second.status, second.replayed), (201, True))
        self.assertEqual(second.body, first.body)
        self.assertEqual(first.body["id"], Comment.objects.get().pk)

    def test_a_repeat_publishes_nothing(self):
        """Only the first post is sent to live readers."""
        with self.captureOnCommitCallbacks(execute=False) as first_callbacks:
            comment_submit(feed=self.feed, author="Ann", body="x", client="c", idempotency_key="k")
        with self.captureOnCommitCallbacks(execute=False) as second_callbacks:
            comment_submit(feed=self.feed, author="Ann", body="x", client="c", idempotency_key="k")
        self.assertGreaterEqual(len(first_callbacks), 1)
        self.assertEqual(second_callbacks, [])

    def test_the_key_with_another_request_is_refused(self):
        """Same key, different body: an error, and no second comment."""
        self.post("first")
        with self.assertRaises(IdempotencyKeyReused):
            self.post("second")
        self.assertEqual(list(Comment.objects.values_list("body", flat=True)), ["first"])

    def test_the_key_on_another_feed_is_refused(self):
        """The feed is part of the request: reusing a key on another feed is refused too."""
        self.post("same")
        other = Feed.objects.create(slug="other", title="Other", allow_anonymous=True)
        with self.assertRaises(IdempotencyKeyReused):
            comment_submit(feed=other, author="Ann", body="same", client="ip:198.51.100.1", idempotency_key="key-1")

    def test_the_key_with_another_reply_to_is_refused(self):
        """reply_to is part of the request: the same key, text and author answering another comment is refused."""
        first_parent = services.comment_create(feed=self.feed, author="Bo", body="one")
        other_parent = services.comment_create(feed=self.feed, author="Bo", body="two")
        submit = dict(feed=self.feed, author="Ann", body="agreed", client="ip:198.51.100.1", idempotency_key="key-r")
        with self.captureOnCommitCallbacks(execute=True):
            first = comment_submit(**submit, reply_to=first_parent.pk)
        self.assertTrue(comment_submit(**submit, reply_to=first_parent.pk).replayed)
        for reply_to in (other_parent.pk, None):
            with self.subTest(reply_to=reply_to), self.assertRaises(IdempotencyKeyReused):
                comment_submit(**submit, reply_to=reply_to)
        self.assertEqual(list(Comment.objects.filter(body="agreed").values_list("pk", flat=True)), [first.body["id"]])

    def test_keys_belong_to_their_client(self):
        """Two clients using the same key string each get their own comment."""
        self.post(client="user:1")
        self.post(client="user:2")
        self.assertEqual(Comment.objects.count(), 2)

    def test_a_failed_post_leaves_no_key_behind(self):
        """A post refused by validation stores nothing; a corrected retry with the key succeeds."""
        with self.assertRaises(ValidationError):
            self.post("   ")
        self.assertFalse(IdempotencyKey.objects.exists())
        result = self.post("now with text")
        self.assertEqual((result.status, result.replayed), (201, False))

    def test_an_expired_key_can_be_used_again(self):
        """After 24 hours the key is forgotten and a post with it creates a new comment."""
        self.post("yesterday")
        IdempotencyKey.objects.update(created_at=IdempotencyKey.objects.get().created_at - timedelta(hours=25))
        result = self.post("today")
        self.assertFalse(result.replayed)
        self.assertEqual(Comment.objects.count(), 2)
        self.assertEqual(IdempotencyKey.objects.count(), 1)

    def test_the_stored_answer_survives_the_comment(self):
        """A replay still returns the first answer if the comment was deleted since."""
        first = self.post()
        Comment.objects.all().delete()
        self.assertEqual(self.post().body, first.body)

    def test_unusable_keys_are_refused(self):
        """Empty, over-long, non-ASCII or whitespace keys are refused before anything is saved."""
        for key in ["", "x" * 256, "clé", "two words", "tab\tkey"]:
            with self.subTest(key=key), self.assertRaises(IdempotencyKeyInvalid):
                self.post(key=key)
        self.assertFalse(Comment.objects.exists())


class IdempotencyPurgeTests(TestCase):
    """Expired keys are purged after commit, at most once per interval per process."""

    def setUp(self):
        self.feed = Feed.objects.create(slug="open", title="Open", allow_anonymous=True)
        idempotency._purge_due = 0.0
        self.addCleanup(setattr, idempotency, "_purge_due", 0.0)

    def post(self, key):
        return comment_submit(feed=self.feed, author="Ann", body=key, client="ip:198.51.100.1", idempotency_key=key)

    def test_the_purge_runs_on_commit_at_most_once_per_interval(self):
        """The first idempotent post registers the purge on commit; the next ones in the interval do not."""
        with mock.patch.object(services, "idempotency_keys_purge_expired") as purge:
            with self.captureOnCommitCallbacks(execute=False) as first:
                self.post("k1")
            purge.assert_not_called()  # not run in the request before commit
            for callback in first:
                callback()
            self.assertEqual(purge.call_count, 1)
            with self.captureOnCommitCallbacks(execute=True):
                self.post("k2")
                self.post("k3")
            self.assertEqual(purge.call_count, 1)
            idempotency._purge_due = 0.0  # the interval is over
            with self.captureOnCommitCallbacks(execute=True):
                self.post("k4")
            self.assertEqual(purge.call_count, 2)

    def test_a_failing_purge_does_not_fail_the_saved_post(self):
        """The purge runs after commit: its failure is logged, the post is answered."""
        with mock.patch.object(services, "idempotency_keys_purge_expired", side_effect=RuntimeError("db away")):
            with self.assertLogs("feed.services", "WARNING"), self.captureOnCommitCallbacks(execute=True):
                result = self.post("k1")
        self.assertEqual(result.status, 201)
        self.assertTrue(Comment.objects.filter(pk=result.body["id"]).exists())


@override_settings(FEED_POST_RATE="1/m")
class IdempotentRateLimitTests(TestCase):
    """Only the post that creates the comment takes a slot of the rate limit."""

    def setUp(self):
        cache.clear()
        self.feed = Feed.objects.create(slug="open", title="Open", allow_anonymous=True)

    def post(self, key):
        with self.captureOnCommitCallbacks(execute=True):
            return comment_submit(feed=self.feed, author="Ann", body="once", client="ip:198.51.100.1", idempotency_key=key)

    def test_a_racing_duplicate_gets_the_answer_without_taking_a_slot(self):
        """A duplicate whose lookup ran before the first post committed loses the insert and is
        answered with the first result, not refused for a slot it should never have taken."""
        first = self.post("race")
        real_find = services.idempotent_result_find
        calls = []

        def find(**kwargs):
            calls.append(kwargs)
            # The racer's first lookup ran before the winner committed: it found nothing.
            return None if len(calls) == 1 else real_find(**kwargs)

        with mock.patch.object(services, "idempotent_result_find", side_effect=find):
            again = self.post("race")
        self.assertTrue(again.replayed)
        self.assertEqual(again.body, first.body)
        with self.assertRaises(RateLimited):  # the one slot went to the first post
            self.post("another")

    def test_over_the_limit_the_key_is_left_free(self):
        """A post refused by the rate limit stores no key: the retry with the same key may succeed later."""
        self.post("one")
        with self.assertRaises(RateLimited):
            self.post("two")
        self.assertFalse(IdempotencyKey.objects.filter(key="two").exists())


class ConcurrentIdempotentPostTests(TransactionTestCase):
    """Racing repeats, each on its own database connection as on separate instances."""

    def test_racing_repeats_create_one_comment(self):
        """Six threads posting the same key at once: one comment, every thread gets its answer."""
        feed = Feed.objects.create(slug="race", title="Race", allow_anonymous=True)
        barrier = threading.Barrier(6)
        results, errors = [], []

        def post():
            try:
                barrier.wait(timeout=30)
                results.append(
                    comment_submit(feed=feed, author="Ann", body="once", client="c", idempotency_key="race-key")
                )
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=post) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        self.assertEqual(errors, [])
        self.assertEqual(len(results), 6)
        self.assertEqual(Comment.objects.filter(feed=feed).count(), 1)
        self.assertEqual(sum(not result.replayed for result in results), 1)
        self.assertEqual({result.body["id"] for result in results}, {Comment.objects.get().pk})


class IdempotencyKeyApiTests(TestCase):
    """The Idempotency-Key header on POST /api/feeds/<slug>/comments/."""

    def setUp(self):
        self.feed = Feed.objects.create(slug="open", title="Open", allow_anonymous=True)

    def post(self, body="hello", key="key-1", **extra):
        if key is not None:
            extra["HTTP_IDEMPOTENCY_KEY"] = key
        return self.client.post(
            "/api/feeds/open/comments/", {"author": "Ann", "body": body}, content_type="application/json", **extra
        )

    def test_a_retry_returns_the_first_comment_and_creates_nothing(self):
        """Both answers are 201 with the same comment; the second says it is a replay."""
        first, second = self.post(), self.post()
        self.assertEqual((first.status_code, second.status_code), (201, 201))
        self.assertEqual(second.json(), first.json())
        self.assertNotIn("Idempotent-Replayed", first)
        self.assertEqual(second["Idempotent-Replayed"], "true")
        self.assertEqual(Comment.objects.count(), 1)

    def test_the_key_with_a_different_body_is_a_422(self):
        """Reusing a key for another comment is refused with 422 idempotency_key_reused."""
        self.post("first")
        response = self.post("second")
        self.assertEqual(response.status_code, 422)
        self.assertEqual(response.json()["error"], "idempotency_key_reused")
        self.assertEqual(Comment.objects.count(), 1)

    def test_the_key_with_only_a_different_reply_to_is_a_422(self):
        """Same key, author and body but another reply_to: 422 idempotency_key_reused, not the first answer."""
        parents = [self.post(f"parent {index}", key=None).json()["id"] for index in range(2)]
        send = lambda reply_to: self.client.post(  # noqa: E731
            "/api/feeds/open/comments/", {"author": "Ann", "body": "me too", "reply_to": reply_to},
            content_type="application/json", HTTP_IDEMPOTENCY_KEY="key-reply",
        )
        first = send(parents[0])
        self.assertEqual(first.status_code, 201)
        self.assertEqual(send(parents[0]).json(), first.json())
        response = send(parents[1])
        self.assertEqual(response.status_code, 422, response.content)
        self.assertEqual(response.json()["error"], "idempotency_key_reused")
        self.assertEqual(Comment.objects.filter(body="me too").count(), 1)

    def test_a_malformed_key_is_a_400(self):
        """A key with spaces or over 255 characters is refused before anything is saved."""
        for key in ["has space", "k" * 256]:
            with self.subTest(key=key[:20]):
                response = self.post(key=key)
                self.assertEqual(response.status_code, 400)
                self.assertIn("Idempotency-Key", response.json().get("fields", {}))
        self.assertFalse(Comment.objects.exists())

    def test_posts_without_a_key_are_never_merged(self):
        """No key: two identical posts are two comments."""
        self.post(key=None)
        self.post(key=None)
        self.assertEqual(Comment.objects.count(), 2)

    @override_settings(FEED_POST_RATE="1/m")
    def test_a_retry_is_answered_even_when_the_client_is_rate_limited(self):
        """The repeat of an accepted post is not counted: it gets its 201 while new posts get 429."""
        from django.core.cache import cache

        cache.clear()
        self.assertEqual(self.post().status_code, 201)
        self.assertEqual(self.post("new", key="key-2").status_code, 429)
        self.assertEqual(self.post().status_code, 201)

    def test_the_header_is_described_in_the_openapi_document(self):
        """The POST operation documents the Idempotency-Key header, the replay header and the 422."""
        operation = self.client.get("/api/openapi.json").json()["paths"]["/api/feeds/{slug}/comments/"]["post"]
        headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
        self.assertIn("Idempotency-Key", headers)
        self.assertIn("Idempotent-Replayed", operation["responses"]["201"]["headers"])
        self.assertIn("422", operation["responses"])
        self.assertIn("Retry-After", operation["responses"]["429"]["headers"])


class IdempotencyAcrossInstancesTests(MultiInstanceTestCase):
    """Two daphne instances on one database: a key works whichever instance a retry reaches."""

    def post(self, instance, key, body="once"):
        request = urllib.request.Request(
            instance.http_url("/api/feeds/retry/comments/"),
            data=json.dumps({"author": "Ann", "body": body}).encode(),
            headers={"Content-Type": "application/json", "Idempotency-Key": key},
            method="POST",
        )
        with NO_PROXY.open(request, timeout=60) as response:
            return response.status, response.headers.get("Idempotent-Replayed"), json.loads(response.read())

    def test_a_retry_on_another_instance_returns_the_first_result(self):
        """Posted on A, retried on B: the same comment comes back and only one exists."""
        self.make_feed("retry")
        first = self.post(self.instances[0], "cross-1")
        second = self.post(self.instances[1], "cross-1")
        self.assertEqual((first[0], first[1]), (201, None))
        self.assertEqual((second[0], second[1]), (201, "true"))
        self.assertEqual(second[2], first[2])
        self.assertEqual(Comment.objects.filter(feed__slug="retry").count(), 1)

    def test_simultaneous_retries_on_both_instances_create_one_comment(self):
        """The same key sent to both instances at once, several times: exactly one comment."""
        self.make_feed("retry")
        results, errors = [], []
        barrier = threading.Barrier(6)

        def send(instance):
            try:
                barrier.wait(timeout=30)
                results.append(self.post(instance, "race-1"))
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=send, args=(self.instances[i % 2],)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        self.assertEqual(errors, [], self.diagnostics())
        self.assertEqual(len({json.dumps(body, sort_keys=True) for _, _, body in results}), 1)
        self.assertEqual(sum(replayed is None for _, replayed, _ in results), 1)
        self.assertEqual(Comment.objects.filter(feed__slug="retry").count(), 1)


class IdempotentRacesAndTheRateLimitTests(MultiInstanceTestCase):
    """Two instances sharing Redis, with the default rate limit on."""

    # The harness turns the rate limit off; this runs with the default.
    instance_env = {"FEED_POST_RATE": "30/m"}

    def post(self, instance, key, body):
        request = urllib.request.Request(
            instance.http_url("/api/feeds/race/comments/"),
            data=json.dumps({"author": "Ann", "body": body}).encode(),
            headers={"Content-Type": "application/json", "Idempotency-Key": key},
            method="POST",
        )
        with NO_PROXY.open(request, timeout=60) as response:
            return response.status

    def test_racing_duplicates_take_no_slot_of_the_rate_limit(self):
        """10 comments, each sent 3 times at once across both instances: 10 slots used, 20 left of 30."""
        self.make_feed("race")
        for number in range(10):
            statuses, errors = [], []
            barrier = threading.Barrier(3)

            def send(instance, key=f"race-{number}", body=f"comment {number}"):
                try:
                    barrier.wait(timeout=30)
                    statuses.append(self.post(instance, key, body))
                except Exception as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

            threads = [threading.Thread(target=send, args=(self.instances[i % 2],)) for i in range(3)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=120)
            self.assertEqual((statuses, errors), ([201] * 3, []), self.diagnostics())
        self.assertEqual(Comment.objects.filter(feed__slug="race").count(), 10)
        more = [post_comment(self.instances[i % 2], "race", author="Ann", body=f"more {i}")[0] for i in range(20)]
        self.assertEqual(more, [201] * 20, self.diagnostics())
