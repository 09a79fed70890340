"""
The framers' vocabulary: what may stand between documents, the framer's
states, the reasons a piece is set aside, and L{Rejected}.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass

_UTF8_NAMES = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})
_WHITESPACE = re.compile(rb"(?:[ \t\r\n]|\xef\xbb\xbf)+")


# Whitespace, byte order marks, and whole declarations, processing
# instructions and comments: what stands between documents, in one match.
_PROLOG = re.compile(
    rb"(?:[ \t\r\n]+|\xef\xbb\xbf|<\?[^?]{0,256}\?>|<!--(?:[^-]|-(?!->)){0,256}-->)+"
)


_TAG_DELIMITERS = frozenset(b" \t\r\n>/")


_LAYOUT_RUN = re.compile(rb"[ \t\r\n]*")


_DECLARED_ENCODING = re.compile(
    rb"(<\?xml[^?]*?\bencoding\s*=\s*[\"']([A-Za-z][A-Za-z0-9._-]*)[\"'][^?]*\?>)"
)


_CDATA_OPEN = b"<![CDATA["


_CDATA_CLOSE = b"]]>"


_COMMENT_OPEN = b"<!--"


_COMMENT_CLOSE = b"-->"


_PI_OPEN = b"<?"


_PI_CLOSE = b"?>"


class State(enum.Enum):
    """Where in the stream the framer stands."""

    BETWEEN = "between documents"
    START_TAG = "in the start tag of an event's root"
    BODY = "in an event"
    # In an event that holds something in which an end tag may stand without
    # ending it (CDATA, a comment, a nested root): walked one markup at a time.
    BODY_CAREFUL = "in an event, walking its markup"
    SKIPPING = "discarding the rest of an event larger than max-event-size"


_IN_EVENT = frozenset({State.START_TAG, State.BODY, State.BODY_CAREFUL})


REASON_OUTSIDE = "bytes outside any <{tag}> document"


REASON_TOO_LARGE = (
    "event larger than max-event-size ({limit} bytes); "
    "first {limit} bytes kept, {dropped} more discarded"
)


REASON_TRUNCATED = "connection closed in the middle of an event"


REASON_INTERRUPTED = "a new document began in the middle of an event"


REASON_DOCTYPE = "a DOCTYPE is not allowed (ACM never sends one)"


@dataclass(frozen=True)
class Rejected:
    """
    Bytes that are not a whole event, with the reason they were set aside.
    C{dropped} counts bytes that belonged to the same piece but were not
    kept because of the size limit.
    """

    reason: str
    data: bytes
    dropped: int = 0


class FramerState:
    """What the parts of L{eventpipe.framing.framer.EventFramer} share."""

    event_tag: str
    max_event_size: int
    state: State
    _open: bytes
    _close: bytes
    _buf: bytearray
    _declared: bytes
    _scan: int
    _depth: int
    _looked: int
    _sheltered: bool
    _end_tag: int
    _layout: int
    _closer: int
    _markup: int
    _garbage: bytearray
    _garbage_dropped: int
    _head: bytes
    _dropped: int

    # The framer's own steps, which the parts call.
    _start_event: Callable[[int], None]
    _finish_oversize: Callable[[], Rejected]
    _finish_start_tag: Callable[[bytearray, int, list[bytes]], bool]


def _other_encoding(prolog: bytes) -> bytes:
    """
    The last declaration in C{prolog} if it names an encoding other than
    UTF-8 (or ASCII, a part of it); empty otherwise.
    """
    found = _DECLARED_ENCODING.findall(prolog)
    if found and found[-1][1].decode("ascii").lower() not in _UTF8_NAMES:
        return found[-1][0]
    return b""
