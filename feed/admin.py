from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from feed.models import ApiToken, Comment, Feed


@admin.register(Feed)
class FeedAdmin(admin.ModelAdmin):
    list_display = ["slug", "title", "allow_anonymous", "last_seq"]
    prepopulated_fields = {"slug": ["title"]}
    filter_horizontal = ["members"]
    readonly_fields = ["last_seq", "created_at"]


@admin.register(Comment)
class CommentAdmin(admin.ModelAdmin):
    list_display = ["feed", "seq", "author", "created_at"]
    list_filter = ["feed"]
    search_fields = ["author", "body"]
    readonly_fields = ["feed", "seq", "user", "created_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Comments get their seq from feed.services.comment_create only.
        return False


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
