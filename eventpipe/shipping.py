"""
Shipping: one Deferred chain per sealed segment, from the spool to the
destination.

    render (in a thread: validate, wrap in <EVENTS>, quarantine, JSON, gzip)
      -> upload (IUploader)
      -> delete the segment (the "reset")
    and on any failure: wait (exponential backoff with jitter), then again.

At most C{upload_concurrency} segments are rendered and uploading at once
(slots), so rendered files never pile up while the destination is down.  A
segment keeps its slot and its rendered batch across failed attempts (an
outage does not re-validate the same events over and over), and a delivery
wakes the segments waiting to retry: the destination is back.

The format, compression and key of a segment are fixed when it is sealed.
If the key turns out to be taken by another object at the destination (the
spool's sequence counter was lost), the segment takes the next free
sequence number: a new key.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, DeferredList, DeferredSemaphore
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from eventpipe.destinations import IUploader, KeyConflict, UploadError, UploadRequest
from eventpipe.logs import Logger
from eventpipe.metrics import Metrics, quarantine_reason
from eventpipe.naming import object_key, quarantine_key
from eventpipe.render import CONTENT_TYPES, RenderResult, render_segment
from eventpipe.retry import Retry, backoff_policy
from eventpipe.settings import Settings
from eventpipe.spool import Segment, Spool

log = Logger()

RunInThread = Callable[..., "Deferred[Any]"]


class Shipment:
    """One sealed segment on its way out."""

    def __init__(self, segment: Segment, started: float) -> None:
        self.segment = segment
        self.started = started
        self.result: RenderResult | None = None
        self.slot_held = False
        # Whether the rendered files are on disk now (they are removed after
        # a failed attempt and made again, identical, for the next one).
        self.rendered = False
        self.batch_path = ""
        self.quarantine_path = ""
        # The retries that ship it; their result fires when it is delivered
        # (or the shipping is cancelled at shutdown).
        self.retry: Retry | None = None

    @property
    def deferred(self) -> Deferred[Any] | None:
        return self.retry.result if self.retry is not None else None


class Shipping:
    """
    Every sealed segment not yet delivered, each with its retry chain.

    @param render_in_thread: C{render_in_thread(f, *args)} runs the render
        away from the reactor and returns a Deferred.
    @param on_delivered: called after each delivery (space was freed).
    """

    def __init__(
        self,
        settings: Settings,
        spool: Spool,
        uploader: IUploader,
        clock: IReactorTime,
        render_in_thread: RunInThread,
        metrics: Metrics,
        jitter: Callable[[], float] = random.random,
        on_delivered: Callable[[], None] = lambda: None,
        sealer: RunInThread | None = None,
    ) -> None:
        self.settings = settings
        self.spool = spool
        self.uploader = uploader
        self.clock = clock
        self.render_in_thread = render_in_thread
        # Removing and renaming segments: in the thread that seals.
        self.in_sealer = sealer if sealer is not None else render_in_thread
        self.metrics = metrics
        self._on_delivered = on_delivered
        self.shipments: dict[str, Shipment] = {}
        self.last_attempt_error: str | None = None
        self.last_delivery_at: float | None = None
        self.events_quarantined = 0
        self._policy = backoff_policy(settings.retry_initial, settings.retry_max, jitter=jitter)
        self._slots = DeferredSemaphore(settings.upload_concurrency)

    @property
    def segments_waiting(self) -> int:
        """Sealed segments not yet delivered."""
        return len(self.shipments)

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
            lambda attempts: self._delivered(shipment, attempts),
            lambda failure: self._not_delivered(shipment, failure),
        )
        d.addBoth(self._forget, shipment)
        d.addErrback(
            lambda failure: log.failure("after shipping {name}", failure, name=segment.name)
        )

    def _forget(self, result: object, shipment: Shipment) -> object:
        self.shipments.pop(shipment.segment.name, None)
        self._forget_rendered(shipment)
        if shipment.slot_held:
            shipment.slot_held = False
            self._slots.release()
        return result

    def _wake_waiting(self) -> None:
        """A delivery went through: retry the others now."""
        for shipment in list(self.shipments.values()):
            if shipment.retry is not None and shipment.retry.waiting:
                shipment.retry.wake()

    async def drain(self, timeout: float) -> None:
        """
        Wait until every segment is delivered, or C{timeout} seconds; then
        stop the retries of those left (they stay in the spool).
        """
        waiting = [s.deferred for s in self.shipments.values() if s.deferred is not None]
        if waiting:
            log.info(
                "shipping {count} segments before stopping (at most {seconds:.0f} s)",
                count=len(waiting),
                seconds=timeout,
            )
            give_up = self.clock.callLater(max(0.0, timeout), self.cancel)
            await DeferredList(waiting, consumeErrors=True)
            if give_up.active():
                give_up.cancel()
        self.cancel()

    def cancel(self) -> None:
        """Stop every shipment (the segments stay in the spool)."""
        for shipment in list(self.shipments.values()):
            if shipment.deferred is not None:
                shipment.deferred.cancel()

    # One attempt: render, upload, delete.

    def _delay_for(self, failure: Failure, attempt: int) -> float:
        error = failure.value
        if isinstance(error, UploadError) and not error.transient:
            return self.settings.retry_max
        return self._policy(attempt)

    async def _attempt(self, shipment: Shipment, attempt: int) -> int:
        if not shipment.slot_held:
            await self._slots.acquire()
            shipment.slot_held = True
        began = self.clock.seconds()
        if not shipment.rendered:
            await self._render(shipment)
        try:
            await self._upload(shipment)
        except KeyConflict as conflict:
            await self._renumber(shipment, conflict)
            await self._upload(shipment)
        # The reset: a failure here is retried like any other (the upload is
        # found already done next time).
        segment = shipment.segment
        self.spool.forget(segment, await self.in_sealer(self.spool.remove, segment))
        self.metrics.upload_seconds.observe(self.clock.seconds() - began)
        return attempt

    async def _renumber(self, shipment: Shipment, conflict: KeyConflict) -> None:
        old = shipment.segment
        new = await self.in_sealer(self.spool.renumber, old)
        shipment.segment = new
        self.shipments.pop(old.name, None)
        self.shipments[new.name] = shipment
        log.warn(
            "{conflict}, written by another instance or an earlier life of this spool; "
            "{name} ships as {new} under {key}",
            conflict=str(conflict),
            name=old.name,
            new=new.name,
            key=self.key_for(new),
        )

    async def _render(self, shipment: Shipment) -> None:
        segment = shipment.segment
        fmt, compress = segment.format
        shipment.batch_path = self.spool.rendered_path(segment, segment.extension)
        shipment.quarantine_path = self.spool.rendered_path(segment, ".quarantine")
        result = await self.render_in_thread(
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
        shipment.result = result
        shipment.rendered = True
        for reason, count in result.found.items():
            self.metrics.events_quarantined.labels(quarantine_reason(reason)).inc(count)
        self.spool.rendered_bytes += result.batch_bytes + result.quarantine_bytes

    async def _upload(self, shipment: Shipment) -> None:
        segment = shipment.segment
        result = shipment.result
        assert result is not None
        fmt, compress = segment.format
        metadata = {
            "instance-id": self.settings.instance_id,
            "segment": segment.name,
        }
        # The quarantine first: if the batch's key is taken, the segment is
        # renumbered and only the quarantine object is written twice.
        if result.quarantined:
            await self.uploader.upload(
                UploadRequest(
                    path=shipment.quarantine_path,
                    key=quarantine_key(segment.name, self.settings.prefix),
                    sha256=result.quarantine_sha256,
                    content_type="application/x-ndjson",
                    metadata=dict(metadata, items=str(result.quarantined)),
                )
            )
        if result.events:
            await self.uploader.upload(
                UploadRequest(
                    path=shipment.batch_path,
                    key=self.key_for(segment),
                    sha256=result.batch_sha256,
                    content_type=CONTENT_TYPES[fmt],
                    content_encoding="gzip" if compress == "gzip" else None,
                    metadata=dict(metadata, events=str(result.events)),
                )
            )

    def _attempt_failed(
        self, shipment: Shipment, failure: Failure, attempt: int, delay: float
    ) -> None:
        error = failure.value
        hint = getattr(error, "hint", "")
        self.metrics.uploads.labels("failure").inc()
        self.metrics.upload_retries.inc()
        self.last_attempt_error = str(error) or type(error).__name__
        log.error(
            "delivering {key} to {where} failed (attempt {attempt}): {error}{hint}; "
            "next attempt in {delay:.1f} s, the segment stays in the spool",
            key=self.key_for(shipment.segment),
            where=self.uploader.description,
            attempt=attempt,
            error=str(error) or type(error).__name__,
            hint=f" -- {hint}" if hint else "",
            delay=delay,
        )

    # The end of a chain.

    def _delivered(self, shipment: Shipment, attempts: int) -> None:
        result = shipment.result
        assert result is not None
        self._forget_rendered(shipment)
        self.events_quarantined += result.quarantined
        self.last_attempt_error = None
        self.last_delivery_at = self.clock.seconds()
        self.metrics.uploads.labels("success").inc()
        self.metrics.events_delivered.inc(result.events)
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
                key=quarantine_key(shipment.segment.name, self.settings.prefix),
                reasons="; ".join(f"{n} x {reason}" for reason, n in result.reasons.items()),
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
        self._wake_waiting()

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
        if failure.check(CancelledError):
            return
        log.failure(
            "shipping {name} stopped; it stays in the spool",
            failure,
            name=shipment.segment.name,
        )
