"""`@username` mentions: finding them in a body, and marking them in its escaped markup."""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

from django.contrib.auth import get_user_model
from django.db.models.functions import Lower
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

if TYPE_CHECKING:
    from django.contrib.auth.models import User

# After a start, space or punctuation other than `@` and word characters (so an e-mail
# address is no mention); a name is letters, digits and `_.-`.
_MENTION = re.compile(r"(?<![\w@.\-])@([\w.\-]{1,150})")
# More names than this in one body are not looked up (nobody is notified by them either).
MAX_MENTIONS = 50


def _names(match: re.Match[str]) -> list[str]:
    """Return the name a match may mean: as written, then without trailing `.` or `-` ("thanks @ann.")."""
    name = match.group(1)
    trimmed = name.rstrip(".-")
    return [name, trimmed] if trimmed and trimmed != name else [name]


def mention_candidates(body: str) -> list[str]:
    """Return the names mentioned in the text, lowercased, in order of first appearance."""
    seen: dict[str, None] = {}
    for match in _MENTION.finditer(body):
        for name in _names(match):
            seen.setdefault(name.lower(), None)
        if len(seen) >= MAX_MENTIONS:
            break
    return list(seen)


# Within mentions_looked_up_once(): {the names looked up: what was found}.
_looked_up: ContextVar[dict[tuple[str, ...], dict[str, User]] | None] = ContextVar("mentions_looked_up", default=None)


@contextmanager
def mentions_looked_up_once() -> Iterator[None]:
    """Within this block, the same names are looked up once: a post finds whom it notifies and
    marks the mentions of its live frame with one query, and both agree on who is mentioned."""
    token = _looked_up.set({})
    try:
        yield
    finally:
        _looked_up.reset(token)


def active_users_named(names: Iterable[str]) -> dict[str, User]:
    """Return {lowercased username: user} for the active users with these (lowercased) names."""
    lowered = [name.lower() for name in names]
    if not lowered:
        return {}
    known = _looked_up.get()
    if known is None:
        return _active_users_named(lowered)
    key = tuple(lowered)
    if key not in known:
        known[key] = _active_users_named(lowered)
    return known[key]


def _active_users_named(lowered: list[str]) -> dict[str, User]:
    model = get_user_model()
    users = (
        model.objects.annotate(username_lower=Lower(model.USERNAME_FIELD))
        .filter(username_lower__in=lowered, is_active=True)
        .order_by("pk")
    )
    found: dict[str, User] = {}
    for user in users:
        found.setdefault(user.get_username().lower(), user)
    return found


def mentioned_users(body: str) -> list[User]:
    """Return the active users the body mentions, in order of first mention."""
    candidates = mention_candidates(body)
    found = active_users_named(candidates)
    users: dict[int, User] = {}
    for name in candidates:
        user = found.get(name)
        if user is not None:
            users.setdefault(user.pk, user)
    return list(users.values())


def render_body(body: str) -> SafeString:
    """Return the body as HTML: escaped, line breaks as <br>, mentions of active users marked.

    Escaping comes first; only names matched to a user are then wrapped, and the wrapped
    text is that escaped text itself.
    """
    escaped = str(escape(body))
    found = active_users_named(mention_candidates(body))

    def mark(match: re.Match[str]) -> str:
        for name in _names(match):
            user = found.get(name.lower())
            if user is not None:
                rest = match.group(1)[len(name):]
                # `name` and `rest` come from the escaped text and hold only [\w.-].
                return str(
                    format_html('<span class="mention" data-user="{}">@{}</span>{}',
                                user.get_username(), mark_safe(name), mark_safe(rest))
                )
        return match.group(0)

    marked = _MENTION.sub(mark, escaped) if found else escaped
    return mark_safe(marked.replace("\r\n", "\n").replace("\n", "<br>"))
