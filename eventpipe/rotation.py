"""
Rotation: when the current segment is sealed.  Every C{check_interval} a
L{TimerService} looks at the current segment's age and size; ingest seals
by size before the append that would pass C{max_file_size}.  A sealed
segment goes straight to shipping.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from eventpipe.config.settings import Settings
from eventpipe.logs import Logger
from eventpipe.metrics import Metrics
from eventpipe.spool.layout import Detached, Segment
from eventpipe.spool.spool import Spool
from eventpipe.threads import BlockingWork

log = Logger()


class Shipper(Protocol):
    def ship(self, segment: Segment) -> None: ...

    def key_for(self, segment: Segment) -> str: ...


class Rotation:
    """
    @param sealer: where the slow part of a seal runs (flushes, the
        sequence file, the rename): one thread, so that the reactor never
        waits on a disk flush and sequence numbers follow the seals' order.
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
        sealer: BlockingWork,
        before_check: Callable[[], None] = lambda: None,
    ) -> None:
        self.spool = spool
        self.clock = clock
        self.settings = settings
        self.metrics = metrics
        self.shipper = shipper
        self.sealer = sealer
        self._before_check = before_check
        self._timer = TimerService(settings.check_interval, self.check)
        self._timer.clock = clock
        self.segments_sealed = 0
        # Seals being finished in the sealer, and ones whose finish failed
        # (tried again at every check).
        self._in_flight: set[Deferred[Any]] = set()
        self._unfinished: list[tuple[Detached, str]] = []

    def start(self) -> None:
        self._timer.startService()

    def every(self, seconds: float) -> None:
        """Check every C{seconds} from now on (the settings were reloaded)."""
        if self._timer.step == seconds:
            return
        running = self._timer.running
        if running:
            self._timer.stopService()
        self._timer.step = seconds
        if running:
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
        unfinished, self._unfinished = self._unfinished, []
        for detached, trigger in unfinished:
            self._finish(detached, trigger)
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

    def seal(self, trigger: str) -> None:
        """
        Set the current segment aside at once (new appends go to a new one),
        finish sealing it in the sealer, then ship it.

        @raise OSError: it could not be set aside; it stays current.
        """
        detached = self.spool.detach()
        if detached is not None:
            self._finish(detached, trigger)

    def _finish(self, detached: Detached, trigger: str) -> None:
        d = self.sealer.run(self.spool.finish, detached)
        self._in_flight.add(d)

        def done(result: object) -> object:
            self._in_flight.discard(d)
            return result

        d.addBoth(done)
        d.addCallbacks(
            lambda segment: self._sealed(segment, trigger),
            lambda failure: self._not_sealed(failure, detached, trigger),
        )
        d.addErrback(lambda failure: log.failure("after sealing", failure))

    def _not_sealed(self, failure: Failure, detached: Detached, trigger: str) -> None:
        self._unfinished.append((detached, trigger))
        error = failure.value
        log.error(
            "sealing {path} failed: {error}; trying again at the next check "
            "(and at the next start)",
            path=detached.path,
            error=getattr(error, "strerror", None) or str(error),
        )

    def wait(self) -> Deferred[Any]:
        """Fires when every seal in flight has finished (at stop)."""
        return DeferredList(list(self._in_flight), consumeErrors=True)

    def _sealed(self, segment: Segment, trigger: str) -> None:
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
