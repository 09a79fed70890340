"""
The fast path: a read (or a segment) that is plain documents all alike, as
ACM writes them, is proved so with a few long-needle scans and passed on
whole; anything else goes to the exact framer (L{frame_documents}).
"""

from __future__ import annotations

import functools

from eventpipe.framing.common import (
    Rejected,
    State,
    _other_encoding,
)
from eventpipe.framing.framer import EventFramer

DECLARATION = b"<?xml "


# The bytes of an unfinished document that wait for the next read on the
# cheap way, whatever the reads' size; past that (and past the size of the
# read), the framer takes over, whose cost is linear in what it is fed.
WAITING = 16 * 1024


_LAYOUT = b" \t\r\n"


_LAYOUT_BYTES = (b" ", b"\t", b"\r", b"\n")


class ReadSplitter:
    """
    The cheap way through ingest, per connection: most reads of an ACM
    stream are whole documents plus the start of the next.  Those go on as
    they are (one record per read, framed exactly when the segment is
    rendered); anything else goes through the exact L{EventFramer} here.

    A read goes on as it is when the framer holds nothing and the documents
    it completes are all alike, as ACM writes them (L{uniform_documents}:
    each its own C{<EVENT>} root and nothing between them); the bytes from
    the last declaration on wait for the next read, unless they are a whole
    document too.  Documents of another root, or anything between
    documents, go through the framer, which sets them aside (and counts
    them against the sender) at once.  Bytes wait only while they are
    fewer than L{WAITING} or than the next read brings: a sender that
    trickles a large event goes through the framer, whose cost stays linear
    in what it sends.
    Framing the documents later gives the same events and the same
    set-aside pieces as framing them here, wherever the reads split.
    """

    def __init__(self, event_tag: str = "EVENT", max_event_size: int = 1 << 20) -> None:
        self.framer = EventFramer(event_tag, max_event_size)
        self.event_tag = event_tag
        self.max_event_size = max_event_size
        self._open = b"<" + event_tag.encode("utf-8")
        self._close = b"</" + event_tag.encode("utf-8")
        self._close_tag = self._close + b">"
        self._pending = b""

    @property
    def buffered(self) -> int:
        return len(self._pending) + self.framer.buffered

    def feed(self, data: bytes) -> tuple[bytes, int, list[bytes], list[Rejected]]:
        """
        @return: whole documents to keep as they are (empty when none),
            how many events they are, and the events and set-aside pieces
            framed here.
        """
        framer = self.framer
        if framer.state is State.BETWEEN and not framer.buffered:
            pending = self._pending
            buf = pending + data if pending else data
            if not pending and buf[:1] in _LAYOUT_BYTES:
                # Layout between documents is nothing, for the framer too.
                buf = buf.lstrip(_LAYOUT)
                if not buf:
                    return b"", 0, [], []
            if len(pending) <= max(len(data), WAITING):
                cut = buf.rfind(DECLARATION)
                if self._ends_whole(buf, cut):
                    # The last document is whole too: nothing need wait.
                    count = self._documents(buf, len(buf))
                    if count is not None:
                        self._pending = b""
                        return buf, count, [], []
                if cut <= 0:
                    if cut == 0 and len(buf) <= self.max_event_size:
                        # The start of one document: wait for the rest.
                        self._pending = buf
                        return b"", 0, [], []
                else:
                    count = self._documents(buf, cut)
                    if count is not None:
                        self._pending = buf[cut:]
                        return buf[:cut], count, [], []
            self._pending = b""
            events, rejected = framer.feed(buf)
            return b"", 0, events, rejected
        events, rejected = framer.feed(data)
        return b"", 0, events, rejected

    def _documents(self, buf: bytes, cut: int) -> int | None:
        """How many documents all alike stand before C{cut}, if they do."""
        if (
            len(buf) - cut <= self.max_event_size
            # No instruction left open at the cut.
            and buf.rfind(b"<?", 0, cut) < buf.rfind(b"?>", 0, cut)
        ):
            return uniform_documents(buf, self.event_tag, cut)
        return None

    def _ends_whole(self, buf: bytes, cut: int) -> bool:
        """
        Whether a read ends with an end tag of the last document and layout
        only, and that document is whole (see L{_whole}).
        """
        if cut < 0:
            return False
        closed = buf.rfind(self._close_tag, cut)
        return (
            closed >= 0
            and not buf[closed + len(self._close_tag) :].strip(_LAYOUT)
            and self._whole(buf[cut:])
        )

    def _whole(self, last: bytes) -> bool:
        """
        Whether the last document of a read, which ends with an end tag and
        layout, is whole: one start tag and one end tag (a nested root
        would still be open), so that nothing of it waits for more bytes.
        """
        return last.count(self._open) == 1 and last.count(self._close) == 1

    def close(self) -> tuple[list[bytes], list[Rejected]]:
        """The connection ended: frame what waits, and hand over what is left."""
        events: list[bytes] = []
        rejected: list[Rejected] = []
        if self._pending:
            events, rejected = self.framer.feed(self._pending)
            self._pending = b""
        return events, rejected + self.framer.close()


# What follows every run of documents kept as read: the start of a document.
_NEXT_DOCUMENT = b"<?xml ?>"


def frame_documents(
    documents: bytes, event_tag: str = "EVENT", max_event_size: int = 1 << 20
) -> tuple[list[bytes], list[Rejected]]:
    """
    Frame whole documents kept as they were read (see L{ReadSplitter}).
    They were cut just before a declaration: the framer sees one there too,
    so what it makes of their end is what it made of it in the stream.
    Documents all alike are split with a few scans instead.
    """
    uniform = uniform_events(documents, event_tag, max_event_size)
    if uniform is not None:
        close = b"</" + event_tag.encode("utf-8") + b">"
        return [event + close for event in uniform[0].split(close + b"\n")[:-1]], []
    framer = EventFramer(event_tag, max_event_size)
    events, rejected = framer.feed(documents + _NEXT_DOCUMENT)
    return events, rejected + framer.close()


@functools.lru_cache(maxsize=64)
def _plain_declaration(declaration: bytes, tag: bytes) -> bool:
    """
    Whether C{declaration} is an XML declaration of UTF-8 (said or
    implied) followed by layout only (a sender writes the same one every
    time: the answer is remembered).
    """
    close = declaration.find(b"?>")
    return not (
        not declaration.startswith(DECLARATION)
        or close < 0
        or declaration[close + 2 :].strip(_LAYOUT)
        or (b"encoding" in declaration and _other_encoding(declaration))
        or tag in declaration
    )


def uniform_documents(documents: bytes, event_tag: str = "EVENT", end: int = -1) -> int | None:
    """
    The one decision that documents are plain ACM documents, made alike at
    ingest (L{ReadSplitter}) and at render (L{uniform_events}): whether the
    bytes up to C{end} (all of them by default) are documents all alike --
    the same UTF-8 declaration and layout, then C{<EVENT>}, the event's
    content, C{</EVENT>} and the same layout after every document (nothing,
    a newline, CRLF, spaces: whatever the sender writes, as long as it
    writes it every time) -- and how many; None when not.
    """
    found = _uniform(documents, event_tag, end)
    return None if found is None else found[0]


def _uniform(documents: bytes, event_tag: str, end: int) -> tuple[int, bytes, bytes] | None:
    """
    L{uniform_documents}, with the declaration (and the layout after it)
    and the separator that follows every end tag.

    Three scans for long needles and one for a byte, no loop over the
    documents: every declaration stands at the start or right after an end
    tag and the separator, and right before a start tag, so every
    document's root is the event tag and nothing but the one separator
    stands between documents; and there is no C{!} (a comment, CDATA or
    DOCTYPE could hide an end tag or a declaration).  What is inside the
    events is not looked at here (L{uniform_events} looks before it splits
    them without the framer).
    """
    if end < 0:
        end = len(documents)
    tag = event_tag.encode("utf-8")
    open_tag = b"<" + tag + b">"
    close_tag = b"</" + tag + b">"
    first = documents.find(open_tag, 0, min(end, 512))
    if first <= 0:
        return None
    declaration = documents[:first]
    if not _plain_declaration(declaration, tag):
        return None
    # The separator: what follows the first document's end tag, up to the
    # next declaration (or the end).  A wrong guess (an end tag inside the
    # first event) fails the counts below.
    closed = documents.find(close_tag, first, end)
    if closed < 0:
        return None
    closed += len(close_tag)
    following = documents.find(DECLARATION, closed, end)
    separator = documents[closed : end if following < 0 else following]
    if separator.strip(_LAYOUT):
        return None
    ending = close_tag + separator
    if documents[end - len(ending) : end] != ending:
        return None
    count = documents.count(declaration, 0, end)
    if (
        documents.count(ending + declaration + open_tag, 0, end) != count - 1
        or documents.find(b"!", 0, end) >= 0
    ):
        return None
    return count, declaration, separator


def uniform_events(
    documents: bytes, event_tag: str = "EVENT", max_event_size: int = 1 << 20
) -> tuple[bytes, int] | None:
    """
    The events of whole documents that are all alike (L{uniform_documents})
    as one run of bytes, one event a line (what the framer makes of them,
    each followed by a newline, whatever the sender wrote between them), and
    how many; None when they are not all so, when an event holds an
    instruction or the tag's name (a nested root, a declaration: the framer
    is needed), or when they are longer than C{max_event_size} (which then
    bounds every event in them).  The declarations are removed where they
    stand, in one pass (and the separators made newlines in another, unless
    they are newlines): this is what ACM sends, and render's fast path.
    """
    if len(documents) > max_event_size:
        return None
    found = _uniform(documents, event_tag, -1)
    if found is None:
        return None
    count, declaration, separator = found
    tag = event_tag.encode("utf-8")
    events = documents.replace(declaration, b"")
    if events.count(tag) != 2 * count or b"?" in events:
        return None
    if separator != b"\n":
        close_tag = b"</" + tag + b">"
        events = events.replace(close_tag + separator, close_tag + b"\n")
    return events, count


def split_documents(documents: bytes, first: int, size: int) -> list[bytes]:
    """
    Cut whole documents kept as read into runs of at most C{first} bytes,
    then C{size} bytes each, always just before a declaration (so each run
    is whole documents too).  A document larger than the room makes a run
    of its own.
    """
    starts = []
    position = documents.find(DECLARATION, 1)
    while position >= 0:
        starts.append(position)
        position = documents.find(DECLARATION, position + 1)
    runs = []
    begin = 0
    room = first
    last = 0
    for start in [*starts, len(documents)]:
        if start - begin > room and last > begin:
            runs.append(documents[begin:last])
            begin = last
            room = size
        last = start
    runs.append(documents[begin:])
    return [run for run in runs if run]
