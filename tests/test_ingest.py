"""Ingest: connections to the spool, back-pressure; on a fake clock."""

from __future__ import annotations

from typing import Any

from eventpipe.spool import SpoolWriteError
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
        self.uploader.hold = False
        while self.uploader.held:
            held = self.uploader.held.pop(0)
            request = [r for r in self.uploader.requests][len(self.uploader.objects)]
            self.uploader.objects[request.key] = open(request.path, "rb").read()
            held.callback(None)
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
        real_append = service.spool.append
        refusals = [OSError(28, "No space left on device")] * 2

        def append(events: Any, rejected: Any = ()) -> int:
            if refusals:
                raise SpoolWriteError(refusals.pop())
            return real_append(events, rejected)

        self.patch(service.spool, "append", append)
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
