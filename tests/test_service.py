"""
The pipeline driven by a fake clock: receivers on StringTransport, an
in-memory uploader, rendering called synchronously.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from eventpipe.protocol import EventReceiver, EventReceiverFactory
from eventpipe.service import Pipeline, Settings
from eventpipe.spool import Spool, SpoolWriteError
from eventpipe.upload import IUploader, KeyConflict, UploadError, UploadRequest, file_sha256
from tests.support import DECLARATION, make_event, make_stream, numbers_in_xml_batch


@implementer(IUploader)
class MemoryUploader:
    """An uploader that keeps objects in a dict and fails on request."""

    description = "memory"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.requests: list[UploadRequest] = []
        self.failures: list[Exception] = []
        self.hold = False
        self.held: list[Deferred[None]] = []
        self.started = self.stopped = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    def upload(self, request: UploadRequest) -> Deferred[None]:
        self.requests.append(request)
        if self.failures:
            return fail(self.failures.pop(0))
        if self.hold:
            d: Deferred[None] = Deferred()
            self.held.append(d)
            return d
        with open(request.path, "rb") as stream:
            data = stream.read()
        assert file_sha256(request.path) == request.sha256
        if request.key in self.objects and self.objects[request.key] != data:
            return fail(KeyConflict(request.key))
        self.objects[request.key] = data
        return succeed(None)

    def check(self) -> Deferred[str]:
        return succeed(self.description)

    def batches(self) -> dict[str, bytes]:
        return {k: v for k, v in self.objects.items() if not k.startswith("quarantine/")}


def synchronous(function: Callable[..., Any], *args: Any) -> Deferred[Any]:
    return maybeDeferred(function, *args)


class PipelineHarness(SynchronousTestCase):
    """A pipeline on a fake clock with an in-memory uploader; no tests."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1753805700)
        self.directory = self.mktemp()
        self.uploader = MemoryUploader()

    def pipeline(self, **overrides: Any) -> Pipeline:
        settings = dict(
            instance_id="gw1",
            rotation_interval=60.0,
            check_interval=10.0,
            max_file_size=5 * 2**20,
            retry_initial=1.0,
            retry_max=30.0,
            shutdown_timeout=30.0,
        )
        settings.update(overrides)
        spool = Spool(self.directory, "gw1", self.clock.seconds, "never")
        pipeline = Pipeline(
            Settings(**settings),  # type: ignore[arg-type]
            spool,
            self.uploader,
            self.clock,
            synchronous,
            jitter=lambda: 0.0,
        )
        pipeline.startService()
        self.addCleanup(lambda: pipeline.running and pipeline.stopService())
        return pipeline

    def connect(self, pipeline: Pipeline) -> tuple[EventReceiver, StringTransport]:
        receiver = EventReceiverFactory(pipeline.ingest).buildProtocol(None)  # type: ignore[arg-type]
        transport = StringTransport()
        receiver.makeConnection(transport)
        return receiver, transport

    def delivered(self) -> list[int]:
        numbers: list[int] = []
        for key in sorted(self.uploader.batches()):
            numbers.extend(numbers_in_xml_batch(self.uploader.objects[key]))
        return numbers


class PipelineTests(PipelineHarness):
    def test_rotation_by_time(self) -> None:
        """
        Events sit in the spool until the check after rotation-interval,
        then arrive as one batch under a key fixed at sealing.
        """
        pipeline = self.pipeline()
        receiver, _ = self.connect(pipeline)
        receiver.dataReceived(make_stream(range(10)))
        for _ in range(5):
            self.clock.advance(10)
        self.assertEqual(self.uploader.objects, {})
        self.clock.advance(10)
        self.assertEqual(self.delivered(), list(range(10)))
        [key] = self.uploader.objects
        self.assertEqual(key, "2025/07/29/20250729_161600_gw1_000000.xml")
        self.assertEqual(os.listdir(pipeline.spool.sealed_dir), [])
        self.assertEqual(os.listdir(pipeline.spool.rendered_dir), [])
        self.assertEqual(pipeline.spool.waiting_bytes, 0)

    def test_empty_never_shipped(self) -> None:
        self.pipeline()
        self.clock.advance(600)
        self.assertEqual(self.uploader.requests, [])

    def test_rotation_by_size(self) -> None:
        """
        A segment that reaches max-file-size is sealed at once, without
        waiting for the timer.
        """
        pipeline = self.pipeline(max_file_size=10_000)
        receiver, _ = self.connect(pipeline)
        receiver.dataReceived(make_stream(range(20)))
        self.clock.advance(0)
        self.assertEqual(self.delivered(), list(range(20)))
        self.assertEqual(pipeline.segments_sealed, 1)

    def test_split_and_interleaved_connections(self) -> None:
        """
        Two connections sending halves of events in turn never mix their
        bytes.
        """
        pipeline = self.pipeline()
        first, _ = self.connect(pipeline)
        second, _ = self.connect(pipeline)
        a = make_stream(range(0, 5))
        b = make_stream(range(100, 105))
        for i in range(0, max(len(a), len(b)), 37):
            first.dataReceived(a[i : i + 37])
            second.dataReceived(b[i : i + 37])
        self.clock.advance(70)
        self.assertEqual(sorted(self.delivered()), [*range(5), *range(100, 105)])

    def test_malformed_event_quarantined(self) -> None:
        pipeline = self.pipeline()
        receiver, _ = self.connect(pipeline)
        receiver.dataReceived(
            make_stream([1]) + DECLARATION + b"<EVENT><broken></EVENT>\n" + make_stream([2])
        )
        self.clock.advance(70)
        self.assertEqual(self.delivered(), [1, 2])
        [quarantine] = [k for k in self.uploader.objects if k.startswith("quarantine/")]
        self.assertIn(b"<EVENT><broken></EVENT>", self.uploader.objects[quarantine])
        self.assertEqual(pipeline.events_quarantined, 1)

    def test_retry_with_backoff(self) -> None:
        """
        A failed upload is retried with growing delays; the segment stays
        on disk until the upload succeeds, and ingest goes on meanwhile.
        """
        pipeline = self.pipeline()
        self.uploader.failures = [UploadError("503", transient=True)] * 3
        receiver, _ = self.connect(pipeline)
        receiver.dataReceived(make_stream(range(3)))
        self.clock.advance(60)
        self.assertEqual(len(self.uploader.requests), 1)
        self.assertEqual(len(os.listdir(pipeline.spool.sealed_dir)), 1)
        receiver.dataReceived(make_stream(range(3, 6)))
        self.clock.advance(1)
        self.assertEqual(len(self.uploader.requests), 2)
        self.clock.advance(2)
        self.assertEqual(len(self.uploader.requests), 3)
        self.clock.advance(3.9)
        self.assertEqual(len(self.uploader.requests), 3)
        self.assertEqual(len(os.listdir(pipeline.spool.sealed_dir)), 1)
        self.clock.advance(0.1)
        self.assertEqual(len(self.uploader.requests), 4)
        self.assertEqual(self.delivered(), [0, 1, 2])
        self.assertEqual(len(os.listdir(pipeline.spool.sealed_dir)), 0)
        self.assertEqual({r.key for r in self.uploader.requests}, set(self.uploader.objects))
        self.clock.advance(60)
        self.assertEqual(self.delivered(), list(range(6)))

    def test_configuration_error_waits_the_capped_delay(self) -> None:
        pipeline = self.pipeline()
        self.uploader.failures = [UploadError("AccessDenied", transient=False, hint="grant")]
        receiver, _ = self.connect(pipeline)
        receiver.dataReceived(make_stream([1]))
        self.clock.advance(70)
        self.assertEqual(len(self.uploader.requests), 1)
        self.clock.advance(29.9)
        self.assertEqual(len(self.uploader.requests), 1)
        self.clock.advance(0.1)
        self.assertEqual(self.delivered(), [1])

    def test_recovery(self) -> None:
        """
        A restart seals the leftover current segment and ships every sealed
        segment under the name it already had.
        """
        spool = Spool(self.directory, "gw1", self.clock.seconds, "never")
        spool.append([make_event(1)])
        old = spool.seal()
        spool.append([make_event(2)])
        spool.close()
        assert old is not None
        self.clock.advance(3600)
        pipeline = self.pipeline()
        self.assertEqual(self.delivered(), [1, 2])
        self.assertIn(pipeline.key_for(old), self.uploader.objects)

    def test_shutdown_ships(self) -> None:
        """Stopping seals the current segment and ships it."""
        pipeline = self.pipeline()
        receiver, transport = self.connect(pipeline)
        receiver.dataReceived(make_stream(range(4)))
        d = pipeline.stopService()
        self.assertTrue(transport.disconnecting)
        receiver.connectionLost(None)
        self.successResultOf(d)
        self.assertEqual(self.delivered(), list(range(4)))
        self.assertTrue(self.uploader.stopped)

    def test_shutdown_timeout(self) -> None:
        """
        When the destination does not answer, stopping gives up after
        shutdown-timeout and the segment stays in the spool.
        """
        pipeline = self.pipeline(shutdown_timeout=5.0)
        self.uploader.hold = True
        receiver, _ = self.connect(pipeline)
        receiver.dataReceived(make_stream(range(2)))
        receiver.connectionLost(None)
        d = pipeline.stopService()
        self.assertNoResult(d)
        self.clock.advance(5)
        self.successResultOf(d)
        self.assertEqual(len(os.listdir(pipeline.spool.sealed_dir)), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_backpressure(self) -> None:
        """
        Past max-spool-size every connection is paused (nothing dropped);
        it resumes once deliveries bring the spool below the low-water mark.
        """
        pipeline = self.pipeline(max_spool_size=20_000, max_file_size=5_000)
        self.uploader.hold = True
        receiver, transport = self.connect(pipeline)
        receiver.dataReceived(make_stream(range(30)))
        self.assertEqual(transport.producerState, "paused")
        late, late_transport = self.connect(pipeline)
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
        pipeline = self.pipeline()
        receiver, transport = self.connect(pipeline)
        real_append = pipeline.spool.append
        refusals = [OSError(28, "No space left on device")] * 2

        def append(events: Any, rejected: Any = ()) -> int:
            if refusals:
                raise SpoolWriteError(refusals.pop())
            return real_append(events, rejected)

        self.patch(pipeline.spool, "append", append)
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
        pipeline = self.pipeline()
        receiver, _ = self.connect(pipeline)
        receiver.dataReceived(make_stream([1]) + b"<EVENT><cn>")
        receiver.connectionLost(None)
        self.clock.advance(70)
        self.assertEqual(self.delivered(), [1])
        self.assertEqual(pipeline.events_quarantined, 1)

    def test_timer_survives_errors(self) -> None:
        """A failing seal is logged and the timer keeps running."""
        pipeline = self.pipeline()
        receiver, _ = self.connect(pipeline)
        receiver.dataReceived(make_stream([1]))
        errors = [OSError(28, "No space left on device"), RuntimeError("unexpected")]
        calls = []

        def broken() -> None:
            calls.append(1)
            raise errors[len(calls) - 1]

        self.patch(pipeline.spool, "seal", broken)
        self.clock.advance(60)
        self.clock.advance(10)
        self.assertEqual(len(calls), 2)
        # A disk error is one log line; anything unexpected is logged whole.
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.patch(pipeline.spool, "seal", Spool.seal.__get__(pipeline.spool))
        self.clock.advance(10)
        self.assertEqual(self.delivered(), [1])

    def test_uploader_provides_interface(self) -> None:
        verifyObject(IUploader, self.uploader)
