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
from eventpipe.render.batch import CONTENT_TYPES, RenderResult
from eventpipe.retry import Retry
from eventpipe.spool.layout import Segment
from eventpipe.worker import MACHINE, UNCLEAR
from eventpipe.worker import SEGMENT as SEGMENTS_OWN

# Renders in a row that may fail before a segment is set aside.
RENDER_ATTEMPTS = 3


class Phase(enum.Enum):
    """Where a shipment stands (as Twisted's ClientService names its states)."""

    QUEUED = "waiting for a slot"
    RENDERING = "rendering"
    UPLOADING = "uploading"
    REMOVING = "removing the delivered segment"
    WAITING = "waiting to retry"
    DELIVERED = "delivered"
    SET_ASIDE = "set aside: it cannot be rendered"
    GONE = "gone: removed from the spool by something else"
    STOPPED = "stopped; it stays in the spool"


def render_fault(error: BaseException) -> str:
    """
    Whose fault a failed render is: C{segment} (the render names the
    segment itself: not a regular file), C{machine} (a system error -- EIO,
    ESTALE, a full disk --, memory, a worker killed from outside or that
    could not start), or C{unclear} (a render past its time limit, a crash
    of the worker on it, an error of the render code): an unclear failure is
    the segment's only when it repeats while other segments render (see
    L{Shipment.render_failed}).
    """
    fault = getattr(error, "fault", None)
    if getattr(error, "segments_own", False):
        return SEGMENTS_OWN
    if isinstance(fault, str) and fault in (SEGMENTS_OWN, MACHINE, UNCLEAR):
        return fault
    if isinstance(error, (OSError, MemoryError)):
        return MACHINE
    return UNCLEAR


class RenderFailed(Exception):
    """The render of a segment failed (not its delivery)."""

    def __init__(self, error: BaseException, counted: bool = True, fault: str = UNCLEAR) -> None:
        super().__init__(f"rendering failed: {describe(error)}")
        self.error = error
        # Whether it counted toward setting the segment aside, whose fault
        # it was (see render_fault), and whether the segment is set aside.
        self.counted = counted
        self.fault = fault
        self.set_aside = False


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
        # Renders of any segment done when this one's last attempt began
        # (see L{render_failed}).
        self.renders_at_attempt: int | None = None
        self.renders_at_previous_attempt: int | None = None
        # Whether what the render set aside was counted (the first render).
        self.counted = False
        # Where its quarantine object was delivered: a segment renumbered
        # after that (its batch's key was taken) does not write it again.
        self.quarantine_key: str | None = None
        self.last_error = ""
        # The key of the write that is under way (or failed) in this attempt.
        self.failing_key: str | None = None
        # The retries that ship it; their result fires when it is delivered
        # or set aside (or the shipping is cancelled at shutdown).
        self.retry: Retry | None = None

    # The transitions: each moves the phase, and only these do.

    def queue(self) -> None:
        """Wait for a slot (a new attempt, or one woken from its wait)."""
        self.phase = Phase.QUEUED

    def render(self, renders_done: int) -> None:
        """An attempt begins, when C{renders_done} renders have succeeded."""
        self.phase = Phase.RENDERING
        self.failing_key = None
        self.renders_at_previous_attempt = self.renders_at_attempt
        self.renders_at_attempt = renders_done

    def upload(self) -> None:
        self.phase = Phase.UPLOADING

    def remove(self) -> None:
        """Delivered: the segment's file is removed (the "reset")."""
        self.phase = Phase.REMOVING

    def delivered(self) -> None:
        self.phase = Phase.DELIVERED

    def wait(self, error: str) -> None:
        """The attempt failed with C{error}: wait to retry."""
        self.phase = Phase.WAITING
        self.last_error = error

    def set_aside(self) -> None:
        self.phase = Phase.SET_ASIDE

    def gone(self) -> None:
        self.phase = Phase.GONE

    def stopped(self) -> None:
        self.phase = Phase.STOPPED

    @property
    def ended_undelivered(self) -> bool:
        """Whether its chain ended without a delivery (set aside, or gone)."""
        return self.phase in (Phase.SET_ASIDE, Phase.GONE)

    def render_failed(self, error: BaseException, renders_done: int) -> RenderFailed:
        """
        The one decision on a failed render: whose fault it is
        (L{render_fault}), and whether it counts toward setting the segment
        aside.  A failure the segment's own counts; one of the machine never
        does; an unclear one counts when another segment has rendered since
        this one's previous attempt began (the machine works, a fresh worker
        rendered something else, and this segment failed again).

        @return: the failure to raise; C{set_aside} on it says whether the
            segment has failed L{RENDER_ATTEMPTS} times in a row now.
        """
        fault = render_fault(error)
        before = self.renders_at_previous_attempt
        counted = fault == SEGMENTS_OWN or (
            fault == UNCLEAR and before is not None and renders_done > before
        )
        if counted:
            self.render_failures += 1
        failed = RenderFailed(error, counted, fault)
        failed.set_aside = self.render_failures >= RENDER_ATTEMPTS
        return failed

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
