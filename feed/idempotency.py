"""The Idempotency-Key store of posts: checking a key, finding its stored answer, purging expired keys.

feed.services saves a key's row in the transaction of the comment it answers
(``_comment_insert_once``); this module holds everything else about keys.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.utils import timezone

from feed.models import IDEMPOTENCY_KEY_MAX_LENGTH, Feed, IdempotencyKey

IDEMPOTENCY_KEY_TTL = timedelta(hours=24)
# Expired keys are purged after an idempotent post at most this often per process.
IDEMPOTENCY_PURGE_INTERVAL = 300.0
_purge_lock = threading.Lock()
_purge_due = 0.0  # time.monotonic() of the next purge
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,%d}$" % IDEMPOTENCY_KEY_MAX_LENGTH)


class IdempotencyKeyInvalid(Exception):
    """The Idempotency-Key header is empty, too long or not printable ASCII (400)."""


class IdempotencyKeyReused(Exception):
    """The key was first used with a different request (422)."""


@dataclass(frozen=True)
class PostResult:
    """The answer to a post: its status and the comment as JSON, maybe a stored earlier answer."""

    status: int
    body: dict[str, Any]
    replayed: bool  # True: the answer of an earlier request with this key; nothing was created


def idempotency_key_check(key: str) -> str:
    """Return the key if it is usable, else raise IdempotencyKeyInvalid."""
    if not _IDEMPOTENCY_KEY.match(key):
        raise IdempotencyKeyInvalid(
            f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} printable ASCII characters (a UUID is ideal)."
        )
    return key


def request_fingerprint(*, feed: Feed, author: str, body: str, reply_to: int | None = None) -> str:
    # reply_to is appended only when set, so keys stored before it was part of the
    # fingerprint still match their retries.
    parts: list[object] = [feed.slug, author, body] + ([reply_to] if reply_to is not None else [])
    request = json.dumps(parts, ensure_ascii=False)
    return hashlib.sha256(request.encode("utf-8", "surrogatepass")).hexdigest()


def idempotent_result_find(
    *, client: str, key: str, feed: Feed, author: str, body: str, reply_to: int | None = None
) -> PostResult | None:
    """Return the stored answer for (client, key) if it has not expired.

    Raise IdempotencyKeyReused if the key was first used with another request.
    """
    cutoff = timezone.now() - IDEMPOTENCY_KEY_TTL
    record = IdempotencyKey.objects.filter(client=client, key=key, created_at__gte=cutoff).first()
    if record is None:
        return None
    if record.fingerprint != request_fingerprint(feed=feed, author=author, body=body, reply_to=reply_to):
        raise IdempotencyKeyReused(
            "This Idempotency-Key was already used with a different request; use a new key for a new comment."
        )
    return PostResult(status=record.response_status, body=record.response_body, replayed=True)


def purge_is_due() -> bool:
    """Return True at most once per IDEMPOTENCY_PURGE_INTERVAL in this process."""
    global _purge_due
    now = time.monotonic()
    with _purge_lock:
        if now < _purge_due:
            return False
        _purge_due = now + IDEMPOTENCY_PURGE_INTERVAL
        return True


def idempotency_keys_purge_expired() -> int:
    """Delete keys older than IDEMPOTENCY_KEY_TTL; return how many."""
    deleted, _ = IdempotencyKey.objects.filter(created_at__lt=timezone.now() - IDEMPOTENCY_KEY_TTL).delete()
    return deleted
