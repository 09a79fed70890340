"""
The top service: it owns the stages and the order in which they start and
stop, and waits for each step.  (C{MultiService} stops its children all at
once without waiting, which is why the order lives here.)

Start: recover the spool (seal a leftover current segment) -> start the
render and upload threads -> ship every sealed segment -> start the
rotation timer -> listen -> serve metrics.

Stop: stop listening -> close the connections (bounded) -> seal -> ship
until C{--shutdown-timeout}, trying the segments that wait to retry at once
-> stop the upload threads -> stop the render workers -> stop the sealer ->
close the spool and say what stays behind -> stop serving metrics.  A step
that fails does not skip the others, and the steps after the drain share a
small fixed margin beyond the timeout.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from eventpipe import __version__
from eventpipe.admission import Admission
from eventpipe.config.settings import Settings
from eventpipe.destinations import IUploader
from eventpipe.health import Status
from eventpipe.ingest.ingest import Ingest
from eventpipe.listeners import loopback_only
from eventpipe.lock import SpoolLock
from eventpipe.logs import Logger, set_level
from eventpipe.metrics import Metrics
from eventpipe.probe import DestinationProbe
from eventpipe.reload import apply_live, live_settings, reloadable
from eventpipe.rotation import Rotation
from eventpipe.samples import Lag, Rates
from eventpipe.shipping.chain import Shipping
from eventpipe.spool.spool import Spool
from eventpipe.stopping import report_left, ship_before_stopping
from eventpipe.threads import BlockingWork

log = Logger()

# How long connections get to close at shutdown before they are aborted.
CLOSE_TIMEOUT = 2.0
# How long to wait for a thread pool's threads to end.
POOL_STOP_TIMEOUT = 2.0
# What the steps after the drain may take beyond --shutdown-timeout, in all,
# and what each of them gets at least.
STOP_MARGIN = 1.5
MIN_STEP = 0.25
# Seconds between two summaries of ingest in the log.
SUMMARY_INTERVAL = 60.0


class EventpipeService(Service):
    """
    @param render: where segments are rendered (the render worker
        processes, L{eventpipe.threads.ProcessWork}, in a deployment).
    @param sealer: where seals are finished and delivered segments removed
        (a one-thread pool: the reactor never waits on a disk flush).
    @param jitter: the retry backoff's jitter source (tests pass 0).
    """

    name = "eventpipe"

    def __init__(
        self,
        settings: Settings,
        spool: Spool,
        uploader: IUploader,
        clock: IReactorTime,
        render: BlockingWork,
        sealer: BlockingWork,
        metrics: Metrics | None = None,
        jitter: Callable[[], float] = random.random,
        announcement: str = "",
        lock: SpoolLock | None = None,
    ) -> None:
        self.settings = settings
        self.lock = lock
        self.announcement = announcement
        self.spool = spool
        self.uploader = uploader
        self.clock = clock
        self.render = render
        self.sealer = sealer
        self.metrics = metrics if metrics is not None else Metrics()
        self._stages(jitter)
        self.probe = DestinationProbe(
            uploader,
            self.shipping,
            self.metrics,
            clock,
            running=lambda: bool(self.running),
            serving=lambda: bool(self.listeners),
        )
        # Receivers of events (TCP, TLS, UDP); metrics and signal handling.
        self.listeners: list[IService] = []
        # Where the listeners take events, as written (tcp:8080, udp 10.0.0.5:5000).
        self.listening_on: list[str] = []
        self._summary = LoopingCall(self.ingest.log_summary)
        self._summary.clock = clock
        self._lag = Lag(clock, self.metrics)
        self._rates = Rates(
            clock, lambda: self.ingest.events_received, lambda: self.shipping.events_delivered
        )
        self.started_at = clock.seconds()
        self.listening = False
        self.support: list[IService] = []

    def _stages(self, jitter: Callable[[], float]) -> None:
        """The stages of an event's journey, wired to one another."""
        settings, spool, uploader, clock = self.settings, self.spool, self.uploader, self.clock
        self.admission = Admission(
            clock,
            self.metrics,
            settings.allow,
            settings.max_connections,
            settings.max_connections_per_host,
        )
        self.shipping = Shipping(
            settings,
            spool,
            uploader,
            clock,
            self.render.run,
            self.metrics,
            jitter=jitter,
            sealer=self.sealer.run,
            on_delivered=lambda: self.ingest.update_backpressure(),
        )
        self.rotation = Rotation(
            spool,
            clock,
            settings,
            self.metrics,
            self.shipping,
            self.sealer,
            # Space may have come back from outside: look again.
            before_check=lambda: self.ingest.update_backpressure(),
        )
        self.ingest = Ingest(
            spool,
            clock,
            settings,
            self.admission,
            self.metrics,
            on_segment_full=self.rotation.seal_full,
        )

    def add_listener(self, service: IService) -> None:
        """A service that takes events in: started last, stopped first."""
        self.listeners.append(service)

    def add_support(self, service: IService) -> None:
        """
        A service around the pipeline (metrics, signals): started after the
        listeners, stopped after everything else.
        """
        self.support.append(service)

    # Start.

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        # Ports below 1024 are bound here, before twistd drops privileges;
        # nothing is read before startService.
        for service in (*self.listeners, *self.support):
            service.privilegedStartService()

    def startService(self) -> None:
        super().startService()
        log.info(
            "eventpipe {version} starting: {settings}",
            version=__version__,
            settings=self.announcement or "settings given in code",
        )
        self.started_at = self.clock.seconds()
        if self.lock is not None:
            # twistd may have forked since the lock was taken.
            self.lock.record(self.spool.instance_id)
        segments = self.spool.recover()
        if segments:
            log.info(
                "recovered {count} sealed segments ({size} bytes) to ship",
                count=len(segments),
                size=sum(segment.size for segment in segments),
            )
        self.render.start()
        self.sealer.start()
        self.uploader.start()
        self.probe.probe()
        for segment in segments:
            self.shipping.ship(segment)
        self.rotation.start()
        self._summary.start(SUMMARY_INTERVAL, now=False).addErrback(
            lambda failure: log.failure("the ingest summary stopped", failure)
        )
        self._rates.start()
        self._lag.start()
        for service in (*self.listeners, *self.support):
            service.startService()
        self.listening = True
        self._say_where()

    def _say_where(self) -> None:
        """Where events are taken, and from whom."""
        if not self.listening_on:
            return
        log.info("listening for events on {where}", where=", ".join(self.listening_on))
        open_to_all = [where for where in self.listening_on if not loopback_only(where)]
        if open_to_all and not self.settings.allow:
            log.warn(
                "{where}: anyone who can reach it may send events (no --allow); "
                "set --allow to the ACM appliance's address",
                where=", ".join(open_to_all),
            )

    def rates(self) -> dict[str, Any]:
        """Events received and delivered per second (see L{Rates.rates})."""
        return self._rates.rates()

    # Stop.

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        """
        Each step is waited for, and one that fails is logged without
        skipping the steps after it.  Everything after the drain shares
        what is left of C{--shutdown-timeout} plus L{STOP_MARGIN}: the
        whole stop fits in the timeout and a small, fixed margin.
        """
        stop = _Stop(self.clock.seconds() + self.settings.shutdown_timeout)
        for name, step in _STOP_STEPS:
            try:
                await Deferred.fromCoroutine(step(self, stop))
            except Exception:
                log.failure(
                    "stopping: {step} failed; going on with the next steps (what was not "
                    "delivered stays in the spool)",
                    step=name,
                )

    # SIGHUP.

    def reload(
        self, fresh: Any, changed: dict[str, tuple[Any, Any]]
    ) -> tuple[list[str], list[str]]:
        """
        Apply the settings read again (C{fresh}, an L{Options}) that can
        change while the service runs; C{changed} says what differs.

        @return: the options applied, and those that need a restart (not
            applied).
        """
        applied, restart = reloadable(changed)
        if applied:
            self.settings = live_settings(self.settings, fresh)
            apply_live(self.settings, self.shipping, self.rotation, self.admission, self.ingest)
            if "log-level" in applied:
                set_level(fresh["log-level"])
        return applied, restart

    # What an operator asks.

    def status(self) -> Status:
        starts = []
        oldest = self.shipping.oldest_started()
        if oldest is not None:
            starts.append(oldest)
        if self.spool.current_size and self.spool.current_started is not None:
            starts.append(self.spool.current_started)
        events, exact = self.shipping.events_waiting()
        return Status(
            now=self.clock.seconds(),
            started_at=self.started_at,
            listening=self.listening,
            connections_open=len(self.ingest.receivers),
            waiting_bytes=self.spool.waiting_bytes,
            max_spool_size=self.settings.max_spool_size,
            segments_waiting=self.shipping.segments_waiting,
            oldest_waiting_since=min(starts) if starts else None,
            last_event_at=self.ingest.last_event_at,
            last_delivery_at=self.shipping.last_delivery_at,
            last_attempt_error=self.shipping.last_attempt_error,
            probe_error=self.shipping.probe_error,
            paused_for=frozenset(self.ingest.paused_for),
            destination=self.uploader.description,
            set_aside=tuple(segment.name for segment in self.spool.set_aside()),
            events_received=self.ingest.events_received,
            events_delivered=self.shipping.events_delivered,
            # Stored in a delivered quarantine object (not merely found).
            pieces_quarantined=self.shipping.events_quarantined,
            recent_quarantine=tuple(self.metrics.recent_quarantine),
            events_waiting=events + self.spool.current_events,
            current_events=self.spool.current_events,
            failed_attempts=self.shipping.failed_attempts,
            next_attempt_at=self.shipping.next_attempt_at,
            hint=self.shipping.last_attempt_hint,
            events_waiting_exact=exact,
        )


async def _all(stops: Any) -> None:
    """Call every stop at once and wait for all of them; log failures."""
    results = await DeferredList([maybeDeferred(stop) for stop in stops], consumeErrors=True)
    for ok, failure in results:
        if not ok:
            log.failure("a service failed to stop", failure)


class _Stop:
    """What the steps of one stop share: its deadline, and what could not be written."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.unwritten = 0

    def left(self, clock: IReactorTime, cap: float) -> float:
        """What a step after the drain may take."""
        return min(cap, max(MIN_STEP, self.deadline + STOP_MARGIN - clock.seconds()))


async def _stop_listening(service: EventpipeService, stop: _Stop) -> None:
    service.admission.close()
    service.listening = False
    await _all(listener.stopService for listener in service.listeners)


async def _stop_timers(service: EventpipeService, stop: _Stop) -> None:
    service.probe.cancel()
    if service._summary.running:
        service._summary.stop()
    service._lag.stop()
    service._rates.stop()
    await maybeDeferred(service.rotation.stop)


async def _close_connections(service: EventpipeService, stop: _Stop) -> None:
    await service.ingest.close_connections(min(CLOSE_TIMEOUT, service.settings.shutdown_timeout))
    stop.unwritten = service.ingest.flush()
    service.ingest.log_summary()


async def _seal(service: EventpipeService, stop: _Stop) -> None:
    try:
        service.rotation.seal("shutdown")
    except Exception:
        log.failure("sealing at shutdown failed; the current segment stays in the spool")
    await service.rotation.wait()


async def _ship(service: EventpipeService, stop: _Stop) -> None:
    timeout = max(0.0, stop.deadline - service.clock.seconds())
    await Deferred.fromCoroutine(ship_before_stopping(service.shipping, timeout))


async def _stop_uploader(service: EventpipeService, stop: _Stop) -> None:
    await service.uploader.stop(stop.left(service.clock, POOL_STOP_TIMEOUT))


async def _stop_render(service: EventpipeService, stop: _Stop) -> None:
    await service.render.stop(stop.left(service.clock, POOL_STOP_TIMEOUT))


async def _stop_sealer(service: EventpipeService, stop: _Stop) -> None:
    if service.sealer is not service.render:
        await service.sealer.stop(stop.left(service.clock, POOL_STOP_TIMEOUT))


async def _close_spool(service: EventpipeService, stop: _Stop) -> None:
    service.spool.close()
    report_left(
        service.shipping, service.spool, service.ingest, stop.unwritten, bool(service.listeners)
    )
    if service.lock is not None:
        service.lock.release()


async def _stop_support(service: EventpipeService, stop: _Stop) -> None:
    await _all(support.stopService for support in service.support)


# The order of stop.
_STOP_STEPS: list[tuple[str, Callable[[EventpipeService, _Stop], Any]]] = [
    ("stop listening", _stop_listening),
    ("stop the timers", _stop_timers),
    ("close the connections", _close_connections),
    ("seal", _seal),
    ("ship", _ship),
    ("stop the uploads", _stop_uploader),
    ("stop the render workers", _stop_render),
    ("stop the sealer", _stop_sealer),
    ("close the spool", _close_spool),
    ("stop metrics and signals", _stop_support),
]
