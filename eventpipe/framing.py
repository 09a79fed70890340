"""
Split the byte stream of an ACM "Events - Generic XML" connection into events.

Sans-I/O: bytes go in through L{EventFramer.feed}, whole events and rejected
pieces come out.  No reactor, no sockets, no files.

What arrives is a sequence of XML documents, usually
C{<?xml version="1.0" encoding="UTF-8"?>} followed by C{<EVENT>...</EVENT>},
but also: documents without a declaration, newlines, CRLF, UTF-8 byte order
marks, comments or whitespace between documents, single- or double-quoted
declarations, attributes on the root, C{</EVENT >} with whitespace, CDATA
sections and comments that contain the text C{</EVENT>}, and events split at
any byte or many events in one read.

Each event is handed over exactly once, from its C{<EVENT} to the C{>} of its
end tag, byte for byte; an event whose declaration names an encoding other
than UTF-8 keeps that declaration in front (the render transcodes it).  Anything between documents that is not whitespace, a
declaration, a processing instruction or a comment is handed over as
L{Rejected} so that it can be quarantined; so is an event larger than
C{max_event_size}, of which only the first C{max_event_size} bytes are kept
in memory (the rest is counted and discarded until the framer finds the next
document).
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass

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
_UTF8_NAMES = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})
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


class EventFramer:
    """
    Incremental splitter of one connection's byte stream.

    @param event_tag: the root element name of one event (C{EVENT}).
    @param max_event_size: the largest event (and the largest run of
        unrecognised bytes) held in memory, in bytes.
    """

    def __init__(self, event_tag: str = "EVENT", max_event_size: int = 1 << 20) -> None:
        if max_event_size < 1:
            raise ValueError("max_event_size must be positive")
        self.event_tag = event_tag
        self.max_event_size = max_event_size
        tag = event_tag.encode("utf-8")
        self._open = b"<" + tag
        self._close = b"</" + tag
        self._buf = bytearray()
        self.state = State.BETWEEN
        # The declaration of the next event when it declares an encoding
        # other than UTF-8; empty otherwise.
        self._declared = b""
        # Inside an event: where to resume looking for its end.
        self._scan = 0
        # In BODY_CAREFUL: the element depth of nested roots.
        self._depth = 0
        # What has been searched already, so that no byte of an unfinished
        # piece is searched again on the next read (the cost of a piece
        # stays linear in its size whatever the reads): offsets from the
        # start of the event (or of the markup between documents).
        self._looked = 0  # for an interrupting declaration
        self._sheltered = False  # a "<!" came first: no declaration interrupts
        self._end_tag = -1  # where an end tag waits for its ">"
        self._layout = 0  # how far the layout after that end tag was read
        self._closer = 0  # for the end of a CDATA section or comment
        self._markup = 0  # for the end of an instruction or comment between documents
        # Unrecognised bytes between documents, and oversized pieces.
        self._garbage = bytearray()
        self._garbage_dropped = 0
        self._head = b""
        self._dropped = 0

    @property
    def buffered(self) -> int:
        """
        How many bytes the framer holds right now (bounded by about
        C{max_event_size} plus one read).
        """
        return len(self._buf) + len(self._garbage) + len(self._head)

    @property
    def discarding(self) -> int:
        """
        Bytes of the piece being set aside right now (unrecognised bytes, or
        an oversized event), kept or counted: what a sender has sent that is
        not events and not yet handed over as L{Rejected}.
        """
        if self.state is State.SKIPPING:
            return len(self._head) + self._dropped
        return len(self._garbage) + self._garbage_dropped

    def feed(self, data: bytes) -> tuple[list[bytes], list[Rejected]]:
        """
        Take the next bytes of the stream.

        @return: the events completed by these bytes, in order, and the
            rejected pieces completed by them.
        """
        events: list[bytes] = []
        rejected: list[Rejected] = []
        buf = self._buf
        buf += data
        pos = 0
        n = len(buf)
        while pos < n:
            state = self.state
            if state in _IN_EVENT:
                if state is State.START_TAG and self._finish_start_tag(buf, pos, events):
                    # A self-closing root was handed over whole.
                    pos = self._scan
                    self.state = State.BETWEEN
                    continue
                end = None if self.state is State.START_TAG else self._find_end(buf, pos)
                interrupted = self._interrupted(buf, pos, n if end is None else end)
                if interrupted is not None:
                    # A new document began before this event ended.
                    if interrupted - pos > self.max_event_size:
                        self._head = bytes(buf[pos : pos + self.max_event_size])
                        self._dropped = interrupted - pos - self.max_event_size
                        rejected.append(self._finish_oversize())
                    else:
                        rejected.append(Rejected(REASON_INTERRUPTED, bytes(buf[pos:interrupted])))
                    self._declared = b""
                    self.state = State.BETWEEN
                    pos = interrupted
                    continue
                if end is None:
                    if n - pos > self.max_event_size:
                        self._head = bytes(buf[pos : pos + self.max_event_size])
                        self._dropped = 0
                        self.state = State.SKIPPING
                        pos += self.max_event_size
                        continue
                    break
                if end - pos > self.max_event_size:
                    self._head = bytes(buf[pos : pos + self.max_event_size])
                    self._dropped = end - pos - self.max_event_size
                    rejected.append(self._finish_oversize())
                else:
                    events.append(self._declared + bytes(buf[pos:end]))
                self._declared = b""
                self.state = State.BETWEEN
                pos = end
            elif state is State.SKIPPING:
                pos = self._skip(buf, pos, n, rejected)
                if self.state is State.SKIPPING:
                    break
            else:
                advanced = self._between(buf, pos, n, events, rejected)
                if advanced is None:
                    break
                pos = advanced
        del buf[:pos]
        if self.state in _IN_EVENT:
            self._scan -= pos
        return events, rejected

    def _interrupted(self, buf: bytearray, start: int, end: int) -> int | None:
        """
        Where a declaration interrupts the event that starts at C{start}
        (before C{end}), or None.  Not after a C{<!} (CDATA or a comment,
        where the text C{<?xml} may stand); elsewhere in an event it is never
        well-formed, and framing there never depends on where reads split.
        Each byte is searched once: the search resumes where it stopped.
        """
        if self._sheltered:
            return None
        lo = start + max(1, self._looked)
        declaration = buf.find(b"<?xml", lo, end)
        bang = buf.find(b"<!", max(start, lo - 1), end if declaration < 0 else declaration)
        if bang >= 0:
            self._sheltered = True
            return None
        if declaration < 0:
            # A declaration cut by the end of the read is found next time.
            self._looked = max(self._looked, end - start - 4)
            return None
        return declaration

    def close(self) -> list[Rejected]:
        """
        The connection ended: hand over whatever incomplete piece is left.
        Whitespace and byte order marks are not worth keeping; anything
        else is (a dangling declaration included).
        """
        rejected: list[Rejected] = []
        self._markup = 0
        if self.state in _IN_EVENT:
            self._flush_garbage(rejected)
            rejected.append(Rejected(REASON_TRUNCATED, bytes(self._buf)))
        elif self.state is State.SKIPPING:
            self._dropped += len(self._buf)
            rejected.append(self._finish_oversize())
        else:
            if _WHITESPACE.sub(b"", self._buf):
                self._keep_garbage(self._buf, 0, len(self._buf))
            self._flush_garbage(rejected)
        self._buf = bytearray()
        self.state = State.BETWEEN
        return rejected

    # Between documents.

    def _between(
        self,
        buf: bytearray,
        pos: int,
        n: int,
        events: list[bytes],
        rejected: list[Rejected],
    ) -> int | None:
        """
        Consume what stands at C{pos} between documents.

        @return: the new position, or None when more bytes are needed.
        """
        # How far an instruction or comment that starts here was searched:
        # only the call right after the one that stopped in it resumes.
        markup, self._markup = self._markup, 0
        if markup and not self._garbage:
            # Still in the instruction or comment the last read stopped in.
            if buf.startswith(_COMMENT_OPEN, pos):
                return self._skip_markup(buf, pos, n, _COMMENT_CLOSE, rejected, markup)
            skipped = self._skip_markup(buf, pos, n, _PI_CLOSE, rejected, markup)
            if skipped is not None and buf.find(b"encoding", pos, skipped) >= 0:
                self._note_encoding(bytes(buf[pos:skipped]))
            return skipped
        if self._garbage:
            match = _WHITESPACE.match(buf, pos)
            if match is not None:
                # Whitespace inside a run of unrecognised bytes is part of it.
                self._keep_garbage(buf, pos, match.end())
                return match.end()
        else:
            match = _PROLOG.match(buf, pos)
            if match is not None:
                end = match.end()
                if buf.find(b"encoding", pos, end) >= 0:
                    self._note_encoding(bytes(buf[pos:end]))
                return end
        if buf.startswith(self._open, pos):
            after = pos + len(self._open)
            if after >= n:
                return None
            if buf[after] in _TAG_DELIMITERS:
                self._flush_garbage(rejected)
                self._start_event(pos)
                return pos
        elif buf.startswith(_PI_OPEN, pos):
            # A run of unrecognised bytes ends where markup begins.
            self._flush_garbage(rejected)
            skipped = self._skip_markup(buf, pos, n, _PI_CLOSE, rejected, markup)
            if skipped is not None and buf.find(b"encoding", pos, skipped) >= 0:
                self._note_encoding(bytes(buf[pos:skipped]))
            return skipped
        elif buf.startswith(_COMMENT_OPEN, pos):
            self._flush_garbage(rejected)
            return self._skip_markup(buf, pos, n, _COMMENT_CLOSE, rejected, markup)
        elif n - pos < len(self._open) + 1 and self._could_start(bytes(buf[pos:n])):
            return None
        return self._take_garbage(buf, pos, n, rejected)

    def _note_encoding(self, prolog: bytes) -> None:
        """
        Keep the declaration of a document that declares an encoding other
        than UTF-8 (or ASCII, a part of it): it goes with the event, so that
        the render can read the event and write it as UTF-8.
        """
        self._declared = _other_encoding(prolog)

    def _could_start(self, tail: bytes) -> bool:
        return any(
            marker.startswith(tail)
            for marker in (self._open, _PI_OPEN, _COMMENT_OPEN, b"\xef\xbb\xbf")
        )

    def _skip_markup(
        self,
        buf: bytearray,
        pos: int,
        n: int,
        closer: bytes,
        rejected: list[Rejected],
        searched: int = 0,
    ) -> int | None:
        # Resumed where the last read's search stopped (C{searched} bytes
        # from C{pos}, where the markup starts).
        end = buf.find(closer, pos + max(2, searched))
        if end < 0:
            if n - pos > self.max_event_size:
                return self._take_garbage(buf, pos, n, rejected)
            self._markup = max(2, n - pos - len(closer) + 1)
            return None
        self._flush_garbage(rejected)
        return end + len(closer)

    def _take_garbage(self, buf: bytearray, pos: int, n: int, rejected: list[Rejected]) -> int:
        """
        Set aside unrecognised bytes up to the next thing that may start a
        document.
        """
        candidates = [
            i for i in (buf.find(self._open, pos + 1), buf.find(_PI_OPEN, pos + 1)) if i >= 0
        ]
        if candidates:
            end = min(candidates)
        else:
            # Keep a tail that may be the start of a marker.
            end = max(pos + 1, n - len(self._open))
        self._keep_garbage(buf, pos, end)
        return end

    def _keep_garbage(self, buf: bytearray, start: int, end: int) -> None:
        room = max(self.max_event_size - len(self._garbage), 0)
        self._garbage += buf[start : min(end, start + room)]
        self._garbage_dropped += max(0, end - start - room)

    def _flush_garbage(self, rejected: list[Rejected]) -> None:
        if self._garbage or self._garbage_dropped:
            rejected.append(self._outside(bytes(self._garbage), self._garbage_dropped))
            self._garbage = bytearray()
            self._garbage_dropped = 0

    def _outside(self, data: bytes, dropped: int = 0) -> Rejected:
        if data.lstrip(b" \t\r\n\xef\xbb\xbf").startswith(b"<!DOCTYPE"):
            return Rejected(REASON_DOCTYPE, data, dropped)
        return Rejected(REASON_OUTSIDE.format(tag=self.event_tag), data, dropped)

    def _start_event(self, pos: int) -> None:
        self.state = State.START_TAG
        self._scan = pos + len(self._open)
        self._looked = 0
        self._sheltered = False
        self._end_tag = -1
        self._layout = 0
        self._closer = 0

    def _finish_start_tag(self, buf: bytearray, pos: int, events: list[bytes]) -> bool:
        """
        Find the end of the root's start tag (the state moves to BODY when
        it is found).  A self-closing root (C{<EVENT/>}, C{<EVENT a="1"/>})
        is a whole event already.

        @return: True when a self-closing event was handed over (C{_scan}
            then says where it ended).
        """
        gt = buf.find(b">", self._scan)
        if gt < 0:
            self._scan = len(buf)
            return False
        self._scan = gt + 1
        if buf[gt - 1] == 0x2F:  # "/"
            events.append(self._declared + bytes(buf[pos : gt + 1]))
            self._declared = b""
            return True
        self.state = State.BODY
        return False

    # Inside an event.

    def _find_end(self, buf: bytearray, start: int) -> int | None:
        """
        Find the end of the event that starts at C{start}.

        @return: the index just past the C{>} of its end tag, or None when
            more bytes are needed.
        """
        if self.state is State.BODY_CAREFUL:
            return self._find_end_carefully(buf, start)
        close = self._close
        n = len(buf)
        i = self._scan
        while True:
            j = buf.find(close, i)
            if j < 0:
                self._scan = max(i, n - len(close))
                return None
            k = self._after_layout(buf, start, j + len(close))
            if k >= n:
                self._scan = j
                return None
            if buf[k] != 0x3E:  # not ">": e.g. </EVENTS
                i = j + 1
                continue
            if self._needs_care(buf, start, j):
                self.state = State.BODY_CAREFUL
                self._scan = start + len(self._open)
                self._depth = 1
                return self._find_end_carefully(buf, start)
            return k + 1

    def _after_layout(self, buf: bytearray, start: int, k: int) -> int:
        """
        Where the layout that begins at C{k} (after an end tag's name) ends;
        resumed where the last read stopped when it is the same end tag.
        """
        if self._end_tag == k - start:
            k = max(k, start + self._layout)
        else:
            self._end_tag = k - start
        end = _LAYOUT_RUN.match(buf, k).end()  # type: ignore[union-attr]
        self._layout = end - start
        return end

    def _needs_care(self, buf: bytearray, start: int, end: int) -> bool:
        """
        Whether the bytes of an event hold something in which an end tag
        may stand without ending it: CDATA, a comment, or a nested root.
        """
        if buf.find(b"<!", start, end) >= 0:  # CDATA or a comment
            return True
        nested = buf.find(self._open, start + 1, end)
        while nested >= 0:
            after = nested + len(self._open)
            if after < end and buf[after] in _TAG_DELIMITERS:
                return True
            nested = buf.find(self._open, nested + 1, end)
        return False

    def _find_end_carefully(self, buf: bytearray, start: int) -> int | None:
        """
        Walk the markup of the event one C{<} at a time, stepping over CDATA
        sections and comments and counting nested roots.  Resumable: the
        position and depth are kept between calls.
        """
        n = len(buf)
        p = self._scan
        close = self._close
        while True:
            k = buf.find(b"<", p)
            if k < 0:
                self._scan = n
                return None
            if k != self._scan:
                self._closer = 0
            self._scan = k
            if buf.startswith(_CDATA_OPEN, k):
                e = self._find_closer(buf, start, k + len(_CDATA_OPEN), _CDATA_CLOSE)
                if e < 0:
                    return None
                p = e + len(_CDATA_CLOSE)
            elif buf.startswith(_COMMENT_OPEN, k):
                e = self._find_closer(buf, start, k + len(_COMMENT_OPEN), _COMMENT_CLOSE)
                if e < 0:
                    return None
                p = e + len(_COMMENT_CLOSE)
            elif buf.startswith(close, k):
                e = self._after_layout(buf, start, k + len(close))
                if e >= n:
                    return None
                if buf[e] != 0x3E:
                    p = k + 1
                    continue
                self._depth -= 1
                if self._depth == 0:
                    return e + 1
                p = e + 1
            elif buf.startswith(self._open, k):
                after = k + len(self._open)
                if after >= n:
                    return None
                if buf[after] in _TAG_DELIMITERS:
                    gt = buf.find(b">", after)
                    if gt < 0:
                        return None
                    if buf[gt - 1] != 0x2F:
                        self._depth += 1
                    p = gt + 1
                else:
                    p = k + 1
            elif n - k < len(_CDATA_OPEN) and any(
                m.startswith(bytes(buf[k:n]))
                for m in (_CDATA_OPEN, _COMMENT_OPEN, close, self._open)
            ):
                return None
            else:
                p = k + 1

    def _find_closer(self, buf: bytearray, start: int, lo: int, closer: bytes) -> int:
        """
        Find C{closer} from C{lo}, resuming where the last read's search of
        the same section stopped; -1 when it is not there yet.
        """
        e = buf.find(closer, max(lo, start + self._closer))
        if e < 0:
            self._closer = max(self._closer, len(buf) - len(closer) + 1 - start)
        return e

    # After an oversized event.

    def _skip(self, buf: bytearray, pos: int, n: int, rejected: list[Rejected]) -> int:
        """
        Discard bytes of an oversized event up to its end tag or the next
        declaration, whichever comes first.
        """
        declaration = buf.find(b"<?xml", pos)
        limit = declaration if declaration >= 0 else n
        close = buf.find(self._close, pos, limit)
        while close >= 0:
            k = close + len(self._close)
            while k < n and buf[k] in b" \t\r\n":
                k += 1
            if k >= n:
                break
            if buf[k] == 0x3E:
                self._dropped += k + 1 - pos
                rejected.append(self._finish_oversize())
                return k + 1
            close = buf.find(self._close, close + 1, limit)
        if declaration >= 0:
            self._dropped += declaration - pos
            rejected.append(self._finish_oversize())
            return declaration
        keep = min(n - pos, len(self._close) + 64)
        if close >= 0:
            keep = max(keep, n - close)
        self._dropped += n - keep - pos
        return n - keep

    def _finish_oversize(self) -> Rejected:
        rejected = Rejected(
            REASON_TOO_LARGE.format(limit=self.max_event_size, dropped=self._dropped),
            self._head,
            self._dropped,
        )
        self.state = State.BETWEEN
        self._head = b""
        self._dropped = 0
        return rejected


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


def _other_encoding(prolog: bytes) -> bytes:
    """
    The last declaration in C{prolog} if it names an encoding other than
    UTF-8 (or ASCII, a part of it); empty otherwise.
    """
    found = _DECLARED_ENCODING.findall(prolog)
    if found and found[-1][1].decode("ascii").lower() not in _UTF8_NAMES:
        return found[-1][0]
    return b""


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
