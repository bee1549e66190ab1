"""A notification's <li>: the live frames' markup (written in Python, no template engine per frame)
is byte for byte what the page's list renders from notifications/_notification.html."""
from unittest import mock

from django.contrib.auth import get_user_model
from django.template.loader import render_to_string
from django.test import TestCase, override_settings
from django.utils import timezone

from feed.models import Comment, Feed
from feed.services import comment_create
from notifications import rendering
from notifications.events import notification_created_events
from notifications.models import Notification
from notifications.rendering import render_notification

User = get_user_model()


def from_template(notification):
    return render_to_string("notifications/_notification.html", {"notification": notification})


class NotificationMarkupTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.feed = Feed.objects.create(slug="t-1", title='Tom & "Jerry" <talk>', allow_anonymous=True)
        cls.ann = User.objects.create_user("ann")
        cls.bob = User.objects.create_user("bob")

    def notifications(self):
        return list(Notification.objects.select_related("feed", "comment", "user").order_by("pk"))

    def test_every_kind_of_notification_renders_like_the_template(self):
        """Mention and reply, unread and read, guest and user, long and escaped bodies, removed comments."""
        first = comment_create(feed=self.feed, author="", body="@bob <b>hi</b> & 'you' " + "é" * 200, user=self.ann)
        comment_create(feed=self.feed, author="", body="answer @ann", user=self.bob, reply_to=first.pk)
        comment_create(feed=self.feed, author='<Guest & "co">', body="@ann @bob line\nbreak\r\n" + "x" * 139)
        removed = comment_create(feed=self.feed, author="", body="@ann gone soon", user=self.bob)
        Comment.objects.filter(pk=removed.pk).update(removed_at=timezone.now(), body="")
        Notification.objects.filter(user=self.bob).update(read=True)
        notifications = self.notifications()
        self.assertEqual({n.kind for n in notifications}, {"mention", "reply"})
        self.assertEqual({n.read for n in notifications}, {True, False})
        self.assertTrue(any(n.comment.removed for n in notifications))
        for notification in notifications:
            with self.subTest(pk=notification.pk):
                self.assertEqual(render_notification(notification), from_template(notification))

    @override_settings(TIME_ZONE="Asia/Kolkata")
    def test_times_are_rendered_in_the_current_time_zone_like_the_template(self):
        comment_create(feed=self.feed, author="", body="@bob at night", user=self.ann)
        for zone in ("Asia/Kolkata", "America/St_Johns"):
            with self.subTest(zone=zone), timezone.override(zone):
                (notification,) = self.notifications()
                self.assertEqual(render_notification(notification), from_template(notification))

    def test_a_comments_notification_frames_use_no_template_per_notification(self):
        """Before: render_to_string of _notification.html for every notification of every comment."""
        comment_create(feed=self.feed, author="Guest", body="@ann @bob hello")
        with mock.patch.object(rendering, "render_to_string", wraps=render_to_string) as spy:
            events = notification_created_events(self.notifications())
        self.assertEqual(len(events), 2)
        self.assertNotIn("notifications/_notification.html", [call.args[0] for call in spy.call_args_list])
