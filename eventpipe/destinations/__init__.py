"""
Destinations.  Everything the pipeline knows of a destination is
L{IUploader}: deliver this file under this key, idempotently.

Two implementations: L{eventpipe.destinations.outbox.LocalDirectoryUploader}
(the outbox, laid out as the bucket would be) and
L{eventpipe.destinations.s3.S3Uploader} (boto3 in a dedicated thread pool).
Both write conditionally: an object that already exists under the key with
the same content counts as delivered; with different content the upload
fails with L{KeyConflict} and the data stays in the spool.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface


@dataclass(frozen=True)
class UploadRequest:
    """What to deliver, and how to describe it."""

    path: str
    key: str
    sha256: str
    content_type: str
    content_encoding: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


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
            f"an object with different content already exists at {key}",
            transient=False,
            hint="the segment takes a new key; if this repeats, another writer uses "
            "this prefix and instance id: give every instance its own --instance-id",
        )


class IUploader(Interface):
    """A destination for batch files."""

    description = Attribute("Where objects go, for the log (no secrets).")

    def start() -> None:
        """Start whatever the uploader needs (threads, clients)."""

    def stop() -> Deferred[None]:
        """
        Stop it.  Fires when its threads are gone, or soon after if an
        upload in progress does not end (it may finish in the background;
        its segment stays in the spool and is shipped again).
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


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
