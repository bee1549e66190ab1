"""The comment form. It only collects and re-displays input: feed.services validates."""
from __future__ import annotations

from typing import Any

from django import forms

from feed.models import AUTHOR_MAX_LENGTH, BODY_MAX_LENGTH


class CommentForm(forms.Form):
    author = forms.CharField(
        label="Name",
        required=False,
        strip=False,
        widget=forms.TextInput(attrs={"maxlength": AUTHOR_MAX_LENGTH, "autocomplete": "nickname"}),
    )
    body = forms.CharField(
        label="Comment",
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 3, "maxlength": BODY_MAX_LENGTH, "required": True}),
    )

    def __init__(self, *args: Any, author_placeholder: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        author_widget = self.fields["author"].widget
        if author_placeholder:
            # Signed in: the name may stay blank and defaults to the username.
            author_widget.attrs["placeholder"] = author_placeholder
        else:
            author_widget.attrs["required"] = True
        for field in self.fields.values():
            # The service strips control characters (NUL included) on every path alike.
            field.validators = []
