"""The one representation of a notification: its JSON shape and its HTML markup."""
from __future__ import annotations

from typing import Any

from django.template.loader import render_to_string
from django.utils.formats import date_format
from django.utils.html import escape
from django.utils.text import Truncator
from django.utils.timezone import template_localtime  # type: ignore[attr-defined]  # the template engine's own; missing from django-stubs

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


def render_notification(notification: Notification, *, shared: dict[tuple[Any, ...], tuple[str, ...]] | None = None) -> str:
    """Return the notification's <li> markup, every user string escaped.

    Byte for byte what notifications/_notification.html renders (the page's list includes
    that template; tests.test_notification_markup holds the two equal), written out in Python:
    every live notification frame carries one, and the template engine cost ~0.8 ms each.
    `shared`: a dict kept across the notifications of one comment, so what they have in
    common (link, names, time, excerpt) is escaped and formatted once.
    """
    key = (notification.comment_id, notification.feed_id, notification.created_at)
    parts = shared.get(key) if shared is not None else None
    if parts is None:
        parts = _shared_parts(notification)
        if shared is not None:
            shared[key] = parts
    href, author, feed_title, iso_time, short_time, excerpt = parts
    unread = " unread" if not notification.read else ""
    marker = '<span class="unread-marker">(unread)</span>' if not notification.read else ""
    verb = "replied to you" if notification.kind == "reply" else "mentioned you"
    return (
        f'<li id="notification-{notification.pk}" class="notification{unread}" data-seq="{notification.seq}">\n'
        f'  <a href="{href}">{author} {verb} in {feed_title}</a>\n'
        f"  {marker}\n"
        f'  <time datetime="{iso_time}">{short_time}</time>\n'
        f"  {excerpt}\n"
        "</li>\n"
    )


def _shared_parts(notification: Notification) -> tuple[str, ...]:
    """Return what a comment's notifications render alike: link, author, feed title, times, excerpt (escaped)."""
    comment = notification.comment
    created = template_localtime(notification.created_at)
    if comment.removed:
        excerpt = '<p class="notification-excerpt comment-removed-note">This comment was removed.</p>'
    else:
        excerpt = f'<blockquote class="notification-excerpt">{escape(Truncator(comment.body).chars(140))}</blockquote>'
    return (
        escape(notification.get_absolute_url()),
        escape(comment.author),
        escape(notification.feed.title),
        escape(date_format(created, "c")),
        escape(date_format(created, "M j, H:i")),
        excerpt,
    )


def render_badge(unread: int, *, oob: bool = False) -> str:
    """Return the header's unread-count badge (id="notification-badge"), as an out-of-band swap if `oob`."""
    return render_to_string("notifications/_badge.html", {"notification_unread": unread, "oob": oob}).strip()
