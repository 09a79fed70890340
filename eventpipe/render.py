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

import base64
import gzip
import hashlib
import io
import json
import os
import re
import stat
import time
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from lxml import etree

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

_RECORD_HEADER = 18

XML_HEADER = b'<?xml version="1.0" encoding="UTF-8"?>\n<EVENTS>\n'
XML_FOOTER = b"</EVENTS>\n"

CONTENT_TYPES = {"xml": "application/xml", "json": "application/x-ndjson"}


def make_parser() -> etree.XMLParser:
    """
    An lxml parser that never resolves entities, never loads a DTD and
    never touches the network.
    """
    return etree.XMLParser(
        resolve_entities=False,
        load_dtd=False,
        dtd_validation=False,
        no_network=True,
        huge_tree=False,
        remove_comments=False,
        collect_ids=False,
    )


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


class _HashingWriter(io.RawIOBase):
    """Counts and hashes what goes through to a file."""

    def __init__(self, target: BinaryIO) -> None:
        self._target = target
        self.size = 0
        self.sha256 = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._target.write(data)
        self.sha256.update(data)
        self.size += len(data)
        return len(data)


class _Output:
    """A batch or quarantine file, opened only when something is written."""

    def __init__(self, path: str, compress: str, header: bytes = b"") -> None:
        self.path = path
        self._compress = compress
        self._header = header
        self._file: BinaryIO | None = None
        self._hasher: _HashingWriter | None = None
        self._writer: gzip.GzipFile | io.BufferedWriter | None = None

    def write(self, data: bytes) -> None:
        writer = self._writer
        if writer is None:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            self._file = os.fdopen(fd, "wb", buffering=1 << 16)
            self._hasher = _HashingWriter(self._file)
            if self._compress == "gzip":
                # mtime=0 makes the same segment render to the same bytes.
                writer = gzip.GzipFile(
                    filename="", mode="wb", fileobj=self._hasher, mtime=0, compresslevel=6
                )
            else:
                writer = io.BufferedWriter(self._hasher, 1 << 16)
            writer.write(self._header)
            self._writer = writer
        writer.write(data)

    def finish(self, footer: bytes = b"") -> tuple[int, str]:
        if self._writer is None or self._hasher is None or self._file is None:
            return 0, ""
        self._writer.write(footer)
        if isinstance(self._writer, gzip.GzipFile):
            # Writes the gzip trailer; the file it writes into stays open.
            self._writer.close()
        else:
            self._writer.flush()
        # Not forced to disk: a rendered file lives no longer than the
        # process (start-up removes what it finds; the sealed segment is the
        # durable copy), and the outbox makes its own copy durable.
        self._file.flush()
        self._file.close()
        return self._hasher.size, self._hasher.sha256.hexdigest()

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


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


def quarantine_entry(reason: str, data: bytes, context: dict[str, Any] | None = None) -> bytes:
    """
    One line of the quarantine object (JSON Lines): when the piece arrived
    (UTC), who sent it on which listener, why it was set aside, and its bytes
    -- as text when they are UTF-8, in base64 otherwise.
    """
    context = context or {}
    received = context.get("received")
    entry: dict[str, Any] = {
        "received": _iso(received) if isinstance(received, (int, float)) else None,
        "sender": context.get("sender"),
        "listener": context.get("listener"),
        "reason": reason,
        "size": len(data),
    }
    try:
        entry["text"] = data.decode("utf-8")
    except UnicodeDecodeError:
        entry["base64"] = base64.b64encode(data).decode("ascii")
    return json.dumps(entry, ensure_ascii=False).encode("utf-8") + b"\n"


def _iso(stamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + f".{int(stamp % 1 * 1000):03d}Z"


# ACM's administrator guide prints three element names with a space in them
# (<plasectrxPanel date>, <plasectrxPanel dateUTC>, <plasectrxPanel name>).
# That is not XML; with repair on, such names are joined.
_SPACED_NAME = re.compile(rb"<(/?)(plasectrx[A-Za-z]+) ([A-Za-z]+)(\s*/?>)")


def repair_tag_names(data: bytes) -> tuple[bytes, int]:
    """
    Join ACM element names printed with a space: C{<plasectrxPanel date>}
    becomes C{<plasectrxPaneldate>}.

    @return: the repaired bytes and how many tags were changed.
    """
    return _SPACED_NAME.subn(rb"<\1\2\3\4", data)


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


# Events are validated in chunks: one parse of the chunk wrapped in a root.
# Every framed event starts with its root's start tag and ends with the end
# tag that closes it, so the wrapped chunk is well-formed, with one child per
# event, exactly when every event is; if not, each event of the chunk is
# parsed alone to find the bad ones.
CHUNK_EVENTS = 256
CHUNK_BYTES = 1 << 20


class _Nothing:
    """A parser target that builds nothing: the parse only checks."""

    def close(self) -> None:
        return None


# What keeps events off the parse that builds nothing: instructions and
# declarations (?), comments, CDATA and DOCTYPEs (!) and carriage returns --
# and a colon in a tag (see _plain).  (A byte order mark can stand only
# inside an event here, where it is a character like any other.)
_NOT_PLAIN = (b"?", b"!", b"\r")


def _plain(events: bytes) -> bool:
    """
    Whether events may be checked by a parse that builds nothing: none of
    L{_NOT_PLAIN}, and every colon in text (ACM writes "26 bit raw: 0x..."),
    none in a tag, since such a parse does not check namespace prefixes.
    With no comment, CDATA or instruction about, each C{<} opens a tag, and
    the first C{>} after it closes the tag when no quote comes between.
    """
    if any(mark in events for mark in _NOT_PLAIN):
        return False
    colon = events.find(b":")
    while colon >= 0:
        opened = events.rfind(b"<", 0, colon)
        closed = events.find(b">", opened, colon)
        if closed < 0 or b'"' in events[opened:closed] or b"'" in events[opened:closed]:
            return False
        colon = events.find(b":", colon + 1)
    return True


class _WellFormed:
    """
    Whether a run of events, each a root element, is well-formed: one parse
    of the run inside a root, fed to a parser that builds nothing and calls
    back nothing (fed, and the parser kept, it runs faster than a fresh
    parse of a copy).
    """

    def __init__(self) -> None:
        self._parser: etree.XMLParser | None = None

    def __call__(self, events: bytes) -> bool:
        parser = self._parser
        if parser is None:
            parser = self._parser = etree.XMLParser(
                target=_Nothing(),  # type: ignore[arg-type]
                resolve_entities=False,
                load_dtd=False,
                no_network=True,
                huge_tree=False,
            )
        try:
            parser.feed(b"<EVENTS>")
            parser.feed(events)
            parser.feed(b"</EVENTS>")
            parser.close()
        except etree.XMLSyntaxError:
            # A parser that failed starts afresh.
            self._parser = None
            return False
        return True


def _plainly_valid(events: list[bytes], well_formed: _WellFormed) -> bool:
    """
    Whether a chunk of plain events is well-formed, one event a root with
    the right tag (the framer made each start with it): one parse that
    builds nothing and calls back nothing.
    """
    chunk = b"".join(events)
    # Each event, as framed, starts with the root's start tag and ends with
    # the end tag that closes it: in a well-formed chunk, each is one root.
    return _plain(chunk) and well_formed(chunk)


def _render_events(
    events: list[bytes],
    parser: etree.XMLParser,
    well_formed: _WellFormed,
    fmt: str,
    event_tag: str,
) -> list[tuple[str | None, bytes]]:
    """Validate (and convert) a chunk of events, in order."""
    if fmt == "xml" and _plainly_valid(events, well_formed):
        return [(None, data + b"\n") for data in events]
    try:
        root = etree.fromstring(b"<EVENTS>" + b"".join(events) + b"</EVENTS>", parser)
    except etree.XMLSyntaxError:
        root = None
    if (
        root is not None
        and len(root) == len(events)
        and all(child.tag == event_tag for child in root)
    ):
        if fmt == "xml":
            return [(None, data + b"\n") for data in events]
        return [(None, _json_line(child, b"xmlns" in data)) for child, data in zip(root, events)]
    return [_render_event(data, parser, fmt, event_tag) for data in events]


def _json_line(element: Any, namespaced: bool) -> bytes:
    document = event_to_json(element, namespaced=namespaced)
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def _repaired(
    data: bytes, parser: etree.XMLParser, fmt: str, event_tag: str
) -> tuple[bytes, bytes] | None:
    """
    An event that fails as it came, with ACM's spaced names joined: (the
    repaired event, what to write) when that makes it pass, else None.
    """
    fixed, changes = repair_tag_names(data)
    if not changes:
        return None
    reason, rendered = _render_event(fixed, parser, fmt, event_tag)
    return (fixed, rendered) if reason is None else None


def _render_event(
    data: bytes, parser: etree.XMLParser, fmt: str, event_tag: str
) -> tuple[str | None, bytes]:
    """
    Validate one event.

    @return: (None, the bytes to write) for a good event, or (the reason it
        is not, b"").
    """
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as error:
        return f"not well-formed XML: {error.msg}", b""
    if getattr(root.getroottree().docinfo, "doctype", ""):
        return "a DOCTYPE is not allowed in an event", b""
    if root.tag != event_tag:
        return f"root element is {root.tag!r}, not {event_tag!r}", b""
    if data.startswith(b"<?xml"):
        try:
            data = _to_utf8(data, root.getroottree().docinfo.encoding or "utf-8")
        except (LookupError, UnicodeError) as error:
            return f"cannot transcode to UTF-8: {error}", b""
    if fmt == "xml":
        return None, data + b"\n"
    return None, _json_line(root, b"xmlns" in data)


def _to_utf8(data: bytes, encoding: str) -> bytes:
    """
    An event that came with its own declaration (an encoding other than
    UTF-8, see L{eventpipe.framing}): the event alone, as UTF-8, its text
    unchanged character for character.
    """
    end = data.index(b"?>") + 2
    return data[end:].lstrip(b" \t\r\n").decode(encoding).encode("utf-8")


def _name(element: Any) -> str:
    qname = etree.QName(element)
    return f"{element.prefix}:{qname.localname}" if element.prefix else qname.localname


def _attribute_name(key: str, element: Any) -> str:
    if key.startswith("{"):
        uri, local = key[1:].split("}", 1)
        for prefix, value in element.nsmap.items():
            if value == uri and prefix:
                return f"@{prefix}:{local}"
        return f"@{{{uri}}}{local}"
    return "@" + key


def _value(element: Any, namespaced: bool) -> Any:
    """
    The JSON value of an element: its text when it has neither attributes
    nor child elements (C{""} when empty), otherwise an object.

    @param namespaced: whether the event declares any namespace; without
        one, names are taken as they are (the fast path for ACM events).
    """
    declared: dict[str | None, str] = {}
    if namespaced:
        parent = element.getparent()
        inherited = parent.nsmap if parent is not None else {}
        declared = {
            prefix: uri for prefix, uri in element.nsmap.items() if inherited.get(prefix) != uri
        }
    attributes = element.attrib
    if not len(element):
        if not attributes and not declared:
            return element.text or ""
        children = []
    else:
        children = [child for child in element if isinstance(child.tag, str)]
    text = element.text or ""
    for child in element:
        text += child.tail or ""
    if not children and not attributes and not declared:
        # Only comments or processing instructions inside: the text remains.
        return text
    value: dict[str, Any] = {}
    for prefix, uri in declared.items():
        value["@xmlns:" + prefix if prefix else "@xmlns"] = uri
    for key, attribute in attributes.items():
        value[_attribute_name(key, element) if namespaced else "@" + key] = attribute
    if children and not text.strip():
        text = ""
    if text:
        value["#text"] = text
    for child in children:
        name = _name(child) if namespaced else child.tag
        converted = _value(child, namespaced)
        if name in value:
            existing = value[name]
            # A converted child is a string or an object, never a list: a
            # list here can only come from an earlier repetition.
            if isinstance(existing, list):
                existing.append(converted)
            else:
                value[name] = [existing, converted]
        else:
            value[name] = converted
    return value


def event_to_json(root: Any, namespaced: bool | None = None) -> dict[str, Any]:
    """
    The lossless JSON form of one event: C{{"EVENT": {...}}}.

    - a child element becomes a key, in document order;
    - a repeated child becomes a list of its values;
    - an attribute becomes C{"@name"};
    - an element with neither attributes nor children becomes its text,
      exactly as sent (padding kept), C{""} when empty;
    - the text of an element that also has attributes or children becomes
      C{"#text"} (whitespace-only text between child elements is layout and
      is not kept);
    - names keep the prefix they were written with (C{"p:name"}); a
      namespace declaration becomes C{"@xmlns"} or C{"@xmlns:p"};
    - comments and processing instructions inside an event are not kept.

    @param namespaced: whether the event uses namespaces, when the caller
        knows (an event without the bytes C{xmlns} cannot); found out
        otherwise.
    """
    if namespaced is None:
        namespaced = bool(root.nsmap) or any(
            element.prefix or "{" in element.tag for element in root.iter(tag=etree.Element)
        )
    if not namespaced:
        flat = _flat_value(root)
        return {root.tag: _value(root, False) if flat is None else flat}
    return {_name(root): _value(root, True)}


def _flat_value(element: Any) -> dict[str, str] | None:
    """
    L{_value} of an element without namespaces whose children are all
    leaves (no attributes, children, comments or instructions), none
    repeated, with layout only between them -- what ACM sends -- in one
    loop; None for any other element.
    """
    if element.attrib or (element.text and not element.text.isspace()):
        return None
    value: dict[str, str] = {}
    for child in element:
        tag = child.tag
        if (
            tag.__class__ is not str
            or tag in value
            or len(child)
            or child.attrib
            or (child.tail and not child.tail.isspace())
        ):
            return None
        value[tag] = child.text or ""
    return value or None
