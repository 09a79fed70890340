"""
Back-pressure: every connection stops being read (TCP pushes back on the
sender) while the spool holds more than C{max_spool_size} bytes, while its
filesystem runs below the reserve that rendering needs, or while the disk
refuses writes; reading resumes once there is room again.  What the disk
refused (at most one read per connection, as reading stops) is kept and
written first when it accepts again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from eventpipe.logs import Logger
from eventpipe.protocol import EventReceiver
from eventpipe.spool.layout import SpoolWriteError
from eventpipe.spool.spool import Spool

log = Logger(namespace="eventpipe.ingest")

DISK_RETRY_DELAY = 1.0
LOW_WATER = 0.9
# Why reading is paused.
SPOOL_FULL = "spool full"
DISK_REFUSED = "disk"
DISK_RESERVE = "disk reserve"


class IngestState:
    """What the parts of L{eventpipe.ingest.ingest.Ingest} share (set by its constructor)."""

    spool: Spool
    clock: IReactorTime
    receivers: set[EventReceiver]
    datagram_ports: list[Any]
    paused_for: set[str]
    stopping: bool
    max_spool_size: int
    disk_reserve: int
    recent: Any
    unread_at_stop: int
    _unchecked_bytes: int
    _unwritten: list[Any]
    _disk_retry: IDelayedCall | None
    _all_gone: list[Deferred[None]]
    _closing: IDelayedCall | None
    _summarised_at: float

    # Ingest's own write, which the retry of refused records calls.
    _write: Callable[[list[Any]], bool]


class Backpressure(IngestState):
    """Pausing and resuming every receiver."""

    def update_backpressure(self, check_disk: bool = True) -> None:
        """
        Pause or resume reading: by the bytes waiting in the spool, and by
        the free space left on its filesystem (a reserve is kept so that
        sealed segments can always be rendered and shipped, which is what
        frees space again).

        @param check_disk: look at the free space too (a system call); the
            write path does so only every L{DISK_CHECK_BYTES}, which the
            reserve's spare megabyte covers.
        """
        waiting = self.spool.waiting_bytes
        if waiting >= self.max_spool_size:
            if SPOOL_FULL not in self.paused_for:
                log.warn(
                    "spool holds {waiting} bytes (limit {limit}): reading paused",
                    waiting=waiting,
                    limit=self.max_spool_size,
                )
                self.pause(SPOOL_FULL)
        elif waiting <= self.max_spool_size * LOW_WATER and SPOOL_FULL in self.paused_for:
            log.info("spool down to {waiting} bytes: reading resumed", waiting=waiting)
            self.resume(SPOOL_FULL)
        if not check_disk:
            return
        self._unchecked_bytes = 0
        free = self.spool.free_bytes()
        if free < self.disk_reserve:
            if DISK_RESERVE not in self.paused_for:
                log.warn(
                    "only {free} bytes free on the spool's filesystem, {reserve} are kept "
                    "for rendering: reading paused",
                    free=free,
                    reserve=self.disk_reserve,
                )
                self.pause(DISK_RESERVE)
        elif free >= self.disk_reserve * 1.5 and DISK_RESERVE in self.paused_for:
            log.info("{free} bytes free on the spool's filesystem: reading resumed", free=free)
            self.resume(DISK_RESERVE)

    def pause(self, why: str) -> None:
        if self.stopping:
            # What the kernel holds is read at a stop, whatever the limits.
            self.paused_for.add(why)
            return
        if not self.paused_for:
            for receiver in self.receivers:
                receiver.transport.pauseProducing()  # type: ignore[union-attr]
            for port in self.datagram_ports:
                # Datagrams that arrive meanwhile wait in (or overflow) the
                # kernel's buffer: UDP promises nothing.
                port.stopReading()
        self.paused_for.add(why)

    def resume(self, why: str) -> None:
        if why not in self.paused_for:
            return
        self.paused_for.discard(why)
        if not self.paused_for:
            for receiver in self.receivers:
                receiver.transport.resumeProducing()  # type: ignore[union-attr]
            for port in self.datagram_ports:
                port.startReading()

    def _refused(self, error: SpoolWriteError, records: list[Any]) -> None:
        """Keep them, first in line; stop reading until the disk accepts writes."""
        self._unwritten[:0] = records
        if DISK_REFUSED not in self.paused_for:
            log.error(
                "{error}; reading paused, retrying every {delay} s",
                error=error,
                delay=DISK_RETRY_DELAY,
            )
            self.pause(DISK_REFUSED)
        self._disk_retry = self.clock.callLater(DISK_RETRY_DELAY, self._write_unwritten)

    def _write_unwritten(self) -> None:
        self._disk_retry = None
        records, self._unwritten = self._unwritten, []
        if self._write(records):
            log.info("the spool accepts writes again")
            self.resume(DISK_REFUSED)

    def flush(self) -> int:
        """
        Before sealing at shutdown: one last try to write what the disk
        refused.

        @return: the events that still could not be written (lost).
        """
        if self._disk_retry is None or not self._disk_retry.active():
            return 0
        self._disk_retry.cancel()
        self._write_unwritten()
        if self._disk_retry is None or not self._disk_retry.active():
            return 0
        self._disk_retry.cancel()
        lost = sum(max(kind, 0) for _, kind in self._unwritten)
        log.error(
            "stopping while the spool refuses writes: {count} events read but not written",
            count=lost,
        )
        return lost
