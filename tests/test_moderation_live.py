"""Removals through the real path: two daphne instances, one Redis, real WebSocket readers.

A removal is an event of the feed with the feed's next seq: readers on every instance get it
live (JSON envelope, or the HTML out-of-band delete), a resume replays it (also for comments
older than the resume point), and the per-connection guarantee (strictly increasing seq,
exactly once, none missing) covers creations and removals together.
"""
import json
import threading

from django.contrib.auth import get_user_model

from feed.auth import api_token_issue
from feed.models import Feed
from tests.harness import MultiInstanceTestCase, delete_comment
from tests.test_multi_instance import DELIVERY_TIMEOUT, MultiInstanceTestMixin

User = get_user_model()


class LiveModerationTests(MultiInstanceTestMixin, MultiInstanceTestCase):
    def setUp(self):
        super().setUp()
        self.slug = f"mod-{self._testMethodName[5:40].replace('_', '-')}"
        self.feed = self.make_feed(self.slug)
        self.a, self.b = self.instances
        self.staff = User.objects.create_user("root", is_staff=True)
        _, self.staff_token = api_token_issue(user=self.staff)

    def remove(self, instance, comment, token=None, expected=204):
        status, body = delete_comment(instance, self.slug, comment["id"], token=token or self.staff_token)
        self.assertEqual(status, expected, f"DELETE via {instance.name}: {status} {body}\n{self.diagnostics()}")
        return body

    def test_a_removal_reaches_html_and_json_readers_on_both_instances(self):
        """Removed through B: every reader on A and B gets comment.deleted with seq 3, once, in order."""
        readers = [self.reader(instance, self.slug, json=json) for instance in (self.a, self.b) for json in (True, False)]
        first = self.post(self.a, self.slug, "soon removed")
        self.post(self.a, self.slug, "stays")

        self.remove(self.b, first)

        for reader in readers:
            reader.wait_for_seq(3, DELIVERY_TIMEOUT)
        json_on_a, html_on_a = readers[0], readers[1]
        self.assertEqual(
            json.loads(json_on_a.frames[2]),
            {"type": "comment.deleted", "v": 1, "feed": self.slug, "seq": 3, "data": {"id": first["id"]}},
        )
        self.assertEqual(
            html_on_a.frames[2],
            f'<article id="comment-{first["id"]}" data-deleted-seq="3" hx-swap-oob="delete"></article>',
        )
        self.assertEveryReaderGetsAll(readers, 3, via=self.b)

    def test_a_resume_replays_removals_also_of_comments_older_than_its_point(self):
        """Away from 4 to 8: the reader learns that 2 was removed, and that 6 was posted and removed."""
        posted = [self.post(self.a, self.slug, f"comment {index}") for index in range(1, 5)]
        away = [self.reader(self.a, self.slug, json=json) for json in (True, False)]
        for reader in away:
            reader.wait_for_seq(4, DELIVERY_TIMEOUT)
            reader.close()

        self.remove(self.a, posted[1])  # seq 5: comment 2, older than the resume point
        brief = self.post(self.b, self.slug, "brief <b>words</b>")  # seq 6
        self.remove(self.b, brief)  # seq 7
        self.post(self.a, self.slug, "after")  # seq 8

        json_again = self.reader(self.b, self.slug, json=True, resume_after=4)
        html_again = self.reader(self.b, self.slug, json=False, resume_after=4)
        for reader in (json_again, html_again):
            reader.wait_for_seq(8, DELIVERY_TIMEOUT)
            self.assertExactlyOnceInOrder(reader, [5, 6, 7, 8])
        envelopes = [json.loads(frame) for frame in json_again.frames]
        self.assertEqual(
            [(e["type"], e["seq"]) for e in envelopes],
            [("comment.deleted", 5), ("comment.created", 6), ("comment.deleted", 7), ("comment.created", 8)],
        )
        self.assertEqual(envelopes[0]["data"], {"id": posted[1]["id"]})
        self.assertEqual((envelopes[1]["data"]["body"], envelopes[1]["data"]["deleted"]), ("", True))
        self.assertEqual(envelopes[2]["data"], {"id": brief["id"]})
        self.assertFalse(envelopes[3]["data"]["deleted"])
        html = "".join(html_again.frames)
        self.assertIn(f'<article id="comment-{posted[1]["id"]}" data-deleted-seq="5" hx-swap-oob="delete">', html)
        self.assertNotIn("brief", html)
        self.assertIn(f'<article id="comment-{brief["id"]}" data-deleted-seq="7" hx-swap-oob="delete">', html)

    def test_removals_interleaved_with_posts_on_both_instances_keep_the_guarantee(self):
        """40 comments, then 2x30 posts and 40 removals at once through A and B: every reader gets 1..140 once, in order."""
        readers = [self.reader(instance, self.slug, json=json) for instance in (self.a, self.b) for json in (True, False)]
        early = self.post_many([(self.a, 20), (self.b, 20)], self.slug)
        failures = []

        def remover(instance, comments):
            for comment in comments:
                status, body = delete_comment(instance, self.slug, comment["id"], token=self.staff_token)
                if status != 204:
                    failures.append((instance.name, comment["id"], status, body))

        removers = [
            threading.Thread(target=remover, args=(self.a, early[0::2])),
            threading.Thread(target=remover, args=(self.b, early[1::2])),
        ]
        for thread in removers:
            thread.start()
        created = self.post_many([(self.a, 30), (self.b, 30)], self.slug)
        for thread in removers:
            thread.join(120)
        self.assertEqual(failures, [])
        self.assertEqual(len(created), 60)
        self.assertEqual(Feed.objects.get(pk=self.feed.pk).last_seq, 140)
        self.assertEveryReaderGetsAll(readers, 140, via=self.a)

    def test_who_may_remove_through_a_real_instance(self):
        """Staff, a moderator and the author: 204; another user 403; no credentials 401; a members-only outsider 404."""
        ann, bob, mod = (User.objects.create_user(name) for name in ("ann", "bob", "mod"))
        self.feed.moderators.add(mod)
        club = Feed.objects.create(slug=f"{self.slug}-club", title="Club", allow_anonymous=False)
        club.members.add(ann)
        tokens = {user.username: api_token_issue(user=user)[1] for user in (ann, bob, mod)}
        from feed.services import comment_create

        by_ann = [comment_create(feed=self.feed, author="", body=f"ann {index}", user=ann) for index in range(3)]
        secret = comment_create(feed=club, author="", body="members only", user=ann)

        def status(comment, token, slug=self.slug):
            return delete_comment(self.a, slug, comment.pk, token=token)[0]

        self.assertEqual(status(by_ann[0], tokens["bob"]), 403)
        self.assertEqual(status(by_ann[0], None), 401)
        self.assertEqual(status(secret, tokens["bob"], slug=club.slug), 404)
        self.assertEqual(status(by_ann[0], self.staff_token), 204)
        self.assertEqual(status(by_ann[1], tokens["mod"]), 204)
        self.assertEqual(status(by_ann[2], tokens["ann"]), 204)
        self.assertEqual(status(by_ann[2], tokens["ann"]), 204, "removing again is 204 again")
        self.assertEqual(Feed.objects.get(pk=self.feed.pk).last_seq, 6, "3 creations and 3 removals, no more")
