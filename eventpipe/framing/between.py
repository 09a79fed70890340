"""
The scanner between documents: layout, declarations, comments and
processing instructions are skipped, anything else is kept as a run of
garbage and set aside.
"""

from __future__ import annotations

from eventpipe.framing.common import (
    _COMMENT_CLOSE,
    _COMMENT_OPEN,
    _PI_CLOSE,
    _PI_OPEN,
    _PROLOG,
    _TAG_DELIMITERS,
    _WHITESPACE,
    REASON_DOCTYPE,
    REASON_OUTSIDE,
    FramerState,
    Rejected,
    _other_encoding,
)


class BetweenDocuments(FramerState):
    """The scanner between documents: layout, declarations, comments and"""

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
