"""`manage.py issue_token <username>`: print a new API token for that user."""
from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from feed.auth import api_token_issue
from feed.models import ApiToken


class Command(BaseCommand):
    help = "Issue an API token for a user and print it. Only its hash is stored: keep the printed token."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="What the token is for (shown in the admin).")

    def handle(self, *args: Any, username: str, name: str, **options: Any) -> None:
        max_name = ApiToken._meta.get_field("name").max_length
        if max_name is not None and len(name) > max_name:  # PostgreSQL would refuse the row with a DataError
            raise CommandError(f"--name takes at most {max_name} characters.")
        User = get_user_model()
        try:
            user = User.objects.get(**{User.USERNAME_FIELD: username})
        except User.DoesNotExist as exc:
            raise CommandError(f"No user {username!r}. Create one with `manage.py createsuperuser`.") from exc
        if not user.is_active:
            raise CommandError(f"User {username!r} is inactive; its tokens would be refused.")
        _, secret = api_token_issue(user=user, name=name)
        self.stdout.write(secret)
