from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from feed.models import ApiToken, Comment, Feed
from feed.moderation import RemovalNotAllowed, comments_remove


@admin.register(Feed)
class FeedAdmin(admin.ModelAdmin):
    list_display = ["slug", "title", "allow_anonymous", "last_seq"]
    prepopulated_fields = {"slug": ["title"]}
    filter_horizontal = ["members", "moderators"]
    readonly_fields = ["last_seq", "created_at"]


@admin.register(Comment)
class CommentAdmin(admin.ModelAdmin):
    list_display = ["feed", "seq", "author", "created_at", "removed_at", "removed_by"]
    list_filter = ["feed", ("removed_at", admin.EmptyFieldListFilter)]
    search_fields = ["author", "body"]
    # Every change of a comment is a feed event (feed.moderation): nothing is edited here.
    readonly_fields = ["feed", "seq", "author", "user", "body", "reply_to", "created_at", "removed_at", "removed_by"]
    actions = ["remove_comments"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Comments get their seq from feed.services.comment_create only.
        return False

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        # Deleting rows would take events out of the feed's log: remove them instead.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    @admin.action(description="Remove the selected comments (blank them; open pages drop them)")
    def remove_comments(self, request: HttpRequest, queryset: QuerySet[Comment]) -> None:
        try:
            removed = comments_remove(comments=list(queryset.select_related("feed", "user")), by=request.user)
        except RemovalNotAllowed as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        self.message_user(request, f"Removed {removed} comment(s).", messages.SUCCESS)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["key_prefix", "user", "name", "created_at", "last_used_at"]
    list_filter = ["user"]
    search_fields = ["key_prefix", "name", "user__username"]
    readonly_fields = ["user", "key_prefix", "created_at", "last_used_at"]
    exclude = ["key_hash"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Tokens are issued by `manage.py issue_token`, which prints the secret once.
        # Deleting a token here revokes it.
        return False
