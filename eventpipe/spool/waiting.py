"""
What a spool directory holds, read off the directory alone (for C{eventpipe
status} and C{drain}), and where to cut a run of records into segments.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from eventpipe.naming import sealed_at, split_segment_file
from eventpipe.records import count_events


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
