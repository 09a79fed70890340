"""
The render of one shipment, in a worker process: the batch and the
quarantine file, with a time limit.  A failed render is judged once
(L{eventpipe.shipping.shipment.Shipment.render_failed}); a segment that
keeps failing is set aside in C{failed/}, never deleted; a segment whose
file is gone from the spool ends its chain.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime

from eventpipe.config.settings import Settings
from eventpipe.metrics import Metrics, quarantined
from eventpipe.render.batch import render_segment
from eventpipe.shipping.log import log
from eventpipe.shipping.shipment import Shipment, describe
from eventpipe.spool.spool import Spool

RunAway = Callable[..., "Deferred[Any]"]


class Rendering:
    """
    Renders shipments, and counts what every render did.

    @param render_in_worker: C{render_in_worker(f, *args)} runs the render
        in a worker process and returns a Deferred (cancelling it abandons
        the render and replaces the worker).
    @param in_sealer: runs a move in the thread that seals.
    """

    def __init__(
        self,
        settings: Settings,
        spool: Spool,
        clock: IReactorTime,
        metrics: Metrics,
        render_in_worker: RunAway,
        in_sealer: RunAway,
    ) -> None:
        self.settings = settings
        self.spool = spool
        self.clock = clock
        self.metrics = metrics
        self.render_in_worker = render_in_worker
        self.in_sealer = in_sealer
        # Renders that succeeded (whose fault a failure is, see
        # Shipment.render_failed), and the pieces they set aside (counted
        # at the first render of a segment).
        self.renders_done = 0
        self.pieces_found = 0

    async def render(self, shipment: Shipment) -> bool:
        """
        Render the segment.

        @return: False when the segment was set aside, or is gone.
        @raise RenderFailed: the render failed (and is tried again).
        """
        segment = shipment.segment
        fmt, compress = segment.format
        shipment.batch_path = self.spool.rendered_path(segment, segment.extension)
        shipment.quarantine_path = self.spool.rendered_path(segment, ".quarantine")
        rendering = self.render_in_worker(
            render_segment,
            segment.path,
            shipment.batch_path,
            shipment.quarantine_path,
            fmt,
            compress,
            self.settings.event_tag,
            self.settings.repair_tag_names,
            self.settings.max_event_size,
        )
        rendering.addTimeout(self.settings.render_timeout, self.clock)
        try:
            result = await rendering
        except CancelledError:
            raise
        except Exception as error:
            if isinstance(error, FileNotFoundError) and not os.path.lexists(segment.path):
                self._gone(shipment)
                return False
            failed = shipment.render_failed(error, self.renders_done)
            if failed.set_aside:
                await self._set_aside(shipment, error)
                return False
            raise failed from error
        shipment.render_failures = 0
        self.renders_done += 1
        shipment.result = result
        if shipment.events is None:
            shipment.events = result.events + result.quarantined
        shipment.rendered = True
        if not shipment.counted:
            shipment.counted = True
            for reason, count in result.found.items():
                quarantined(self.metrics, reason, count, self.clock.seconds())
                self.pieces_found += count
        self.spool.rendered_bytes += result.batch_bytes + result.quarantine_bytes
        return True

    def _gone(self, shipment: Shipment) -> None:
        """Not a fault to wait out: there is nothing left to ship."""
        segment = shipment.segment
        self.spool.forget(segment, True)
        shipment.gone()
        log.error(
            "{name} is gone from the spool ({path} was removed by something other "
            "than eventpipe): its events cannot be shipped",
            name=segment.name,
            path=segment.path,
        )

    async def _set_aside(self, shipment: Shipment, error: BaseException) -> None:
        segment = shipment.segment
        where = await self.in_sealer(self.spool.put_aside, segment)
        self.spool.forget(segment, True)
        shipment.set_aside()
        self.metrics.segments_set_aside.inc()
        log.error(
            "set aside {name}: it failed to render {count} times in a row, last: {error}; "
            "it is kept in {where} (never deleted) and the other segments go on; once the "
            "cause is fixed, move it back into {sealed} and restart to ship it",
            name=segment.name,
            count=shipment.render_failures,
            error=describe(error),
            where=where,
            sealed=self.spool.sealed_dir,
        )

    def forget_rendered(self, shipment: Shipment) -> None:
        """Remove what the shipment's last render wrote (its attempt is over)."""
        result = shipment.result
        if not shipment.rendered or result is None:
            return
        shipment.rendered = False
        self.spool.rendered_bytes -= result.batch_bytes + result.quarantine_bytes
        for path in (shipment.batch_path, shipment.quarantine_path):
            if path:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
