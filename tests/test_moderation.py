"""Moderation: removing a comment through the one service, from the API, the page and the admin.

A removal keeps the row (who, when), blanks its body, and is an event of the feed with the
feed's next seq; comment lists leave removed comments out, the event list shows them.
"""
import json
from unittest import mock

from django.contrib.auth import get_user_model
from django.test import Client, TestCase

from feed.auth import api_token_issue
from feed.models import Comment, Event, Feed, IdempotencyKey
from feed.moderation import RemovalNotAllowed, comment_can_remove, comment_remove
from feed.selectors import comments_after, events_after
from feed.services import ReadingNotAllowed, comment_create, comment_submit
from notifications import publishing
from notifications.events import comment_deleted_event, feed_event_message
from notifications.models import Notification

User = get_user_model()


class ModerationTestCase(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.feed = Feed.objects.create(slug="talk", title="Talk", allow_anonymous=True)
        cls.club = Feed.objects.create(slug="club", title="Club", allow_anonymous=False)
        cls.ann = User.objects.create_user("ann")  # an author
        cls.bob = User.objects.create_user("bob")  # another user
        cls.mod = User.objects.create_user("mod")  # moderator of talk and club
        cls.staff = User.objects.create_user("root", is_staff=True)
        cls.feed.moderators.add(cls.mod)
        cls.club.moderators.add(cls.mod)
        cls.club.members.add(cls.ann, cls.mod)

    def setUp(self):
        publishing._skip_until = 0.0

    def post(self, body="hello", user=None, feed=None, author="Guest"):
        return comment_create(feed=feed or self.feed, author=author, body=body, user=user)

    def events(self, feed=None):
        return list(Event.objects.filter(feed=feed or self.feed).order_by("seq").values_list("seq", "kind", "comment_id"))


class CommentRemoveServiceTests(ModerationTestCase):
    def test_removal_keeps_the_row_blanks_the_body_and_records_who_and_when(self):
        """The row stays with removed_by and removed_at; its body is gone from the database."""
        comment = self.post("secret words", user=self.ann)
        self.assertTrue(comment_remove(comment=comment, by=self.mod))
        stored = Comment.objects.get(pk=comment.pk)
        self.assertEqual((stored.body, stored.removed_by, stored.author), ("", self.mod, "ann"))
        self.assertIsNotNone(stored.removed_at)
        self.assertTrue(stored.removed)

    def test_removal_is_an_event_with_the_feeds_next_seq_and_later_comments_skip_it(self):
        """Post 1, post 2, remove 1 (seq 3), post (seq 4): one sequence of events, no gaps; last_seq 4."""
        first = self.post("one")
        second = self.post("two")
        comment_remove(comment=first, by=self.staff)
        third = self.post("three")
        self.assertEqual((first.seq, second.seq, third.seq), (1, 2, 4))
        self.assertEqual(
            self.events(),
            [(1, "comment.created", first.pk), (2, "comment.created", second.pk),
             (3, "comment.deleted", first.pk), (4, "comment.created", third.pk)],
        )
        self.feed.refresh_from_db()
        self.assertEqual(self.feed.last_seq, 4)

    def test_removing_a_removed_comment_changes_nothing_and_publishes_nothing(self):
        """Idempotent: the second removal returns False, logs no event and sends nothing."""
        comment = self.post()
        with mock.patch("notifications.publishing.publish_comment_deleted") as publish:
            with self.captureOnCommitCallbacks(execute=True):
                self.assertTrue(comment_remove(comment=comment, by=self.staff))
            with self.captureOnCommitCallbacks(execute=True) as callbacks:
                self.assertFalse(comment_remove(comment=Comment.objects.get(pk=comment.pk), by=self.mod))
        self.assertEqual(publish.call_count, 1)
        self.assertEqual(callbacks, [])
        self.assertEqual(len(self.events()), 2)
        self.assertEqual(Comment.objects.get(pk=comment.pk).removed_by, self.staff, "the first removal is kept")

    def test_the_removal_is_published_on_commit_with_both_frames(self):
        """On commit the feed's group gets comment.deleted with the contract's envelope and an OOB delete."""
        comment = self.post()
        with mock.patch("notifications.publishing._send") as send:
            with self.captureOnCommitCallbacks(execute=False) as callbacks:
                comment_remove(comment=comment, by=self.staff)
                send.assert_not_called()
            for callback in callbacks:
                callback()
        group, message, _ = send.call_args.args
        self.assertEqual(group, f"feed.{self.feed.pk}")
        self.assertEqual((message["type"], message["feed_id"], message["seq"]), ("comment.deleted", self.feed.pk, 2))
        self.assertEqual(
            json.loads(message["json"]),
            {"type": "comment.deleted", "v": 1, "feed": "talk", "seq": 2, "data": {"id": comment.pk}},
        )
        self.assertEqual(
            message["html"], f'<article id="comment-{comment.pk}" data-deleted-seq="2" hx-swap-oob="delete"></article>'
        )

    def test_a_failed_publish_never_fails_the_saved_removal(self):
        """Rendering or sending the event failing after commit is logged and counted; the removal stands."""
        comment = self.post()
        with mock.patch("notifications.publishing.publish_comment_deleted", side_effect=RuntimeError("boom")):
            with self.assertLogs("notifications.publishing", "ERROR"):
                with self.captureOnCommitCallbacks(execute=True):
                    self.assertTrue(comment_remove(comment=comment, by=self.staff))
        self.assertTrue(Comment.objects.get(pk=comment.pk).removed)

    def test_staff_moderators_and_the_signed_in_author_may_remove(self):
        """Who may: staff, the feed's moderators, the comment's signed-in author; nobody else."""
        comment = self.post(user=self.ann)
        guest = self.post(author="Annie")
        self.assertTrue(comment_can_remove(comment=comment, user=self.staff))
        self.assertTrue(comment_can_remove(comment=comment, user=self.mod))
        self.assertTrue(comment_can_remove(comment=comment, user=self.ann))
        self.assertFalse(comment_can_remove(comment=comment, user=self.bob))
        self.assertFalse(comment_can_remove(comment=guest, user=self.ann), "a guest comment has no signed-in author")
        self.assertFalse(comment_can_remove(comment=comment, user=None))

    def test_others_are_refused_403_anonymous_401_and_outsiders_see_no_feed(self):
        """Another user: 403; no credentials: 401; a members-only feed's outsider: ReadingNotAllowed (404)."""
        comment = self.post(user=self.ann)
        with self.assertRaises(RemovalNotAllowed) as refused:
            comment_remove(comment=comment, by=self.bob)
        self.assertEqual(refused.exception.status, 403)
        from django.contrib.auth.models import AnonymousUser

        with self.assertRaises(RemovalNotAllowed) as anonymous:
            comment_remove(comment=comment, by=AnonymousUser())
        self.assertEqual(anonymous.exception.status, 401)
        secret = self.post(feed=self.club, user=self.ann)
        with self.assertRaises(ReadingNotAllowed):
            comment_remove(comment=secret, by=self.bob)
        self.assertEqual(Event.objects.filter(kind="comment.deleted").count(), 0)
        self.assertFalse(Comment.objects.filter(removed_at__isnull=False).exists())

    def test_a_moderator_of_another_feed_may_not_remove(self):
        """Moderating one feed gives no right on another."""
        other = Feed.objects.create(slug="other", title="Other", allow_anonymous=True)
        comment = self.post(feed=other)
        with self.assertRaises(RemovalNotAllowed):
            comment_remove(comment=comment, by=self.mod)

    def test_a_stored_idempotent_answer_loses_the_body_too(self):
        """A retry of the post with its Idempotency-Key after the removal does not give the body back."""
        result = comment_submit(feed=self.feed, author="Guest", body="regret", client="ip:1", idempotency_key="k1")
        comment = Comment.objects.get(pk=result.body["id"])
        comment_remove(comment=comment, by=self.staff)
        replay = comment_submit(feed=self.feed, author="Guest", body="regret", client="ip:1", idempotency_key="k1")
        self.assertTrue(replay.replayed)
        self.assertEqual((replay.body["body"], replay.body["deleted"]), ("", True))
        self.assertEqual(IdempotencyKey.objects.get(key="k1").response_body["body"], "")


class LiveFrameTests(ModerationTestCase):
    def test_the_live_frame_carries_a_hidden_remove_action_for_every_reader(self):
        """A live frame is rendered once for all: its remove form is there, hidden (feed.js reveals it)."""
        from feed.rendering import render_comment

        html = render_comment(self.post(user=self.ann))
        self.assertIn('<form class="comment-remove"', html)
        self.assertIn(" hidden>", html)
        self.assertNotIn("csrfmiddlewaretoken", html, "the page's hx-headers carry the CSRF token")

    def test_the_frames_links_name_the_comment_and_follow_the_script_prefix(self):
        """The reply link and remove action carry each comment's own id, under the site's script prefix."""
        from django.urls import set_script_prefix

        from feed.rendering import render_comment

        first, second = self.post(), self.post(feed=self.club, user=self.ann)
        self.assertIn(f'action="/feeds/talk/comments/{first.pk}/remove/"', render_comment(first))
        self.assertIn(f'href="/feeds/club/?reply_to={second.pk}#comment-form"', render_comment(second))
        self.assertIn(f'action="/feeds/club/comments/{second.pk}/remove/"', render_comment(second))
        set_script_prefix("/live/")
        self.addCleanup(set_script_prefix, "/")
        self.assertIn(f'action="/live/feeds/talk/comments/{first.pk}/remove/"', render_comment(first))
        self.assertIn(f'hx-get="/live/feeds/talk/?reply_to={first.pk}"', render_comment(first))


class EventLogReadTests(ModerationTestCase):
    def test_events_after_returns_creations_and_removals_in_seq_order(self):
        """events_after reads the log: both kinds, ascending, after the point; removals of older comments too."""
        first = self.post("one")
        self.post("two")
        comment_remove(comment=first, by=self.staff)
        events = events_after(feed=self.feed, after_seq=2)
        self.assertEqual([(e.seq, e.kind, e.comment_id) for e in events], [(3, "comment.deleted", first.pk)])
        self.assertEqual([e.seq for e in events_after(feed=self.feed.pk, after_seq=0)], [1, 2, 3])

    def test_comment_lists_leave_removed_comments_out(self):
        """comments_after (API, page) omits removed comments."""
        first = self.post("one")
        second = self.post("two")
        comment_remove(comment=first, by=self.staff)
        self.assertEqual(comments_after(feed=self.feed, after_seq=0), [second])

    def test_a_replayed_creation_of_a_removed_comment_has_an_empty_body_and_deleted_true(self):
        """The stream's rendering of a logged comment.created whose comment was removed since."""
        comment = self.post("gone soon <b>x</b>")
        comment_remove(comment=comment, by=self.staff)
        created, deleted = events_after(feed=self.feed, after_seq=0)
        message = feed_event_message(created)
        envelope = json.loads(message["json"])
        self.assertEqual((envelope["type"], envelope["seq"]), ("comment.created", 1))
        self.assertEqual((envelope["data"]["body"], envelope["data"]["deleted"]), ("", True))
        self.assertNotIn("gone soon", message["html"])
        self.assertIn("This comment was removed.", message["html"])
        self.assertEqual(feed_event_message(deleted), comment_deleted_event(deleted))

    def test_the_migration_logged_every_existing_comment(self):
        """Every comment has its comment.created event with its own seq (written with it)."""
        for index in range(3):
            self.post(f"c{index}")
        self.assertEqual(
            sorted(Comment.objects.values_list("seq", flat=True)),
            sorted(Event.objects.filter(kind="comment.created").values_list("seq", flat=True)),
        )


class ModerationApiTests(ModerationTestCase):
    def token_client(self, user):
        _, secret = api_token_issue(user=user)
        return Client(HTTP_AUTHORIZATION=f"Bearer {secret}")

    def delete(self, client, comment, feed="talk"):
        return client.delete(f"/api/feeds/{feed}/comments/{comment.pk}/")

    def test_staff_moderator_and_author_get_204(self):
        """DELETE answers 204 with no body for each of the three roles, by token or session."""
        for user in (self.staff, self.mod, self.ann):
            comment = self.post(user=self.ann)
            response = self.delete(self.token_client(user), comment)
            self.assertEqual(response.status_code, 204, (user, response.content))
            self.assertEqual(response.content, b"")
            self.assertTrue(Comment.objects.get(pk=comment.pk).removed)
        session = Client()
        session.force_login(self.ann)
        comment = self.post(user=self.ann)
        self.assertEqual(self.delete(session, comment).status_code, 204)

    def test_the_session_needs_the_csrf_token(self):
        """A DELETE by a session without X-CSRFToken is refused with 403 and removes nothing."""
        session = Client(enforce_csrf_checks=True)
        session.force_login(self.ann)
        comment = self.post(user=self.ann)
        response = self.delete(session, comment)
        self.assertEqual(response.status_code, 403)
        self.assertFalse(Comment.objects.get(pk=comment.pk).removed)

    def test_another_user_gets_403_and_anonymous_gets_401(self):
        comment = self.post(user=self.ann)
        response = self.delete(self.token_client(self.bob), comment)
        self.assertEqual((response.status_code, response.json()["error"]), (403, "forbidden"))
        response = self.delete(Client(), comment)
        self.assertEqual((response.status_code, response.json()["error"]), (401, "not_authenticated"))
        self.assertEqual(response["WWW-Authenticate"], "Bearer")
        self.assertFalse(Comment.objects.get(pk=comment.pk).removed)

    def test_unknown_and_unreadable_answer_404(self):
        """Unknown comment, unknown feed, a comment of another feed, a members-only feed's outsider: 404 alike."""
        comment = self.post(user=self.ann)
        secret = self.post(feed=self.club, user=self.ann)
        staff = self.token_client(self.staff)
        self.assertEqual(staff.delete(f"/api/feeds/talk/comments/{secret.pk + 100}/").status_code, 404)
        self.assertEqual(self.delete(staff, comment, feed="nope").status_code, 404)
        self.assertEqual(self.delete(staff, comment, feed="club").status_code, 404)
        outsider = self.delete(self.token_client(self.bob), secret, feed="club")
        anonymous = self.delete(Client(), secret, feed="club")
        self.assertEqual((outsider.status_code, anonymous.status_code), (404, 404))
        self.assertEqual(outsider.json(), anonymous.json())
        self.assertFalse(Comment.objects.filter(removed_at__isnull=False).exists())

    def test_removing_again_is_204_without_a_new_event(self):
        comment = self.post(user=self.ann)
        client = self.token_client(self.mod)
        self.assertEqual(self.delete(client, comment).status_code, 204)
        self.assertEqual(self.delete(client, comment).status_code, 204)
        self.assertEqual(Event.objects.filter(kind="comment.deleted").count(), 1)

    def test_lists_omit_removed_comments_and_the_event_list_shows_them(self):
        """GET comments leaves the removed one out; GET events lists every event as the WebSocket's envelopes."""
        first = self.post("one", user=self.ann)
        second = self.post("two")
        self.delete(self.token_client(self.ann), first)
        client = Client()
        self.assertEqual([c["id"] for c in client.get("/api/feeds/talk/comments/").json()], [second.pk])
        events = client.get("/api/feeds/talk/events/").json()
        self.assertEqual([(e["type"], e["seq"]) for e in events], [("comment.created", 1), ("comment.created", 2), ("comment.deleted", 3)])
        self.assertEqual(events[0]["data"]["body"], "")
        self.assertTrue(events[0]["data"]["deleted"])
        self.assertEqual(events[2], {"type": "comment.deleted", "v": 1, "feed": "talk", "seq": 3, "data": {"id": first.pk}})
        self.assertEqual([e["seq"] for e in client.get("/api/feeds/talk/events/?after=1&limit=1").json()], [2])
        self.assertEqual(client.get("/api/feeds/").json()[-1]["last_seq"], 3)
        self.assertEqual(client.get("/api/feeds/club/events/").status_code, 404)
        self.assertEqual(client.get("/api/feeds/talk/events/?after=-1").status_code, 400)

    def test_a_notification_of_a_removed_comment_shows_it_removed(self):
        """The notification stays; its comment carries deleted: true and an empty body (API and page)."""
        mine = self.post("question", user=self.ann)
        reply = comment_create(feed=self.feed, author="", body="rude answer", user=self.bob, reply_to=mine.pk)
        comment_remove(comment=reply, by=self.mod)
        client = self.token_client(self.ann)
        [notification] = client.get("/api/notifications/").json()
        self.assertEqual((notification["comment"]["body"], notification["comment"]["deleted"]), ("", True))
        session = Client()
        session.force_login(self.ann)
        page = session.get("/notifications/").content.decode()
        self.assertNotIn("rude answer", page)
        self.assertIn("This comment was removed.", page)
        self.assertTrue(Notification.objects.filter(comment=reply).exists())


class ModerationPageTests(ModerationTestCase):
    def test_the_form_post_removes_and_redirects_back(self):
        """Without JavaScript: POST .../remove/ with CSRF answers 303 to the feed page, which no longer shows it."""
        comment = self.post("to be removed", user=self.ann)
        client = Client(enforce_csrf_checks=True)
        client.force_login(self.ann)
        page = client.get("/feeds/talk/").content.decode()
        self.assertIn("to be removed", page)
        token = client.cookies["csrftoken"].value
        response = client.post(f"/feeds/talk/comments/{comment.pk}/remove/", {"csrfmiddlewaretoken": token})
        self.assertEqual((response.status_code, response["Location"]), (303, "/feeds/talk/"))
        self.assertTrue(Comment.objects.get(pk=comment.pk).removed)
        page = client.get("/feeds/talk/").content.decode()
        self.assertNotIn("to be removed", page)
        self.assertNotIn(f'id="comment-{comment.pk}"', page)

    def test_the_form_post_needs_csrf(self):
        comment = self.post(user=self.ann)
        client = Client(enforce_csrf_checks=True)
        client.force_login(self.ann)
        self.assertEqual(client.post(f"/feeds/talk/comments/{comment.pk}/remove/").status_code, 403)
        self.assertFalse(Comment.objects.get(pk=comment.pk).removed)

    def test_htmx_gets_an_empty_200(self):
        comment = self.post(user=self.ann)
        client = Client()
        client.force_login(self.mod)
        response = client.post(f"/feeds/talk/comments/{comment.pk}/remove/", HTTP_HX_REQUEST="true")
        self.assertEqual((response.status_code, response.content), (200, b""))

    def test_others_are_refused_and_outsiders_get_404(self):
        comment = self.post(user=self.ann)
        secret = self.post(feed=self.club, user=self.ann)
        client = Client()
        self.assertEqual(client.post(f"/feeds/talk/comments/{comment.pk}/remove/").status_code, 401)
        client.force_login(self.bob)
        self.assertEqual(client.post(f"/feeds/talk/comments/{comment.pk}/remove/").status_code, 403)
        self.assertEqual(client.post(f"/feeds/club/comments/{secret.pk}/remove/").status_code, 404)
        self.assertEqual(client.get(f"/feeds/talk/comments/{comment.pk}/remove/").status_code, 405)
        self.assertFalse(Comment.objects.filter(removed_at__isnull=False).exists())

    def remove_action_shown(self, html, comment):
        start = html.index(f'id="comment-{comment.pk}"')
        article = html[start : html.index("</article>", start)]
        if 'class="comment-remove"' not in article:
            return False
        self.assertIn('hx-confirm="Remove this comment', article)
        self.assertNotIn(" hidden>", article)
        return True

    def test_the_remove_action_is_shown_to_those_allowed_only(self):
        """Author and moderators see "Remove" (with a confirmation); others do not get it on the page."""
        mine = self.post(user=self.ann)
        guest = self.post(author="Guest")
        client = Client()
        html = client.get("/feeds/talk/").content.decode()
        self.assertFalse(self.remove_action_shown(html, mine))
        client.force_login(self.ann)
        html = client.get("/feeds/talk/").content.decode()
        self.assertTrue(self.remove_action_shown(html, mine))
        self.assertFalse(self.remove_action_shown(html, guest))
        self.assertNotIn("data-moderating", html)
        self.assertIn('data-viewer="ann"', html)
        client.force_login(self.mod)
        html = client.get("/feeds/talk/").content.decode()
        self.assertTrue(self.remove_action_shown(html, mine))
        self.assertTrue(self.remove_action_shown(html, guest))
        self.assertIn("data-moderating", html)
        # The no-JavaScript form posts with the page's CSRF token.
        self.assertRegex(html, rf'action="/feeds/talk/comments/{guest.pk}/remove/"[^>]*><input type="hidden" name="csrfmiddlewaretoken" value="\w+">')

    def test_the_admin_action_removes_the_selected_comments_through_the_service(self):
        """Admin → Comments → "Remove the selected comments": each becomes an event; no hard delete offered."""
        admin = User.objects.create_superuser("admin", password="pw-for-tests")
        first = self.post("one")
        second = self.post("two")
        client = Client()
        client.force_login(admin)
        changelist = client.get("/admin/feed/comment/").content.decode()
        self.assertIn('value="remove_comments"', changelist)
        self.assertNotIn('value="delete_selected"', changelist)
        response = client.post(
            "/admin/feed/comment/", {"action": "remove_comments", "_selected_action": [first.pk, second.pk]}
        )
        self.assertEqual(response.status_code, 302)
        self.assertEqual([kind for _, kind, _ in self.events()][2:], ["comment.deleted", "comment.deleted"])
        self.assertEqual(set(Comment.objects.values_list("body", "removed_by")), {("", admin.pk)})

    def test_the_admin_edits_moderators(self):
        admin = User.objects.create_superuser("admin", password="pw-for-tests")
        client = Client()
        client.force_login(admin)
        self.assertIn('name="moderators"', client.get(f"/admin/feed/feed/{self.feed.pk}/change/").content.decode())


class ReplyToRemovedTests(ModerationTestCase):
    def test_a_removed_comment_cannot_be_answered(self):
        """A reply to a removed comment is refused on reply_to (400 in the API), and nobody is notified."""
        from django.core.exceptions import ValidationError

        mine = self.post("question", user=self.ann)
        comment_remove(comment=mine, by=self.ann)
        with self.assertRaises(ValidationError) as refused:
            comment_create(feed=self.feed, author="", body="answer", user=self.bob, reply_to=mine.pk)
        self.assertEqual(refused.exception.message_dict, {"reply_to": ["That comment was removed: it cannot be answered."]})
        response = Client().post(
            "/api/feeds/talk/comments/", {"author": "Guest", "body": "hi", "reply_to": mine.pk}, content_type="application/json"
        )
        self.assertEqual((response.status_code, list(response.json()["fields"])), (400, ["reply_to"]))
        self.assertFalse(Notification.objects.exists())


class ModerationOpenApiTests(TestCase):
    def test_the_description_has_the_delete_and_the_event_list(self):
        """/api/openapi.json describes DELETE .../comments/{id}/ (204, 401, 403, 404) and GET .../events/."""
        schema = Client().get("/api/openapi.json").json()
        delete = schema["paths"]["/api/feeds/{slug}/comments/{comment_id}/"]["delete"]
        self.assertEqual(set(delete["responses"]), {"204", "401", "403", "404"})
        events = schema["paths"]["/api/feeds/{slug}/events/"]["get"]
        self.assertEqual({p["name"] for p in events["parameters"]}, {"slug", "after", "limit"})
        event = schema["components"]["schemas"]["EventOut"]
        self.assertEqual(event["properties"]["type"]["enum"], ["comment.created", "comment.deleted"])
        self.assertIn("deleted", schema["components"]["schemas"]["CommentOut"]["required"])
