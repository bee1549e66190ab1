"""Normalising user-supplied text before it is validated and stored."""
from __future__ import annotations

import re
import unicodedata

# C0/C1 control characters except tab and newline, plus stray surrogates and
# Unicode "format" characters that can reorder or hide text (bidi overrides).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")


def clean_body(value: str) -> str:
    """Return the body with control characters removed, line ends unified and ends trimmed."""
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    # Remove before normalising: a removed character may separate a letter from its accent.
    return unicodedata.normalize("NFC", _CONTROL.sub("", value)).strip()


def clean_name(value: str) -> str:
    """Return a display name on one line, without control characters, whitespace collapsed."""
    value = unicodedata.normalize("NFC", _CONTROL.sub("", value))
    return " ".join(value.split())
