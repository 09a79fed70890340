"""Ingest: connections to the spool, back-pressure; on a fake clock."""

from __future__ import annotations

import os
from typing import Any

from eventpipe.spool.layout import SpoolWriteError
from tests.harness import ServiceHarness
from tests.support import make_stream


class IngestTests(ServiceHarness):
    def test_split_and_interleaved_connections(self) -> None:
        """
        Two connections sending halves of events in turn never mix their
        bytes.
        """
        service = self.service()
        first, _ = self.connect(service)
        second, _ = self.connect(service)
        a = make_stream(range(0, 5))
        b = make_stream(range(100, 105))
        for i in range(0, max(len(a), len(b)), 37):
            first.dataReceived(a[i : i + 37])
            second.dataReceived(b[i : i + 37])
        self.clock.advance(70)
        self.assertEqual(sorted(self.delivered()), [*range(5), *range(100, 105)])

    def test_backpressure(self) -> None:
        """
        Past max-spool-size every connection is paused (nothing dropped);
        it resumes once deliveries bring the spool below the low-water mark.
        """
        service = self.service(max_spool_size=20_000, max_file_size=5_000)
        self.uploader.hold = True
        receiver, transport = self.connect(service)
        receiver.dataReceived(make_stream(range(30)))
        self.assertEqual(transport.producerState, "paused")
        late, late_transport = self.connect(service)
        self.assertEqual(late_transport.producerState, "paused")
        self.clock.advance(0)
        self.uploader.release()
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(late_transport.producerState, "producing")
        self.clock.advance(70)
        self.assertEqual(self.delivered(), list(range(30)))

    def test_disk_error_pauses_and_retries(self) -> None:
        """
        A write the disk refuses pauses reading; the events are written
        when the disk accepts again, none lost, order kept.
        """
        service = self.service()
        receiver, transport = self.connect(service)
        real_append = service.spool.append_records
        refusals = [OSError(28, "No space left on device")] * 2

        def append(records: Any, events: int) -> int:
            if refusals:
                raise SpoolWriteError(refusals.pop())
            return real_append(records, events)

        self.patch(service.spool, "append_records", append)
        receiver.dataReceived(make_stream([1]))
        self.assertEqual(transport.producerState, "paused")
        receiver.dataReceived(make_stream([2]))
        self.clock.advance(1)
        self.assertEqual(transport.producerState, "paused")
        self.clock.advance(1)
        self.assertEqual(transport.producerState, "producing")
        receiver.dataReceived(make_stream([3]))
        self.clock.advance(70)
        self.assertEqual(self.delivered(), [1, 2, 3])

    def test_truncated_event_at_disconnect(self) -> None:
        service = self.service()
        receiver, _ = self.connect(service)
        receiver.dataReceived(make_stream([1]) + b"<EVENT><cn>")
        receiver.connectionLost(None)
        self.clock.advance(70)
        self.assertEqual(self.delivered(), [1])
        self.assertEqual(service.shipping.events_quarantined, 1)

    def test_max_file_size_with_many_connections(self) -> None:
        """
        Eight connections sending in the same reactor turn: every segment
        stays within max-file-size (sealed before the event that would pass
        it), nothing lost or repeated.
        """
        service = self.service(max_file_size=16 * 1024)
        self.uploader.hold = True
        connections = [self.connect(service)[0] for _ in range(8)]
        for n, receiver in enumerate(connections):
            receiver.dataReceived(make_stream(range(n * 40, n * 40 + 40)))
        sizes = [os.path.getsize(s.path) for s in service.spool.sealed()]
        self.assertGreater(len(sizes), 8)
        self.assertLessEqual(max(sizes), 16 * 1024)
        self.uploader.release()
        self.clock.advance(70)
        self.assertEqual(sorted(self.delivered()), list(range(320)))

    def test_one_event_larger_than_a_segment(self) -> None:
        """An event larger than max-file-size makes a segment of its own."""
        service = self.service(max_file_size=1000)
        receiver, _ = self.connect(service)
        receiver.dataReceived(make_stream(range(3)))
        self.clock.advance(0)
        self.assertEqual(service.rotation.segments_sealed, 3)
        self.assertEqual(self.delivered(), [0, 1, 2])
