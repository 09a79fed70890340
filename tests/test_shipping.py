"""Shipping: render, upload, delete, retry; on a fake clock."""

from __future__ import annotations

import errno
import os
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ProcessTerminated
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from eventpipe import threads
from eventpipe.destinations import IUploader, UploadError
from eventpipe.render import batch as render_module
from eventpipe.shipping import rendering as shipping_module
from eventpipe.shipping import shipment as shipment_module
from tests.harness import ServiceHarness, SynchronousWork
from tests.support import DECLARATION, make_stream, numbers_in_xml_batch


def _killed(number: int) -> Failure:
    return Failure(ProcessTerminated(None, number))


def _exited(code: int) -> Failure:
    return Failure(ProcessTerminated(code))


class ShippingTests(ServiceHarness):
    def test_malformed_event_quarantined(self) -> None:
        service = self.service()
        receiver, _ = self.connect(service)
        receiver.dataReceived(
            make_stream([1]) + DECLARATION + b"<EVENT><broken></EVENT>\n" + make_stream([2])
        )
        self.clock.advance(70)
        self.assertEqual(self.delivered(), [1, 2])
        [quarantine] = [k for k in self.uploader.objects if k.startswith("quarantine/")]
        self.assertIn(b"<EVENT><broken></EVENT>", self.uploader.objects[quarantine])
        self.assertEqual(service.shipping.events_quarantined, 1)

    def test_quarantine_counted_once_stored(self) -> None:
        """
        A piece is counted as quarantined once its quarantine object is
        stored, not when the render found it; a failure of that write is
        said under the quarantine's key, not the batch's.
        """
        service = self.service()
        self.uploader.failures = [UploadError("503", transient=True)]
        receiver, _ = self.connect(service)
        receiver.dataReceived(make_stream([1]) + DECLARATION + b"<EVENT><broken></EVENT>\n")
        self.clock.advance(60)
        self.assertEqual(service.status().pieces_quarantined, 0)
        [shipment] = service.shipping.shipments.values()
        self.assertTrue(
            (shipment.failing_key or "").startswith("quarantine/"), shipment.failing_key
        )
        self.clock.advance(1)
        self.assertEqual(service.status().pieces_quarantined, 1)

    def test_retry_with_backoff(self) -> None:
        """
        A failed upload is retried with growing delays; the segment stays
        on disk until the upload succeeds, and ingest goes on meanwhile.
        """
        service = self.service()
        self.uploader.failures = [UploadError("503", transient=True)] * 3
        receiver, _ = self.connect(service)
        receiver.dataReceived(make_stream(range(3)))
        self.clock.advance(60)
        self.assertEqual(len(self.uploader.requests), 1)
        self.assertEqual(len(os.listdir(service.spool.sealed_dir)), 1)
        receiver.dataReceived(make_stream(range(3, 6)))
        self.clock.advance(1)
        self.assertEqual(len(self.uploader.requests), 2)
        self.clock.advance(2)
        self.assertEqual(len(self.uploader.requests), 3)
        self.clock.advance(3.9)
        self.assertEqual(len(self.uploader.requests), 3)
        self.assertEqual(len(os.listdir(service.spool.sealed_dir)), 1)
        self.clock.advance(0.1)
        self.assertEqual(len(self.uploader.requests), 4)
        self.assertEqual(self.delivered(), [0, 1, 2])
        self.assertEqual(len(os.listdir(service.spool.sealed_dir)), 0)
        self.assertEqual({r.key for r in self.uploader.requests}, set(self.uploader.objects))
        self.clock.advance(60)
        self.assertEqual(self.delivered(), list(range(6)))

    def test_configuration_error_waits_the_capped_delay(self) -> None:
        service = self.service()
        self.uploader.failures = [UploadError("AccessDenied", transient=False, hint="grant")]
        receiver, _ = self.connect(service)
        receiver.dataReceived(make_stream([1]))
        self.clock.advance(70)
        self.assertEqual(len(self.uploader.requests), 1)
        self.clock.advance(29.9)
        self.assertEqual(len(self.uploader.requests), 1)
        self.clock.advance(0.1)
        self.assertEqual(self.delivered(), [1])

    def test_uploader_provides_interface(self) -> None:
        verifyObject(IUploader, self.uploader)

    def test_delete_fails_then_retried(self) -> None:
        """
        Deleting a delivered segment fails (EACCES): the error is logged with
        its cause and retried like any other; the upload is found done, the
        segment goes, and the spool's accounting comes back to zero.
        """
        service = self.service()
        real_remove = service.spool.remove
        refusals = [PermissionError(13, "Permission denied")]

        def remove(segment: Any) -> bool:
            if refusals:
                raise refusals.pop()
            return real_remove(segment)

        self.patch(service.spool, "remove", remove)
        receiver, _ = self.connect(service)
        receiver.dataReceived(make_stream(range(3)))
        self.clock.advance(60)
        self.assertIn("Permission denied", service.shipping.last_attempt_error or "")
        self.assertEqual(len(os.listdir(service.spool.sealed_dir)), 1)
        self.assertEqual(service.shipping.segments_waiting, 1)
        self.clock.advance(1)
        self.assertEqual(os.listdir(service.spool.sealed_dir), [])
        self.assertEqual(service.shipping.segments_waiting, 0)
        self.assertEqual(service.spool.waiting_bytes, 0)
        self.assertEqual(self.delivered(), [0, 1, 2])
        self.assertEqual(len(self.uploader.batches()), 1)

    def test_key_taken_by_another_object(self) -> None:
        """
        The key already holds someone else's object (a lost sequence file,
        all older segments delivered): it is left alone, and the segment
        takes the next free sequence number.
        """
        service = self.service()
        taken = "2025/07/29/20250729_161600_gw1_000000.xml"
        self.uploader.objects[taken] = b"someone else's"
        receiver, _ = self.connect(service)
        receiver.dataReceived(make_stream(range(3)))
        self.clock.advance(60)
        self.assertEqual(self.uploader.objects[taken], b"someone else's")
        renumbered = "2025/07/29/20250729_161600_gw1_000001.xml"
        self.assertEqual(numbers_in_xml_batch(self.uploader.objects[renumbered]), [0, 1, 2])
        self.assertEqual(os.listdir(service.spool.sealed_dir), [])
        receiver.dataReceived(make_stream([3]))
        self.clock.advance(60)
        self.assertIn("2025/07/29/20250729_161700_gw1_000002.xml", self.uploader.objects)

    def test_delivery_wakes_waiting_retries(self) -> None:
        """
        A segment waiting out a long backoff is retried as soon as another
        segment is delivered: the destination is back.
        """
        service = self.service(max_file_size=10_000)
        self.uploader.failures = [UploadError("503", transient=True)] * 4
        first, _ = self.connect(service)
        first.dataReceived(make_stream([1]))
        self.clock.advance(60)
        for delay in (1, 2, 4):
            self.clock.advance(delay)
        self.assertEqual(len(self.uploader.requests), 4)
        self.assertEqual(self.uploader.objects, {})
        second, _ = self.connect(service)
        second.dataReceived(make_stream(range(100, 110)))
        self.clock.advance(0)
        self.assertIn(100, self.delivered())
        self.assertIn(1, self.delivered(), "the waiting segment was not woken")
        self.clock.advance(60)
        self.assertEqual(sorted(self.delivered()), [1, *range(100, 110)])
        self.assertEqual(os.listdir(service.spool.sealed_dir), [])

    def test_failed_attempt_holds_nothing(self) -> None:
        """
        A failed attempt gives back its slot and drops its rendered files
        while it waits; the next attempt renders the segment again.
        """
        renders: list[str] = []
        real = shipping_module.render_segment

        def render(path: str, *args: Any) -> Any:
            renders.append(path)
            return real(path, *args)

        self.patch(shipping_module, "render_segment", render)
        service = self.service(upload_concurrency=1)
        self.uploader.failures = [UploadError("503", transient=True)] * 3
        receiver, _ = self.connect(service)
        receiver.dataReceived(make_stream(range(2)))
        self.clock.advance(60)
        [shipment] = service.shipping.shipments.values()
        self.assertIs(shipment.phase, shipment_module.Phase.WAITING)
        self.assertEqual(os.listdir(service.spool.rendered_dir), [])
        self.assertEqual(service.shipping._slots.tokens, 1)
        self.assertEqual(service.spool.waiting_bytes, service.spool.sealed_bytes)
        for delay in (1, 2, 4):
            self.clock.advance(delay)
        self.assertEqual(self.delivered(), [0, 1])
        self.assertEqual(len(self.uploader.requests), 4)
        self.assertEqual(len(renders), 4)
        self.assertEqual(os.listdir(service.spool.rendered_dir), [])
        self.assertEqual(service.spool.waiting_bytes, 0)


class HangingFirstRender(SynchronousWork):
    """The first render never answers (a worker stuck on a FIFO); the rest do."""

    def __init__(self) -> None:
        super().__init__()
        self.cancelled: list[Deferred[Any]] = []
        self.calls = 0

    def run(self, function: Any, *args: Any) -> Deferred[Any]:
        if function is shipping_module.render_segment:
            self.calls += 1
            if self.calls == 1:
                return Deferred(self.cancelled.append)
        return super().run(function, *args)


class IsolationTests(ServiceHarness):
    def test_unrenderable_segment_set_aside(self) -> None:
        """
        A sealed entry that can never render (a directory with a segment's
        name) fails three times, holds no slot meanwhile, and is moved to
        failed/ -- never deleted; the segments behind it are delivered.
        """
        poison = "20250729_161400_gw1_000007.xml"
        os.makedirs(os.path.join(self.directory, "sealed", poison))
        service = self.service(upload_concurrency=1, rotation_interval=0.5, check_interval=0.1)
        [shipment] = service.shipping.shipments.values()
        self.assertIs(shipment.phase, shipment_module.Phase.WAITING)
        receiver, _ = self.connect(service)
        receiver.dataReceived(make_stream(range(5)))
        self.clock.advance(0.6)
        self.assertEqual(self.delivered(), [0, 1, 2, 3, 4])
        self.assertEqual(os.listdir(service.spool.failed_dir), [])
        self.clock.advance(0.4)
        self.assertEqual(os.listdir(service.spool.failed_dir), [])
        self.clock.advance(2)
        self.assertEqual(os.listdir(service.spool.failed_dir), [poison])
        self.assertEqual(os.listdir(service.spool.sealed_dir), [])
        self.assertEqual(service.shipping.segments_waiting, 0)
        self.assertEqual(service.metrics.segments_set_aside._value.get(), 1)
        status = service.status()
        self.assertEqual(status.set_aside, ("20250729_161400_gw1_000007",))
        self.assertEqual(
            status.as_json()["spool"]["segments_set_aside"], ["20250729_161400_gw1_000007"]
        )
        # Its number is never given out again, even after a restart that
        # lost the sequence file.
        service.stopService()
        os.unlink(os.path.join(self.directory, "sequence"))
        again = self.service()
        self.assertGreater(again.spool._next_sequence, 7)

    def test_full_disk_never_sets_aside(self) -> None:
        """
        Renders that fail because the disk is full say nothing of the
        segment: however many, it is not set aside, and ships once there is
        room.
        """
        real = shipping_module.render_segment
        failures = [OSError(errno.ENOSPC, "No space left on device")] * 5

        def render(*args: Any) -> Any:
            if failures:
                raise failures.pop()
            return real(*args)

        self.patch(shipping_module, "render_segment", render)
        service = self.service()
        receiver, _ = self.connect(service)
        receiver.dataReceived(make_stream(range(3)))
        self.clock.advance(60)
        for delay in (1, 2, 4, 8, 16):
            self.clock.advance(delay)
        self.assertEqual(os.listdir(service.spool.failed_dir), [])
        self.assertEqual(self.delivered(), [0, 1, 2])

    def poison(self, fail: Any) -> list[str]:
        """
        Renders of the first segment sealed fail as C{fail()} says (an
        exception, or None to render); the others render.
        """
        real = shipping_module.render_segment
        first: list[str] = []

        def render(path: str, *args: Any) -> Any:
            name = os.path.basename(path)
            if not first:
                first.append(name)
            if name == first[0]:
                error = fail()
                if error is not None:
                    raise error
            return real(path, *args)

        self.patch(shipping_module, "render_segment", render)
        return first

    def test_machine_faults_never_set_aside(self) -> None:
        """
        Renders that fail for the machine's sake (EIO and ESTALE on a network
        filesystem, a worker killed from outside or that cannot start, memory)
        say nothing of the segment, even while other segments render: it is
        retried with backoff, never set aside, and ships once they pass.
        """
        errors = [
            OSError(errno.EIO, "Input/output error"),
            OSError(errno.ESTALE, "Stale file handle"),
            threads.WorkerDied("killed", threads.death_fault(_killed(9), False, True)[0]),
            threads.WorkerDied("exited", threads.death_fault(_exited(1), False, True)[0]),
            MemoryError(),
        ] * 3
        self.poison(lambda: errors.pop() if errors else None)
        service = self.service()
        receiver, _ = self.connect(service)
        for round in range(20):
            receiver.dataReceived(make_stream(range(round * 3, round * 3 + 3)))
            self.clock.advance(60)
        self.assertEqual(os.listdir(service.spool.failed_dir), [])
        self.assertEqual(sorted(self.delivered()), list(range(60)))
        self.assertEqual(errors, [])

    def test_unclear_failure_counts_once_others_render(self) -> None:
        """
        A render that fails in a way that does not say whose fault it is (a
        crash of the worker on it, its time limit, an error of the render)
        counts against the segment only when other segments render between
        its attempts: alone, it is retried for ever; beside good traffic,
        it is set aside after three, and the others are delivered.
        """
        crash = threads.death_fault(_killed(11), False, True)[0]
        self.assertEqual(crash, "unclear")
        self.poison(lambda: threads.WorkerDied("crashed", crash))
        service = self.service(retry_max=2.0)
        receiver, _ = self.connect(service)
        receiver.dataReceived(make_stream(range(3)))
        self.clock.advance(60)
        for _ in range(20):
            self.clock.advance(2)
        self.assertEqual(os.listdir(service.spool.failed_dir), [])
        for round in range(1, 6):
            receiver.dataReceived(make_stream(range(round * 3, round * 3 + 3)))
            self.clock.advance(60)
        self.assertEqual(len(os.listdir(service.spool.failed_dir)), 1)
        self.assertEqual(sorted(self.delivered()), list(range(3, 18)))

    def test_segment_removed_from_the_spool(self) -> None:
        """
        A sealed segment deleted by something else (an operator, a cleanup
        job): said once, not retried for ever, and the others go on.
        """
        service = self.service()
        receiver, _ = self.connect(service)
        service.uploader.failures = [UploadError("503", transient=True)]  # type: ignore[attr-defined]
        receiver.dataReceived(make_stream(range(3)))
        self.clock.advance(60)
        [path] = [
            os.path.join(service.spool.sealed_dir, n) for n in os.listdir(service.spool.sealed_dir)
        ]
        os.unlink(path)
        self.clock.advance(1)
        self.assertEqual(service.shipping.segments_waiting, 0)
        receiver.dataReceived(make_stream(range(3, 6)))
        self.clock.advance(60)
        self.assertEqual(sorted(self.delivered()), [3, 4, 5])

    def test_the_segments_own_failure_counts(self) -> None:
        """A render that names the segment itself counts at once, alone or not."""
        self.poison(lambda: render_module.UnrenderableSegment("not a regular file"))
        service = self.service()
        receiver, _ = self.connect(service)
        receiver.dataReceived(make_stream(range(3)))
        self.clock.advance(60)
        for delay in (1, 2, 4):
            self.clock.advance(delay)
        self.assertEqual(len(os.listdir(service.spool.failed_dir)), 1)

    def test_hung_render_abandoned(self) -> None:
        """
        A render that never answers is abandoned at --render-timeout (its
        worker would be replaced), and the next attempt delivers.
        """
        work = HangingFirstRender()
        service = self.service(render=work, render_timeout=5.0)
        receiver, _ = self.connect(service)
        receiver.dataReceived(make_stream(range(3)))
        self.clock.advance(60)
        self.assertEqual(self.delivered(), [])
        self.clock.advance(5)
        self.assertEqual(len(work.cancelled), 1)
        [shipment] = service.shipping.shipments.values()
        self.assertIs(shipment.phase, shipment_module.Phase.WAITING)
        self.assertIn("no answer within 5.0 s", shipment.last_error)
        self.clock.advance(1)
        self.assertEqual(self.delivered(), [0, 1, 2])

    def plant_twins(self, count: int) -> None:
        """A twin's objects under the first C{count} keys of this segment's name."""
        for sequence in range(count):
            key = f"2025/07/29/20250729_161600_gw1_{sequence:06d}.xml"
            self.uploader.objects[key] = b"the twin's"
            self.uploader.metadata[key] = {"source": "the twin's segment", "sha256": "x"}

    def test_taken_keys_renumber_at_once(self) -> None:
        """
        Keys that hold another writer's objects (a twin with this instance
        id) are stepped over within one attempt: no backoff for each.
        """
        service = self.service()
        self.plant_twins(3)
        receiver, _ = self.connect(service)
        receiver.dataReceived(make_stream(range(3)))
        self.clock.advance(60)
        self.assertEqual(
            numbers_in_xml_batch(
                self.uploader.objects["2025/07/29/20250729_161600_gw1_000003.xml"]
            ),
            [0, 1, 2],
        )
        self.assertEqual(service.metrics.key_conflicts._value.get(), 3)
        self.assertEqual(service.shipping.last_attempt_error, None)

    def test_many_taken_keys_in_a_row(self) -> None:
        """
        More taken keys in a row than one attempt steps over: the segment
        stays, the log says what a person must do, the next segment is
        delivered, and the first at its next try.
        """
        service = self.service(retry_max=30.0)
        self.plant_twins(20)
        receiver, _ = self.connect(service)
        receiver.dataReceived(make_stream(range(3)))
        self.clock.advance(60)
        error = service.shipping.last_attempt_error or ""
        self.assertIn("16 keys in a row", error)
        self.assertEqual(len(os.listdir(service.spool.sealed_dir)), 1)
        receiver.dataReceived(make_stream(range(3, 6)))
        self.clock.advance(60)

        def delivered() -> list[int]:
            return sorted(
                n
                for data in self.uploader.batches().values()
                if data != b"the twin's"
                for n in numbers_in_xml_batch(data)
            )

        # The next segment is delivered, and its delivery wakes the first,
        # whose next try finds a free key.
        self.assertEqual(delivered(), list(range(6)))
        self.assertEqual(os.listdir(service.spool.sealed_dir), [])

    def test_quarantine_written_once_across_a_restart(self) -> None:
        """
        The quarantine object is written under N, the batch's key N is
        taken, the segment is renumbered to N+1, its upload fails, and the
        process restarts: the new life does not write the quarantine again
        under N+1 (a replay would deliver both), and delivers the batch.
        """
        service = self.service()
        key = "2025/07/29/20250729_161600_gw1_000000.xml"
        self.uploader.objects[key] = b"the twin's"
        self.uploader.metadata[key] = {"source": "the twin's segment", "sha256": "x"}
        real_upload = self.uploader.upload

        def upload(request: Any) -> Deferred[None]:
            if request.key.endswith("_000001.xml"):
                return fail(UploadError("503", transient=True))
            return real_upload(request)

        self.patch(self.uploader, "upload", upload)
        receiver, _ = self.connect(service)
        receiver.dataReceived(make_stream([1]) + DECLARATION + b"<EVENT><bad></EVENT>\n")
        self.clock.advance(60)
        self.assertEqual(os.listdir(service.spool.sealed_dir), ["20250729_161600_gw1_000001.xml"])
        service.stopService()
        self.patch(self.uploader, "upload", real_upload)
        again = self.service()
        self.clock.advance(1)
        quarantine = [k for k in self.uploader.objects if k.startswith("quarantine/")]
        self.assertEqual(quarantine, ["quarantine/2025/07/29/20250729_161600_gw1_000000.jsonl"])
        self.assertEqual(
            numbers_in_xml_batch(self.uploader.objects[key.replace("000000", "000001")]), [1]
        )
        # Delivered: nothing is remembered for it any more.
        self.assertEqual(os.listdir(again.spool.written_dir), [])

    def test_quarantine_written_once_when_the_key_is_taken(self) -> None:
        """
        The batch's key holds the twin's object after the quarantine object
        was written: the segment takes a new number, and its quarantine is
        not written a second time under the new name.
        """
        service = self.service()
        key = "2025/07/29/20250729_161600_gw1_000000.xml"
        self.uploader.objects[key] = b"the twin's"
        self.uploader.metadata[key] = {"source": "the twin's segment", "sha256": "x"}
        receiver, _ = self.connect(service)
        receiver.dataReceived(make_stream([1]) + DECLARATION + b"<EVENT><bad></EVENT>\n")
        self.clock.advance(60)
        quarantine = [k for k in self.uploader.objects if k.startswith("quarantine/")]
        self.assertEqual(quarantine, ["quarantine/2025/07/29/20250729_161600_gw1_000000.jsonl"])
        self.assertEqual(
            numbers_in_xml_batch(self.uploader.objects[key.replace("000000", "000001")]), [1]
        )
