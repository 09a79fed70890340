"""
One shipment: a sealed segment on its way out, its lifecycle as an explicit
L{Phase} (as Twisted's C{ClientService} names its states), and what its
delivery consists of.  No reactor: the scheduling is L{eventpipe.shipping}'s.
"""

from __future__ import annotations

import enum
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred

from eventpipe.destinations import EVENTS, INSTANCE, ITEMS, SEGMENT, UploadRequest
from eventpipe.naming import object_key, quarantine_key
from eventpipe.render import CONTENT_TYPES, RenderResult
from eventpipe.retry import Retry
from eventpipe.spool import Segment

# Renders in a row that may fail before a segment is set aside.
RENDER_ATTEMPTS = 3
# Taken keys in a row that one attempt steps over before it gives up (and
# waits, like any failed attempt).
RENUMBERS = 16


class Phase(enum.Enum):
    """Where a shipment stands (as Twisted's ClientService names its states)."""

    QUEUED = "waiting for a slot"
    RENDERING = "rendering"
    UPLOADING = "uploading"
    REMOVING = "removing the delivered segment"
    WAITING = "waiting to retry"
    DELIVERED = "delivered"
    SET_ASIDE = "set aside: it cannot be rendered"
    STOPPED = "stopped; it stays in the spool"


class RenderFailed(Exception):
    """The render of a segment failed (not its delivery)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(f"rendering failed: {describe(error)}")
        self.error = error


class Shipment:
    """One sealed segment on its way out."""

    def __init__(self, segment: Segment, started: float) -> None:
        self.segment = segment
        self.started = started
        self.phase = Phase.QUEUED
        # Events in it: known when it was sealed in this life, else once it
        # has been rendered.
        self.events = segment.events
        # What the last render made (its counts and digests; the files are
        # gone once its attempt ends).
        self.result: RenderResult | None = None
        self.batch_path = ""
        self.quarantine_path = ""
        # Whether the rendered files are on disk now.
        self.rendered = False
        self.render_failures = 0
        # Whether what the render set aside was counted (the first render).
        self.counted = False
        # Where its quarantine object was delivered: a segment renumbered
        # after that (its batch's key was taken) does not write it again.
        self.quarantine_key: str | None = None
        self.last_error = ""
        # The retries that ship it; their result fires when it is delivered
        # or set aside (or the shipping is cancelled at shutdown).
        self.retry: Retry | None = None

    @property
    def deferred(self) -> Deferred[Any] | None:
        return self.retry.result if self.retry is not None else None


QUARANTINE_TYPE = "application/x-ndjson"


def upload_requests(shipment: Shipment, instance_id: str, prefix: str) -> list[UploadRequest]:
    """
    What delivering a rendered shipment writes, in order: its quarantine
    object (unless it was delivered already, before the segment was
    renumbered), then its batch.  Each carries the segment's identity (the
    digest of the sealed segment) and its metadata.
    """
    segment = shipment.segment
    result = shipment.result
    assert result is not None
    fmt, compress = segment.format
    metadata = {INSTANCE: instance_id, SEGMENT: segment.name}
    requests = []
    if result.quarantined and shipment.quarantine_key is None:
        requests.append(
            UploadRequest(
                path=shipment.quarantine_path,
                key=quarantine_key(segment.name, prefix),
                sha256=result.quarantine_sha256,
                content_type=QUARANTINE_TYPE,
                metadata=dict(metadata, **{ITEMS: str(result.quarantined)}),
                source=result.source_sha256,
            )
        )
    if result.events:
        requests.append(
            UploadRequest(
                path=shipment.batch_path,
                key=object_key(segment.name, segment.extension, prefix),
                sha256=result.batch_sha256,
                content_type=CONTENT_TYPES[fmt],
                content_encoding="gzip" if compress == "gzip" else None,
                metadata=dict(metadata, **{EVENTS: str(result.events)}),
                source=result.source_sha256,
            )
        )
    return requests


def describe(error: BaseException | None) -> str:
    if isinstance(error, defer.TimeoutError):
        seconds = error.args[0] if error.args else "?"
        return f"no answer within {seconds} s, abandoned"
    text = str(error)
    return text or type(error).__name__
