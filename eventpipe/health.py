"""
What an operator watches.  The service publishes a L{Status} snapshot; the
Prometheus gauges, C{/healthz}, C{/readyz} and C{/status} read only that.
Served by twisted.web, without an access-log line per request.

- C{/healthz}: liveness; the reactor answers.
- C{/readyz}: readiness to take events: listening, the spool below
  C{--max-spool-size}, its filesystem not full.  An S3 outage does not make
  the receiver unready: the spool is there to absorb it.
- C{/status}: everything an operator asks, as JSON, delivery trouble
  included.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from eventpipe import __version__
from eventpipe.metrics import Metrics, quarantine_reason
from eventpipe.page import CSS, HEADERS, HTML, JS

_DISK_FULL = frozenset({"disk", "disk reserve"})


@dataclass(frozen=True)
class Status:
    """The state of the service at one moment (times are POSIX seconds)."""

    now: float
    started_at: float
    listening: bool
    connections_open: int
    waiting_bytes: int
    max_spool_size: int
    segments_waiting: int
    # The first event not yet delivered arrived then (None: nothing waits).
    oldest_waiting_since: float | None
    last_event_at: float | None
    last_delivery_at: float | None
    last_attempt_error: str | None
    paused_for: frozenset[str]
    destination: str
    # The names of segments set aside as unrenderable (in failed/).
    set_aside: tuple[str, ...] = ()
    # Since the start: events spooled, delivered, and pieces quarantined
    # (as eventpipe_events_quarantined_total counts them: when found).
    events_received: int = 0
    events_delivered: int = 0
    pieces_quarantined: int = 0
    # Events in the spool not yet delivered, and whether every segment's
    # count is known (one found at start-up is counted when rendered).
    events_waiting: int = 0
    events_waiting_exact: bool = True
    # The last quarantine findings, oldest first: (when, reason, pieces).
    recent_quarantine: tuple[tuple[float, str, int], ...] = ()
    # Why the destination's probe fails (until a probe or a delivery
    # succeeds): the delivery state even when nothing waits.
    probe_error: str | None = None
    # Events in the current segment (not sealed yet; in events_waiting).
    current_events: int = 0
    # Since the last delivery: failed attempts, when the next one is due,
    # and what the last failure says to do.
    failed_attempts: int = 0
    next_attempt_at: float | None = None
    hint: str = ""

    @property
    def oldest_event_age(self) -> float:
        if self.oldest_waiting_since is None:
            return 0.0
        return max(0.0, self.now - self.oldest_waiting_since)

    def not_ready_because(self) -> str | None:
        """Why the service cannot take events now, or None when it can."""
        if not self.listening:
            return "not listening"
        if self.waiting_bytes >= self.max_spool_size:
            return f"spool holds {self.waiting_bytes} bytes, at or above --max-spool-size"
        if self.paused_for & _DISK_FULL:
            return "the spool's filesystem is full"
        return None

    def delivery_trouble(self) -> str | None:
        """
        Why delivery fails now, or None while it works: the last attempt's
        error while segments wait, or else the destination's probe's (a
        quiet site learns at start-up that it could not deliver).
        """
        if self.last_attempt_error is not None and self.segments_waiting:
            return self.last_attempt_error
        return self.probe_error

    def health(self) -> tuple[str, str | None]:
        """
        C{healthy}, or C{degraded} and why: the one rule that C{eventpipe
        status} and the status page show.
        """
        trouble = self.delivery_trouble()
        if trouble:
            return "degraded", f"delivery failing: {trouble}"
        reason = self.not_ready_because()
        if reason:
            return "degraded", f"not ready: {reason}"
        if self.paused_for:
            return "degraded", "reading paused: " + ", ".join(sorted(self.paused_for))
        if self.set_aside:
            return "degraded", f"{len(self.set_aside)} segments set aside"
        return "healthy", None

    def as_json(self) -> dict[str, Any]:
        trouble = self.delivery_trouble()
        health, because = self.health()
        return {
            "version": __version__,
            "health": health,
            "health_because": because,
            "uptime_seconds": round(self.now - self.started_at, 3),
            "ready": self.not_ready_because() is None,
            "not_ready_because": self.not_ready_because(),
            "listening": self.listening,
            "connections_open": self.connections_open,
            "last_event_received": _iso(self.last_event_at),
            "since_start": {
                "events_received": self.events_received,
                "events_delivered": self.events_delivered,
                "pieces_quarantined": self.pieces_quarantined,
            },
            "spool": {
                "waiting_bytes": self.waiting_bytes,
                "limit_bytes": self.max_spool_size,
                "segments_waiting": self.segments_waiting,
                "current_segment_events": self.current_events,
                "events_waiting": self.events_waiting,
                "events_waiting_exact": self.events_waiting_exact,
                "oldest_event_age_seconds": round(self.oldest_event_age, 3),
                "reading_paused_because": sorted(self.paused_for),
                "segments_set_aside": list(self.set_aside),
            },
            "recent_quarantine": [
                {
                    "at": _iso(at),
                    "reason": reason,
                    "label": quarantine_reason(reason),
                    "pieces": count,
                }
                for at, reason, count in reversed(self.recent_quarantine)
            ],
            "delivery": {
                "destination": self.destination,
                "state": "failing" if trouble else ("waiting" if self.segments_waiting else "idle"),
                "last_error": trouble,
                "hint": self.hint if trouble else "",
                "failed_attempts": self.failed_attempts if trouble else 0,
                "next_attempt_in_seconds": (
                    round(max(0.0, self.next_attempt_at - self.now), 1)
                    if trouble and self.next_attempt_at is not None
                    else None
                ),
                "last_delivery": _iso(self.last_delivery_at),
            },
        }


def _iso(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


StatusSource = Callable[[], Status]


class StatusCollector:
    """Gauges read off the status snapshot at scrape time."""

    def __init__(self, status: StatusSource) -> None:
        self.status = status

    def collect(self) -> Iterator[GaugeMetricFamily]:
        status = self.status()

        def gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, text, value=value)

        yield gauge("eventpipe_connections_open", "Connections open now.", status.connections_open)
        yield gauge(
            "eventpipe_spool_waiting_bytes",
            "Bytes in the spool not yet delivered (current, sealed, rendered).",
            status.waiting_bytes,
        )
        yield gauge(
            "eventpipe_spool_limit_bytes",
            "--max-spool-size: reading pauses when the spool holds this much.",
            status.max_spool_size,
        )
        yield gauge(
            "eventpipe_oldest_event_age_seconds",
            "Age of the oldest event not yet delivered (0 when none waits).",
            status.oldest_event_age,
        )
        yield gauge(
            "eventpipe_last_delivery_timestamp_seconds",
            "When the last batch was delivered, in seconds since the epoch (0: none yet).",
            status.last_delivery_at or 0,
        )
        yield gauge(
            "eventpipe_last_event_received_timestamp_seconds",
            "When the last event was spooled, in seconds since the epoch (0: none yet).",
            status.last_event_at or 0,
        )
        yield gauge(
            "eventpipe_ingest_paused",
            "1 while reading from connections is paused (spool or disk full).",
            1 if status.paused_for else 0,
        )
        yield gauge(
            "eventpipe_ready",
            "1 while the receiver can take events (as /readyz).",
            0 if status.not_ready_because() else 1,
        )
        yield gauge(
            "eventpipe_segments_waiting",
            "Sealed segments not yet delivered.",
            status.segments_waiting,
        )
        yield gauge(
            "eventpipe_segments_failed",
            "Segments in <spool-dir>/failed: set aside because they could not be rendered, "
            "kept until someone moves them back into sealed/.",
            len(status.set_aside),
        )


class _Text(Resource):
    isLeaf = True

    def __init__(self, render: Any) -> None:
        super().__init__()
        self._render = render

    def render_GET(self, request: Request) -> bytes:
        return self._render(request)  # type: ignore[no-any-return]


def _readyz(status: StatusSource, request: Request) -> bytes:
    """
    Ready means "takes events" (failing it would turn ACM away, and the
    spool keeps what arrives); delivery trouble is said beside it.
    """
    now = status()
    reason = now.not_ready_because()
    request.setHeader(b"content-type", b"application/json")
    found: dict[str, Any] = {"ready": reason is None}
    if reason is not None:
        request.setResponseCode(503)
        found["reason"] = reason
    trouble = now.delivery_trouble()
    if trouble:
        found["delivery_failing"] = trouble
    return json.dumps(found).encode("utf-8") + b"\n"


def _page(content_type: bytes, body: bytes) -> Resource:
    """One file of the status page, with its security headers."""

    def serve(request: Request) -> bytes:
        request.setHeader(b"content-type", content_type)
        for name, value in HEADERS.items():
            request.setHeader(name, value)
        return body

    return _Text(serve)


def health_resource(
    status: StatusSource, metrics: Metrics, rates: Callable[[], dict[str, Any]] | None = None
) -> Resource:
    """
    The web root: the status page at /, /metrics, /healthz, /readyz,
    /status, and /rates (the page's chart: events per second, the last
    minutes).
    """
    metrics.registry.register(StatusCollector(status))

    def scrape(request: Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(metrics.registry)

    def healthz(request: Request) -> bytes:
        # Answering at all shows the reactor is alive.
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"ok\n"

    def status_json(request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(status().as_json(), indent=2).encode("utf-8") + b"\n"

    root = Resource()
    root.putChild(b"", _page(b"text/html; charset=utf-8", HTML))
    root.putChild(b"page.js", _page(b"text/javascript; charset=utf-8", JS))
    root.putChild(b"page.css", _page(b"text/css; charset=utf-8", CSS))
    root.putChild(b"metrics", _Text(scrape))
    root.putChild(b"healthz", _Text(healthz))
    root.putChild(b"readyz", _Text(lambda request: _readyz(status, request)))
    root.putChild(b"status", _Text(status_json))

    def rates_json(request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        found = rates() if rates is not None else {}
        return json.dumps(found).encode("utf-8") + b"\n"

    root.putChild(b"rates", _Text(rates_json))
    return root


class QuietSite(Site):
    """
    A site that writes no access-log line per request (scrapes, probes),
    nor one when it starts and stops.
    """

    noisy = False

    def log(self, request: Request) -> None:  # type: ignore[override]
        pass


def health_site(
    status: StatusSource, metrics: Metrics, rates: Callable[[], dict[str, Any]] | None = None
) -> Site:
    """The site that serves operators: no tracebacks, no access log."""
    site = QuietSite(health_resource(status, metrics, rates))
    site.displayTracebacks = False
    return site
