"""comment_create: validation, permissions, gap-free seq under concurrency, PostgreSQL's one-statement
save (publishing: test_publishing)."""
import threading
from unittest import mock, skipUnless

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.cache import cache
from django.db import connection, transaction
from django.http import Http404
from django.test import TestCase, TransactionTestCase
from django.test.utils import CaptureQueriesContext

from feed.models import AUTHOR_MAX_LENGTH, BODY_MAX_LENGTH, Comment, Event, Feed
from feed.ratelimit import RateLimited
from feed.comment_rows import REGISTERED_NAME_REFUSED, is_registered_username
from feed.services import ReadingNotAllowed, comment_create, comment_submit
from notifications.models import Notification


class CommentCreateTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.feed = Feed.objects.create(slug="open", title="Open", allow_anonymous=True)

    def test_comments_are_numbered_from_one_in_order(self):
        """Each feed numbers its comments 1, 2, 3… and keeps last_seq in step."""
        first = comment_create(feed=self.feed, author="ann", body="one")
        second = comment_create(feed=self.feed, author="bob", body="two")
        self.assertEqual((first.seq, second.seq), (1, 2))
        self.feed.refresh_from_db()
        self.assertEqual(self.feed.last_seq, 2)

    def test_seq_is_per_feed(self):
        """Another feed's comments do not advance this feed's seq."""
        other = Feed.objects.create(slug="other", title="Other", allow_anonymous=True)
        comment_create(feed=other, author="ann", body="elsewhere")
        self.assertEqual(comment_create(feed=self.feed, author="ann", body="here").seq, 1)

    def test_blank_body_is_rejected(self):
        """A body of only whitespace is a field error on `body`, and nothing is saved."""
        with self.assertRaises(ValidationError) as caught:
            comment_create(feed=self.feed, author="ann", body=" \n\t ")
        self.assertIn("body", caught.exception.message_dict)
        self.assertFalse(Comment.objects.exists())

    def test_anonymous_poster_needs_a_display_name(self):
        """Without a signed-in user, a blank author is a field error on `author`."""
        with self.assertRaises(ValidationError) as caught:
            comment_create(feed=self.feed, author="  ", body="hello")
        self.assertEqual(list(caught.exception.message_dict), ["author"])

    def test_too_long_author_and_body_are_rejected(self):
        """Author and body over their limits are both reported."""
        with self.assertRaises(ValidationError) as caught:
            comment_create(feed=self.feed, author="a" * (AUTHOR_MAX_LENGTH + 1), body="b" * (BODY_MAX_LENGTH + 1))
        self.assertEqual(set(caught.exception.message_dict), {"author", "body"})
        self.assertFalse(Comment.objects.exists())

    def test_body_at_the_limit_is_accepted(self):
        """Exactly BODY_MAX_LENGTH characters is allowed."""
        comment = comment_create(feed=self.feed, author="ann", body="b" * BODY_MAX_LENGTH)
        self.assertEqual(len(comment.body), BODY_MAX_LENGTH)

    def test_control_characters_are_stripped(self):
        """NUL and other control characters never reach the database."""
        comment = comment_create(feed=self.feed, author="a\x00nn", body="hi\x07 there\x00")
        comment.refresh_from_db()
        self.assertEqual((comment.author, comment.body), ("ann", "hi there"))

    def test_signed_in_user_without_name_posts_as_username(self):
        """A blank author defaults to the signed-in user's username, and the user is recorded."""
        user = get_user_model().objects.create_user("carol", password="x")
        comment = comment_create(feed=self.feed, author="", body="hello", user=user)
        self.assertEqual((comment.author, comment.user), ("carol", user))


class MembersOnlyFeedTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        User = get_user_model()
        cls.feed = Feed.objects.create(slug="club", title="Club", allow_anonymous=False)
        cls.member = User.objects.create_user("member", password="x")
        cls.outsider = User.objects.create_user("outsider", password="x")
        cls.staff = User.objects.create_user("staff", password="x", is_staff=True)
        cls.feed.members.add(cls.member)

    def test_anonymous_poster_finds_no_feed(self):
        """No credentials on a members-only feed: ReadingNotAllowed, a 404 like an unknown feed."""
        with self.assertRaises(ReadingNotAllowed) as caught:
            comment_create(feed=self.feed, author="ann", body="hi", user=None)
        self.assertIsInstance(caught.exception, Http404)
        self.assertFalse(Comment.objects.exists())

    def test_non_member_finds_no_feed(self):
        """A signed-in user who is not a member: ReadingNotAllowed too, not a 403 that tells the feed exists."""
        with self.assertRaises(ReadingNotAllowed):
            comment_create(feed=self.feed, author="", body="hi", user=self.outsider)
        self.assertFalse(Comment.objects.exists())

    def test_members_and_staff_may_post(self):
        """Members and staff post to a members-only feed."""
        comment_create(feed=self.feed, author="", body="from a member", user=self.member)
        comment_create(feed=self.feed, author="", body="from staff", user=self.staff)
        self.assertEqual(list(Comment.objects.values_list("author", flat=True)), ["member", "staff"])


class ConcurrentPostingTests(TransactionTestCase):
    THREADS = 8
    POSTS_PER_THREAD = 25

    def test_concurrent_posters_get_contiguous_unique_seqs(self):
        """Posters in several threads get seq 1..N with no gap or duplicate, numbered in commit order."""
        feed = Feed.objects.create(slug="busy", title="Busy", allow_anonymous=True)
        start = threading.Barrier(self.THREADS)
        errors = []

        def poster(number):
            try:
                start.wait(timeout=60)
                for i in range(self.POSTS_PER_THREAD):
                    comment_create(feed=Feed.objects.get(pk=feed.pk), author=f"t{number}", body=f"post {i}")
            except Exception as exc:  # reported below, with the thread that raised it
                errors.append((number, exc))
            finally:
                connection.close()

        threads = [threading.Thread(target=poster, args=(n,)) for n in range(self.THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        self.assertFalse(any(thread.is_alive() for thread in threads), "posters did not finish")
        self.assertEqual(errors, [])

        total = self.THREADS * self.POSTS_PER_THREAD
        seqs = list(Comment.objects.filter(feed=feed).order_by("pk").values_list("seq", flat=True))
        self.assertEqual(sorted(seqs), list(range(1, total + 1)))
        # Rows were inserted in seq order: N was in the table before N+1 was numbered.
        self.assertEqual(seqs, list(range(1, total + 1)))
        feed.refresh_from_db()
        self.assertEqual(feed.last_seq, total)
        for number in range(self.THREADS):
            self.assertEqual(Comment.objects.filter(feed=feed, author=f"t{number}").count(), self.POSTS_PER_THREAD)


@skipUnless(connection.vendor == "postgresql", "the expression index is PostgreSQL's: run with DATABASE_URL=postgres://...")
class RegisteredNameLookupTests(TestCase):
    def test_the_guest_name_check_is_served_by_an_index_not_a_scan_of_every_user(self):
        """Every guest post asks whether its display name is a registered username (case-insensitively)."""
        get_user_model().objects.create_user("Alice", password="x")
        with CaptureQueriesContext(connection) as queries:
            self.assertTrue(is_registered_username("aLICE"))
        self.assertFalse(is_registered_username("alicia"))
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off")  # the planner's choice on a tiny table aside
            cursor.execute(f"EXPLAIN {queries[0]['sql']}")
            plan = "\n".join(row[0] for row in cursor.fetchall())
        self.assertIn("accounts_user_username_upper", plan)


@skipUnless(connection.vendor == "postgresql", "the one-statement save is PostgreSQL's: run with DATABASE_URL=postgres://...")
class OneStatementSaveTests(TransactionTestCase):
    """On PostgreSQL a comment that answers and notifies nobody is saved by one statement, which
    is its own transaction: the feed row's lock is held only while PostgreSQL runs it."""

    def setUp(self):
        self.feed = Feed.objects.create(slug="open", title="Open", allow_anonymous=True)

    def writes(self, queries):
        return [q["sql"] for q in queries if not q["sql"].lstrip().upper().startswith("SELECT")]

    def test_a_plain_comment_is_one_statement_outside_any_transaction(self):
        """A guest's comment: numbering, both rows and the registered-name check are one statement."""
        with CaptureQueriesContext(connection) as queries:
            comment = comment_create(feed=self.feed, author="ann", body="plain")
        self.assertEqual(len(queries), 1, [q["sql"] for q in queries])
        self.assertTrue(queries[0]["sql"].startswith("WITH numbered AS (UPDATE"))
        self.assertTrue(connection.get_autocommit())
        # What the statement saved is what the returned comment says, and its event carries its seq.
        saved = Comment.objects.get(pk=comment.pk)
        self.assertEqual(
            (saved.feed_id, saved.seq, saved.author, saved.body, saved.user_id, saved.reply_to_id, saved.created_at),
            (self.feed.pk, 1, "ann", "plain", None, None, comment.created_at),
        )
        event = Event.objects.get(feed=self.feed, seq=1)
        self.assertEqual((event.kind, event.comment_id, event.created_at), ("comment.created", comment.pk, comment.created_at))
        self.feed.refresh_from_db()
        self.assertEqual(self.feed.last_seq, 1)

    def test_a_reply_and_its_notification_are_saved_together_or_not_at_all(self):
        """A reply notifies the parent's author, so it is not one statement: when saving the
        notification fails, the reply and its seq are rolled back with it."""
        ann = get_user_model().objects.create_user("ann")
        parent = comment_create(feed=self.feed, author="ann", body="first", user=ann)
        with mock.patch("notifications.services._counters_bumped", side_effect=RuntimeError("disk full")):
            with self.assertRaises(RuntimeError):
                comment_create(feed=self.feed, author="guest", body="lost answer", reply_to=parent.pk)
        self.assertFalse(Comment.objects.filter(body="lost answer").exists())
        self.assertFalse(Event.objects.filter(seq=2).exists())
        reply = comment_create(feed=self.feed, author="guest", body="answer", reply_to=parent.pk)
        self.assertEqual((reply.seq, reply.reply_to_id), (2, parent.pk))
        self.assertEqual(Notification.objects.get(user=ann).comment_id, reply.pk)

    def test_a_comment_of_a_deleted_feed_saves_nothing(self):
        gone = Feed.objects.create(slug="gone", title="Gone", allow_anonymous=True)
        Feed.objects.filter(pk=gone.pk).delete()
        with self.assertRaises(Feed.DoesNotExist):
            comment_create(feed=gone, author="ann", body="too late")
        self.assertFalse(Comment.objects.filter(feed_id=gone.pk).exists())

    def test_the_statement_refuses_a_registered_name_and_the_post_is_not_counted(self):
        """The guest-name check on save: refused like comment_validate refuses it, nothing saved,
        no seq used, and the refused posts do not count against the client's rate limit."""
        get_user_model().objects.create_user("Alice", password="x")
        cache.clear()
        self.addCleanup(cache.clear)
        with self.settings(FEED_POST_RATE="2/m"):
            for _ in range(3):
                with self.assertRaises(ValidationError) as refused:
                    comment_submit(feed=self.feed, author="aLICE", body="me", client="guest-1")
                self.assertEqual(refused.exception.message_dict, {"author": [REGISTERED_NAME_REFUSED]})
            seqs = [comment_submit(feed=self.feed, author="Al", body=f"ok {n}", client="guest-1").body["seq"] for n in (1, 2)]
            with self.assertRaises(RateLimited):
                comment_submit(feed=self.feed, author="Al", body="third", client="guest-1")
        self.assertEqual(seqs, [1, 2])
        self.assertEqual(list(Comment.objects.values_list("author", flat=True)), ["Al", "Al"])

    def test_a_post_with_other_faults_names_the_registered_name_too(self):
        """Refused anyway (an empty body): the name is looked up there, so every fault is said at once."""
        get_user_model().objects.create_user("Alice", password="x")
        with self.assertRaises(ValidationError) as refused:
            comment_create(feed=self.feed, author="alice", body="  ")
        self.assertEqual(set(refused.exception.message_dict), {"author", "body"})
        self.assertEqual(refused.exception.message_dict["author"], [REGISTERED_NAME_REFUSED])

    def test_the_statements_name_check_is_served_by_the_index(self):
        get_user_model().objects.create_user("Alice", password="x")
        with CaptureQueriesContext(connection) as queries:
            comment_create(feed=self.feed, author="bob", body="plain")
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off")  # the planner's choice on a tiny table aside
            cursor.execute(f"EXPLAIN {queries[0]['sql']}")  # EXPLAIN alone does not run it
            plan = "\n".join(row[0] for row in cursor.fetchall())
        self.assertIn("accounts_user_username_upper", plan)
