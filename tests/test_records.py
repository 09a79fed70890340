"""The record codec: bytes in, records out; no files but in-memory streams."""

from __future__ import annotations

import io

from twisted.trial.unittest import SynchronousTestCase

from eventpipe.framing.common import Rejected
from eventpipe.records import (
    KIND_EVENT,
    KIND_REJECTED,
    KIND_TORN,
    count_events,
    encode_event,
    encode_rejected,
    read_records,
)


class RecordTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        data = (
            encode_event(b"<EVENT>1</EVENT>")
            + encode_rejected(Rejected("junk\nwith a newline", b"\x00\xff\n"))
            + encode_event(b"<EVENT>2</EVENT>")
        )
        found = [(r.kind, r.data, r.reason) for r in read_records(io.BytesIO(data))]
        self.assertEqual(
            found,
            [
                (KIND_EVENT, b"<EVENT>1</EVENT>", ""),
                (KIND_REJECTED, b"\x00\xff\n", "junk with a newline"),
                (KIND_EVENT, b"<EVENT>2</EVENT>", ""),
            ],
        )

    def test_torn_tail(self) -> None:
        """Whatever follows the last intact record comes out as torn."""
        whole = encode_event(b"<EVENT>1</EVENT>")
        torn = encode_event(b"<EVENT>2</EVENT>")[:-5]
        found = list(read_records(io.BytesIO(whole + torn)))
        self.assertEqual([r.kind for r in found], [KIND_EVENT, KIND_TORN])
        self.assertEqual(found[1].data, torn)

    def test_count_events(self) -> None:
        """Events are counted from headers; set-aside pieces are not events."""
        data = b"".join(encode_event(b"<EVENT>%d</EVENT>" % n) for n in range(5))
        data += encode_rejected(Rejected("junk", b"x"))
        self.assertEqual(count_events(io.BytesIO(data)), 5)
        self.assertEqual(count_events(io.BytesIO(data + b"E0000")), 5)
        self.assertEqual(count_events(io.BytesIO(b"")), 0)
