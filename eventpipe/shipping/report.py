"""
What the shipping says of each attempt, in the log: a render that failed
(and whether it counts against the segment), a delivery that failed (and
what to fix), and a delivery made (with what was repaired or set aside).
"""

from __future__ import annotations

from eventpipe.metrics import reason_hint
from eventpipe.shipping.log import log
from eventpipe.shipping.shipment import RENDER_ATTEMPTS, RenderFailed, Shipment, describe
from eventpipe.worker import MACHINE


def render_failed(shipment: Shipment, error: RenderFailed, delay: float) -> None:
    if error.counted:
        whose = f"{shipment.render_failures} of {RENDER_ATTEMPTS} before it is set aside"
    elif error.fault == MACHINE:
        whose = "a fault of the machine, not of the segment: not counted against it"
    else:
        whose = "not counted against it until other segments render meanwhile"
    log.error(
        "rendering {name} failed ({whose}): {error}; next attempt in {delay:.1f} s",
        name=shipment.segment.name,
        whose=whose,
        error=describe(error.error),
        delay=delay,
    )


def delivery_failed(
    key: str, where: str, attempt: int, error: str, hint: str, delay: float
) -> None:
    log.error(
        "delivering {key} to {where} failed (attempt {attempt}): {error}{hint}; "
        "next attempt in {delay:.1f} s, the segment stays in the spool",
        key=key,
        where=where,
        attempt=attempt,
        error=error,
        hint=f" -- {hint}" if hint else "",
        delay=delay,
    )


def delivered(shipment: Shipment, key: str, seconds: float, attempts: int) -> None:
    result = shipment.result
    assert result is not None
    if result.repaired:
        log.info(
            "repaired the element names of {count} events of {name} (--repair-acm-tag-names)",
            count=result.repaired,
            name=shipment.segment.name,
        )
    if result.quarantined:
        log.warn(
            "quarantined {count} pieces of {name} under {key}: {reasons}",
            count=result.quarantined,
            name=shipment.segment.name,
            key=shipment.quarantine_key,
            reasons="; ".join(
                f"{n} x {reason}" + (f" ({reason_hint(reason)})" if reason_hint(reason) else "")
                for reason, n in result.reasons.items()
            ),
        )
    log.info(
        "delivered {key}: {events} events, {bytes} bytes, {seconds:.3f} s, attempt {attempt}",
        key=key,
        events=result.events,
        bytes=result.batch_bytes,
        seconds=seconds,
        attempt=attempts,
    )
