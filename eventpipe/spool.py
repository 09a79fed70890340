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

import ctypes
import errno
import os
import re
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from eventpipe.framing import Rejected
from eventpipe.naming import (
    format_of,
    sealed_at,
    segment_name,
    sequence_of,
    split_segment_file,
)
from eventpipe.records import count_events, encode_event, encode_rejected

FSYNC_MODES = ("never", "seal", "always")

_FILE_MODE = 0o600
_DIR_MODE = 0o700


# The record format written (see eventpipe.records); older ones are read.
FORMAT = 2


# At most this many buffers go to one writev (the system allows 1024).
_GATHERED = 512


class SpoolFormatError(Exception):
    """The spool was written by a newer release, in a format this one cannot read."""


class SpoolWriteError(Exception):
    """
    Appending failed (a full disk, an I/O error).  Nothing of the failed
    append was kept: the segment is as it was before the call.
    """

    def __init__(self, error: OSError) -> None:
        super().__init__(f"cannot write to the spool: {error.strerror or error}")
        self.error = error


@dataclass(frozen=True)
class Detached:
    """A segment set aside to be sealed: it takes no more appends."""

    path: str
    size: int
    # When its first event was appended, and when the seal was decided
    # (which names it).
    started: float
    stamp: float
    events: int | None
    extension: str


@dataclass(frozen=True)
class Segment:
    """A sealed segment: its name fixes the object key."""

    name: str
    path: str
    size: int
    # When its first event was appended; for a segment found on disk at
    # start-up, when it was sealed (the first event is not older than that
    # by more than a rotation interval).
    started: float = 0.0
    # Events in it, when known (None for a segment found on disk).
    events: int | None = None
    # The batch's extension, fixed when it was sealed (it says the format
    # and compression); empty for a segment sealed without one.
    extension: str = ""

    @property
    def sequence(self) -> int:
        return sequence_of(self.name)

    @property
    def format(self) -> tuple[str, str]:
        """The batch format and compression of this segment."""
        return format_of(self.extension)


def private_makedirs(path: str) -> None:
    """Like os.makedirs, but every directory it creates is 0700."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent and parent != path:
        private_makedirs(parent)
    try:
        os.mkdir(path, _DIR_MODE)
    except FileExistsError:
        pass


_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def _renameat2() -> Callable[..., int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None
    function.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


_RENAMEAT2 = _renameat2()


def rename_noreplace(source: str, target: str) -> OSError | None:
    """
    Rename C{source} to C{target}, atomically, unless C{target} exists.

    Linux's C{renameat2(RENAME_NOREPLACE)} where the system and filesystem
    have it; otherwise (NFS, CIFS, some FUSE mounts) a hard link, which
    fails on an existing name, then an unlink.  A crash between those two
    leaves the data under both names: L{Spool.recover} finds the pair by
    identity (device and inode) and keeps one.

    @return: None; or, when the link was made but the old name could not be
        removed (EIO, EACCES), why: the move is done (C{target} holds the
        data), and C{source} is a second name the caller must remove.
    @raise FileExistsError: C{target} exists; nothing was changed.
    """
    if _RENAMEAT2 is not None:
        if (
            _RENAMEAT2(
                _AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE
            )
            == 0
        ):
            return None
        number = ctypes.get_errno()
        if number not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(number, os.strerror(number), source, None, target)
    os.link(source, target)
    try:
        os.unlink(source)
    except FileNotFoundError:
        return None
    except OSError as error:
        return error
    return None


def identity(path: str) -> tuple[int, int] | None:
    """A regular file's identity (device, inode), or None for anything else."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(found.st_mode):
        return None
    return found.st_dev, found.st_ino


def _fsync_file(fd: int) -> None:
    os.fsync(fd)


def fsync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
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
            private_makedirs(path)
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

    # Start-up.

    def recover(self) -> list[Segment]:
        """
        Make the spool ready after a start: remove half-made rendered files;
        give every segment found under two names (a move cut short between
        its link and its unlink) one name; raise the sequence counter above
        every sealed name (the C{sequence} file may be lost or damaged);
        finish unfinished seals and seal a leftover current segment; and
        return every sealed segment, oldest first.  Their names -- and so
        their keys -- are the ones they had.

        What is already sealed is known by identity (device and inode),
        never by a link count: another link (a backup made with C{cp -al},
        an operator's C{ln}) changes nothing.  Nothing holding data is
        removed without a L{notice} that names it.
        """
        for name in os.listdir(self.rendered_dir):
            os.unlink(os.path.join(self.rendered_dir, name))
        known = self._one_name_each()
        segments = self.sealed()
        # Set-aside segments keep their numbers too: one moved back by hand
        # must not meet a new segment under its name.
        numbers = [segment.sequence for segment in [*segments, *self.set_aside()]]
        if numbers:
            self._next_sequence = max(self._next_sequence, max(numbers) + 1)
        for name in sorted(os.listdir(self.sealing_dir)):
            detached = self._found_detached(name, known)
            if detached is not None:
                self.finish(detached)
        if os.path.exists(self.current_path):
            found = os.lstat(self.current_path)
            if self._already_sealed(self.current_path, known):
                pass
            elif not found.st_size:
                os.unlink(self.current_path)
            else:
                self.current_size = found.st_size
                self.current_started = self._now()
                self.seal()
        segments = self.sealed()
        self.sealed_bytes = sum(segment.size for segment in segments)
        return segments

    def _one_name_each(self) -> dict[tuple[int, int], str]:
        """
        Give every segment in C{sealed/} and C{failed/} one name, and return
        them by identity.  Two names of one file in C{sealed/} are a
        renumbering cut short: the higher number is the one it was moving
        to (the lower one's key was taken).  A name in C{sealed/} of a file
        in C{failed/} is a setting aside cut short: it stays set aside.
        """
        names: dict[tuple[int, int], list[tuple[int, str]]] = {}
        for rank, directory in ((1, self.failed_dir), (0, self.sealed_dir)):
            for filename in os.listdir(directory):
                path = os.path.join(directory, filename)
                # A set-aside name may carry a suffix (see put_aside).
                parts = split_segment_file(re.sub(r"\.\d+$", "", filename))
                key = identity(path)
                if parts is None or key is None:
                    continue
                names.setdefault(key, []).append((rank * 2**62 + sequence_of(parts[0]), path))
        known = {}
        for key, paths in names.items():
            paths.sort()
            kept = paths[-1][1]
            for _, path in paths[:-1]:
                self._notice(
                    "removed {path}: a second name of {kept} (the same file), left by a move "
                    "that was cut short; the segment ships once, as {kept}",
                    path=path,
                    kept=kept,
                )
                os.unlink(path)
            known[key] = kept
        return known

    def _already_sealed(self, path: str, known: dict[tuple[int, int], str]) -> bool:
        """
        Whether C{path} is the same file as a segment sealed (or set aside)
        already: a seal cut short between its link and its unlink.  If so,
        the extra name is removed, and said.
        """
        key = identity(path)
        if key is None or key not in known:
            return False
        self._notice(
            "removed {path}: it is {kept} (the same file), sealed already by a seal that was "
            "cut short; the segment ships once, as {kept}",
            path=path,
            kept=known[key],
        )
        os.unlink(path)
        return True

    def _check_format(self) -> None:
        """
        Read what this spool was written in; a spool without the file was
        written in format 1, which this release reads.  Record the format
        written from now on.

        @raise SpoolFormatError: a newer release wrote it.
        """
        path = os.path.join(self.directory, "format")
        try:
            with open(path, "rb") as stream:
                found = int(stream.read().strip() or b"1")
        except FileNotFoundError:
            found = 1
        except ValueError:
            raise SpoolFormatError(f"{path}: not a format number") from None
        if found > FORMAT:
            raise SpoolFormatError(
                f"written by a newer eventpipe (record format {found}); "
                f"this release reads formats up to {FORMAT}"
            )
        if found < FORMAT:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE)
            try:
                os.write(fd, b"%d\n" % FORMAT)
            finally:
                os.close(fd)

    def _found_detached(self, name: str, known: dict[tuple[int, int], str]) -> Detached | None:
        """A segment set aside by an earlier life that did not finish sealing it."""
        path = os.path.join(self.sealing_dir, name)
        match = re.match(r"^(\d+)-\d+((?:\.xml|\.json)(?:\.gz)?)$", name)
        if match is None or self._already_sealed(path, known):
            return None
        found = os.lstat(path)
        if not found.st_size:
            os.unlink(path)
            return None
        stamp = int(match.group(1)) / 1000
        return Detached(path, found.st_size, stamp, stamp, None, match.group(2))

    def sealed(self) -> list[Segment]:
        """The sealed segments on disk, oldest (lowest sequence) first."""
        return self._segments_in(self.sealed_dir)

    def set_aside(self) -> list[Segment]:
        """The segments set aside as unrenderable (see L{put_aside})."""
        return self._segments_in(self.failed_dir)

    def _segments_in(self, directory: str) -> list[Segment]:
        segments = []
        for filename in os.listdir(directory):
            parts = split_segment_file(filename)
            if parts is not None:
                name, extension = parts
                path = os.path.join(directory, filename)
                try:
                    size = os.lstat(path).st_size
                except FileNotFoundError:
                    continue
                segments.append(
                    Segment(
                        name,
                        path,
                        size,
                        sealed_at(name),
                        extension=extension or self.extension,
                    )
                )
        segments.sort(key=lambda segment: segment.sequence)
        return segments

    # Appending.

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
                _fsync_file(fd)
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
                    _FILE_MODE,
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

    # Sealing.

    def current_age(self) -> float:
        """
        Seconds since the first append to the current segment (0 if empty),
        on the monotonic clock.
        """
        if self._current_born is None:
            return 0.0
        return max(0.0, self._monotonic() - self._current_born)

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
                _fsync_file(fd)
            finally:
                os.close(fd)
        name, path = self._move_to_free_name(detached.path, detached.stamp, detached.extension)
        self.sync_error = None
        if self.fsync != "never":
            try:
                fsync_directory(self.sealed_dir)
                fsync_directory(self.directory)
            except OSError as error:
                self.sync_error = error
        return Segment(
            name, path, detached.size, detached.started, detached.events, detached.extension
        )

    def renumber(self, segment: Segment) -> Segment:
        """
        Give a sealed segment the next free sequence number (a new key): its
        key turned out to be taken at the destination by another object.
        """
        name, path = self._move_to_free_name(
            segment.path, sealed_at(segment.name), segment.extension
        )
        if self.fsync != "never":
            fsync_directory(self.sealed_dir)
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
                left = rename_noreplace(source, path)
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
        fd = os.open(self._sequence_path, os.O_WRONLY | os.O_CREAT, _FILE_MODE)
        try:
            os.pwrite(fd, b"%020d\n" % value, 0)
            if self.fsync != "never":
                _fsync_file(fd)
        finally:
            os.close(fd)

    # Delivered.

    def rendered_path(self, segment: Segment, suffix: str) -> str:
        return os.path.join(self.rendered_dir, segment.name + suffix)

    def delete(self, segment: Segment) -> None:
        """Forget a delivered segment (the "reset"): L{remove}, then L{forget}."""
        self.forget(segment, self.remove(segment))

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
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE)
        try:
            os.write(fd, key.encode("utf-8") + b"\n")
            if self.fsync != "never":
                _fsync_file(fd)
        finally:
            os.close(fd)
        os.replace(partial, path)
        if self.fsync != "never":
            fsync_directory(self.written_dir)

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
                left = rename_noreplace(segment.path, target)
            except FileExistsError:
                target = os.path.join(self.failed_dir, f"{filename}.{attempt}")
                continue
            self._moved(segment.path, target, left)
            if self.fsync != "never":
                fsync_directory(self.failed_dir)
                fsync_directory(self.sealed_dir)
            return target
        raise OSError(errno.EEXIST, "no free name", self.failed_dir)

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


@dataclass(frozen=True)
class Contents:
    """What a spool directory holds that is not delivered (see L{waiting_in})."""

    segments: int
    events: int
    bytes: int
    # When the oldest waiting segment was sealed (or the current one last
    # written); None when nothing waits.
    oldest: float | None
    set_aside: tuple[str, ...]


def waiting_in(directory: str) -> Contents:
    """
    What a spool directory holds that is not delivered, read off the
    directory alone (no Spool, no lock): segments and events in sealed/,
    sealing/ and current, their bytes (rendered/ included), and the
    segments set aside in failed/.  What is not a regular file (a directory,
    a FIFO) is a segment that cannot be read: counted, never opened.
    """
    segments = events = size = 0
    oldest: float | None = None
    paths = [os.path.join(directory, "current")]
    for folder in ("sealed", "sealing", "rendered"):
        try:
            names = sorted(os.listdir(os.path.join(directory, folder)))
        except OSError:
            continue
        paths += [os.path.join(directory, folder, name) for name in names]
    for path in paths:
        try:
            found = os.lstat(path)
        except OSError:
            continue
        folder, name = os.path.split(path)
        if name == "current":
            if not found.st_size:
                continue
            stamp: float | None = found.st_mtime
        else:
            split = split_segment_file(name)
            stamp = sealed_at(split[0]) if split and folder.endswith("sealed") else None
        size += found.st_size
        if folder.endswith("rendered"):
            continue
        segments += 1
        if stamp is not None:
            oldest = stamp if oldest is None else min(oldest, stamp)
        if not stat.S_ISREG(found.st_mode):
            continue
        try:
            with open(path, "rb") as stream:
                events += count_events(stream)
        except OSError:
            pass
    try:
        aside = tuple(sorted(os.listdir(os.path.join(directory, "failed"))))
    except OSError:
        aside = ()
    return Contents(segments, events, size, oldest, aside)


def runs_within(
    sizes: list[int], used: int, limit: int, headers: list[bool] | None = None, restart: int = 0
) -> list[int]:
    """
    Where to cut a sequence of records so that no segment passes C{limit}
    bytes, except by one record that is larger than the limit on its own.

    @param sizes: the records' sizes, in order.
    @param used: bytes already in the current segment.
    @param headers: which records belong to the record after them (a cut
        never falls between the two).
    @param restart: bytes a new segment starts with (a header written again).
    @return: the length of each run: the first goes into the current
        segment (it may be 0: seal first), each next one into a new segment.
    """
    runs = [0]
    waiting = waiting_size = 0
    for index, size in enumerate(sizes):
        if headers is not None and headers[index]:
            runs[-1] += 1
            waiting += 1
            waiting_size += size
            continue
        if used and used + waiting_size + size > limit:
            # Cut before this record and the headers just before it.
            runs[-1] -= waiting
            runs.append(waiting)
            used = 0 if waiting else restart
        runs[-1] += 1
        used += waiting_size + size
        waiting = waiting_size = 0
    return runs


def disk_reserve(upload_concurrency: int, max_file_size: int) -> int:
    """
    Free space to keep on the spool's filesystem: room to render the
    segments being shipped (a batch is about the size of its segment), and
    some to spare.
    """
    return int(upload_concurrency * max_file_size * 1.25) + 2**20
