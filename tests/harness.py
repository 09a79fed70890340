"""
A service on a fake clock: receivers on StringTransport, an in-memory
uploader, rendering called synchronously.  For unit tests only: the stop
order is also tested with real thread pools (tests.test_service) and real
twistd processes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from eventpipe.config.settings import Settings
from eventpipe.destinations import IUploader, KeyConflict, UploadRequest, delivered_before
from eventpipe.fs import file_sha256
from eventpipe.naming import extension
from eventpipe.protocol import EventReceiver, EventReceiverFactory
from eventpipe.service import EventpipeService
from eventpipe.spool.spool import Spool
from tests.support import numbers_in_xml_batch


@implementer(IUploader)
class MemoryUploader:
    """An uploader that keeps objects in a dict and fails on request."""

    description = "memory"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.metadata: dict[str, dict[str, str]] = {}
        self.requests: list[UploadRequest] = []
        self.failures: list[Exception] = []
        self.hold = False
        self.held: list[tuple[UploadRequest, Deferred[None]]] = []
        self.started = self.stopped = False

    def start(self) -> None:
        self.started = True

    def stop(self, timeout: float = 5.0) -> Deferred[None]:
        self.stopped = True
        return succeed(None)

    def upload(self, request: UploadRequest) -> Deferred[None]:
        self.requests.append(request)
        if self.failures:
            return fail(self.failures.pop(0))
        if self.hold:
            d: Deferred[None] = Deferred()
            self.held.append((request, d))
            return d
        return self._store(request)

    def release(self) -> None:
        """Stop holding; let every held upload through."""
        self.hold = False
        while self.held:
            request, d = self.held.pop(0)
            self._store(request).chainDeferred(d)

    def _store(self, request: UploadRequest) -> Deferred[None]:
        with open(request.path, "rb") as stream:
            data = stream.read()
        assert file_sha256(request.path) == request.sha256
        if request.key in self.objects:
            if delivered_before(request, self.metadata.get(request.key, {})):
                return succeed(None)
            return fail(KeyConflict(request.key))
        self.objects[request.key] = data
        self.metadata[request.key] = request.object_metadata()
        return succeed(None)

    def check(self) -> Deferred[str]:
        return succeed(self.description)

    def batches(self) -> dict[str, bytes]:
        return {k: v for k, v in self.objects.items() if not k.startswith("quarantine/")}


class SynchronousWork:
    """Runs 'threaded' work at once, in the calling thread (unit tests only)."""

    def __init__(self) -> None:
        self.running = False

    def start(self) -> None:
        self.running = True

    def run(self, function: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return maybeDeferred(function, *args)

    def stop(self, timeout: float = 5.0) -> Deferred[None]:
        self.running = False
        return succeed(None)


SETTINGS: dict[str, Any] = dict(
    instance_id="gw1",
    rotation_interval=60.0,
    check_interval=10.0,
    max_file_size=5 * 2**20,
    retry_initial=1.0,
    retry_max=30.0,
    shutdown_timeout=30.0,
)


class ServiceHarness(SynchronousTestCase):
    """A service on a fake clock with an in-memory uploader; no tests."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1753805700)
        self.directory = self.mktemp()
        self.uploader = MemoryUploader()

    def service(self, render: Any = None, **overrides: Any) -> EventpipeService:
        settings = Settings(**dict(SETTINGS, **overrides))
        spool = Spool(
            self.directory,
            "gw1",
            self.clock.seconds,
            "never",
            monotonic=self.clock.seconds,
            extension=extension(settings.format, settings.compress),
        )
        service = EventpipeService(
            settings,
            spool,
            self.uploader,
            self.clock,
            render if render is not None else SynchronousWork(),
            sealer=SynchronousWork(),
            jitter=lambda: 0.0,
        )
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        return service

    def connect(self, service: EventpipeService) -> tuple[EventReceiver, StringTransport]:
        receiver = EventReceiverFactory(service.ingest).buildProtocol(None)
        assert receiver is not None
        transport = StringTransport()
        receiver.makeConnection(transport)
        return receiver, transport

    def delivered(self) -> list[int]:
        numbers: list[int] = []
        for key in sorted(self.uploader.batches()):
            numbers.extend(numbers_in_xml_batch(self.uploader.objects[key]))
        return numbers
