"""The notifications of one comment are rendered together: their cost does not grow per person
in database queries, and every event carries the same figures as when rendered alone."""
import json
from unittest import mock

from django.contrib.auth import get_user_model
from django.db import connection
from django.test import TestCase, TransactionTestCase
from django.test.utils import CaptureQueriesContext

from feed.models import Comment, Feed
from feed.services import comment_create
from notifications.events import notification_created_event, notification_created_events
from notifications.models import Notification
from notifications.selectors import notifications_unread_count, notifications_unread_counts

User = get_user_model()


class NotificationPublishCostTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.feed = Feed.objects.create(slug="talk", title="Talk", allow_anonymous=True)
        cls.club = Feed.objects.create(slug="club", title="Club", allow_anonymous=False)
        cls.users = [User.objects.create_user(username=f"person{i}", password="pw-123456789") for i in range(10)]
        cls.author = User.objects.create_user(username="ann", password="pw-123456789")
        cls.club.members.add(cls.author, *cls.users[:5])

    def post(self, feed, names, body="hello"):
        """Post a comment mentioning these users, running the publish callbacks; return the queries they made."""
        with CaptureQueriesContext(connection) as queries, self.captureOnCommitCallbacks(execute=True):
            comment_create(feed=feed, author="Ann", body=" ".join(f"@{n}" for n in names) + f" {body}", user=self.author)
        return len(queries.captured_queries)

    def test_publishing_a_comments_notifications_costs_the_same_queries_for_two_or_ten_people(self):
        """Before: an unread-count query (and a feed query) per notification; now one per comment."""
        self.post(self.feed, ["person0"], "warm")  # counters exist for nobody yet either way
        two = self.post(self.feed, [u.username for u in self.users[8:10]])
        ten = self.post(self.feed, [u.username for u in self.users])
        self.assertEqual(ten, two)

    def test_unread_counts_together_equal_each_persons_own_count(self):
        """Counts across feeds, read ones left out, and a members-only feed counted only for its members."""
        self.post(self.club, [u.username for u in self.users], "club news")  # only members are notified
        self.post(self.feed, [u.username for u in self.users], "open news")
        Notification.objects.filter(user=self.users[1], feed=self.feed).update(read=True)
        self.club.members.remove(self.users[2])  # no longer reads the club: its notification is hidden
        User.objects.filter(pk=self.users[3].pk).update(is_active=False)  # reads open feeds only
        User.objects.filter(pk=self.users[9].pk).update(is_staff=True)  # reads the club, a member or not
        self.post(self.club, [self.users[9].username], "staff only")
        users = list(User.objects.filter(pk__in=[u.pk for u in self.users]))
        expected = {u.pk: notifications_unread_count(user=u) for u in users}
        self.assertEqual(notifications_unread_counts(users=users), expected)
        self.assertEqual(expected[self.users[0].pk], 2)
        self.assertEqual(expected[self.users[1].pk], 1)
        self.assertEqual(expected[self.users[2].pk], 1)
        self.assertEqual(expected[self.users[3].pk], 1)
        self.assertEqual(expected[self.users[9].pk], 2)

    def test_events_rendered_together_equal_events_rendered_one_by_one(self):
        """Same JSON frame, HTML frame and unread count, in the order given."""
        self.post(self.feed, [u.username for u in self.users], "first")
        self.post(self.feed, [u.username for u in self.users[:4]], "second")
        notifications = list(Notification.objects.filter(comment__body__endswith="second").order_by("user_id"))
        # committed_at is the time each was rendered (for the delivery-time metric), nothing else.
        together = [{**e, "committed_at": None} for e in notification_created_events(notifications)]
        alone = [{**notification_created_event(n), "committed_at": None} for n in notifications]
        self.assertEqual(together, alone)
        self.assertEqual([e["unread"] for e in together], [2, 2, 2, 2])
        self.assertEqual([json.loads(e["json"])["seq"] for e in together], [2, 2, 2, 2])

    def test_a_stream_fill_costs_the_same_queries_for_one_or_ten_notifications(self):
        """Before: each row of a fill was rendered alone, an unread-count query per row; now one per fill."""
        from notifications.streams import UserKind

        person = self.users[0]
        for index in range(10):
            self.post(self.feed, [person.username], f"fill {index}")
        with CaptureQueriesContext(connection) as one:
            UserKind().load_after(person.pk, 9, 10)
        with CaptureQueriesContext(connection) as ten:
            events = UserKind().load_after(person.pk, 0, 10)
        self.assertEqual(len(ten.captured_queries), len(one.captured_queries))
        rows = list(Notification.objects.filter(user=person).order_by("seq"))
        alone = [notification_created_event(n) for n in rows]
        self.assertEqual([(e.seq, e.json, e.html, e.from_db) for e in events],
                         [(m["seq"], m["json"], m["html"], True) for m in alone])

    def test_reading_notifications_costs_the_same_queries_from_one_or_four_members_only_feeds(self):
        """Before: a query for the feeds, then one check per members-only feed; now the read rule is a subquery.
        Access still decides: a feed left hides its notifications, from the list and from the count."""
        from notifications.selectors import notification_stream_after

        person = self.users[0]
        clubs = [Feed.objects.create(slug=f"club-{i}", title=f"Club {i}", allow_anonymous=False) for i in range(4)]
        for club in clubs:
            club.members.add(self.author, person)
        self.post(clubs[0], [person.username], "in one")
        with CaptureQueriesContext(connection) as one:
            self.assertEqual(len(notification_stream_after(user_id=person.pk, after_seq=0, limit=50)), 1)
            self.assertEqual(notifications_unread_count(user=person), 1)
        for club in clubs[1:]:
            self.post(club, [person.username], "in four")
        with CaptureQueriesContext(connection) as four:
            self.assertEqual(len(notification_stream_after(user_id=person.pk, after_seq=0, limit=50)), 4)
            self.assertEqual(notifications_unread_count(user=person), 4)
        self.assertEqual(len(four.captured_queries), len(one.captured_queries))
        clubs[1].members.remove(person)
        self.assertEqual([n.feed_id for n in notification_stream_after(user_id=person.pk, after_seq=0, limit=50)],
                         [clubs[0].pk, clubs[2].pk, clubs[3].pk])
        self.assertEqual(notifications_unread_count(user=person), 3)



class MentionLookupTests(TransactionTestCase):
    """Real commits: a post's on-commit publish runs inside the post, as in a server."""

    def setUp(self):
        self.feed = Feed.objects.create(slug="talk", title="Talk", allow_anonymous=True)
        self.users = [User.objects.create_user(username=f"person{i}", password="pw-123456789") for i in range(10)]
        self.author = User.objects.create_user(username="ann", password="pw-123456789")

    def test_a_post_looks_its_mentioned_names_up_once(self):
        """Before: once to find whom it notifies, again to mark the mentions of its live frame.
        Both still agree: an inactive user is neither notified nor marked."""
        from feed.services import comment_submit
        from notifications.events import comment_created_event

        User.objects.filter(pk=self.users[9].pk).update(is_active=False)
        body = "@person0 @person1 @person9 hi"
        frames = []
        with mock.patch("notifications.publishing._send", side_effect=lambda group, event, what: frames.append(event)):
            with CaptureQueriesContext(connection) as queries:
                comment_submit(feed=self.feed, author="Ann", body=body, user=self.author, client="test")
        lookups = [q for q in queries.captured_queries if "LOWER" in q["sql"].upper() and "auth_user" in q["sql"]]
        self.assertEqual(len(lookups), 1)
        html = next(f["html"] for f in frames if f["type"] == "comment.created")
        self.assertIn('data-user="person0">@person0</span>', html)
        self.assertIn('data-user="person1">@person1</span>', html)
        self.assertNotIn('data-user="person9"', html)
        notified = set(Notification.objects.filter(comment__body=body).values_list("user__username", flat=True))
        self.assertEqual(notified, {"person0", "person1"})
        comment = Comment.objects.get(body=body)
        self.assertEqual(comment_created_event(comment)["html"], html)  # the same frame rendered alone
