"""
What a stop does with the shipments -- every segment is tried at once, for
up to the time it has -- and what it says it leaves behind: the segments
and events not delivered and where they wait, and what could not be kept
(counted from what is known: no segment is read on the reactor).
"""

from __future__ import annotations

from twisted.internet.defer import DeferredList

from eventpipe.ingest.ingest import Ingest
from eventpipe.logs import Logger
from eventpipe.shipping.chain import Shipping
from eventpipe.shipping.log import log as shipping_log
from eventpipe.spool.spool import Spool

log = Logger(namespace="eventpipe.service")


async def ship_before_stopping(shipping: Shipping, timeout: float) -> None:
    """
    Try every segment now, those waiting to retry included, and wait until
    each is delivered, or C{timeout} seconds; then stop the retries of
    those left (they stay in the spool).
    """
    waiting = [s.deferred for s in shipping.shipments.values() if s.deferred is not None]
    if getattr(shipping.uploader, "refusing", None) is not None:
        # The destination is refused (it ignores conditional writes):
        # nothing can ship, so nothing is waited for.
        waiting = []
    if waiting:
        woken = shipping.wake_waiting()
        shipping_log.info(
            "shipping {count} segments before stopping (at most {seconds:.0f} s; "
            "{woken} were waiting to retry and are tried now)",
            count=len(waiting),
            seconds=timeout,
            woken=woken,
        )
        give_up = shipping.clock.callLater(max(0.0, timeout), shipping.stop_shipping)
        await DeferredList(waiting, consumeErrors=True)
        if give_up.active():
            give_up.cancel()
    shipping.stop_shipping()


def report_left(
    shipping: Shipping, spool: Spool, ingest: Ingest, unwritten: int, serving: bool
) -> None:
    """
    @param unwritten: events read but refused by the spool at the stop.
    @param serving: whether the service takes events (it ships at its next
        start), or drains a spool (it ships when run again).
    """
    if shipping.left_at_stop is None:
        shipping.stop_shipping()
    assert shipping.left_at_stop is not None
    segments, events, exact = shipping.left_at_stop
    if spool.current_size:
        segments += 1
        events += spool.current_events
    unread = ingest.unread_at_stop
    if unwritten or unread:
        log.error(
            "stopping: {lost} events were read but could not be written to the spool, "
            "and {unread} bytes the kernel had accepted could not be read in time; "
            "they are lost",
            lost=unwritten,
            unread=unread,
        )
    if not segments:
        log.info("stopped: everything received was delivered")
        return
    log.warn(
        "stopping with {count} {segments}, {more}{events} events not delivered; they stay "
        "in {spool} and {then}",
        count=segments,
        segments="segment" if segments == 1 else "segments",
        more="" if exact else "at least ",
        events=events,
        spool=spool.directory,
        then="ship at the next start" if serving else "ship when drain runs again",
    )
