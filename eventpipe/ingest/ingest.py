"""
Where every receiver hands what it read: connections admitted and
counted, events and documents encoded as records and appended to the
spool, what the disk refused kept and written first when it accepts again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from eventpipe.admission import NOT_EVENTS, SHUTTING_DOWN, Admission
from eventpipe.config.settings import Settings
from eventpipe.framing.common import Rejected
from eventpipe.framing.reads import DECLARATION, split_documents
from eventpipe.ingest.backpressure import Backpressure
from eventpipe.ingest.closing import Activity, Closing
from eventpipe.logs import Logger
from eventpipe.metrics import Metrics, quarantined
from eventpipe.protocol import EventReceiver, Source
from eventpipe.records import documents_record, encode_context, encode_event, encode_rejected
from eventpipe.spool.layout import SpoolWriteError, disk_reserve
from eventpipe.spool.spool import Spool
from eventpipe.spool.waiting import runs_within

log = Logger(namespace="eventpipe.ingest")

# Bytes appended between two looks at the spool filesystem's free space.
DISK_CHECK_BYTES = 256 * 1024
# Pieces set aside from one connection that are logged one by one.
LOGGED_PIECES = 3

# What a record ingest writes holds: a context, nothing to deliver (set
# aside), or a number of events (one, or the documents of a read).
_CONTEXT, _OTHER, _EVENT = -1, 0, 1
# A record as the parts it is written in (joined, they are the record), and
# what it holds.
Record = tuple[tuple[bytes, ...], int]
# About the size of a context record, when none is at hand to measure.
_CONTEXT_SIZE = 128
# A record's header and final newline.
_RECORD_OVERHEAD = 19


class Ingest(Backpressure, Closing):
    """
    The L{eventpipe.protocol.EventSink} of every receiver.

    @param on_segment_full: seals the current segment (it has reached
        C{max_file_size}, or the next record would pass it); never raises.
    """

    def __init__(
        self,
        spool: Spool,
        clock: IReactorTime,
        settings: Settings,
        admission: Admission,
        metrics: Metrics,
        on_segment_full: Callable[[], None] = lambda: None,
    ) -> None:
        self.spool = spool
        self.clock = clock
        self.admission = admission
        self.metrics = metrics
        self.event_tag = settings.event_tag
        self.max_event_size = settings.max_event_size
        self.max_file_size = settings.max_file_size
        self.max_spool_size = settings.max_spool_size
        self.idle_timeout = settings.idle_timeout
        # A connection that sends this much that is not events is closed.
        self.max_rejected_per_connection = 16 * settings.max_event_size
        self.disk_reserve = disk_reserve(settings.upload_concurrency, settings.max_file_size)
        self._on_segment_full = on_segment_full
        self.receivers: set[EventReceiver] = set()
        # Connections open, by the sender's address.
        self._per_host: dict[str | None, int] = {}
        self.datagram_ports: list[Any] = []
        self.paused_for: set[str] = set()
        # Encoded records the disk refused, each with its kind.
        self._unwritten: list[Record] = []
        # The context (sender, listener, second) last written to the current
        # segment: a new one is written when it changes.
        self._context: tuple[str, str, int] | None = None
        # The context records of this second, by source.
        self._encoded: dict[tuple[str, str, int], bytes] = {}
        self._encoded_second = -1
        self._disk_retry: IDelayedCall | None = None
        self._unchecked_bytes = 0
        self._all_gone: list[Deferred[None]] = []
        self.recent = Activity()
        self._summarised_at = clock.seconds()
        # When the last event was spooled (wall clock), for operators.
        self.last_event_at: float | None = None
        # Since the start: events spooled, and pieces set aside on arrival.
        self.events_received = 0
        self.pieces_set_aside = 0
        # Set when the stop began: reading is no longer paused.
        self.stopping = False
        self._closing: IDelayedCall | None = None
        # Bytes the sockets still held when the connections were aborted.
        self.unread_at_stop = 0

    # Connections.

    def refusal(self, address: Any) -> str | None:
        host = getattr(address, "host", None)
        return self.admission.refusal(address, len(self.receivers), self._per_host.get(host, 0))

    def connection_made(self, receiver: EventReceiver) -> bool:
        if not self.admission.open:
            self.admission.refused(SHUTTING_DOWN, receiver.peer)
            return False
        self.receivers.add(receiver)
        self._per_host[receiver.host] = self._per_host.get(receiver.host, 0) + 1
        self.recent.opened += 1
        log.debug("connection from {peer}", peer=receiver.peer)
        if self.paused_for:
            receiver.transport.pauseProducing()  # type: ignore[union-attr]
        return True

    def connection_lost(self, receiver: EventReceiver) -> None:
        if receiver in self.receivers:
            self.receivers.discard(receiver)
            left = self._per_host.get(receiver.host, 1) - 1
            if left:
                self._per_host[receiver.host] = left
            else:
                self._per_host.pop(receiver.host, None)
            self.recent.closed += 1
            log.debug("connection from {peer} closed", peer=receiver.peer)
        if receiver.rejected_pieces > LOGGED_PIECES:
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

    def cut_off(self, receiver: EventReceiver) -> None:
        """
        A connection sent more that is not events than any ACM would:
        close it (what it sent so far is quarantined), and say so once.
        """
        if receiver.cut:
            return
        receiver.cut = True
        self.metrics.connections_refused.labels(NOT_EVENTS).inc()
        log.warn(
            "closing {peer}: more than {limit} bytes that are not events",
            peer=receiver.peer,
            limit=self.max_rejected_per_connection,
        )
        receiver.transport.abortConnection()  # type: ignore[union-attr]

    # Events.

    def store(self, source: Source, events: list[bytes], rejected: list[Rejected]) -> None:
        """Spool what a source sent: whole events, and pieces set aside."""
        self.pieces_set_aside += len(rejected)
        for piece in rejected:
            quarantined(self.metrics, piece.reason, 1, self.clock.seconds())
            source.rejected_pieces += 1
            source.rejected_bytes += len(piece.data) + piece.dropped
            if source.rejected_pieces <= LOGGED_PIECES:
                log.warn(
                    "set aside {size} bytes from {peer} for quarantine: {reason}{more}",
                    size=len(piece.data) + piece.dropped,
                    peer=source.peer,
                    reason=piece.reason,
                    more="; further pieces from it are counted, not logged"
                    if source.rejected_pieces == LOGGED_PIECES
                    else "",
                )
        records = self._context_for(source)
        records.extend(((encode_event(event),), _EVENT) for event in events)
        records.extend(((encode_rejected(piece),), _OTHER) for piece in rejected)
        self._add(records)

    def store_documents(self, source: Source, documents: bytes, count: int) -> None:
        """
        Spool whole documents as a source sent them in one read (about
        C{count} events): they are framed when the segment is rendered.
        """
        records = self._context_for(source)
        overhead = _RECORD_OVERHEAD + _CONTEXT_SIZE
        if self.spool.current_size + len(documents) + overhead > self.max_file_size:
            # Cut between documents, so that segments keep to max-file-size.
            room = self.max_file_size - self.spool.current_size - overhead
            runs = split_documents(documents, room, self.max_file_size - overhead)
            records.extend((documents_record(run), run.count(DECLARATION)) for run in runs)
        else:
            records.append((documents_record(documents), count))
        self._add(records)

    def _context_for(self, source: Source) -> list[Record]:
        """
        A context record, when the sender, listener or second changed.  It
        says when the source's first read of that second arrived, whether
        other sources' reads came between or not (and is encoded once).
        """
        now = self.clock.seconds()
        second = int(now)
        context = (source.peer, source.listener, second)
        if context == self._context and self.spool.current_size:
            return []
        self._context = context
        if second != self._encoded_second:
            self._encoded_second = second
            self._encoded.clear()
        encoded = self._encoded.get(context)
        if encoded is None:
            encoded = self._encoded[context] = encode_context(now, source.peer, source.listener)
        return [((encoded,), _CONTEXT)]

    def _add(self, records: list[Record]) -> None:
        if self._unwritten:
            self._unwritten.extend(records)
        else:
            self._write(records)

    def _write(self, records: list[Record]) -> bool:
        """
        Append records, sealing before the one that would take the segment
        past max-file-size (so a segment passes it by one record at most,
        and only when that record alone is larger).  A segment begun by a
        seal here starts with the context of what follows.
        """
        sizes = [sum(map(len, parts)) for parts, _ in records]
        latest = [size for size, (_, kind) in zip(sizes, records) if kind == _CONTEXT]
        runs = runs_within(
            sizes,
            self.spool.current_size,
            self.max_file_size,
            headers=[kind == _CONTEXT for _, kind in records],
            restart=latest[-1] if latest else _CONTEXT_SIZE,
        )
        start = 0
        context: Record | None = None
        for number, length in enumerate(runs):
            run = records[start : start + length]
            for record in run:
                if record[1] == _CONTEXT:
                    context = record
            if number:
                self._on_segment_full()
                if context is not None and run and run[0][1] != _CONTEXT:
                    run = [context, *run]
            if not run:
                continue
            events = sum(max(kind, 0) for _, kind in run)
            try:
                written = self.spool.append_records(
                    [part for parts, _ in run for part in parts], events
                )
            except SpoolWriteError as error:
                self._refused(error, records[start:])
                return False
            start += length
            if events:
                self.last_event_at = self.clock.seconds()
            self.metrics.events_received.inc(events)
            self.events_received += events
            self.metrics.bytes_received.inc(written)
            self.recent.events += events
            self.recent.bytes += written
            self._unchecked_bytes += written
        if self.spool.current_size >= self.max_file_size:
            self._on_segment_full()
        self.update_backpressure(check_disk=self._unchecked_bytes >= DISK_CHECK_BYTES)
        return True

    # Back-pressure.
