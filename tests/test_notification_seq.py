"""Per-user notification seqs stay 1, 2, 3… with no gap or duplicate under concurrent comments.

Real transactions (TransactionTestCase) in several threads, each with its own database
connection, and real daphne instances posting at once; .ci/run runs this module on
PostgreSQL too, where the counter rows' locks (taken in user-id order) do the work.
"""
import threading
from concurrent.futures import ThreadPoolExecutor

from django.contrib.auth import get_user_model
from django.db import connection
from django.test import TransactionTestCase

from feed.auth import api_token_issue
from feed.models import Comment, Feed
from feed.services import comment_create
from notifications.models import Notification, NotificationCounter
from tests.harness import MultiInstanceTestCase, post_comment

User = get_user_model()


def assert_gap_free(test, users, expected_each):
    for user in users:
        seqs = list(Notification.objects.filter(user=user).order_by("pk").values_list("seq", flat=True))
        test.assertEqual(sorted(seqs), list(range(1, expected_each + 1)), f"seqs of {user.username}")
        test.assertEqual(NotificationCounter.objects.get(user=user).last_seq, expected_each)


class ConcurrentNotificationSeqTests(TransactionTestCase):
    THREADS = 6
    POSTS_PER_THREAD = 15

    def test_concurrent_comments_give_each_user_gap_free_seqs(self):
        """Threads posting to different feeds, mentioning the same people in opposite orders and replying
        to them, leave every person's notifications numbered 1..N, without deadlock or lost comments."""
        people = [User.objects.create_user(name) for name in ("ann", "bob", "cy")]
        targets = {
            person.pk: comment_create(feed=Feed.objects.create(slug=f"home-{person.username}", title="Home",
                                                               allow_anonymous=True),
                                      author="", body="mine", user=person)
            for person in people
        }
        feeds = [Feed.objects.create(slug=f"busy-{n}", title=f"Busy {n}", allow_anonymous=True) for n in range(3)]
        start = threading.Barrier(self.THREADS)
        errors = []

        def poster(number):
            try:
                start.wait(timeout=60)
                for i in range(self.POSTS_PER_THREAD):
                    names = ["@ann", "@bob", "@cy"] if number % 2 else ["@cy", "@bob", "@ann"]
                    feed = Feed.objects.get(pk=feeds[(number + i) % len(feeds)].pk)
                    comment_create(feed=feed, author=f"t{number}", body=f"{' '.join(names)} {i}")
            except Exception as exc:  # reported below, with the thread that raised it
                errors.append((number, exc))
            finally:
                connection.close()

        threads = [threading.Thread(target=poster, args=(n,)) for n in range(self.THREADS)]
        for thread in threads:
            thread.start()
        # Replies in the home feeds race with the mentions.
        for i in range(5):
            for person in people:
                home = Feed.objects.get(slug=f"home-{person.username}")
                comment_create(feed=home, author="replier", body=f"re {i}", reply_to=targets[person.pk].pk)
        for thread in threads:
            thread.join(timeout=300)
        self.assertFalse(any(thread.is_alive() for thread in threads), "posters did not finish")
        self.assertEqual(errors, [])
        self.assertEqual(Comment.objects.filter(feed__in=feeds).count(), self.THREADS * self.POSTS_PER_THREAD)
        assert_gap_free(self, people, self.THREADS * self.POSTS_PER_THREAD + 5)


class NotificationSeqAcrossInstancesTests(MultiInstanceTestCase):
    instance_count = 2
    POSTERS = 4
    POSTS_PER_POSTER = 10

    def test_comments_through_two_instances_give_gap_free_seqs(self):
        """Signed-in posters on two daphne instances mentioning the same people at once: each person's seqs are 1..N."""
        people = [User.objects.create_user(name) for name in ("ann", "bob")]
        feeds = [Feed.objects.create(slug=f"busy-{n}", title=f"Busy {n}", allow_anonymous=True) for n in range(2)]
        tokens = [api_token_issue(user=User.objects.create_user(f"poster{n}"))[1] for n in range(self.POSTERS)]

        def poster(number):
            instance = self.instances[number % len(self.instances)]
            results = []
            for i in range(self.POSTS_PER_POSTER):
                status, data = post_comment(
                    instance, feeds[(number + i) % len(feeds)].slug, author="", body=f"@bob @ann {number}.{i}",
                    headers={"Authorization": f"Bearer {tokens[number]}"},
                )
                results.append((status, data if status != 201 else None))
            return results

        with ThreadPoolExecutor(self.POSTERS) as pool:
            results = [r for rs in pool.map(poster, range(self.POSTERS)) for r in rs]
        self.assertEqual([status for status, _ in results], [201] * len(results), results)
        assert_gap_free(self, people, self.POSTERS * self.POSTS_PER_POSTER)
        # Every notification points at one of those comments, once per person.
        for person in people:
            self.assertEqual(
                Notification.objects.filter(user=person).values("comment").distinct().count(),
                self.POSTERS * self.POSTS_PER_POSTER,
            )
