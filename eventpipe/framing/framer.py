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

from eventpipe.framing.between import BetweenDocuments
from eventpipe.framing.common import (
    _IN_EVENT,
    _WHITESPACE,
    REASON_INTERRUPTED,
    REASON_TOO_LARGE,
    REASON_TRUNCATED,
    Rejected,
    State,
)
from eventpipe.framing.endtags import EndTags


class EventFramer(BetweenDocuments, EndTags):
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
        pos, n = 0, len(buf)
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
                        rejected.append(self._oversize(buf, pos, interrupted))
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
                    rejected.append(self._oversize(buf, pos, end))
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

    def _oversize(self, buf: bytearray, start: int, end: int) -> Rejected:
        """An event from C{start} to C{end} past the limit: its head is kept, the rest counted."""
        self._head = bytes(buf[start : start + self.max_event_size])
        self._dropped = end - start - self.max_event_size
        return self._finish_oversize()

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

    # After an oversized event.

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
