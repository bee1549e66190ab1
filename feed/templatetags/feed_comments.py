"""Template filters for comments."""
from __future__ import annotations

from django import template
from django.utils.safestring import SafeString

from feed.mentions import render_body

register = template.Library()


@register.filter
def comment_body(body: str) -> SafeString:
    """Render a comment's body: escaped, line breaks kept, @mentions of active users marked."""
    return render_body(body)
