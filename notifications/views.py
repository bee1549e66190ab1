"""A person's notifications page, and marking them read from it."""
from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe

from notifications.selectors import notification_summary, notifications_latest
from notifications.services import notifications_mark_read

if TYPE_CHECKING:
    from django.contrib.auth.models import User

PAGE_SIZE = 50


class AuthenticatedHttpRequest(HttpRequest):
    """A request that login_required let through (for type checking: its user is signed in)."""

    user: User


@require_safe
@login_required
def notification_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    summary = notification_summary(user=request.user)
    context = {
        "notifications": notifications_latest(user=request.user, limit=PAGE_SIZE),
        "summary": summary,
        # The header's resume point, read before the list: an item saved in between comes
        # again over the stream and the page drops it as already shown.
        "notification_last_seq": summary.last_seq,
    }
    return render(request, "notifications/list.html", context)


@require_POST
@login_required
def notifications_read(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Mark read up to the seq the page showed (so one that arrived since stays unread)."""
    try:
        up_to = max(0, int(request.POST.get("up_to", "")))
    except ValueError:
        up_to = 0
    notifications_mark_read(user=request.user, up_to=up_to)
    return HttpResponseRedirect(reverse("notifications:list"), status=303)
