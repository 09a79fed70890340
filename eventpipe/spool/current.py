"""
The current segment: appends as one gathered write each, undone on failure,
and its age on the monotonic clock.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from eventpipe import fs
from eventpipe.framing.common import Rejected
from eventpipe.records import encode_event, encode_rejected
from eventpipe.spool.layout import _GATHERED, SpoolState, SpoolWriteError


class Appending(SpoolState):
    """Appends to the current segment."""

    def append(self, events: Iterable[bytes], rejected: Iterable[Rejected] = ()) -> int:
        """
        Append events and rejected pieces to the current segment, as one
        write.  On failure nothing of this call is kept.

        @return: the number of bytes written.
        @raise SpoolWriteError: the disk refused; the caller may retry later.
        """
        parts = [encode_event(event) for event in events]
        count = len(parts)
        parts.extend(encode_rejected(piece) for piece in rejected)
        return self.append_records(parts, count)

    def append_records(self, records: list[bytes], events: int) -> int:
        """
        Append encoded records (L{eventpipe.records}), or the parts they
        join, C{events} of them events, as one gathered write.  On failure
        nothing of this call is kept.

        @return: the number of bytes written.
        @raise SpoolWriteError: the disk refused; the caller may retry later.
        """
        if not records:
            return 0
        if len(records) > _GATHERED:
            records = [b"".join(records)]
        size = sum(map(len, records))
        fd = self._open_current()
        before = self.current_size
        try:
            written = os.writev(fd, records)
            if written < size:
                rest = memoryview(b"".join(records))[written:]
                while rest:
                    rest = rest[os.write(fd, rest) :]
            if self.fsync == "always":
                fs.fsync_file(fd)
        except OSError as error:
            self._undo(fd, before)
            raise SpoolWriteError(error) from error
        if self.current_started is None:
            self.current_started = self._now()
            self._current_born = self._monotonic()
        self.current_size = before + size
        self.current_events += events
        return size

    def _open_current(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(
                    self.current_path,
                    os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0),
                    fs.FILE_MODE,
                )
            except OSError as error:
                raise SpoolWriteError(error) from error
        return self._fd

    def _undo(self, fd: int, size: int) -> None:
        try:
            os.ftruncate(fd, size)
        except OSError:
            # The record will be found torn at recovery and quarantined.
            pass

    def current_age(self) -> float:
        """
        Seconds since the first append to the current segment (0 if empty),
        on the monotonic clock.
        """
        if self._current_born is None:
            return 0.0
        return max(0.0, self._monotonic() - self._current_born)

    def close(self) -> None:
        """Close the current segment's file (it stays on disk)."""
        if self._fd is not None:
            if self.fsync != "never":
                try:
                    os.fsync(self._fd)
                except OSError:
                    pass
            os.close(self._fd)
            self._fd = None
