"""What clients may send on the feed socket, and the close codes the server uses."""
from __future__ import annotations

import json
from dataclasses import dataclass

# Close codes. 1012/1013 make the htmx ws extension (and most clients) reconnect at once.
CLOSE_SERVICE_RESTART = 1012  # the server is shutting down (SIGTERM)
CLOSE_TRY_AGAIN_LATER = 1013  # the reader fell too far behind; resume after reconnecting
CLOSE_BAD_FRAME = 4400  # not a JSON text frame of a known type with valid fields
CLOSE_FRAME_TOO_LARGE = 4413  # a client frame over MAX_CLIENT_FRAME_BYTES
CLOSE_TOO_MANY_RESUMES = 4429  # more than MAX_RESUMES resumes within RESUME_WINDOW seconds

MAX_CLIENT_FRAME_BYTES = 4096
MAX_SEQ = 2**63 - 1
MAX_RESUMES = 5
RESUME_WINDOW = 10.0


class BadClientFrame(Exception):
    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        super().__init__(reason)


@dataclass(frozen=True)
class Resume:
    after: int


def parse_client_frame(*, text: str | None, data: bytes | None) -> Resume:
    """Return the client's message, or raise BadClientFrame with the close code to use."""
    if text is None:
        size = len(data or b"")
        if size > MAX_CLIENT_FRAME_BYTES:
            raise BadClientFrame(CLOSE_FRAME_TOO_LARGE, "frame too large")
        raise BadClientFrame(CLOSE_BAD_FRAME, "binary frames are not accepted")
    # Check the size before parsing; a character is at most 4 bytes of UTF-8.
    if len(text) > MAX_CLIENT_FRAME_BYTES or (
        len(text) * 4 > MAX_CLIENT_FRAME_BYTES and len(text.encode("utf-8", "surrogatepass")) > MAX_CLIENT_FRAME_BYTES
    ):
        raise BadClientFrame(CLOSE_FRAME_TOO_LARGE, "frame too large")
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nesting too deep for the parser
        raise BadClientFrame(CLOSE_BAD_FRAME, "not JSON") from None
    if not isinstance(message, dict) or message.get("type") != "resume":
        raise BadClientFrame(CLOSE_BAD_FRAME, "unknown message type")
    after = message.get("after")
    if type(after) is not int or not 0 <= after <= MAX_SEQ:
        raise BadClientFrame(CLOSE_BAD_FRAME, "after must be a non-negative integer")
    return Resume(after=after)
