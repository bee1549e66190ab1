"""The one representation of a notification: its JSON shape and its HTML markup."""
from __future__ import annotations

from typing import Any

from django.template.loader import render_to_string

from feed.rendering import comment_as_dict, iso_utc
from notifications.models import Notification


def notification_as_dict(notification: Notification, *, comment: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the notification as the contract's JSON object.

    `comment`: comment_as_dict() of its comment, when the caller has it already (the
    notifications of one comment share it).
    """
    return {
        "id": notification.pk,
        "seq": notification.seq,
        "kind": notification.kind,
        "feed": notification.feed.slug,
        "comment": comment_as_dict(notification.comment) if comment is None else comment,
        "created_at": iso_utc(notification.created_at),
        "read": notification.read,
    }


def render_notification(notification: Notification) -> str:
    """Return the notification's <li> markup, every user string escaped."""
    return render_to_string("notifications/_notification.html", {"notification": notification})


def render_badge(unread: int, *, oob: bool = False) -> str:
    """Return the header's unread-count badge (id="notification-badge"), as an out-of-band swap if `oob`."""
    return render_to_string("notifications/_badge.html", {"notification_unread": unread, "oob": oob}).strip()
