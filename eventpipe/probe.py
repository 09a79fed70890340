"""
The destination's start-up probe.  While it fails, that is the delivery
state (as a failed delivery would be: counted, shown, alerted on), and it
is tried again with the retry backoff until it, or a delivery, succeeds.
A store that ignores conditional writes is refused: a serving service
stops rather than spool for a destination it will never use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime

from eventpipe.destinations import IUploader, UnconditionalStore
from eventpipe.logs import Logger
from eventpipe.metrics import Metrics
from eventpipe.shipping.chain import Shipping

log = Logger(namespace="eventpipe.service")


class DestinationProbe:
    """
    @param running: whether the service still runs (a late answer after
        the stop changes nothing).
    @param serving: whether the service takes events (then a refused
        destination stops it).
    """

    def __init__(
        self,
        uploader: IUploader,
        shipping: Shipping,
        metrics: Metrics,
        clock: IReactorTime,
        running: Callable[[], bool],
        serving: Callable[[], bool],
    ) -> None:
        self.uploader = uploader
        self.shipping = shipping
        self.metrics = metrics
        self.clock = clock
        self._running = running
        self._serving = serving
        # How many probes so far, and the next one.
        self.probes = 0
        self._call: Any = None

    def probe(self) -> None:
        self._call = None
        self.probes += 1
        self.uploader.check().addCallbacks(self._usable, self._unusable).addErrback(
            lambda failure: log.failure("probing the destination", failure)
        )

    def cancel(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()

    def _usable(self, where: str) -> None:
        again = " again" if self.shipping.probe_error is not None else ""
        self.shipping.probe_error = None
        if getattr(self.uploader, "allow_unconditional", False) and "conditional" in where:
            log.warn("destination {where} is reachable{again}", where=where, again=again)
        else:
            log.info("destination {where} is reachable{again}", where=where, again=again)

    def _unusable(self, failure: Any) -> None:
        error = failure.value
        hint = getattr(error, "hint", "")
        if not self._running():
            return
        if isinstance(error, UnconditionalStore):
            # Nothing is written to it (the uploader refuses every
            # delivery); what arrived stays spooled.
            log.critical(
                "refusing {where}: {error} ({hint}); stopping, the spool keeps what arrived",
                where=self.uploader.description,
                error=str(error),
                hint=hint,
            )
            stop = getattr(self.clock, "stop", None)
            if self._serving() and stop is not None:
                self.clock.callLater(0, stop)
            return
        if self.shipping.last_delivery_at is not None and self.probes > 1:
            # A delivery succeeded meanwhile: the deliveries say the rest.
            return
        description = str(error) + (f" ({hint})" if hint else "")
        self.shipping.probe_error = description
        self.metrics.uploads.labels("failure").inc()
        delay = self.shipping.retry_delay(self.probes)
        log.error(
            "destination {where} is not usable yet: {error}; events are spooled and "
            "delivered once it is (probed again in {delay:.1f} s)",
            where=self.uploader.description,
            error=description,
            delay=delay,
        )
        self._call = self.clock.callLater(delay, self.probe)
