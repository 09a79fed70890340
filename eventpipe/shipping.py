"""
Shipping: one shipment per sealed segment, from the spool to the
destination.

    render (in a worker process: validate, wrap in <EVENTS>, quarantine,
            JSON, gzip)
      -> upload (IUploader)
      -> remove the segment (the "reset")
    and on any failure: wait (exponential backoff with jitter), then again.

A shipment's lifecycle is an explicit L{Phase}.  At most
C{upload_concurrency} shipments render and upload at once (slots), so
rendered files never pile up while the destination is down; a slot is held
for one attempt only, never while a shipment waits to retry, so one segment
that keeps failing cannot keep the others out.  An attempt drops its
rendered files when it ends: rendering a segment again gives the same
bytes.  A delivery wakes the shipments waiting to retry: the destination is
back.

Each render and each upload has a time limit (C{--render-timeout},
C{--upload-timeout}): one past it is abandoned (its worker process killed,
its thread replaced) and the attempt fails.  A segment whose render fails
L{RENDER_ATTEMPTS} times in a row is moved to the spool's C{failed/}
directory -- set aside, never deleted -- and the others go on.

The format, compression and key of a segment are fixed when it is sealed.
If the key turns out to hold another writer's object (the spool's sequence
counter was lost, or two instances share an instance id), the segment takes
the next free sequence number at once, within the same attempt.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, DeferredList, DeferredSemaphore
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from eventpipe.config.settings import Settings
from eventpipe.destinations import IUploader, KeyConflict, UploadError, UploadRequest
from eventpipe.logs import Logger
from eventpipe.metrics import Metrics, quarantined, reason_hint
from eventpipe.naming import RENUMBERS, object_key
from eventpipe.render.batch import render_segment
from eventpipe.retry import Retry, backoff_policy
from eventpipe.shipment import (
    QUARANTINE_TYPE,
    RENDER_ATTEMPTS,
    Phase,
    RenderFailed,
    Shipment,
    describe,
    render_fault,
    upload_requests,
)
from eventpipe.spool.layout import Segment
from eventpipe.spool.spool import Spool
from eventpipe.worker import MACHINE

log = Logger()

RunAway = Callable[..., "Deferred[Any]"]


class Shipping:
    """
    Every sealed segment not yet delivered, each with its retry chain.

    @param render_in_worker: C{render_in_worker(f, *args)} runs the render
        in a worker process and returns a Deferred (cancelling it abandons
        the render and replaces the worker).
    @param sealer: C{sealer(f, *args)} runs a removal or a rename in the
        thread that seals.
    @param on_delivered: called after each delivery (space was freed).
    """

    def __init__(
        self,
        settings: Settings,
        spool: Spool,
        uploader: IUploader,
        clock: IReactorTime,
        render_in_worker: RunAway,
        metrics: Metrics,
        *,
        sealer: RunAway,
        jitter: Callable[[], float] = random.random,
        on_delivered: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.spool = spool
        self.uploader = uploader
        self.clock = clock
        self.render_in_worker = render_in_worker
        # Removing and renaming segments: in the thread that seals.
        self.in_sealer = sealer
        self.metrics = metrics
        self._on_delivered = on_delivered
        self.shipments: dict[str, Shipment] = {}
        self.last_attempt_error: str | None = None
        # Since the last delivery: failed attempts, the next one's time, and
        # what the last failure says to do.
        self.failed_attempts = 0
        self.next_attempt_at: float | None = None
        self.last_attempt_hint = ""
        # Why the destination's probe fails (see EventpipeService); cleared
        # by a probe or a delivery that succeeds.
        self.probe_error: str | None = None
        self.last_delivery_at: float | None = None
        self.events_quarantined = 0
        # Since the start: events delivered, and pieces the renders set
        # aside (counted at the first render of a segment).
        self.events_delivered = 0
        self.pieces_found = 0
        # Renders that succeeded (whose fault a failure is, see Shipment.counts).
        self.renders_done = 0
        # What the stop left: segments, events in them, whether that count
        # is exact (segments found at start-up and not rendered are not
        # counted), from what is known -- no segment is read to count it.
        self.left_at_stop: tuple[int, int, bool] | None = None
        self._policy = backoff_policy(settings.retry_initial, settings.retry_max, jitter=jitter)
        self._slots = DeferredSemaphore(settings.upload_concurrency)

    @property
    def segments_waiting(self) -> int:
        """Sealed segments not yet delivered."""
        return len(self.shipments)

    def events_waiting(self) -> tuple[int, bool]:
        """Events in the segments not yet delivered, and whether that is all of them."""
        known = [s.events for s in self.shipments.values()]
        return sum(n for n in known if n is not None), None not in known

    def oldest_started(self) -> float | None:
        starts = [s.segment.started for s in self.shipments.values() if s.segment.started]
        return min(starts) if starts else None

    def key_for(self, segment: Segment) -> str:
        return object_key(segment.name, segment.extension, self.settings.prefix)

    def ship(self, segment: Segment) -> None:
        """Start shipping a sealed segment; retried until delivered."""
        shipment = Shipment(segment, self.clock.seconds())
        self.shipments[segment.name] = shipment
        shipment.retry = Retry(
            self.clock,
            lambda attempt: Deferred.fromCoroutine(self._attempt(shipment, attempt)),
            self._delay_for,
            lambda failure, attempt, delay: self._attempt_failed(shipment, failure, attempt, delay),
        )
        d = shipment.retry.result
        d.addCallbacks(
            lambda attempts: self._ended(shipment, attempts),
            lambda failure: self._not_delivered(shipment, failure),
        )
        d.addBoth(self._forget, shipment)
        d.addErrback(
            lambda failure: log.failure("after shipping {name}", failure, name=segment.name)
        )

    def _forget(self, result: object, shipment: Shipment) -> object:
        self.shipments.pop(shipment.segment.name, None)
        self._forget_rendered(shipment)
        return result

    def wake_waiting(self) -> int:
        """
        Make every shipment waiting to retry try now (the destination seems
        back, or the service is stopping); how many were woken.
        """
        woken = 0
        for shipment in list(self.shipments.values()):
            if shipment.phase is Phase.WAITING and shipment.retry is not None:
                if shipment.retry.waiting:
                    shipment.phase = Phase.QUEUED
                    shipment.retry.wake()
                    woken += 1
        return woken

    async def drain(self, timeout: float) -> None:
        """
        Try every segment now, those waiting to retry included, and wait
        until each is delivered, or C{timeout} seconds; then stop the
        retries of those left (they stay in the spool).
        """
        waiting = [s.deferred for s in self.shipments.values() if s.deferred is not None]
        if getattr(self.uploader, "refusing", None) is not None:
            # The destination is refused (it ignores conditional writes):
            # nothing can ship, so nothing is waited for.
            waiting = []
        if waiting:
            woken = self.wake_waiting()
            log.info(
                "shipping {count} segments before stopping (at most {seconds:.0f} s; "
                "{woken} were waiting to retry and are tried now)",
                count=len(waiting),
                seconds=timeout,
                woken=woken,
            )
            give_up = self.clock.callLater(max(0.0, timeout), self.stop_shipping)
            await DeferredList(waiting, consumeErrors=True)
            if give_up.active():
                give_up.cancel()
        self.stop_shipping()

    def stop_shipping(self) -> None:
        """Note what is left (see L{left_at_stop}), then L{cancel}."""
        if self.left_at_stop is None:
            events, exact = self.events_waiting()
            self.left_at_stop = (self.segments_waiting, events, exact)
        self.cancel()

    def cancel(self) -> None:
        """Stop every shipment (the segments stay in the spool)."""
        for shipment in list(self.shipments.values()):
            if shipment.deferred is not None:
                shipment.deferred.cancel()

    # One attempt: render, upload, remove.

    def retry_policy(self, policy: Callable[[int], float]) -> None:
        """Back off so from now on (the settings were reloaded)."""
        self._policy = policy

    def retry_delay(self, attempt: int) -> float:
        """The backoff before attempt C{attempt + 1} (jittered)."""
        return self._policy(attempt)

    def _delay_for(self, failure: Failure, attempt: int) -> float:
        error = failure.value
        if isinstance(error, UploadError) and not error.transient:
            return self.settings.retry_max
        return self._policy(attempt)

    async def _attempt(self, shipment: Shipment, attempt: int) -> int:
        shipment.phase = Phase.QUEUED
        await self._slots.acquire()
        try:
            began = self.clock.seconds()
            shipment.phase = Phase.RENDERING
            shipment.failing_key = None
            shipment.attempting(self.renders_done)
            if not await self._render(shipment):
                return attempt
            shipment.phase = Phase.UPLOADING
            await self._deliver(shipment)
            # The reset: a failure here is retried like any other (the
            # upload is found done next time).
            shipment.phase = Phase.REMOVING
            segment = shipment.segment
            self.spool.forget(segment, await self.in_sealer(self.spool.remove, segment))
            if shipment.quarantine_key is not None:
                assert shipment.result is not None
                await self.in_sealer(self.spool.forget_written, shipment.result.source_sha256)
            shipment.phase = Phase.DELIVERED
            self.metrics.upload_seconds.observe(self.clock.seconds() - began)
            return attempt
        finally:
            self._slots.release()
            self._forget_rendered(shipment)

    async def _render(self, shipment: Shipment) -> bool:
        """
        Render the segment.

        @return: False when the segment was set aside instead.
        @raise RenderFailed: the render failed (and is tried again).
        """
        segment = shipment.segment
        fmt, compress = segment.format
        shipment.batch_path = self.spool.rendered_path(segment, segment.extension)
        shipment.quarantine_path = self.spool.rendered_path(segment, ".quarantine")
        rendering = self.render_in_worker(
            render_segment,
            segment.path,
            shipment.batch_path,
            shipment.quarantine_path,
            fmt,
            compress,
            self.settings.event_tag,
            self.settings.repair_tag_names,
            self.settings.max_event_size,
        )
        rendering.addTimeout(self.settings.render_timeout, self.clock)
        try:
            result = await rendering
        except CancelledError:
            raise
        except Exception as error:
            # Only a failure that belongs to the segment counts: one of the
            # machine (an OOM kill, EIO, a worker that cannot start) is
            # retried with backoff for as long as it lasts, like an outage.
            if isinstance(error, FileNotFoundError) and not os.path.lexists(segment.path):
                # Not a fault to wait out: there is nothing left to ship.
                self.spool.forget(segment, True)
                shipment.phase = Phase.GONE
                log.error(
                    "{name} is gone from the spool ({path} was removed by something other "
                    "than eventpipe): its events cannot be shipped",
                    name=segment.name,
                    path=segment.path,
                )
                return False
            fault = render_fault(error)
            counted = shipment.counts(fault, self.renders_done)
            if counted:
                shipment.render_failures += 1
            if shipment.render_failures >= RENDER_ATTEMPTS:
                await self._set_aside(shipment, error)
                return False
            raise RenderFailed(error, counted, fault) from error
        shipment.render_failures = 0
        self.renders_done += 1
        shipment.result = result
        if shipment.events is None:
            shipment.events = result.events + result.quarantined
        shipment.rendered = True
        if not shipment.counted:
            shipment.counted = True
            for reason, count in result.found.items():
                quarantined(self.metrics, reason, count, self.clock.seconds())
                self.pieces_found += count
        self.spool.rendered_bytes += result.batch_bytes + result.quarantine_bytes
        return True

    async def _set_aside(self, shipment: Shipment, error: BaseException) -> None:
        segment = shipment.segment
        where = await self.in_sealer(self.spool.put_aside, segment)
        self.spool.forget(segment, True)
        shipment.phase = Phase.SET_ASIDE
        self.metrics.segments_set_aside.inc()
        log.error(
            "set aside {name}: it failed to render {count} times in a row, last: {error}; "
            "it is kept in {where} (never deleted) and the other segments go on; once the "
            "cause is fixed, move it back into {sealed} and restart to ship it",
            name=segment.name,
            count=shipment.render_failures,
            error=describe(error),
            where=where,
            sealed=self.spool.sealed_dir,
        )

    async def _deliver(self, shipment: Shipment) -> None:
        """
        Upload the rendered segment; a key that holds another writer's
        object gives the segment the next free sequence number, at once,
        up to L{RENUMBERS} times in a row.
        """
        first = self.key_for(shipment.segment)
        for _ in range(RENUMBERS):
            try:
                await self._upload(shipment)
                return
            except KeyConflict as conflict:
                await self._renumber(shipment, conflict)
        raise UploadError(
            f"{RENUMBERS} keys in a row, {first} to the one before "
            f"{self.key_for(shipment.segment)}, hold another writer's objects",
            transient=False,
            hint="another writer delivers under this prefix and instance id "
            f"({self.settings.instance_id}): stop it, or give every instance its own "
            "--instance-id; the segment stays in the spool and is tried again at the "
            "longest retry delay, and the other segments go on",
        )

    async def _renumber(self, shipment: Shipment, conflict: KeyConflict) -> None:
        old = shipment.segment
        new = await self.in_sealer(self.spool.renumber, old)
        shipment.segment = new
        self.shipments.pop(old.name, None)
        self.shipments[new.name] = shipment
        # The rendered files keep their names; only the keys change.
        self.metrics.key_conflicts.inc()
        log.error(
            "{conflict}: two writers share instance id {instance} (two hosts or containers "
            "with one name?), or this spool lost its sequence file; the object is left "
            "alone, and {name} ships as {new} under {key}",
            conflict=str(conflict),
            instance=self.settings.instance_id,
            name=old.name,
            new=new.name,
            key=self.key_for(new),
        )

    async def _upload(self, shipment: Shipment) -> None:
        # The quarantine first, once: if the batch's key is taken, the
        # segment is renumbered and its quarantine object stays where it is
        # -- remembered on disk, so that a restart does not write it again
        # under the new number.
        result = shipment.result
        assert result is not None
        if result.quarantined and shipment.quarantine_key is None:
            shipment.quarantine_key = await self.in_sealer(self.spool.written, result.source_sha256)
        for request in upload_requests(shipment, self.settings.instance_id, self.settings.prefix):
            # The key a failure is about: the batch's, or its quarantine's.
            shipment.failing_key = request.key
            await self._send(request)
            shipment.failing_key = None
            if request.content_type == QUARANTINE_TYPE:
                shipment.quarantine_key = request.key
                await self.in_sealer(self.spool.note_written, result.source_sha256, request.key)

    async def _send(self, request: UploadRequest) -> None:
        sending = self.uploader.upload(request)
        sending.addTimeout(self.settings.upload_timeout, self.clock)
        await sending

    def _attempt_failed(
        self, shipment: Shipment, failure: Failure, attempt: int, delay: float
    ) -> None:
        shipment.phase = Phase.WAITING
        error = failure.value
        hint = getattr(error, "hint", "")
        description = describe(error)
        shipment.last_error = description
        if isinstance(error, RenderFailed):
            if error.counted:
                whose = f"{shipment.render_failures} of {RENDER_ATTEMPTS} before it is set aside"
            elif error.fault == MACHINE:
                whose = "a fault of the machine, not of the segment: not counted against it"
            else:
                whose = "not counted against it until other segments render meanwhile"
            log.error(
                "rendering {name} failed ({whose}): {error}; next attempt in {delay:.1f} s",
                name=shipment.segment.name,
                whose=whose,
                error=describe(error.error),
                delay=delay,
            )
            return
        self.metrics.uploads.labels("failure").inc()
        self.metrics.upload_retries.inc()
        self.last_attempt_error = description
        self.failed_attempts += 1
        self.next_attempt_at = self.clock.seconds() + delay
        self.last_attempt_hint = hint
        log.error(
            "delivering {key} to {where} failed (attempt {attempt}): {error}{hint}; "
            "next attempt in {delay:.1f} s, the segment stays in the spool",
            key=shipment.failing_key or self.key_for(shipment.segment),
            where=self.uploader.description,
            attempt=attempt,
            error=description,
            hint=f" -- {hint}" if hint else "",
            delay=delay,
        )

    # The end of a chain.

    def _ended(self, shipment: Shipment, attempts: int) -> None:
        if shipment.phase in (Phase.SET_ASIDE, Phase.GONE):
            return
        result = shipment.result
        assert result is not None
        self.events_quarantined += result.quarantined
        self.last_attempt_error = None
        self.probe_error = None
        self.failed_attempts = 0
        self.next_attempt_at = None
        self.last_attempt_hint = ""
        self.last_delivery_at = self.clock.seconds()
        self.metrics.uploads.labels("success").inc()
        self.metrics.events_delivered.inc(result.events)
        self.events_delivered += result.events
        if result.repaired:
            log.info(
                "repaired the element names of {count} events of {name} (--repair-acm-tag-names)",
                count=result.repaired,
                name=shipment.segment.name,
            )
        if result.quarantined:
            log.warn(
                "quarantined {count} pieces of {name} under {key}: {reasons}",
                count=result.quarantined,
                name=shipment.segment.name,
                key=shipment.quarantine_key,
                reasons="; ".join(
                    f"{n} x {reason}" + (f" ({reason_hint(reason)})" if reason_hint(reason) else "")
                    for reason, n in result.reasons.items()
                ),
            )
        log.info(
            "delivered {key}: {events} events, {bytes} bytes, {seconds:.3f} s, attempt {attempt}",
            key=self.key_for(shipment.segment) if result.events else "(no good events)",
            events=result.events,
            bytes=result.batch_bytes,
            seconds=self.clock.seconds() - shipment.started,
            attempt=attempts,
        )
        self._on_delivered()
        self.wake_waiting()

    def _forget_rendered(self, shipment: Shipment) -> None:
        result = shipment.result
        if not shipment.rendered or result is None:
            return
        shipment.rendered = False
        self.spool.rendered_bytes -= result.batch_bytes + result.quarantine_bytes
        for path in (shipment.batch_path, shipment.quarantine_path):
            if path:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass

    def _not_delivered(self, shipment: Shipment, failure: Failure) -> None:
        shipment.phase = Phase.STOPPED
        if failure.check(CancelledError):
            return
        log.failure(
            "shipping {name} stopped; it stays in the spool",
            failure,
            name=shipment.segment.name,
        )
