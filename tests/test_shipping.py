"""Shipping: render, upload, delete, retry; on a fake clock."""

from __future__ import annotations

import os

from zope.interface.verify import verifyObject

from eventpipe.destinations import IUploader, UploadError
from tests.harness import ServiceHarness
from tests.support import DECLARATION, make_stream


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
