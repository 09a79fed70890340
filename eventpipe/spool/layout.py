"""
The spool's vocabulary: its fsync modes and record format, the segments it
hands out (sealed, or set aside to be sealed), its errors, and the state
its parts share.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from eventpipe.naming import format_of, sequence_of

FSYNC_MODES = ("never", "seal", "always")


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


def disk_reserve(upload_concurrency: int, max_file_size: int) -> int:
    """
    Free space to keep on the spool's filesystem: room to render the
    segments being shipped (a batch is about the size of its segment), and
    some to spare.
    """
    return int(upload_concurrency * max_file_size * 1.25) + 2**20


class SpoolState:
    """What the parts of L{eventpipe.spool.spool.Spool} share (set by its constructor)."""

    directory: str
    instance_id: str
    fsync: str
    extension: str
    current_path: str
    sealed_dir: str
    rendered_dir: str
    sealing_dir: str
    failed_dir: str
    written_dir: str
    current_size: int
    current_events: int
    current_started: float | None
    sealed_bytes: int
    _now: Callable[[], float]
    _monotonic: Callable[[], float]
    _notice: Callable[..., None]
    _sequence_path: str
    _next_sequence: int
    _second_names: dict[str, list[str]]
    _fd: int | None
    _current_born: float | None

    # The spool's own steps, which recovery calls.
    finish: Callable[[Detached], Segment]
    seal: Callable[[], Segment | None]
