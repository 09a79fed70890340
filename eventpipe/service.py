"""
The Twisted side of the pipeline: ingest (connections to spool, with
back-pressure) and shipping (rotation timer, render, upload, retry, delete).

The clock and the way blocking work reaches a thread are injected, so unit
tests drive everything with L{twisted.internet.task.Clock}.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.application.internet import TimerService
from twisted.application.service import Service
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    DeferredSemaphore,
    succeed,
)
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from eventpipe.framing import Rejected
from eventpipe.metrics import Metrics, PipelineCollector, quarantine_reason
from eventpipe.naming import object_key, quarantine_key
from eventpipe.protocol import EventReceiver, Network, Source, allowed, describe
from eventpipe.render import CONTENT_TYPES, RenderResult, extension, render_segment
from eventpipe.retry import backoff_policy, retrying
from eventpipe.spool import Segment, Spool, SpoolWriteError, disk_reserve
from eventpipe.upload import IUploader, UploadError, UploadRequest

RunInThread = Callable[..., "Deferred[Any]"]

log = Logger(namespace="eventpipe")

DISK_RETRY_DELAY = 1.0
# Bytes appended between two looks at the spool filesystem's free space.
DISK_CHECK_BYTES = 256 * 1024
# Pieces set aside from one connection that are logged one by one.
_LOGGED_PIECES = 3
LOW_WATER = 0.9


@dataclass(frozen=True)
class Settings:
    """Everything the pipeline needs to know, already validated."""

    instance_id: str
    rotation_interval: float = 60.0
    max_file_size: int = 5 * 1024 * 1024
    check_interval: float = 10.0
    format: str = "xml"
    compress: str = "none"
    event_tag: str = "EVENT"
    max_event_size: int = 1024 * 1024
    shutdown_timeout: float = 30.0
    max_spool_size: int = 1_000_000_000
    prefix: str = ""
    retry_initial: float = 1.0
    retry_max: float = 60.0
    upload_concurrency: int = 2
    repair_tag_names: bool = False
    idle_timeout: float = 0.0
    max_connections: int = 1000
    allow: tuple[Network, ...] = ()


class Ingest:
    """
    Connections hand their events here; they go to the spool at once.

    When the spool holds more than C{max_spool_size} bytes, or the disk
    refuses a write, every connection stops being read (TCP pushes back on
    the sender) until there is room again.  Events already framed when the
    disk refused are kept in memory (at most one read per connection, as
    reading stops) and written first when the disk accepts again.
    """

    def __init__(
        self,
        spool: Spool,
        clock: IReactorTime,
        settings: Settings,
        on_segment_full: Callable[[], None] = lambda: None,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics if metrics is not None else Metrics()
        self.spool = spool
        self.clock = clock
        self.event_tag = settings.event_tag
        self.max_event_size = settings.max_event_size
        self.max_file_size = settings.max_file_size
        self.max_spool_size = settings.max_spool_size
        self.idle_timeout = settings.idle_timeout
        self.max_connections = settings.max_connections
        self.allow = settings.allow
        # A connection that sends this much that is not events is closed.
        self.max_rejected_per_connection = 16 * settings.max_event_size
        self.datagram_ports: list[Any] = []
        self._refusals: dict[str, tuple[float, int]] = {}
        self._unchecked_bytes = 0
        self.disk_reserve = disk_reserve(settings.upload_concurrency, settings.max_file_size)
        self._on_segment_full = on_segment_full
        self.receivers: set[EventReceiver] = set()
        self.paused_for: set[str] = set()
        self._pending: list[tuple[list[bytes], list[Rejected]]] = []
        self._disk_retry: IDelayedCall | None = None
        self._all_gone: list[Deferred[None]] = []
        self.accepting = True

    # Connections.

    def admit(self, address: Any) -> str | None:
        """
        Decide, before anything is read, whether a connection (or datagram)
        from C{address} is taken.

        @return: None to take it, or why not.
        """
        reason = None
        host = getattr(address, "host", None)
        if host is not None and not allowed(host, self.allow):
            reason = "not_allowed"
        elif getattr(address, "type", "TCP") != "UDP":
            if not self.accepting:
                reason = "shutting_down"
            elif len(self.receivers) >= self.max_connections:
                reason = "max_connections"
        if reason is not None:
            self._refused(reason, describe(address))
        return reason

    def _refused(self, reason: str, peer: str) -> None:
        """Count a refusal; log it, at most once a second per reason."""
        self.metrics.connections_refused.labels(reason).inc()
        now = self.clock.seconds()
        last, suppressed = self._refusals.get(reason, (float("-inf"), 0))
        if now - last < 1.0:
            self._refusals[reason] = (last, suppressed + 1)
            return
        self._refusals[reason] = (now, 0)
        log.warn(
            "refused {peer}: {why}{more}",
            peer=peer,
            why={
                "not_allowed": "not in --allow",
                "max_connections": f"{self.max_connections} connections open (--max-connections)",
                "shutting_down": "shutting down",
            }[reason],
            more=f" ({suppressed} more refused in the last second)" if suppressed else "",
        )

    def connection_made(self, receiver: EventReceiver) -> bool:
        if not self.accepting:
            self._refused("shutting_down", receiver.peer)
            return False
        self.receivers.add(receiver)
        log.info("connection from {peer}", peer=receiver.peer)
        if self.paused_for:
            receiver.transport.pauseProducing()  # type: ignore[union-attr]
        return True

    def connection_lost(self, receiver: EventReceiver) -> None:
        if receiver in self.receivers:
            self.receivers.discard(receiver)
            log.info("connection from {peer} closed", peer=receiver.peer)
        if receiver.rejected_pieces > _LOGGED_PIECES:
            log.warn(
                "{peer} sent {pieces} pieces ({size} bytes) that were set aside for quarantine",
                peer=receiver.peer,
                pieces=receiver.rejected_pieces,
                size=receiver.rejected_bytes,
            )
        if not self.receivers:
            waiting, self._all_gone = self._all_gone, []
            for d in waiting:
                d.callback(None)

    def close_connections(self, timeout: float) -> Deferred[None]:
        """
        Stop reading: close every connection; fires when all are gone, or
        after C{timeout} seconds.
        """
        self.accepting = False
        if not self.receivers:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._all_gone.append(d)
        for receiver in list(self.receivers):
            receiver.transport.loseConnection()  # type: ignore[union-attr]
        d.addTimeout(timeout, self.clock, onTimeoutCancel=lambda result, t: None)
        return d

    # Events.

    def accept(self, source: Source, events: list[bytes], rejected: list[Rejected]) -> None:
        for piece in rejected:
            source.rejected_pieces += 1
            source.rejected_bytes += len(piece.data) + piece.dropped
            if source.rejected_pieces <= _LOGGED_PIECES:
                log.warn(
                    "set aside {size} bytes from {peer} for quarantine: {reason}{more}",
                    size=len(piece.data) + piece.dropped,
                    peer=source.peer,
                    reason=piece.reason,
                    more="; further pieces from it are counted, not logged"
                    if source.rejected_pieces == _LOGGED_PIECES
                    else "",
                )
        if self._pending:
            self._pending.append((events, rejected))
        else:
            self._write(events, rejected)

    def cut_off(self, receiver: EventReceiver) -> None:
        """
        A connection sent more that is not events than any ACM would:
        close it (what it sent so far is quarantined), and say so once.
        """
        if receiver.cut:
            return
        receiver.cut = True
        self.metrics.connections_refused.labels("not_events").inc()
        log.warn(
            "closing {peer}: more than {limit} bytes that are not events",
            peer=receiver.peer,
            limit=self.max_rejected_per_connection,
        )
        receiver.transport.abortConnection()  # type: ignore[union-attr]

    def _write(self, events: list[bytes], rejected: list[Rejected]) -> bool:
        try:
            written = self.spool.append(events, rejected)
        except SpoolWriteError as error:
            # Keep them, first in line, and stop reading until the disk
            # accepts writes again.
            self._pending.insert(0, (events, rejected))
            if "disk" not in self.paused_for:
                log.error(
                    "{error}; reading paused, retrying every {delay} s",
                    error=error,
                    delay=DISK_RETRY_DELAY,
                )
                self.pause("disk")
            self._disk_retry = self.clock.callLater(DISK_RETRY_DELAY, self._retry_pending)
            return False
        self.metrics.events_received.inc(len(events))
        self.metrics.bytes_received.inc(written)
        if self.spool.current_size >= self.max_file_size:
            self._on_segment_full()
        self._unchecked_bytes += written
        self.update_backpressure(check_disk=self._unchecked_bytes >= DISK_CHECK_BYTES)
        return True

    def _retry_pending(self) -> None:
        self._disk_retry = None
        events = [event for batch in self._pending for event in batch[0]]
        rejected = [piece for batch in self._pending for piece in batch[1]]
        self._pending = []
        if self._write(events, rejected):
            log.info("the spool accepts writes again")
            self.resume("disk")

    # Back-pressure.

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
            if "spool full" not in self.paused_for:
                log.warn(
                    "spool holds {waiting} bytes (limit {limit}): reading paused",
                    waiting=waiting,
                    limit=self.max_spool_size,
                )
                self.pause("spool full")
        elif waiting <= self.max_spool_size * LOW_WATER and "spool full" in self.paused_for:
            log.info("spool down to {waiting} bytes: reading resumed", waiting=waiting)
            self.resume("spool full")
        if not check_disk:
            return
        self._unchecked_bytes = 0
        free = self.spool.free_bytes()
        if free < self.disk_reserve:
            if "disk reserve" not in self.paused_for:
                log.warn(
                    "only {free} bytes free on the spool's filesystem, {reserve} are kept "
                    "for rendering: reading paused",
                    free=free,
                    reserve=self.disk_reserve,
                )
                self.pause("disk reserve")
        elif free >= self.disk_reserve * 1.5 and "disk reserve" in self.paused_for:
            log.info("{free} bytes free on the spool's filesystem: reading resumed", free=free)
            self.resume("disk reserve")

    def pause(self, why: str) -> None:
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

    def stop(self) -> None:
        """
        Before sealing at shutdown: one last try to write what the disk
        refused.  If it still refuses, those events cannot be kept.
        """
        if self._disk_retry is not None and self._disk_retry.active():
            self._disk_retry.cancel()
            self._retry_pending()
            if self._disk_retry is not None and self._disk_retry.active():
                self._disk_retry.cancel()
                log.error(
                    "stopping while the spool refuses writes: {count} events read but not written",
                    count=sum(len(batch[0]) for batch in self._pending),
                )


class _Shipment:
    """One sealed segment on its way out."""

    def __init__(self, segment: Segment, started: float) -> None:
        self.segment = segment
        self.started = started
        self.result: RenderResult | None = None
        # Whether the rendered files are on disk now (they are removed after
        # a failed attempt and made again, identical, for the next one).
        self.rendered = False
        self.batch_path = ""
        self.quarantine_path = ""
        # The retry chain that ships it; fires when it is delivered (or the
        # shipping is cancelled at shutdown).
        self.deferred: Deferred[Any] | None = None


class Pipeline(Service):
    """
    Rotation and shipping.

    @param run_in_thread: C{run_in_thread(f, *args)} runs blocking work (the
        render) away from the reactor and returns a Deferred.
    """

    name = "eventpipe-pipeline"

    def __init__(
        self,
        settings: Settings,
        spool: Spool,
        uploader: IUploader,
        clock: IReactorTime,
        run_in_thread: RunInThread,
        jitter: Callable[[], float] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics if metrics is not None else Metrics()
        self.metrics.registry.register(PipelineCollector(self))
        self.settings = settings
        self.spool = spool
        self.uploader = uploader
        self.clock = clock
        self.run_in_thread = run_in_thread
        self.ingest = Ingest(
            spool, clock, settings, on_segment_full=self._segment_full, metrics=self.metrics
        )
        # Sealed segments not yet delivered, by name.
        self.shipments: dict[str, _Shipment] = {}
        self.last_attempt_error: str | None = None
        self.last_delivery_at: float | None = None
        self._policy = backoff_policy(
            settings.retry_initial,
            settings.retry_max,
            jitter=jitter if jitter is not None else _random,
        )
        self._slots = DeferredSemaphore(settings.upload_concurrency)
        self._timer = TimerService(settings.check_interval, self.check_rotation)
        self._timer.clock = clock
        self._full_call: IDelayedCall | None = None
        self.extension = extension(settings.format, settings.compress)
        self.segments_sealed = 0
        self.events_quarantined = 0

    # Start and stop.

    def startService(self) -> None:
        super().startService()
        segments = self.spool.recover()
        if segments:
            log.info(
                "recovered {count} sealed segments ({size} bytes) to ship",
                count=len(segments),
                size=sum(segment.size for segment in segments),
            )
        self.uploader.start()
        self.uploader.check().addCallbacks(
            lambda where: log.info("destination {where} is reachable", where=where),
            self._destination_unreachable,
        )
        for segment in segments:
            self._ship(segment)
        self._timer.startService()

    def _destination_unreachable(self, failure: Failure) -> None:
        error = failure.value
        hint = getattr(error, "hint", "")
        log.error(
            "destination {where} is not usable yet: {error}{hint}; "
            "events are spooled and delivered once it is",
            where=self.uploader.description,
            error=str(error),
            hint=f" ({hint})" if hint else "",
        )

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self._timer.running:
            await self._timer.stopService()
        if self._full_call is not None and self._full_call.active():
            self._full_call.cancel()
        deadline = self.clock.seconds() + self.settings.shutdown_timeout
        await self.ingest.close_connections(min(2.0, self.settings.shutdown_timeout))
        self.ingest.stop()
        self.seal("shutdown")
        waiting = self._shipping_deferreds()
        if waiting:
            log.info(
                "shipping {count} segments before stopping (at most {seconds:.0f} s)",
                count=len(waiting),
                seconds=max(0.0, deadline - self.clock.seconds()),
            )
            give_up = self.clock.callLater(
                max(0.0, deadline - self.clock.seconds()), self._cancel_shipping
            )
            await DeferredList(waiting, consumeErrors=True)
            if give_up.active():
                give_up.cancel()
        left = self._cancel_shipping()
        if left:
            log.warn(
                "stopping with {count} segments not yet delivered; "
                "they stay in {spool} and are shipped at the next start",
                count=left,
                spool=self.spool.directory,
            )
        self.uploader.stop()
        self.spool.close()

    def _shipping_deferreds(self) -> list[Deferred[Any]]:
        return [s.deferred for s in self.shipments.values() if s.deferred is not None]

    def _cancel_shipping(self) -> int:
        """Stop every shipment (the segments stay in the spool)."""
        shipping = self._shipping_deferreds()
        for d in shipping:
            d.cancel()
        return len(shipping)

    # Rotation.

    def check_rotation(self) -> None:
        """
        Called by the timer: seal the current segment when it is old or
        large enough.  Never raises (that would stop the timer for good).
        """
        try:
            # Space may have come back from outside: look again.
            self.ingest.update_backpressure()
            if self.spool.current_size >= self.settings.max_file_size:
                self.seal("size")
            elif (
                self.spool.current_size
                and self.spool.current_age() >= self.settings.rotation_interval
            ):
                self.seal("time")
        except OSError as error:
            log.error(
                "sealing failed: {error}; trying again at the next check",
                error=error.strerror or str(error),
            )
        except Exception:
            log.failure("rotation check failed; trying again at the next check")

    def _segment_full(self) -> None:
        # Seal soon, not inside the connection's dataReceived.
        if self._full_call is None or not self._full_call.active():
            self._full_call = self.clock.callLater(0, self._seal_full)

    def _seal_full(self) -> None:
        self._full_call = None
        if self.spool.current_size >= self.settings.max_file_size:
            try:
                self.seal("size")
            except Exception:
                log.failure("sealing a full segment failed; the timer tries again")

    def seal(self, trigger: str) -> Segment | None:
        events = self.spool.current_events
        segment = self.spool.seal()
        if segment is None:
            return None
        self.segments_sealed += 1
        self.metrics.segments_sealed.labels(trigger).inc()
        log.info(
            "sealed {name} ({trigger}): {events} events, {size} bytes, key {key}",
            name=segment.name,
            trigger=trigger,
            events=events,
            size=segment.size,
            key=self.key_for(segment),
        )
        self._ship(segment)
        return segment

    def key_for(self, segment: Segment) -> str:
        return object_key(segment.name, self.extension, self.settings.prefix)

    # Shipping.

    def _ship(self, segment: Segment) -> None:
        shipment = _Shipment(segment, self.clock.seconds())
        self.shipments[segment.name] = shipment
        d: Deferred[int] = retrying(
            self.clock,
            lambda attempt: Deferred.fromCoroutine(self._attempt(shipment, attempt)),
            self._delay_for,
            lambda failure, attempt, delay: self._attempt_failed(shipment, failure, attempt, delay),
        )
        shipment.deferred = d
        d.addCallbacks(
            lambda attempts: self._delivered(shipment, attempts),
            lambda failure: self._not_delivered(shipment, failure),
        )
        d.addBoth(self._forget_shipment, segment.name)

    def _forget_shipment(self, result: object, name: str) -> None:
        self.shipments.pop(name, None)

    def _delay_for(self, failure: Failure, attempt: int) -> float:
        error = failure.value
        if isinstance(error, UploadError) and not error.transient:
            return self.settings.retry_max
        return self._policy(attempt)

    async def _attempt(self, shipment: _Shipment, attempt: int) -> int:
        # At most upload-concurrency segments are rendered and uploading at
        # once: rendered files never pile up while the destination is down.
        await self._slots.acquire()
        began = self.clock.seconds()
        try:
            if not shipment.rendered:
                await self._render(shipment)
            await self._upload(shipment)
        except BaseException:
            self._forget_rendered(shipment)
            raise
        finally:
            self._slots.release()
        self.metrics.upload_seconds.observe(self.clock.seconds() - began)
        return attempt

    async def _render(self, shipment: _Shipment) -> None:
        segment = shipment.segment
        shipment.batch_path = self.spool.rendered_path(segment, self.extension)
        shipment.quarantine_path = self.spool.rendered_path(segment, ".quarantine")
        result = await self.run_in_thread(
            render_segment,
            segment.path,
            shipment.batch_path,
            shipment.quarantine_path,
            self.settings.format,
            self.settings.compress,
            self.settings.event_tag,
            self.settings.repair_tag_names,
        )
        shipment.result = result
        shipment.rendered = True
        self.spool.rendered_bytes += result.batch_bytes + result.quarantine_bytes

    async def _upload(self, shipment: _Shipment) -> None:
        segment = shipment.segment
        result = shipment.result
        assert result is not None
        metadata = {
            "instance-id": self.settings.instance_id,
            "segment": segment.name,
        }
        if result.events:
            await self.uploader.upload(
                UploadRequest(
                    path=shipment.batch_path,
                    key=self.key_for(segment),
                    sha256=result.batch_sha256,
                    content_type=CONTENT_TYPES[self.settings.format],
                    content_encoding="gzip" if self.settings.compress == "gzip" else None,
                    metadata=dict(metadata, events=str(result.events)),
                )
            )
        if result.quarantined:
            await self.uploader.upload(
                UploadRequest(
                    path=shipment.quarantine_path,
                    key=quarantine_key(segment.name, self.settings.prefix),
                    sha256=result.quarantine_sha256,
                    content_type="text/plain; charset=utf-8",
                    metadata=dict(metadata, items=str(result.quarantined)),
                )
            )

    def _attempt_failed(
        self, shipment: _Shipment, failure: Failure, attempt: int, delay: float
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

    def _delivered(self, shipment: _Shipment, attempts: int) -> None:
        result = shipment.result
        assert result is not None
        self.spool.delete(shipment.segment)
        self._forget_rendered(shipment)
        self.events_quarantined += result.quarantined
        self.last_attempt_error = None
        self.last_delivery_at = self.clock.seconds()
        self.metrics.uploads.labels("success").inc()
        self.metrics.events_delivered.inc(result.events)
        for reason, count in result.reasons.items():
            self.metrics.events_quarantined.labels(quarantine_reason(reason)).inc(count)
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
        self.ingest.update_backpressure()

    def _forget_rendered(self, shipment: _Shipment) -> None:
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

    def _not_delivered(self, shipment: _Shipment, failure: Failure) -> None:
        self._forget_rendered(shipment)
        if failure.check(CancelledError):
            return
        log.failure(
            "shipping {name} stopped; it stays in the spool",
            failure,
            name=shipment.segment.name,
        )

    @property
    def shipping(self) -> int:
        """Segments sealed and not yet delivered."""
        return len(self.shipments)

    # What an operator asks.

    def oldest_waiting_age(self) -> float:
        """Seconds since the oldest event not yet delivered arrived (0: none)."""
        starts = [s.segment.started for s in self.shipments.values() if s.segment.started]
        if self.spool.current_size and self.spool.current_started is not None:
            starts.append(self.spool.current_started)
        if not starts:
            return 0.0
        return max(0.0, self.clock.seconds() - min(starts))

    def seconds_since_delivery(self) -> float | None:
        if self.last_delivery_at is None:
            return None
        return self.clock.seconds() - self.last_delivery_at

    def not_ready_because(self) -> str | None:
        """Why the service is not ready, or None when it is."""
        waiting = self.spool.waiting_bytes
        if waiting >= self.settings.max_spool_size:
            return f"spool holds {waiting} bytes, at or above --max-spool-size"
        if self.ingest.paused_for & {"disk", "disk reserve"}:
            return "the spool's filesystem is full"
        if self.last_attempt_error is not None and self.shipping:
            return f"the last delivery attempt failed: {self.last_attempt_error}"
        return None


def _random() -> float:
    import random

    return random.random()
