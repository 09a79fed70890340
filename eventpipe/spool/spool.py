"""
The spool: events on local disk, between the socket and the destination.

Layout of the spool directory::

    current              the segment being appended to
    sealing/<ms>-<n><ext> segments set aside to be sealed (off the reactor)
    sealed/<name><ext>   sealed segments; <name> and <ext> fix the object key
    rendered/            batch files being made from sealed segments
    failed/<name><ext>   sealed segments set aside because they could not
                         be rendered; never deleted (move one back into
                         sealed/ and restart to ship it again)
    written/<digest>     what a segment's delivery already wrote, by the
                         segment's digest (its quarantine object's key):
                         kept until the segment is delivered, so that a
                         renumbered segment never writes it twice
    sequence             the next sequence number (never reused)
    format               the record format this spool is written in

A segment is a sequence of records (see L{eventpipe.records}).

Plain files only: no reactor.  The time of sealing (wall clock, UTC, for
names) and the age of the current segment (a monotonic clock, so that a
step of the wall clock neither delays nor hastens rotation) come from
injected callables.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from eventpipe import fs
from eventpipe.naming import format_of
from eventpipe.spool.current import Appending
from eventpipe.spool.layout import FSYNC_MODES, Detached, Segment
from eventpipe.spool.recovery import Recovery
from eventpipe.spool.sequence import Numbering
from eventpipe.spool.written import WrittenNotes


class Spool(Recovery, Appending, Numbering, WrittenNotes):
    """
    The current segment, the sealed segments and the sequence counter.

    @param directory: the spool directory (created 0700 if missing).
    @param instance_id: goes into every segment name.
    @param now: returns the current POSIX time (inject the reactor's clock);
        it names segments.
    @param monotonic: a clock that never steps; it measures ages.
    @param extension: the batch extension fixed for what is sealed from now
        on (C{.xml}, C{.json.gz}, ...); a segment found without one takes it.
    @param fsync: C{never}, C{seal} (fsync a segment before sealing it and
        the directory after the rename) or C{always} (also after every
        append).
    @param notice: told, as C{notice(format, **fields)} (a logger's
        C{warn}), of what recovery removes and of moves that left a second
        name behind.
    """

    def __init__(
        self,
        directory: str,
        instance_id: str,
        now: Callable[[], float],
        fsync: str = "seal",
        monotonic: Callable[[], float] = time.monotonic,
        extension: str = ".xml",
        notice: Callable[..., None] = lambda format, **fields: None,
    ) -> None:
        if fsync not in FSYNC_MODES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_MODES)}")
        self.directory = directory
        self.instance_id = instance_id
        self.fsync = fsync
        self._now = now
        self._monotonic = monotonic
        self._notice = notice
        # Second names that moves left behind (the old name could not be
        # removed after the link), by the path that now holds the data:
        # they go before it does, so that no later start finds them alone.
        self._second_names: dict[str, list[str]] = {}
        format_of(extension)
        self.extension = extension
        self.current_path = os.path.join(directory, "current")
        self.sealed_dir = os.path.join(directory, "sealed")
        self.rendered_dir = os.path.join(directory, "rendered")
        self.sealing_dir = os.path.join(directory, "sealing")
        self.failed_dir = os.path.join(directory, "failed")
        self.written_dir = os.path.join(directory, "written")
        self._sequence_path = os.path.join(directory, "sequence")
        for path in (
            directory,
            self.sealed_dir,
            self.rendered_dir,
            self.sealing_dir,
            self.failed_dir,
            self.written_dir,
        ):
            fs.private_makedirs(path)
        self._check_format()
        self._detached = 0
        self._fd: int | None = None
        self.current_size = 0
        self.current_events = 0
        self.current_started: float | None = None
        self._current_born: float | None = None
        # Set when the last seal could not flush its directory: the segment
        # is sealed, but a power loss may undo the rename.
        self.sync_error: OSError | None = None
        self.sealed_bytes = 0
        self.rendered_bytes = 0
        self._next_sequence = self._read_sequence()

    # Sealing.

    def seal(self) -> Segment | None:
        """
        Seal the current segment here and now: L{detach}, then L{finish}.
        An empty segment is never sealed.

        @return: the sealed segment, or None when there was nothing to seal.
        @raise OSError: see L{detach} and L{finish}.
        """
        detached = self.detach()
        return None if detached is None else self.finish(detached)

    def detach(self) -> Detached | None:
        """
        The part of a seal that must happen at once, on the reactor: the
        current segment takes no more appends and moves to C{sealing/} (a
        rename: nothing is flushed here), and a new one begins.  Its bytes
        still count as waiting.

        @return: what to L{finish}, or None when there was nothing to seal.
        @raise OSError: the rename failed; the current segment stays as it
            was (its file is opened again at the next append).
        """
        if self.current_size == 0:
            return None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        stamp = self._now()
        self._detached += 1
        path = os.path.join(
            self.sealing_dir, f"{int(stamp * 1000):015d}-{self._detached:06d}{self.extension}"
        )
        os.rename(self.current_path, path)
        detached = Detached(
            path,
            self.current_size,
            self.current_started or stamp,
            stamp,
            self.current_events,
            self.extension,
        )
        self.sealed_bytes += detached.size
        self.current_size = 0
        self.current_events = 0
        self.current_started = None
        self._current_born = None
        return detached

    def finish(self, detached: Detached) -> Segment:
        """
        The slow part of a seal, for a thread (one at a time: it hands out
        sequence numbers).  In order: the segment's data reaches the disk,
        then the sequence counter, then the rename into C{sealed/} (which
        never replaces a file, and fixes the segment's name and key), then
        the directories.  A failure to flush the directories is kept in
        C{sync_error}: the segment is sealed all the same.

        @raise OSError: the data, the sequence file or the rename could not
            be written; the segment stays in C{sealing/} (sealed at the
            next start if not before).
        """
        if self.fsync != "never":
            fd = os.open(detached.path, os.O_RDONLY)
            try:
                fs.fsync_file(fd)
            finally:
                os.close(fd)
        name, path = self._move_to_free_name(detached.path, detached.stamp, detached.extension)
        self.sync_error = None
        if self.fsync != "never":
            try:
                fs.fsync_directory(self.sealed_dir)
                fs.fsync_directory(self.directory)
            except OSError as error:
                self.sync_error = error
        return Segment(
            name, path, detached.size, detached.started, detached.events, detached.extension
        )

    # Delivered.

    def rendered_path(self, segment: Segment, suffix: str) -> str:
        return os.path.join(self.rendered_dir, segment.name + suffix)

    def remove(self, segment: Segment) -> bool:
        """
        Remove a delivered segment's file (for a thread): its second names
        first (see L{rename_noreplace}), so that none is ever found alone.

        @return: whether it was there.
        @raise OSError: a name could not be removed; the segment stays.
        """
        for path in list(self._second_names.get(segment.path, ())):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            self._second_names[segment.path].remove(path)
        self._second_names.pop(segment.path, None)
        try:
            os.unlink(segment.path)
        except FileNotFoundError:
            return False
        return True

    def forget(self, segment: Segment, removed: bool) -> None:
        """Account for a removed segment (on the reactor, like every count)."""
        if removed:
            self.sealed_bytes -= segment.size

    def free_bytes(self) -> int:
        """Bytes available to this process on the spool's filesystem."""
        try:
            stats = os.statvfs(self.directory)
        except OSError:
            return 0
        return stats.f_bavail * stats.f_frsize

    @property
    def waiting_bytes(self) -> int:
        """Bytes not yet delivered: current, sealed and rendered."""
        return self.current_size + self.sealed_bytes + self.rendered_bytes
