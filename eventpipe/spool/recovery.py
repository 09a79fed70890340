"""
Recovery at start-up: what an earlier life left half done is finished or
undone, every segment keeps one name, and the counter never goes back.
"""

from __future__ import annotations

import os
import re

from eventpipe import fs
from eventpipe.naming import sealed_at, sequence_of, split_segment_file
from eventpipe.spool.layout import FORMAT, Detached, Segment, SpoolFormatError, SpoolState


class Recovery(SpoolState):
    """The spool's start-up, and the segments it holds."""

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
                key = fs.identity(path)
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
        key = fs.identity(path)
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
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, fs.FILE_MODE)
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
