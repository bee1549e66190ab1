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
    # The comment this one answers; the service checks it belongs to the feed.
    reply_to = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    def __init__(self, *args: Any, signed_in_as: str = "", replying_to: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.signed_in_as = signed_in_as
        # The comment being answered (shown above the form), or None.
        self.replying_to = replying_to
        if not signed_in_as:
            # Signed in, the field is not shown: the service posts under the username.
            self.fields["author"].widget.attrs["required"] = True
        if replying_to is not None:
            # Focus where the reply is typed; screen readers hear whom it answers.
            self.fields["body"].widget.attrs.update({"autofocus": True, "aria-describedby": "replying-to"})
        for field in self.fields.values():
            # The service strips control characters (NUL included) on every path alike.
            field.validators = []

    def reply_to_id(self) -> int | None:
        """Return the reply_to id that was sent, None if none; a malformed one is 0 (no comment has it)."""
        if self.errors.get("reply_to"):
            return 0
        value = self.cleaned_data.get("reply_to")
        return value if isinstance(value, int) else None
