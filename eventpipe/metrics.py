"""
The counters and histograms, counted where things happen.  Gauges are read
off the service's status snapshot when scraped (L{eventpipe.health}).
"""

from __future__ import annotations

from collections import deque

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)

from eventpipe import __version__

# No *_created series: they double every counter and nobody alerts on them.
disable_created_metrics()


# Quarantine findings the status keeps, newest last.
RECENT_QUARANTINE = 10
# What of a reason it keeps (the reason may quote what a sender sent).
REASON_KEPT = 200


class Metrics:
    """The counters and the histogram, in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # (when, reason, pieces): the last quarantine findings, for /status.
        self.recent_quarantine: deque[tuple[float, str, int]] = deque(maxlen=RECENT_QUARANTINE)
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        Gauge(
            "eventpipe_build_info",
            "Always 1; the version of eventpipe in a label.",
            ["version"],
            registry=r,
        ).labels(__version__).set(1)
        ProcessCollector(registry=r)
        self.events_received = Counter(
            "eventpipe_events_received", "Events read off connections and spooled.", registry=r
        )
        self.bytes_received = Counter(
            "eventpipe_received_bytes", "Bytes written to the spool.", registry=r
        )
        self.events_quarantined = Counter(
            "eventpipe_events_quarantined",
            "Pieces set aside for quarantine when found (on arrival, or when a "
            "segment is rendered), by reason.",
            ["reason"],
            registry=r,
        )
        self.connections_refused = Counter(
            "eventpipe_connections_refused",
            "Connections closed at once, by reason.",
            ["reason"],
            registry=r,
        )
        self.segments_sealed = Counter(
            "eventpipe_segments_sealed", "Segments sealed, by trigger.", ["trigger"], registry=r
        )
        self.uploads = Counter(
            "eventpipe_uploads", "Delivery attempts, by result.", ["result"], registry=r
        )
        # Both results exist from the start, at 0: an alert on "failures and
        # no success" must see the success series before the first success.
        for result in ("success", "failure"):
            self.uploads.labels(result)
        self.upload_retries = Counter(
            "eventpipe_upload_retries", "Delivery attempts that will be retried.", registry=r
        )
        self.upload_seconds = Histogram(
            "eventpipe_upload_duration_seconds",
            "Time of a successful delivery attempt (render and upload).",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r,
        )
        self.reactor_lag = Histogram(
            "eventpipe_reactor_lag_seconds",
            "How late a timer that should fire every 0.1 s fires: the reactor's stalls.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.segments_set_aside = Counter(
            "eventpipe_segments_set_aside",
            "Segments moved to <spool-dir>/failed because they could not be rendered.",
            registry=r,
        )
        self.key_conflicts = Counter(
            "eventpipe_key_conflicts",
            "Keys found holding another writer's object (the segment took the next "
            "number): two writers share an instance id, or the spool lost its sequence file.",
            registry=r,
        )
        self.events_delivered = Counter(
            "eventpipe_events_delivered", "Events delivered in batches.", registry=r
        )


def quarantined(metrics: Metrics, reason: str, count: int, at: float) -> None:
    """Count pieces quarantined for C{reason}, and keep the finding for /status."""
    metrics.events_quarantined.labels(quarantine_reason(reason)).inc(count)
    metrics.recent_quarantine.append((at, reason[:REASON_KEPT], count))


# What lxml says of ACM's element names printed with a space
# (<plasectrxPanel date>): the name's second half read as an attribute.
_SPACED_NAME = ("Specification mandates value for attribute", "attributes construct error")


def reason_hint(reason: str) -> str:
    """What to do about a quarantine reason, when there is something to do."""
    if any(words in reason for words in _SPACED_NAME):
        return "ACM's element names with a space? --repair-acm-tag-names joins them"
    return ""


def quarantine_reason(reason: str) -> str:
    """A short, bounded label for a quarantine reason (no event content)."""
    for prefix, label in (
        ("not well-formed", "malformed"),
        ("a DOCTYPE", "doctype"),
        ("root element", "wrong_root"),
        ("bytes outside", "outside_event"),
        ("event larger", "too_large"),
        ("connection closed", "truncated"),
        ("a new document began", "truncated"),
        ("torn record", "torn"),
        ("cannot transcode", "encoding"),
    ):
        if reason.startswith(prefix):
            return label
    return "other"
