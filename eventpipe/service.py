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

import os
import random
import signal
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from eventpipe import __version__
from eventpipe.admission import Admission
from eventpipe.config.settings import Settings
from eventpipe.destinations import IUploader, UnconditionalStore
from eventpipe.health import Status
from eventpipe.ingest import Ingest
from eventpipe.listeners import loopback_only
from eventpipe.lock import SpoolLock
from eventpipe.logs import Logger
from eventpipe.metrics import Metrics
from eventpipe.rotation import Rotation
from eventpipe.shipping.chain import Shipping
from eventpipe.spool.spool import Spool
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
# The counts kept for the status page's chart: one sample every RATE_INTERVAL
# seconds, for the last RATE_SAMPLES of them (five minutes).
RATE_INTERVAL = 2.0
RATE_SAMPLES = 151
# Seconds between two looks at the reactor's lateness (the benchmark sets a
# shorter one through EVENTPIPE_LAG_INTERVAL, to catch short stalls).
LAG_INTERVAL = float(os.environ.get("EVENTPIPE_LAG_INTERVAL", "") or 0.1)


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
        # The destination's probe: how many so far, and the next one.
        self._probes = 0
        self._probe_call: Any = None
        self.announcement = announcement
        self.spool = spool
        self.uploader = uploader
        self.clock = clock
        self.render = render
        self.sealer = sealer
        self.metrics = metrics if metrics is not None else Metrics()
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
            render.run,
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
        # Receivers of events (TCP, TLS, UDP); metrics and signal handling.
        self.listeners: list[IService] = []
        # Where the listeners take events, as written (tcp:8080, udp 10.0.0.5:5000).
        self.listening_on: list[str] = []
        self._summary = LoopingCall(self.ingest.log_summary)
        self._summary.clock = clock
        self._lag = LoopingCall(self._measure_lag)
        self._lag.clock = clock
        self._lag_due = 0.0
        self._samples: deque[tuple[float, int, int]] = deque(maxlen=RATE_SAMPLES)
        self._sampler = LoopingCall(self._sample)
        self._sampler.clock = clock
        self.started_at = clock.seconds()
        self.listening = False
        self.support: list[IService] = []

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
        self._probe()
        for segment in segments:
            self.shipping.ship(segment)
        self.rotation.start()
        self._summary.start(SUMMARY_INTERVAL, now=False).addErrback(
            lambda failure: log.failure("the ingest summary stopped", failure)
        )
        self._sampler.start(RATE_INTERVAL, now=True).addErrback(
            lambda failure: log.failure("the rate samples stopped", failure)
        )
        self._lag_due = self.clock.seconds() + LAG_INTERVAL
        self._lag.start(LAG_INTERVAL, now=False).addErrback(
            lambda failure: log.failure("the reactor lag measure stopped", failure)
        )
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

    def _sample(self) -> None:
        self._samples.append(
            (self.clock.seconds(), self.ingest.events_received, self.shipping.events_delivered)
        )

    def rates(self) -> dict[str, Any]:
        """Events received and delivered per second, one figure per sample, oldest first."""
        samples = list(self._samples)
        received, delivered = [], []
        for (then, got, sent), (now, got_now, sent_now) in zip(samples, samples[1:]):
            seconds = max(now - then, 1e-3)
            received.append(round((got_now - got) / seconds, 3))
            delivered.append(round((sent_now - sent) / seconds, 3))
        return {
            "interval_seconds": RATE_INTERVAL,
            "slots": RATE_SAMPLES - 1,
            "received_per_second": received,
            "delivered_per_second": delivered,
        }

    def _measure_lag(self) -> None:
        now = self.clock.seconds()
        self.metrics.reactor_lag.observe(max(0.0, now - self._lag_due))
        self._lag_due = now + LAG_INTERVAL

    def _probe(self) -> None:
        """
        Probe the destination.  While it fails, that is the delivery state
        (as a failed delivery would be: counted, shown, alerted on), and the
        probe is tried again with the retry backoff until it, or a
        delivery, succeeds.
        """
        self._probe_call = None
        self._probes += 1
        self.uploader.check().addCallbacks(
            self._destination_usable, self._destination_unusable
        ).addErrback(lambda failure: log.failure("probing the destination", failure))

    def _destination_usable(self, where: str) -> None:
        again = " again" if self.shipping.probe_error is not None else ""
        self.shipping.probe_error = None
        if getattr(self.uploader, "allow_unconditional", False) and "conditional" in where:
            log.warn("destination {where} is reachable{again}", where=where, again=again)
        else:
            log.info("destination {where} is reachable{again}", where=where, again=again)

    def _destination_unusable(self, failure: Any) -> None:
        error = failure.value
        hint = getattr(error, "hint", "")
        if not self.running:
            return
        if isinstance(error, UnconditionalStore):
            # Nothing is written to it (the uploader refuses every
            # delivery); a serving service stops rather than spool for a
            # destination it will never use.  What arrived stays spooled.
            log.critical(
                "refusing {where}: {error} ({hint}); stopping, the spool keeps what arrived",
                where=self.uploader.description,
                error=str(error),
                hint=hint,
            )
            stop = getattr(self.clock, "stop", None)
            if self.listeners and stop is not None:
                self.clock.callLater(0, stop)
            return
        if self.shipping.last_delivery_at is not None and self._probes > 1:
            # A delivery succeeded meanwhile: the deliveries say the rest.
            return
        description = str(error) + (f" ({hint})" if hint else "")
        self.shipping.probe_error = description
        self.metrics.uploads.labels("failure").inc()
        delay = self.shipping.retry_delay(self._probes)
        log.error(
            "destination {where} is not usable yet: {error}; events are spooled and "
            "delivered once it is (probed again in {delay:.1f} s)",
            where=self.uploader.description,
            error=description,
            delay=delay,
        )
        self._probe_call = self.clock.callLater(delay, self._probe)

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
        deadline = self.clock.seconds() + self.settings.shutdown_timeout
        unwritten = 0

        def left(cap: float) -> float:
            # What a step after the drain may take.
            return min(cap, max(MIN_STEP, deadline + STOP_MARGIN - self.clock.seconds()))

        async def stop_listening() -> None:
            self.admission.close()
            self.listening = False
            await _all(service.stopService for service in self.listeners)

        async def stop_timers() -> None:
            if self._probe_call is not None and self._probe_call.active():
                self._probe_call.cancel()
            for loop in (self._summary, self._lag, self._sampler):
                if loop.running:
                    loop.stop()
            await maybeDeferred(self.rotation.stop)

        async def close_connections() -> None:
            nonlocal unwritten
            await self.ingest.close_connections(min(CLOSE_TIMEOUT, self.settings.shutdown_timeout))
            unwritten = self.ingest.flush()
            self.ingest.log_summary()

        async def seal() -> None:
            try:
                self.rotation.seal("shutdown")
            except Exception:
                log.failure("sealing at shutdown failed; the current segment stays in the spool")
            await self.rotation.wait()

        async def ship() -> None:
            await Deferred.fromCoroutine(
                self.shipping.drain(max(0.0, deadline - self.clock.seconds()))
            )

        async def stop_uploader() -> None:
            await self.uploader.stop(left(POOL_STOP_TIMEOUT))

        async def stop_render() -> None:
            await self.render.stop(left(POOL_STOP_TIMEOUT))

        async def stop_sealer() -> None:
            if self.sealer is not self.render:
                await self.sealer.stop(left(POOL_STOP_TIMEOUT))

        async def close_spool() -> None:
            self.spool.close()
            self._report_left(unwritten)
            if self.lock is not None:
                self.lock.release()

        async def stop_support() -> None:
            await _all(service.stopService for service in self.support)

        for name, step in (
            ("stop listening", stop_listening),
            ("stop the timers", stop_timers),
            ("close the connections", close_connections),
            ("seal", seal),
            ("ship", ship),
            ("stop the uploads", stop_uploader),
            ("stop the render workers", stop_render),
            ("stop the sealer", stop_sealer),
            ("close the spool", close_spool),
            ("stop metrics and signals", stop_support),
        ):
            try:
                await Deferred.fromCoroutine(step())
            except Exception:
                log.failure(
                    "stopping: {step} failed; going on with the next steps (what was not "
                    "delivered stays in the spool)",
                    step=name,
                )

    def _report_left(self, unwritten: int) -> None:
        """
        Say what was not delivered, and where it waits; and what could not
        be kept.  Counted from what is known (no segment is read on the
        reactor, whatever the spool holds).
        """
        if self.shipping.left_at_stop is None:
            self.shipping.stop_shipping()
        assert self.shipping.left_at_stop is not None
        segments, events, exact = self.shipping.left_at_stop
        if self.spool.current_size:
            segments += 1
            events += self.spool.current_events
        lost = unwritten
        unread = self.ingest.unread_at_stop
        if lost or unread:
            log.error(
                "stopping: {lost} events were read but could not be written to the spool, "
                "and {unread} bytes the kernel had accepted could not be read in time; "
                "they are lost",
                lost=lost,
                unread=unread,
            )
        if not segments:
            log.info("stopped: everything received was delivered")
            return
        log.warn(
            "stopping with {count} {segments}, {more}{events} events not delivered; they stay "
            "in {spool} and {then}",
            count=segments,
            segments="segment" if segments == 1 else "segments",
            more="" if exact else "at least ",
            events=events,
            spool=self.spool.directory,
            # eventpipe drain serves nothing: it is run again, not restarted.
            then="ship at the next start" if self.listeners else "ship when drain runs again",
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
        from eventpipe.config.table import PARAMETERS, RELOADABLE
        from eventpipe.logs import set_level
        from eventpipe.retry import backoff_policy

        applied = [name for name in changed if name in RELOADABLE]
        restart = [name for name in changed if name not in RELOADABLE]
        if not applied:
            return applied, restart
        new = Settings(**fresh.settings_fields())
        # The Settings fields of the reloadable options (the table says which).
        fields = {"allow"} | {
            p.setting for p in PARAMETERS if p.name in RELOADABLE and p.setting is not None
        }
        self.settings = replace(self.settings, **{f: getattr(new, f) for f in fields})
        settings = self.settings
        self.shipping.settings = self.rotation.settings = settings
        self.admission.allow = settings.allow
        self.admission.max_connections = settings.max_connections
        self.admission.max_per_host = settings.max_connections_per_host
        self.ingest.idle_timeout = settings.idle_timeout
        self.ingest.max_spool_size = settings.max_spool_size
        self.shipping.retry_policy(backoff_policy(settings.retry_initial, settings.retry_max))
        self.rotation.every(settings.check_interval)
        if "log-level" in applied:
            set_level(fresh["log-level"])
        self.ingest.update_backpressure()
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


class ReloadOnHangup(Service):
    """
    SIGHUP reads the settings again and applies what can change while the
    service runs (as log shippers do on SIGHUP); connections stay open.
    Logs are reopened on SIGUSR1, which twistd handles.
    """

    def __init__(self, reactor: Any, reload: Callable[[], None]) -> None:
        self.reactor = reactor
        self.reload = reload

    def startService(self) -> None:
        super().startService()
        signal.signal(signal.SIGHUP, self._hangup)

    def _hangup(self, number: int, frame: Any) -> None:
        if self.running:
            self.reactor.callFromThread(self.reload)

    def stopService(self) -> None:
        self.running = False
        # A SIGHUP during the stop changes nothing.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)


async def _all(stops: Any) -> None:
    """Call every stop at once and wait for all of them; log failures."""
    results = await DeferredList([maybeDeferred(stop) for stop in stops], consumeErrors=True)
    for ok, failure in results:
        if not ok:
            log.failure("a service failed to stop", failure)
