"""
The retry chains of the sealed segments, one each: slots, time limits,
and what is counted for the status; each attempt renders
(L{eventpipe.shipping.rendering}), delivers (L{eventpipe.shipping.delivery})
and removes the segment.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, DeferredSemaphore
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from eventpipe.config.settings import Settings
from eventpipe.destinations import IUploader, UploadError
from eventpipe.metrics import Metrics
from eventpipe.retry import Retry, backoff_policy
from eventpipe.shipping import report
from eventpipe.shipping.delivery import Delivery
from eventpipe.shipping.log import log
from eventpipe.shipping.rendering import Rendering
from eventpipe.shipping.shipment import Phase, RenderFailed, Shipment, describe
from eventpipe.spool.layout import Segment
from eventpipe.spool.spool import Spool

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
        self.spool, self.uploader, self.clock, self.metrics = spool, uploader, clock, metrics
        # Removing and renaming segments: in the thread that seals.
        self.in_sealer = sealer
        self.rendering = Rendering(settings, spool, clock, metrics, render_in_worker, sealer)
        self.delivery = Delivery(
            settings, spool, uploader, clock, metrics, sealer, self._renumbered
        )
        self.settings = settings
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
        # Since the start: pieces stored in quarantine objects, events delivered.
        self.events_quarantined = self.events_delivered = 0
        # What the stop left: segments, events in them, whether that count
        # is exact (segments found at start-up and not rendered are not
        # counted), from what is known -- no segment is read to count it.
        self.left_at_stop: tuple[int, int, bool] | None = None
        self._policy = backoff_policy(settings.retry_initial, settings.retry_max, jitter=jitter)
        self._slots = DeferredSemaphore(settings.upload_concurrency)

    @property
    def settings(self) -> Settings:
        return self._settings

    @settings.setter
    def settings(self, settings: Settings) -> None:
        """Settings given (at the start, or by a reload) reach every part."""
        self._settings = self.rendering.settings = self.delivery.settings = settings

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
        return self.delivery.key_for(segment)

    def _renumbered(self, old: Segment, new: Segment) -> None:
        shipment = self.shipments.pop(old.name, None)
        if shipment is not None:
            self.shipments[new.name] = shipment

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
        self.rendering.forget_rendered(shipment)
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
                    shipment.queue()
                    shipment.retry.wake()
                    woken += 1
        return woken

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
        shipment.queue()
        await self._slots.acquire()
        try:
            began = self.clock.seconds()
            shipment.render(self.rendering.renders_done)
            if not await self.rendering.render(shipment):
                return attempt
            shipment.upload()
            await self.delivery.deliver(shipment)
            # The reset: a failure here is retried like any other (the
            # upload is found done next time).
            shipment.remove()
            segment = shipment.segment
            self.spool.forget(segment, await self.in_sealer(self.spool.remove, segment))
            if shipment.quarantine_key is not None:
                assert shipment.result is not None
                await self.in_sealer(self.spool.forget_written, shipment.result.source_sha256)
            shipment.delivered()
            self.metrics.upload_seconds.observe(self.clock.seconds() - began)
            return attempt
        finally:
            self._slots.release()
            self.rendering.forget_rendered(shipment)

    def _attempt_failed(
        self, shipment: Shipment, failure: Failure, attempt: int, delay: float
    ) -> None:
        error = failure.value
        hint = getattr(error, "hint", "")
        description = describe(error)
        shipment.wait(description)
        if isinstance(error, RenderFailed):
            report.render_failed(shipment, error, delay)
            return
        self.metrics.uploads.labels("failure").inc()
        self.metrics.upload_retries.inc()
        self.last_attempt_error = description
        self.failed_attempts += 1
        self.next_attempt_at = self.clock.seconds() + delay
        self.last_attempt_hint = hint
        report.delivery_failed(
            shipment.failing_key or self.key_for(shipment.segment),
            self.uploader.description,
            attempt,
            description,
            hint,
            delay,
        )

    # The end of a chain.

    def _ended(self, shipment: Shipment, attempts: int) -> None:
        if shipment.ended_undelivered:
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
        report.delivered(
            shipment,
            self.key_for(shipment.segment) if result.events else "(no good events)",
            self.clock.seconds() - shipment.started,
            attempts,
        )
        self._on_delivered()
        self.wake_waiting()

    def _not_delivered(self, shipment: Shipment, failure: Failure) -> None:
        shipment.stopped()
        if failure.check(CancelledError):
            return
        log.failure(
            "shipping {name} stopped; it stays in the spool",
            failure,
            name=shipment.segment.name,
        )
