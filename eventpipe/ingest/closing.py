"""
Closing at a stop: every connection is read up to what its socket held when
the stop began (to ACM, what the kernel took is delivered), then closed; one
that does not close in time is aborted and its unread bytes counted.  And
the periodic summary of what the connections did.
"""

from __future__ import annotations

import fcntl
import struct
import termios
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, succeed

from eventpipe.ingest.backpressure import IngestState
from eventpipe.logs import Logger

log = Logger(namespace="eventpipe.ingest")


class Closing(IngestState):
    """The stop's close, and the summary of connections."""

    def close_connections(self, timeout: float) -> Deferred[None]:
        """
        Read what the kernel has already accepted on every connection, then
        close it (what each has sent is framed and spooled by then).  ACM
        has no acknowledgement: to it, what the kernel took is delivered.
        So reading resumes whatever paused it (the spool's limit is for
        back-pressure, not a reason to discard), and a connection closes
        once it has been read up to what its socket held when the stop
        began.  Fires when all are gone; connections still open after
        C{timeout} seconds (a TLS peer that never answers the close) are
        aborted, and the bytes their sockets still hold are counted in
        C{unread_at_stop}.
        """
        self.stopping = True
        if not self.receivers:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._all_gone.append(d)
        targets = {}
        for receiver in list(self.receivers):
            targets[receiver] = receiver.bytes_read + unread_bytes(receiver.transport)
            receiver.transport.resumeProducing()  # type: ignore[union-attr]

        def close_read() -> None:
            for receiver, target in list(targets.items()):
                if receiver not in self.receivers:
                    del targets[receiver]
                elif receiver.bytes_read >= target or not unread_bytes(receiver.transport):
                    del targets[receiver]
                    receiver.transport.loseConnection()  # type: ignore[union-attr]
            if targets:
                self._closing = self.clock.callLater(STOP_READ_POLL, close_read)

        close_read()

        def abort(result: object, timeout: float) -> None:
            if self._closing is not None and self._closing.active():
                self._closing.cancel()
            self.unread_at_stop = sum(unread_bytes(r.transport) for r in self.receivers)
            log.warn(
                "{count} connections did not close within {timeout:g} s: aborted, with "
                "{unread} bytes their sockets held unread",
                count=len(self.receivers),
                timeout=timeout,
                unread=self.unread_at_stop,
            )
            for receiver in list(self.receivers):
                receiver.transport.abortConnection()  # type: ignore[union-attr]

        d.addTimeout(timeout, self.clock, onTimeoutCancel=abort)
        return d

    def log_summary(self) -> None:
        """
        One info line for what happened since the last one (connections are
        logged one by one only at debug: ACM may open one per event).
        """
        now = self.clock.seconds()
        recent, self.recent = self.recent, Activity()
        seconds, self._summarised_at = now - self._summarised_at, now
        if not recent:
            return
        log.info(
            "in the last {seconds:.0f} s: connections opened {opened}, closed {closed}, "
            "open {open}; events spooled {events}, bytes {bytes}",
            seconds=seconds,
            opened=recent.opened,
            closed=recent.closed,
            open=len(self.receivers),
            events=recent.events,
            bytes=recent.bytes,
        )


# How often a stop looks whether a connection's socket has been read up.
STOP_READ_POLL = 0.01


def unread_bytes(transport: Any) -> int:
    """
    Bytes the kernel holds for a connection that were not read yet (the
    socket under a TLS layer for a TLS connection); 0 when not known.
    """
    for _ in range(3):
        if transport is None:
            return 0
        try:
            fileno = transport.getHandle().fileno()
            found = fcntl.ioctl(fileno, termios.FIONREAD, b"\0\0\0\0")
            return int(struct.unpack("i", found)[0])
        except Exception:
            transport = getattr(transport, "transport", None)
    return 0


@dataclass
class Activity:
    """What ingest did since the last summary."""

    opened: int = 0
    closed: int = 0
    events: int = 0
    bytes: int = 0

    def __bool__(self) -> bool:
        return bool(self.opened or self.closed or self.events or self.bytes)
