"""
Rotation: when the current segment is sealed.  Every C{check_interval} a
L{TimerService} looks at the current segment's age and size; ingest seals
by size before the append that would pass C{max_file_size}.  A sealed
segment goes straight to shipping.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from eventpipe.logs import Logger
from eventpipe.metrics import Metrics
from eventpipe.settings import Settings
from eventpipe.spool import Segment, Spool

log = Logger()


class Shipper(Protocol):
    def ship(self, segment: Segment) -> None: ...

    def key_for(self, segment: Segment) -> str: ...


class Rotation:
    """
    @param before_check: called at every check before the rotation
        conditions are looked at (the ingest looks at free space again).
    """

    def __init__(
        self,
        spool: Spool,
        clock: IReactorTime,
        settings: Settings,
        metrics: Metrics,
        shipper: Shipper,
        before_check: Callable[[], None] = lambda: None,
    ) -> None:
        self.spool = spool
        self.clock = clock
        self.settings = settings
        self.metrics = metrics
        self.shipper = shipper
        self._before_check = before_check
        self._timer = TimerService(settings.check_interval, self.check)
        self._timer.clock = clock
        self.segments_sealed = 0

    def start(self) -> None:
        self._timer.startService()

    def stop(self) -> Deferred[None] | None:
        """Stop the timer (sealing at shutdown is the service's call)."""
        if self._timer.running:
            return self._timer.stopService()  # type: ignore[no-any-return]
        return None

    def check(self) -> None:
        """
        Called by the timer: seal the current segment when it is old or
        large enough.  Never raises (that would stop the timer for good).
        """
        try:
            self._before_check()
        except Exception:
            log.failure("looking at the spool's free space failed")
        if self.spool.current_size >= self.settings.max_file_size:
            self.seal_full()
        elif (
            self.spool.current_size and self.spool.current_age() >= self.settings.rotation_interval
        ):
            self._seal_logged("time")

    def seal_full(self) -> None:
        """
        The current segment is full (the next record would take it past
        max-file-size): seal it now.  Never raises.
        """
        self._seal_logged("size")

    def _seal_logged(self, trigger: str) -> None:
        """Seal; if that fails, say so: the segment grows on, the timer tries again."""
        try:
            self.seal(trigger)
        except OSError as error:
            log.error(
                "sealing failed: {error}; the segment grows on, the timer tries again",
                error=error.strerror or str(error),
            )
        except Exception:
            log.failure("sealing failed; the segment grows on, the timer tries again")

    def seal(self, trigger: str) -> Segment | None:
        """
        Seal the current segment (if it holds anything) and ship it.

        @raise OSError: the spool could not seal; the segment stays current.
        """
        segment = self.spool.seal()
        if segment is None:
            return None
        self.segments_sealed += 1
        self.metrics.segments_sealed.labels(trigger).inc()
        log.info(
            "sealed {name} ({trigger}): {events} events, {size} bytes, key {key}",
            name=segment.name,
            trigger=trigger,
            events=segment.events,
            size=segment.size,
            key=self.shipper.key_for(segment),
        )
        if self.spool.sync_error is not None:
            log.warn(
                "sealed {name}, but its directory could not be flushed to disk: {error}; "
                "a power loss now may undo the seal (a crash does not)",
                name=segment.name,
                error=self.spool.sync_error.strerror or str(self.spool.sync_error),
            )
        self.shipper.ship(segment)
        return segment
