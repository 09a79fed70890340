"""
One delivery of a rendered segment: its quarantine object (once), then its
batch, each written only if its key is free; a key that holds another
writer's object gives the segment the next free sequence number at once,
up to L{RENUMBERS} times in a row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from eventpipe.config.settings import Settings
from eventpipe.destinations import IUploader, KeyConflict, UploadError, UploadRequest
from eventpipe.metrics import Metrics
from eventpipe.naming import RENUMBERS, object_key
from eventpipe.shipping.log import log
from eventpipe.shipping.shipment import QUARANTINE_TYPE, Shipment, upload_requests
from eventpipe.spool.layout import Segment
from eventpipe.spool.spool import Spool

RunAway = Callable[..., "Deferred[Any]"]


class Delivery:
    """
    The upload-and-renumber loop of every shipment.

    @param in_sealer: runs a rename or a note in the thread that seals.
    @param renumbered: told C{(old, new)} when a segment takes a new number.
    """

    def __init__(
        self,
        settings: Settings,
        spool: Spool,
        uploader: IUploader,
        clock: IReactorTime,
        metrics: Metrics,
        in_sealer: RunAway,
        renumbered: Callable[[Segment, Segment], None],
    ) -> None:
        self.settings = settings
        self.spool = spool
        self.uploader = uploader
        self.clock = clock
        self.metrics = metrics
        self.in_sealer = in_sealer
        self._renumbered = renumbered

    def key_for(self, segment: Segment) -> str:
        return object_key(segment.name, segment.extension, self.settings.prefix)

    async def deliver(self, shipment: Shipment) -> None:
        """
        Upload the rendered segment, renumbering it past keys that hold
        another writer's objects.

        @raise UploadError: a write failed, or L{RENUMBERS} keys in a row
            were taken (a fault to fix: it waits the longest delay).
        """
        first = self.key_for(shipment.segment)
        for _ in range(RENUMBERS):
            try:
                await self._upload(shipment)
                return
            except KeyConflict as conflict:
                await self._renumber(shipment, conflict)
        raise UploadError(
            f"{RENUMBERS} keys in a row, {first} to the one before "
            f"{self.key_for(shipment.segment)}, hold another writer's objects",
            transient=False,
            hint="another writer delivers under this prefix and instance id "
            f"({self.settings.instance_id}): stop it, or give every instance its own "
            "--instance-id; the segment stays in the spool and is tried again at the "
            "longest retry delay, and the other segments go on",
        )

    async def _renumber(self, shipment: Shipment, conflict: KeyConflict) -> None:
        old = shipment.segment
        new = await self.in_sealer(self.spool.renumber, old)
        shipment.segment = new
        self._renumbered(old, new)
        # The rendered files keep their names; only the keys change.
        self.metrics.key_conflicts.inc()
        log.error(
            "{conflict}: two writers share instance id {instance} (two hosts or containers "
            "with one name?), or this spool lost its sequence file; the object is left "
            "alone, and {name} ships as {new} under {key}",
            conflict=str(conflict),
            instance=self.settings.instance_id,
            name=old.name,
            new=new.name,
            key=self.key_for(new),
        )

    async def _upload(self, shipment: Shipment) -> None:
        # The quarantine first, once: if the batch's key is taken, the
        # segment is renumbered and its quarantine object stays where it is
        # -- remembered on disk, so that a restart does not write it again
        # under the new number.
        result = shipment.result
        assert result is not None
        if result.quarantined and shipment.quarantine_key is None:
            shipment.quarantine_key = await self.in_sealer(self.spool.written, result.source_sha256)
        for request in upload_requests(shipment, self.settings.instance_id, self.settings.prefix):
            # The key a failure is about: the batch's, or its quarantine's.
            shipment.failing_key = request.key
            await self._send(request)
            shipment.failing_key = None
            if request.content_type == QUARANTINE_TYPE:
                shipment.quarantine_key = request.key
                await self.in_sealer(self.spool.note_written, result.source_sha256, request.key)

    async def _send(self, request: UploadRequest) -> None:
        sending = self.uploader.upload(request)
        sending.addTimeout(self.settings.upload_timeout, self.clock)
        await sending
