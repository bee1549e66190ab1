from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from notifications.models import Notification


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ["user", "seq", "kind", "feed", "read", "created_at"]
    list_filter = ["kind", "read", "feed"]
    search_fields = ["user__username"]
    readonly_fields = ["user", "seq", "kind", "comment", "feed", "created_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Notifications are numbered per user by notifications.services only.
        return False
