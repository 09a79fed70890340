"""Rotation: sealing by age and by size, on a fake clock."""

from __future__ import annotations

import os

from eventpipe.spool.spool import Spool
from tests.harness import ServiceHarness
from tests.support import make_stream


class RotationTests(ServiceHarness):
    def test_rotation_by_time(self) -> None:
        """
        Events sit in the spool until the check after rotation-interval,
        then arrive as one batch under a key fixed at sealing.
        """
        service = self.service()
        receiver, _ = self.connect(service)
        receiver.dataReceived(make_stream(range(10)))
        for _ in range(5):
            self.clock.advance(10)
        self.assertEqual(self.uploader.objects, {})
        self.clock.advance(10)
        self.assertEqual(self.delivered(), list(range(10)))
        [key] = self.uploader.objects
        self.assertEqual(key, "2025/07/29/20250729_161600_gw1_000000.xml")
        self.assertEqual(os.listdir(service.spool.sealed_dir), [])
        self.assertEqual(os.listdir(service.spool.rendered_dir), [])
        self.assertEqual(service.spool.waiting_bytes, 0)

    def test_empty_never_shipped(self) -> None:
        self.service()
        self.clock.advance(600)
        self.assertEqual(self.uploader.requests, [])

    def test_rotation_by_size(self) -> None:
        """
        A segment is sealed before the event that would take it past
        max-file-size, without waiting for the timer.
        """
        service = self.service(max_file_size=10_000)
        receiver, _ = self.connect(service)
        receiver.dataReceived(make_stream(range(20)))
        self.assertEqual(self.delivered(), list(range(18)))
        self.assertEqual(service.rotation.segments_sealed, 3)
        self.clock.advance(60)
        self.assertEqual(self.delivered(), list(range(20)))

    def test_timer_survives_errors(self) -> None:
        """A failing seal is logged and the timer keeps running."""
        service = self.service()
        receiver, _ = self.connect(service)
        receiver.dataReceived(make_stream([1]))
        errors = [OSError(28, "No space left on device"), RuntimeError("unexpected")]
        calls = []

        def broken() -> None:
            calls.append(1)
            raise errors[len(calls) - 1]

        self.patch(service.spool, "detach", broken)
        self.clock.advance(60)
        self.clock.advance(10)
        self.assertEqual(len(calls), 2)
        # A disk error is one log line; anything unexpected is logged whole.
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.patch(service.spool, "detach", Spool.detach.__get__(service.spool))
        self.clock.advance(10)
        self.assertEqual(self.delivered(), [1])
