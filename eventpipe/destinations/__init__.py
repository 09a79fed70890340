"""
Destinations.  Everything the pipeline knows of a destination is
L{IUploader}: deliver this file under this key, idempotently.

Three implementations: L{eventpipe.destinations.outbox.LocalDirectoryUploader}
(the outbox, laid out as the bucket would be),
L{eventpipe.destinations.s3.S3Uploader} (boto3 in a dedicated thread pool)
and L{eventpipe.destinations.azure.AzureBlobUploader} (azure-storage-blob, in
its own thread pool).  All write conditionally, and decide what an object already under the key
is by one rule, L{delivered_before}: it is this segment's delivery when it
carries this segment's identity (the digest of the sealed segment's own
bytes, the same for every render of it and different for every other
segment); anything else is someone else's, and the upload fails with
L{KeyConflict} (the segment then takes a new key; the data stays in the
spool).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from twisted.internet.defer import Deferred, fail
from zope.interface import Attribute, Interface

# The names of an object's metadata: lower-case letters only, valid
# everywhere (HTTP headers, S3, and Azure, whose metadata names must be C#
# identifiers).
SOURCE = "source"  # the digest of the sealed segment: the delivery's identity
SHA256 = "sha256"  # the digest of the object's own bytes
INSTANCE = "instance"
SEGMENT = "segment"
EVENTS = "events"
ITEMS = "items"
# A replayed batch: the quarantine object it came from, and which of its
# lines (0-based ranges, "0-2,5") it holds.
REPLAYED = "replayed"
LINES = "lines"


@dataclass(frozen=True)
class UploadRequest:
    """
    What to deliver, and how to describe it.

    @ivar sha256: the digest of the file at C{path} (what the destination
        verifies).
    @ivar source: the identity of the segment it was rendered from (see
        L{delivered_before}); empty for objects that belong to no segment
        (probes).
    """

    path: str
    key: str
    sha256: str
    content_type: str
    content_encoding: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    source: str = ""

    def object_metadata(self) -> dict[str, str]:
        """The metadata stored with the object: what L{delivered_before} reads."""
        metadata = dict(self.metadata, **{SHA256: self.sha256})
        if self.source:
            metadata[SOURCE] = self.source
        return metadata


def delivered_before(request: UploadRequest, found: Mapping[str, str]) -> bool:
    """
    The one rule for an object found under the key of C{request}, given its
    metadata: whether it is this segment's delivery (an earlier attempt, an
    earlier life of this process, another render of the same segment).

    Same source digest: delivered.  An object that records no source (one
    written by an earlier release) counts as delivered only when it holds
    these very bytes.  Anything else is another writer's object.
    """
    source = found.get(SOURCE)
    if source:
        return bool(request.source) and source == request.source
    return found.get(SHA256) == request.sha256


class UploadError(Exception):
    """
    A failed delivery, classified.

    @ivar transient: True when waiting is the fix (throttling, 5xx,
        timeouts, connection errors); False when someone has to change
        something (permissions, a missing bucket, a key conflict).  Either
        way the data stays in the spool and delivery is retried.
    @ivar hint: what to do about it, for the log.
    """

    def __init__(self, message: str, transient: bool, hint: str = "") -> None:
        super().__init__(message)
        self.transient = transient
        self.hint = hint


class KeyConflict(UploadError):
    """An object exists under the key with other content."""

    def __init__(self, key: str) -> None:
        super().__init__(
            f"{key} holds another writer's object",
            transient=False,
            hint="the segment takes a new key; if this repeats, another writer uses "
            "this prefix and instance id: give every instance its own --instance-id",
        )
        self.key = key


class IUploader(Interface):
    """A destination for batch files."""

    description = Attribute("Where objects go, for the log (no secrets).")

    def start() -> None:
        """Start whatever the uploader needs (threads, clients)."""

    def stop(timeout: float = 5.0) -> Deferred[None]:
        """
        Stop it.  Fires when its threads are gone, or after C{timeout}
        seconds if an upload in progress does not end (it may finish in the
        background; its segment stays in the spool and is shipped again).
        """

    def upload(request: UploadRequest) -> Deferred[None]:
        """
        Deliver C{request.path} under C{request.key}, idempotently.  Fails
        with L{UploadError} (or any exception, taken as transient).
        """

    def check() -> Deferred[str]:
        """
        Probe the destination.  Fires with a short description when it is
        reachable, fails with L{UploadError} saying what is wrong otherwise.
        """


class IObjectReader(Interface):
    """
    What the tools read at a destination (blocking calls: for commands, never
    on the reactor).
    """

    description = Attribute("Where objects are, for people (no secrets).")

    def keys(prefix: str) -> list[str]:
        """The keys that start with C{prefix}, sorted."""

    def open(key: str) -> BinaryIO:
        """
        A stream of the object's bytes (close it).

        @raise KeyError: no such object.
        """

    def metadata(key: str) -> dict[str, str]:
        """The object's metadata; empty for an object that has none or is not there."""

    def deliver(request: UploadRequest) -> None:
        """L{IUploader.upload}, blocking: the same conditional write."""


class UnconditionalStore(UploadError):
    """The store overwrote an object that was written only if absent."""

    def __init__(self, where: str) -> None:
        super().__init__(
            f"{where} overwrote an object written only if absent (If-None-Match: *): "
            "it ignores conditional writes, so nothing stops a twin or a lost sequence file "
            "from overwriting a delivered batch",
            transient=False,
            hint="use a store that honours conditional writes, or accept the risk with "
            "--allow-unconditional-writes",
        )


class PooledUploader(abc.ABC):
    """
    An uploader whose blocking calls run in a thread pool of its own
    (C{self.work}): C{upload} runs C{deliver} there, C{check} runs C{_check}
    and, for a store whose writes are conditional by request (S3, Azure),
    proves that the store honours the condition (L{overwrites} on
    C{probe_key}).  A store that does not is refused -- nothing is written
    to it -- unless C{allow_unconditional}.
    """

    work: Any
    description: str
    # Where the start-up probe writes twice (None: nothing to prove).
    probe_key: str | None = None
    allow_unconditional = False
    # Why deliveries are refused (the store ignores conditional writes).
    refusing: UploadError | None = None

    def _pool(self, reactor: Any, clock: Any, threads: int, name: str, pool: Any = None) -> None:
        from eventpipe.threads import ThreadedWork

        self.work = ThreadedWork(reactor, clock or reactor, threads, name, pool)

    def start(self) -> None:
        self.work.start()

    def stop(self, timeout: float = 5.0) -> Deferred[None]:
        return self.work.stop(timeout)  # type: ignore[no-any-return]

    def upload(self, request: UploadRequest) -> Deferred[None]:
        if self.refusing is not None:
            return fail(self.refusing)
        return self.work.run(self.deliver, request)  # type: ignore[no-any-return]

    def check(self) -> Deferred[str]:
        return self.work.run(self._checked)  # type: ignore[no-any-return]

    def _checked(self) -> str:
        where = self._check()
        if self.probe_key is not None and self.overwrites(self.probe_key):
            if not self.allow_unconditional:
                self.refusing = UnconditionalStore(self.description)
                raise self.refusing
            where += " (it ignores conditional writes: --allow-unconditional-writes)"
        return where

    def overwrites(self, key: str) -> bool:
        """
        Whether the store overwrites an object written only if absent:
        write C{key} so, twice (a refusal of the first proves it as well:
        an earlier probe left it), then remove it where allowed.  Blocking.
        A store whose writes are conditional by their nature (the outbox's
        link, which fails on an existing name) never does: the default.
        """
        return False

    @abc.abstractmethod
    def deliver(self, request: UploadRequest) -> None:
        """Deliver C{request}, blocking (see L{IUploader.upload})."""

    @abc.abstractmethod
    def _check(self) -> str:
        """Probe the destination, blocking (see L{IUploader.check})."""
