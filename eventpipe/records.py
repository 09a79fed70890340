"""
The spool's record codec: how events and set-aside pieces are written to a
segment file, and read back.

A record is a header of 18 bytes -- its kind, the payload length and its
CRC-32, each as 8 hex digits, and a newline -- then the payload and a
newline.  Kinds:

- C{E}: one event, framed at ingest;
- C{R}: whole documents of one read of one connection, kept as read and
  framed when the segment is rendered (see L{eventpipe.framing.reads.ReadSplitter});
- C{Q}: bytes set aside by the framer, with the reason;
- C{C}: the context of what follows: when it arrived, from which sender, on
  which listener.

Format 1 (releases before this one) had C{E} and C{Q} only; a reader of
format 2 reads both (a segment without C{C} records knows no sender).  A
record that was only partly written when the process died (a torn record)
fails the length or CRC check; the reader hands it over as torn: whole
documents at its start are still delivered, the damaged rest goes to
quarantine, never into a batch.

Pure: bytes and file objects only.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from eventpipe.framing.common import Rejected

KIND_EVENT = b"E"
KIND_REJECTED = b"Q"
KIND_TORN = b"T"
KIND_CONTEXT = b"C"
# Whole documents of one read, framed when the segment is rendered.
KIND_DOCUMENTS = b"R"

_HEADER = 18
_TORN_CHUNK = 1 << 20
# The largest record a segment may hold (the largest --max-event-size, and
# the reason of a rejected piece); a longer length in a header is damage.
MAX_RECORD = 65 << 20


@dataclass(frozen=True)
class Record:
    """One record read back from a segment."""

    kind: bytes
    data: bytes
    reason: str = ""


def encode_event(event: bytes) -> bytes:
    return b"E%08x%08x\n%b\n" % (len(event), zlib.crc32(event), event)


def encode_documents(documents: bytes) -> bytes:
    """Whole documents as one connection sent them in one read."""
    return b"".join(documents_record(documents))


def documents_record(documents: bytes) -> tuple[bytes, bytes, bytes]:
    """
    L{encode_documents} in the three parts it joins, for one gathered write
    that does not copy the documents.
    """
    return b"R%08x%08x\n" % (len(documents), zlib.crc32(documents)), documents, b"\n"


def encode_rejected(rejected: Rejected) -> bytes:
    payload = rejected.reason.encode("utf-8").replace(b"\n", b" ") + b"\n" + rejected.data
    return b"Q%08x%08x\n%b\n" % (len(payload), zlib.crc32(payload), payload)


_PLAIN_TEXT = re.compile(r"[A-Za-z0-9.:% ?\[\]-]*")


def encode_context(received: float, sender: str, listener: str) -> bytes:
    """Where and when the records that follow (until the next context) came from."""
    if _PLAIN_TEXT.fullmatch(sender + listener):
        # What addresses look like: no quoting to do (and no json.dumps on
        # every read).
        payload = b'{"received":%.3f,"sender":"%s","listener":"%s"}' % (
            received,
            sender.encode("ascii"),
            listener.encode("ascii"),
        )
    else:
        payload = json.dumps(
            {"received": round(received, 3), "sender": sender, "listener": listener},
            separators=(",", ":"),
        ).encode("utf-8")
    return b"C%08x%08x\n%b\n" % (len(payload), zlib.crc32(payload), payload)


def decode_context(record: Record) -> dict[str, Any]:
    """The fields of a context record (empty if it is damaged)."""
    try:
        value = json.loads(record.data)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def read_records(stream: BinaryIO) -> Iterator[Record]:
    """
    Read the records of a segment, streaming.  Whatever follows the last
    intact record (a torn write) comes out as L{KIND_TORN} records of at
    most 1 MiB each.
    """
    while True:
        header = stream.read(_HEADER)
        if not header:
            return
        record, body = _parse(header, stream)
        if record is None:
            yield from _torn(header + body, stream)
            return
        yield record


def _parse(header: bytes, stream: BinaryIO) -> tuple[Record | None, bytes]:
    """
    Read the rest of the record that C{header} starts.

    @return: the record (or None if it is not intact) and the bytes read
        after the header.
    """
    if len(header) != _HEADER or header[17:18] != b"\n":
        return None, b""
    kind = header[:1]
    if kind not in (KIND_EVENT, KIND_REJECTED, KIND_CONTEXT, KIND_DOCUMENTS):
        return None, b""
    try:
        length = int(header[1:9], 16)
        crc = int(header[9:17], 16)
    except ValueError:
        return None, b""
    if length > MAX_RECORD:
        return None, b""
    body = stream.read(length + 1)
    payload = body[:-1]
    if len(body) != length + 1 or body[-1:] != b"\n" or zlib.crc32(payload) != crc:
        return None, body
    if kind == KIND_REJECTED:
        reason, _, data = payload.partition(b"\n")
        return Record(kind, data, reason.decode("utf-8", "replace")), body
    return Record(kind, payload), body


def _torn(start: bytes, stream: BinaryIO) -> Iterator[Record]:
    chunk = start + stream.read(max(_TORN_CHUNK - len(start), 0))
    while chunk:
        yield Record(
            KIND_TORN,
            chunk,
            "torn record: the process stopped in the middle of writing it",
        )
        chunk = stream.read(_TORN_CHUNK)


def count_events(stream: BinaryIO) -> int:
    """
    The event records of a segment, counted from their headers alone
    (payloads are skipped, not read); counting stops at the first damaged
    header.
    """
    count = 0
    while True:
        header = stream.read(_HEADER)
        if len(header) != _HEADER or header[17:18] != b"\n":
            return count
        try:
            length = int(header[1:9], 16)
        except ValueError:
            return count
        if header[:1] == KIND_EVENT:
            count += 1
        if header[:1] == KIND_DOCUMENTS:
            count += stream.read(length + 1).count(b"<?xml ")
            continue
        stream.seek(length + 1, 1)
