"""The notification scenario's side of the benchmark database, run as a Django script.

    python bench/notif_db.py setup --users 1000 --prefix nb   # prints {"users": [[id, username, token], ...]}
    python bench/notif_db.py check --prefix nb                # prints {"users": {id: [last_seq, count]}}

`setup` creates the signed-in users and one API token each, in bulk, straight in the
benchmark's database (DATABASE_URL, as the servers use it): token hashes as feed.auth stores
them, so the servers' Bearer check finds them. `check` reads, per user, the seq of the newest
notification (NotificationCounter) and how many notifications exist: the truth the frames
every socket received are compared with.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "livefeed.settings")


def setup(*, users: int, prefix: str) -> dict:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password

    from feed.auth import TOKEN_PREFIX, token_hash
    from feed.models import ApiToken

    model = get_user_model()
    password = make_password(None)  # unusable: these users sign in with their token only
    model.objects.bulk_create(
        [model(username=f"{prefix}{index:05d}", password=password) for index in range(users)], batch_size=500
    )
    created = list(model.objects.filter(username__startswith=prefix).order_by("pk").values_list("pk", "username"))
    secrets_by_user = {pk: TOKEN_PREFIX + secrets.token_urlsafe(32) for pk, _ in created}
    ApiToken.objects.bulk_create(
        [
            ApiToken(user_id=pk, name="bench", key_prefix=secret[: len(TOKEN_PREFIX) + 6], key_hash=token_hash(secret))
            for pk, secret in secrets_by_user.items()
        ],
        batch_size=500,
    )
    return {"users": [[pk, username, secrets_by_user[pk]] for pk, username in created]}


def check(*, prefix: str) -> dict:
    from django.contrib.auth import get_user_model
    from django.db.models import Count

    from notifications.models import Notification, NotificationCounter

    ids = list(get_user_model().objects.filter(username__startswith=prefix).values_list("pk", flat=True))
    last = dict(NotificationCounter.objects.filter(user_id__in=ids).values_list("user_id", "last_seq"))
    counts = dict(
        Notification.objects.filter(user_id__in=ids).values("user_id").annotate(n=Count("pk")).values_list("user_id", "n")
    )
    return {"users": {str(pk): [last.get(pk, 0), counts.get(pk, 0)] for pk in ids}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["setup", "check"])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--prefix", default="nb")
    args = parser.parse_args()
    import django

    django.setup()
    result = setup(users=args.users, prefix=args.prefix) if args.command == "setup" else check(prefix=args.prefix)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
