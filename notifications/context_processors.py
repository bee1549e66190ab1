"""The header's unread-notification count and newest seq, computed only when a template shows them."""
from __future__ import annotations

from functools import cache
from typing import Any

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from notifications.selectors import NotificationSummary, notification_header_summary


def unread_notifications(request: HttpRequest) -> dict[str, Any]:
    """Return `notification_unread` and `notification_last_seq` (the page's resume point), both lazy."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}

    @cache
    def summary() -> NotificationSummary:
        return notification_header_summary(user=user)

    return {
        "notification_unread": SimpleLazyObject(lambda: summary().unread),
        "notification_last_seq": SimpleLazyObject(lambda: summary().last_seq),
    }
