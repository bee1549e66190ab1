"""A person's notifications: a reply to one of their comments, or a mention of them."""
from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class NotificationCounter(models.Model):
    """The seq of a user's newest notification; bumped under this row's lock, like Feed.last_seq."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, primary_key=True, on_delete=models.CASCADE, related_name="+"
    )
    last_seq = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.user_id}: {self.last_seq}"


class Notification(models.Model):
    class Kind(models.TextChoices):
        REPLY = "reply", "Reply"
        MENTION = "mention", "Mention"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications")
    # Per user: 1, 2, 3… with no gaps (notifications.services numbers them).
    seq = models.PositiveBigIntegerField(editable=False)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    comment = models.ForeignKey("feed.Comment", on_delete=models.CASCADE, related_name="notifications")
    feed = models.ForeignKey("feed.Feed", on_delete=models.CASCADE, related_name="notifications")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    read = models.BooleanField(default=False)

    class Meta:
        ordering = ["user", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["user", "seq"], name="notification_seq_unique_per_user"),
            models.UniqueConstraint(fields=["user", "comment"], name="notification_once_per_comment"),
        ]
        indexes = [models.Index(fields=["user", "read"], name="notification_user_read")]

    def __str__(self) -> str:
        return f"{self.user_id}#{self.seq} {self.kind}"

    def get_absolute_url(self) -> str:
        return f"{self.feed.get_absolute_url()}#comment-{self.comment_id}"
