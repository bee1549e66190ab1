"""A fresh Idempotency-Key for each rendered form, so that resubmitting it creates nothing new."""
from __future__ import annotations

import uuid

from django import template

register = template.Library()


@register.simple_tag
def new_idempotency_key() -> str:
    """Return a new random key (a UUID): one per render of the comment form."""
    return str(uuid.uuid4())
