from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

AUTHOR_MAX_LENGTH = 80
BODY_MAX_LENGTH = 2000


class Feed(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    title = models.CharField(max_length=200)
    allow_anonymous = models.BooleanField(
        default=False,
        help_text="Anyone may post with a display name. Otherwise only members (and staff) may post.",
    )
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="feeds")
    moderators = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="moderated_feeds",
        help_text="May remove any comment of this feed (staff and a comment's signed-in author may too).",
    )
    # The seq of the feed's newest committed event (a comment created or removed); bumped
    # under this row's lock.
    last_seq = models.PositiveBigIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return reverse("feed:page", kwargs={"slug": self.slug})


class Comment(models.Model):
    feed = models.ForeignKey(Feed, on_delete=models.CASCADE, related_name="comments")
    seq = models.PositiveBigIntegerField(editable=False)
    author = models.CharField(max_length=AUTHOR_MAX_LENGTH)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="comments"
    )
    body = models.TextField(max_length=BODY_MAX_LENGTH)
    # The comment of the same feed this one answers (checked by feed.services.comment_validate).
    reply_to = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replies"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # Set once by feed.moderation.comment_remove, which also blanks `body`: the row stays for audit.
    removed_at = models.DateTimeField(null=True, blank=True, editable=False)
    removed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )

    class Meta:
        ordering = ["feed", "seq"]
        constraints = [models.UniqueConstraint(fields=["feed", "seq"], name="comment_seq_unique_per_feed")]

    def __str__(self) -> str:
        return f"{self.feed.slug}#{self.seq} by {self.author}"

    @property
    def removed(self) -> bool:
        return self.removed_at is not None


class Event(models.Model):
    """One change of a feed, numbered in the feed's one sequence: the log that streams replay.

    A comment's creation is the event with the comment's own seq; its removal is a later
    event. Written with the change, in its transaction, under the feed row's lock
    (feed.services._comment_insert, feed.moderation.comment_remove).
    """

    class Kind(models.TextChoices):
        COMMENT_CREATED = "comment.created", "Comment created"
        COMMENT_DELETED = "comment.deleted", "Comment removed"

    feed = models.ForeignKey(Feed, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveBigIntegerField(editable=False)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    comment = models.ForeignKey(Comment, on_delete=models.CASCADE, related_name="events")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["feed", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["feed", "seq"], name="event_seq_unique_per_feed"),
            # A comment is created once and removed at most once.
            models.UniqueConstraint(fields=["comment", "kind"], name="event_once_per_comment_and_kind"),
        ]

    def __str__(self) -> str:
        return f"{self.feed_id}#{self.seq} {self.kind}"


class ApiToken(models.Model):
    """A bearer token for programs using the JSON API. Only the token's hash is stored."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True, help_text="What the token is for.")
    # The first characters of the token, so people can tell their tokens apart.
    key_prefix = models.CharField(max_length=16, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.key_prefix}… ({self.user})"


IDEMPOTENCY_KEY_MAX_LENGTH = 255


class IdempotencyKey(models.Model):
    """An `Idempotency-Key` a client sent with a post, and the answer that post got.

    Unique per client, so a retry on any instance finds the first result and two racing
    retries cannot both create a comment (the loser's insert fails, or waits for the winner).
    """

    # feed.ratelimit.client_identity: "user:<id>" or "ip:<address>".
    client = models.CharField(max_length=100)
    key = models.CharField(max_length=IDEMPOTENCY_KEY_MAX_LENGTH)
    # SHA-256 of the request it was first used with; another request under the key is refused.
    fingerprint = models.CharField(max_length=64)
    comment = models.ForeignKey(Comment, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    response_status = models.PositiveSmallIntegerField()
    response_body = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True, editable=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["client", "key"], name="idempotency_key_unique_per_client")]

    def __str__(self) -> str:
        return f"{self.client} {self.key}"
