"""
Turn a sealed segment into the batch file that is delivered, and a
quarantine file for whatever is not a well-formed event.

No reactor: plain files in, plain files out, streaming (one record or chunk
of events in memory at a time).  Runs in the render worker process.

XML batch::

    <?xml version="1.0" encoding="UTF-8"?>
    <EVENTS>
    <EVENT>...</EVENT>
    ...
    </EVENTS>

JSON Lines batch: one object per event per line, see L{event_to_json}.

Quarantine file: JSON Lines, one object for every piece set aside, with when
it arrived, its sender and listener, the reason, and its bytes unchanged
(text, or base64 when they are not UTF-8); see L{quarantine_entry}.

Every event is parsed with lxml (the ElementTree API) with entity
resolution, DTD loading and network access off.  An event that does not
parse, or whose root is not the event tag, goes to quarantine with the
parser's message; its neighbours are delivered.  What is checked at once:
a record whose documents are all alike (see L{uniform_events}: what ACM
sends) is checked whole, by one parse that builds no tree; other events in
chunks, by one parse of the chunk; only when that fails is each event of
the record or chunk parsed alone.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Any

from eventpipe import fs
from eventpipe.framing.common import Rejected
from eventpipe.framing.framer import EventFramer
from eventpipe.framing.reads import frame_documents, uniform_events
from eventpipe.naming import FORMATS
from eventpipe.records import (
    KIND_CONTEXT,
    KIND_DOCUMENTS,
    KIND_EVENT,
    KIND_REJECTED,
    KIND_TORN,
    Record,
    decode_context,
    read_records,
)
from eventpipe.render.output import _Output, quarantine_entry
from eventpipe.render.validate import (
    CHUNK_BYTES,
    CHUNK_EVENTS,
    _plain,
    _render_event,
    _render_events,
    _repaired,
    _WellFormed,
    json_lines,
    make_parser,
)

_RECORD_HEADER = 18

XML_HEADER = b'<?xml version="1.0" encoding="UTF-8"?>\n<EVENTS>\n'
XML_FOOTER = b"</EVENTS>\n"

CONTENT_TYPES = {"xml": "application/xml", "json": "application/x-ndjson"}


@dataclass
class RenderResult:
    """What a render produced."""

    events: int = 0
    quarantined: int = 0
    batch_bytes: int = 0
    quarantine_bytes: int = 0
    batch_sha256: str = ""
    quarantine_sha256: str = ""
    # The digest of the sealed segment itself: the identity of its
    # delivery, the same for every render of it.
    source_sha256: str = ""
    repaired: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    # The part of C{reasons} found by this render (invalid events, torn
    # records), not set aside already when the bytes arrived.
    found: dict[str, int] = field(default_factory=dict)

    def note(self, reason: str, found: bool = True) -> None:
        self.quarantined += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        if found:
            self.found[reason] = self.found.get(reason, 0) + 1


def _whole_documents_of_torn(
    record: Record, event_tag: str, max_event_size: int
) -> tuple[list[bytes], list[Rejected]]:
    """
    A record of whole documents that the process did not finish writing:
    the events complete in what was written are delivered; the damaged
    rest (and the header) go to quarantine as torn.
    """
    framer = EventFramer(event_tag, max_event_size)
    events, aside = framer.feed(record.data[_RECORD_HEADER:])
    rest = framer.close()
    torn = [Rejected(record.reason, piece.data, piece.dropped) for piece in rest]
    if not events and not aside:
        return [], [Rejected(record.reason, record.data)]
    return events, aside + torn


class UnrenderableSegment(Exception):
    """
    The segment itself cannot be rendered, whatever the machine does (it is
    not a regular file): the render says so, and shipping counts it
    against the segment.
    """

    segments_own = True


def _kind_of(found: os.stat_result) -> str:
    for test, kind in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(found.st_mode):
            return kind
    return "a device"


def render_segment(
    segment_path: str,
    batch_path: str,
    quarantine_path: str,
    fmt: str = "xml",
    compress: str = "none",
    event_tag: str = "EVENT",
    repair: bool = False,
    max_event_size: int = 1 << 20,
) -> RenderResult:
    """
    Render a sealed segment.  The batch file is written only if at least one
    event is good, the quarantine file only if something was set aside.
    Rendering the same segment twice gives the same bytes.

    @param repair: join ACM's space-separated element names in events that
        are not well-formed because of them (see L{repair_tag_names}); a
        well-formed event is never touched.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    found = os.lstat(segment_path)
    if not stat.S_ISREG(found.st_mode):
        # Never opened: a FIFO would block, a directory cannot be read.
        raise UnrenderableSegment(f"{segment_path} is not a regular file ({_kind_of(found)})")
    header, footer = (XML_HEADER, XML_FOOTER) if fmt == "xml" else (b"", b"")
    render = _Render(
        _Output(batch_path, compress, header),
        _Output(quarantine_path, "none"),
        fmt,
        event_tag,
        repair,
        max_event_size,
    )
    try:
        with open(segment_path, "rb", buffering=1 << 16) as stream:
            render.result.source_sha256 = fs.digest_of(stream).hexdigest()
            stream.seek(0)
            for record in read_records(stream):
                render.take(record)
            render.flush()
        result = render.result
        result.batch_bytes, result.batch_sha256 = render.batch.finish(footer)
        result.quarantine_bytes, result.quarantine_sha256 = render.quarantine.finish()
    except BaseException:
        render.batch.abort()
        render.quarantine.abort()
        raise
    return result


class _Render:
    """One render: the records of a segment in, the batch and quarantine written."""

    def __init__(
        self,
        batch: _Output,
        quarantine: _Output,
        fmt: str,
        event_tag: str,
        repair: bool,
        max_event_size: int,
    ) -> None:
        self.batch, self.quarantine = batch, quarantine
        self.fmt, self.event_tag, self.repair = fmt, event_tag, repair
        self.max_event_size = max_event_size
        self.result = RenderResult()
        self.parser = make_parser()
        self.well_formed = _WellFormed()
        # The events waiting to be validated as one chunk, and where and
        # when each came from (see KIND_CONTEXT).
        self.events: list[bytes] = []
        self.contexts: list[dict[str, Any]] = []
        self.context: dict[str, Any] = {}
        self.size = 0

    def take(self, record: Record) -> None:
        """One record of the segment."""
        if record.kind == KIND_EVENT:
            framed: list[bytes] = [record.data]
            aside: list[Rejected] = []
        elif record.kind == KIND_DOCUMENTS:
            if self._whole(record):
                return
            framed, aside = frame_documents(record.data, self.event_tag, self.max_event_size)
        elif record.kind == KIND_CONTEXT:
            self.context = decode_context(record)
            return
        elif record.kind == KIND_TORN and record.data[:1] == KIND_DOCUMENTS:
            framed, aside = _whole_documents_of_torn(record, self.event_tag, self.max_event_size)
        else:
            # Set aside by the framer (KIND_REJECTED), or torn.
            framed = []
            aside = [Rejected(record.reason, record.data)]
        for piece in aside:
            self.result.note(piece.reason, found=record.kind != KIND_REJECTED)
            self.quarantine.write(quarantine_entry(piece.reason, piece.data, self.context))
        for event in framed:
            self.events.append(event)
            self.contexts.append(self.context)
            self.size += len(event)
        if len(self.events) >= CHUNK_EVENTS or self.size >= CHUNK_BYTES:
            self.flush()

    def _whole(self, record: Record) -> bool:
        """
        Write a record of documents all alike at once (see
        L{uniform_events}), when it is well-formed; what waits goes first,
        to keep the order.
        """
        uniform = uniform_events(record.data, self.event_tag, self.max_event_size)
        if uniform is None or not _plain(uniform[0]) or not self.well_formed(uniform[0]):
            return False
        self.flush()
        events = uniform[0]
        if self.fmt == "json":
            close = b"</" + self.event_tag.encode("utf-8") + b">"
            framed = [event + close for event in events.split(close + b"\n")[:-1]]
            events = b"".join(json_lines(framed, self.event_tag, self.parser, events))
        self.batch.write(events)
        self.result.events += uniform[1]
        return True

    def flush(self) -> None:
        """Validate the waiting events as one chunk; write the good, set aside the rest."""
        self.size = 0
        if not self.events:
            return
        result, good = self.result, []
        for data, where, (reason, rendered) in zip(
            self.events,
            self.contexts,
            _render_events(self.events, self.parser, self.well_formed, self.fmt, self.event_tag),
            strict=True,
        ):
            if reason is not None and self.repair:
                fixed = _repaired(data, self.parser, self.fmt, self.event_tag)
                if fixed is not None:
                    reason, rendered = None, fixed[1]
                    result.repaired += 1
            if reason is None:
                good.append(rendered)
                result.events += 1
            else:
                result.note(reason)
                self.quarantine.write(quarantine_entry(reason, data, where))
        if good:
            self.batch.write(b"".join(good))
        self.events.clear()
        self.contexts.clear()


def replayable(
    data: bytes, event_tag: str = "EVENT", max_event_size: int = 1 << 20, repair: bool = False
) -> tuple[list[bytes], str | None, int]:
    """
    Whether a quarantined piece passes now what the service applies to what
    it receives: framing, then each event's validation (with the repair of
    ACM's spaced names, when asked).

    @return: (the events to spool again, None, how many were repaired) when
        it does; ([], the reason, 0) when it does not.
    """
    events, aside = frame_documents(data, event_tag, max_event_size)
    if aside:
        return [], aside[0].reason, 0
    if not events:
        return [], "no event in it", 0
    parser = make_parser()
    good = []
    repaired = 0
    for event in events:
        reason, _ = _render_event(event, parser, "xml", event_tag)
        if reason is not None and repair:
            fixed = _repaired(event, parser, "xml", event_tag)
            if fixed is not None:
                event, reason = fixed[0], None
                repaired += 1
        if reason is not None:
            return [], reason, 0
        good.append(event)
    return good, None, repaired
