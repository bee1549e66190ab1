"""Template tags for comments."""
from __future__ import annotations

from django import template
from django.utils.safestring import SafeString

from feed.models import Comment
from feed.rendering import render_comment

register = template.Library()


@register.simple_tag(takes_context=True)
def comment_article(context: template.Context, comment: Comment) -> SafeString:
    """Render a comment of the page's list: its remove action only where the page's viewer may use it."""
    token = context.get("csrf_token")
    return render_comment(
        comment,
        on_page=bool(context.get("on_page")),
        moderating=bool(context.get("moderating")),
        viewer_id=context.get("viewer_id"),
        csrf_token=str(token) if token else None,
    )
