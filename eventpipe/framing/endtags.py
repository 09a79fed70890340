"""
The end-tag finders of an event's body, with their resume cursors: a
plain search while the body has no CDATA or comment, a careful one after.
"""

from __future__ import annotations

from eventpipe.framing.common import (
    _CDATA_CLOSE,
    _CDATA_OPEN,
    _COMMENT_CLOSE,
    _COMMENT_OPEN,
    _LAYOUT_RUN,
    _TAG_DELIMITERS,
    FramerState,
    State,
)


class EndTags(FramerState):
    """The end-tag finders of an event's body, with their resume cursors: a"""

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
