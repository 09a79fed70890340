"""
Names in C{sealed/} and C{failed/}: the sequence counter (a number is never
given out twice) and the moves that never replace a file.
"""

from __future__ import annotations

import errno
import os

from eventpipe import fs
from eventpipe.naming import sealed_at, segment_name
from eventpipe.spool.layout import Segment, SpoolState


class Numbering(SpoolState):
    """Sequence numbers, and moving segments under free names."""

    def renumber(self, segment: Segment) -> Segment:
        """
        Give a sealed segment the next free sequence number (a new key): its
        key turned out to be taken at the destination by another object.
        """
        name, path = self._move_to_free_name(
            segment.path, sealed_at(segment.name), segment.extension
        )
        if self.fsync != "never":
            fs.fsync_directory(self.sealed_dir)
        return Segment(name, path, segment.size, segment.started, segment.events, segment.extension)

    def _moved(self, source: str, target: str, left: OSError | None) -> None:
        """
        Account for a move: the second names of C{source} are now those of
        C{target}, and C{source} is one too when it could not be removed.
        """
        second = self._second_names.pop(source, [])
        if left is not None:
            second.append(source)
            self._notice(
                "moved {source} to {target}, but the old name stays ({error}); it is "
                "removed before the segment is, and at the next start",
                source=source,
                target=target,
                error=left.strerror or str(left),
            )
        if second:
            self._second_names[target] = second

    def _move_to_free_name(self, source: str, stamp: float, extension: str) -> tuple[str, str]:
        """
        Rename C{source} into C{sealed/} under the next sequence number whose
        name is free; every number tried is consumed (recorded before the
        rename), so none is ever given out twice.

        @return: the segment's name and its path.
        """
        for _ in range(1000):
            sequence = self._next_sequence
            name = segment_name(stamp, self.instance_id, sequence)
            path = os.path.join(self.sealed_dir, name + extension)
            self._write_sequence(sequence + 1)
            self._next_sequence = sequence + 1
            try:
                left = fs.rename_noreplace(source, path)
            except FileExistsError:
                continue
            self._moved(source, path, left)
            return name, path
        raise OSError(errno.EEXIST, "no free segment name", self.sealed_dir)

    def _read_sequence(self) -> int:
        try:
            with open(self._sequence_path, "rb") as stream:
                return int(stream.read().strip() or b"0")
        except FileNotFoundError:
            return 0
        except ValueError:
            # A damaged counter: the sealed names still bound it from below,
            # and the time stamp keeps keys apart.
            return 0

    def _write_sequence(self, value: int) -> None:
        """
        Record the next sequence number, overwriting a fixed-width file in
        place: no new block is needed, so sealing works on a full disk.
        """
        fd = os.open(self._sequence_path, os.O_WRONLY | os.O_CREAT, fs.FILE_MODE)
        try:
            os.pwrite(fd, b"%020d\n" % value, 0)
            if self.fsync != "never":
                fs.fsync_file(fd)
        finally:
            os.close(fd)

    def put_aside(self, segment: Segment) -> str:
        """
        Move a sealed segment that cannot be rendered into C{failed/}, under
        the name it has (for a thread).  It is never deleted: once whatever
        kept it from rendering is fixed, moving it back into C{sealed/} and
        restarting ships it under its key.

        @return: where it is now.
        """
        filename = os.path.basename(segment.path)
        target = os.path.join(self.failed_dir, filename)
        for attempt in range(1, 1000):
            try:
                left = fs.rename_noreplace(segment.path, target)
            except FileExistsError:
                target = os.path.join(self.failed_dir, f"{filename}.{attempt}")
                continue
            self._moved(segment.path, target, left)
            if self.fsync != "never":
                fs.fsync_directory(self.failed_dir)
                fs.fsync_directory(self.sealed_dir)
            return target
        raise OSError(errno.EEXIST, "no free name", self.failed_dir)
