"""
What a segment's delivery already wrote (C{written/<digest>}), so that a
renumbered segment never writes its quarantine object twice.
"""

from __future__ import annotations

import os
import re

from eventpipe import fs
from eventpipe.spool.layout import SpoolState


class WrittenNotes(SpoolState):
    """Notes of what deliveries wrote, by the segment's digest."""

    def written(self, source: str) -> str | None:
        """
        The key of the quarantine object a delivery of the segment whose
        digest is C{source} already wrote, in this life or an earlier one.
        """
        try:
            with open(self._written_path(source), "rb") as stream:
                return stream.read().decode("utf-8").strip() or None
        except (FileNotFoundError, UnicodeDecodeError):
            return None

    def note_written(self, source: str, key: str) -> None:
        """
        Remember, durably (for a thread), that the delivery of segment
        C{source} wrote its quarantine object under C{key}.
        """
        path = self._written_path(source)
        partial = path + ".partial"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, fs.FILE_MODE)
        try:
            os.write(fd, key.encode("utf-8") + b"\n")
            if self.fsync != "never":
                fs.fsync_file(fd)
        finally:
            os.close(fd)
        os.replace(partial, path)
        if self.fsync != "never":
            fs.fsync_directory(self.written_dir)

    def forget_written(self, source: str) -> None:
        """The segment C{source} is delivered: what it wrote need not be remembered."""
        try:
            os.unlink(self._written_path(source))
        except OSError:
            # A note left behind costs a few bytes; it names no other
            # segment (every segment has its own digest).
            pass

    def _written_path(self, source: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{16,128}", source):
            raise ValueError(f"not a digest: {source!r}")
        return os.path.join(self.written_dir, source)
