"""Normalising user-supplied text before it is validated and stored.

Removed: control characters (C0/C1 but tab and newline), lone surrogates, and format
characters (category Cf: bidi marks and overrides, zero-width spaces, BOM, word joiner,
invisible operators, soft hyphen, ...). Kept where they join two characters: the
zero-width joiner and non-joiner (emoji sequences such as 👩‍💻, and Indic and Persian
writing), and variation selectors after a character (❤️). Text with no visible
character at all cleans to "", so it counts as blank.

Combining marks (categories Mn and Me) are kept up to MAX_MARKS_PER_CHARACTER on one
character; the excess is dropped, so a letter cannot carry a column of accents drawn over
the lines around it. Four is enough for every script in real use: Vietnamese needs two,
pointed Hebrew with cantillation up to four (shin dot, dagesh, vowel, accent), Tibetan
stacks three or four, Devanagari two or three.

Cleaning never makes a text longer (NFC is skipped in the rare case where it would), so
a text of at most N characters as sent is at most N once cleaned.
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_ZWNJ, _ZWJ = "\u200c", "\u200d"
_JOINERS = frozenset((_ZWNJ, _ZWJ))
# No category marks these: the standardized, emoji, Mongolian and ideographic variation selectors.
_VARIATION_SELECTOR = re.compile("[\u180b-\u180d\u180f\ufe00-\ufe0f\U000e0100-\U000e01ef]")
# Format characters that show a sign (Unicode's Prepended_Concatenation_Mark: Arabic number
# signs, end of ayah, ...), and the unassigned code points Unicode reserves as invisible.
_VISIBLE_FORMAT = frozenset("\u0600\u0601\u0602\u0603\u0604\u0605\u06dd\u070f\u0890\u0891\u08e2\U000110bd\U000110cd")
_RESERVED_INVISIBLE = re.compile("[\u2065\ufff0-\ufff8\U000e0000-\U000e0fff]")
# Letters and symbols that draw nothing: the Hangul fillers and the blank braille pattern.
_BLANK_GRAPHIC = frozenset("\u115f\u1160\u3164\uffa0\u2800")
_INVISIBLE_CATEGORIES = frozenset(("Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Mn", "Me"))
# A subdivision flag (England, Scotland, Wales): black flag, tag letters, cancel tag.
_EMOJI_TAG_SEQUENCE = re.compile("\U0001f3f4[\U000e0020-\U000e007e]+\U000e007f")
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
MAX_MARKS_PER_CHARACTER = 4
_MARK_CATEGORIES = frozenset(("Mn", "Me"))


def clean_body(value: str) -> str:
    """Return the body without control and format characters, line ends unified and ends trimmed.

    Return "" if no visible character is left.
    """
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    # Remove before normalising: a removed character may separate a letter from its accent.
    value = _limit_marks(_normalize(_remove_invisible(value))).strip()
    return value if has_visible_character(value) else ""


def clean_name(value: str) -> str:
    """Return a display name on one line, without control and format characters, whitespace collapsed.

    Return "" if no visible character is left.
    """
    value = " ".join(_limit_marks(_normalize(_remove_invisible(value))).split())
    return value if has_visible_character(value) else ""


def has_visible_character(value: str) -> bool:
    """Return whether the text draws anything: a character that is not space, a mark or a format character."""
    return any(
        char in _VISIBLE_FORMAT
        or (char not in _BLANK_GRAPHIC and unicodedata.category(char) not in _INVISIBLE_CATEGORIES)
        for char in value
    )


def visible_character_pattern() -> str:
    """Return a regular expression (JSON Schema `pattern`) that matches text with a visible character.

    It matches exactly the texts that do not clean to "" (lone surrogates aside): one
    character that is neither removed by cleaning nor invisible. Built from this Python's Unicode database on first use
    (about half a second), for the OpenAPI description.
    """
    return _visible_character_pattern()


@lru_cache(maxsize=1)
def _visible_character_pattern() -> str:
    ranges: list[list[int]] = []
    category = unicodedata.category
    for code in range(0x110000):
        if 0xD800 <= code <= 0xDFFF:
            # Lone surrogates are not text (RFC 8259 leaves them undefined, and regex engines such
            # as Rust's refuse them in a pattern); the server removes them.
            continue
        char = chr(code)
        kind = category(char)
        invisible = (
            (kind in _INVISIBLE_CATEGORIES or char in _BLANK_GRAPHIC or kind == "Cn" and _RESERVED_INVISIBLE.match(char))
            and char not in _VISIBLE_FORMAT
        )
        if invisible:
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1][1] = code
            else:
                ranges.append([code, code])
    return "[^" + "".join(_class_item(first, last) for first, last in ranges) + "]"


def _class_item(first: int, last: int) -> str:
    # \uXXXX in the Basic Multilingual Plane (ECMA-262 and Python alike); the character itself above it.
    def one(code: int) -> str:
        return f"\\u{code:04x}" if code <= 0xFFFF else chr(code)

    return one(first) if first == last else f"{one(first)}-{one(last)}"


def _normalize(value: str) -> str:
    # NFC composes letters and accents; it lengthens only a few characters (composition
    # exclusions such as U+0958), and is skipped then, so that cleaning never lengthens a text.
    normalized = unicodedata.normalize("NFC", value)
    return normalized if len(normalized) <= len(value) else value


def _limit_marks(value: str) -> str:
    """Keep at most MAX_MARKS_PER_CHARACTER combining marks on each character; drop the rest.

    Joiners do not end a character's marks: a mark after a zero-width joiner still stacks on it.
    """
    if value.isascii():
        return value
    kept: list[str] = []
    marks = 0
    for char in value:
        if unicodedata.category(char) in _MARK_CATEGORIES:
            marks += 1
            if marks > MAX_MARKS_PER_CHARACTER:
                continue
        elif char not in _JOINERS:
            marks = 0
        kept.append(char)
    return "".join(kept)


def _remove_invisible(value: str) -> str:
    if value.isascii():
        return _ASCII_CONTROL.sub("", value)
    kept: list[str] = []
    start = 0
    for sequence in _EMOJI_TAG_SEQUENCE.finditer(value):
        kept.extend(char for char in value[start : sequence.start()] if not _is_removed(char))
        kept.append(sequence.group())
        start = sequence.end()
    kept.extend(char for char in value[start:] if not _is_removed(char))
    return _drop_loose_joiners("".join(kept))


def _is_removed(char: str) -> bool:
    category = unicodedata.category(char)
    if category == "Cc":
        return char not in "\t\n"
    if category == "Cf":
        return char not in _JOINERS and char not in _VISIBLE_FORMAT
    if category == "Cn":
        return _RESERVED_INVISIBLE.match(char) is not None
    return category == "Cs"


def _drop_loose_joiners(value: str) -> str:
    """Keep a joiner only between two characters, and a variation selector only after one.

    Left to right, so that what is kept stays kept when cleaned again: a joiner may follow a
    kept variation selector (❤️‍🔥) and must precede a character that is never removed here.
    """
    if not any(char in _JOINERS or _VARIATION_SELECTOR.match(char) for char in value):
        return value
    kept: list[str] = []
    for index, char in enumerate(value):
        previous = kept[-1] if kept else ""
        if char in _JOINERS:
            following = value[index + 1 : index + 2]
            if _is_joinable(previous, selector_ok=True) and _is_joinable(following, selector_ok=False):
                kept.append(char)
        elif _VARIATION_SELECTOR.match(char):
            if _is_joinable(previous, selector_ok=False):
                kept.append(char)
        else:
            kept.append(char)
    return "".join(kept)


def _is_joinable(char: str, *, selector_ok: bool) -> bool:
    if not char or char.isspace() or char in _JOINERS:
        return False
    return selector_ok or not _VARIATION_SELECTOR.match(char)
