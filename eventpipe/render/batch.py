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
    result = RenderResult()
    parser = make_parser()
    well_formed = _WellFormed()
    header, footer = (XML_HEADER, XML_FOOTER) if fmt == "xml" else (b"", b"")
    batch = _Output(batch_path, compress, header)
    quarantine = _Output(quarantine_path, "none")
    events: list[bytes] = []
    # Where and when each pending event came from (see KIND_CONTEXT).
    contexts: list[dict[str, Any]] = []
    context: dict[str, Any] = {}
    size = 0

    good: list[bytes] = []

    def flush() -> None:
        if not events:
            return
        for data, where, (reason, rendered) in zip(
            events,
            contexts,
            _render_events(events, parser, well_formed, fmt, event_tag),
            strict=True,
        ):
            if reason is not None and repair:
                fixed = _repaired(data, parser, fmt, event_tag)
                if fixed is not None:
                    reason, rendered = None, fixed[1]
                    result.repaired += 1
            if reason is None:
                good.append(rendered)
                result.events += 1
            else:
                result.note(reason)
                quarantine.write(quarantine_entry(reason, data, where))
        if good:
            batch.write(b"".join(good))
            good.clear()
        events.clear()
        contexts.clear()

    try:
        with open(segment_path, "rb", buffering=1 << 16) as stream:
            result.source_sha256 = fs.digest_of(stream).hexdigest()
            stream.seek(0)
            for record in read_records(stream):
                if record.kind == KIND_EVENT:
                    framed: list[bytes] = [record.data]
                    aside: list[Rejected] = []
                elif record.kind == KIND_DOCUMENTS:
                    uniform = (
                        uniform_events(record.data, event_tag, max_event_size)
                        if fmt == "xml"
                        else None
                    )
                    if uniform is not None and _plain(uniform[0]) and well_formed(uniform[0]):
                        # The whole record at once (see uniform_events);
                        # what waits goes first, to keep the order.
                        flush()
                        size = 0
                        batch.write(uniform[0])
                        result.events += uniform[1]
                        continue
                    framed, aside = frame_documents(record.data, event_tag, max_event_size)
                elif record.kind == KIND_CONTEXT:
                    context = decode_context(record)
                    continue
                elif record.kind == KIND_TORN and record.data[:1] == KIND_DOCUMENTS:
                    framed, aside = _whole_documents_of_torn(record, event_tag, max_event_size)
                else:
                    # Set aside by the framer (KIND_REJECTED), or torn.
                    framed = []
                    aside = [Rejected(record.reason, record.data)]
                for piece in aside:
                    result.note(piece.reason, found=record.kind != KIND_REJECTED)
                    quarantine.write(quarantine_entry(piece.reason, piece.data, context))
                for event in framed:
                    events.append(event)
                    contexts.append(context)
                    size += len(event)
                if len(events) >= CHUNK_EVENTS or size >= CHUNK_BYTES:
                    flush()
                    size = 0
            flush()
        result.batch_bytes, result.batch_sha256 = batch.finish(footer)
        result.quarantine_bytes, result.quarantine_sha256 = quarantine.finish()
    except BaseException:
        batch.abort()
        quarantine.abort()
        raise
    return result


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
