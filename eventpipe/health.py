"""
What an operator watches.  The service publishes a L{Status} snapshot;
the Prometheus gauges, C{/healthz} and C{/readyz} read only that.  Served by
twisted.web: C{/metrics}, C{/healthz}, C{/readyz}.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from eventpipe.metrics import Metrics


@dataclass(frozen=True)
class Status:
    """The state of the service at one moment."""

    connections_open: int
    waiting_bytes: int
    max_spool_size: int
    segments_waiting: int
    # Seconds since the oldest event not yet delivered arrived (0: none).
    oldest_event_age: float
    # Seconds since the last delivery (None: none yet).
    seconds_since_delivery: float | None
    last_attempt_error: str | None
    paused_for: frozenset[str]

    def not_ready_because(self) -> str | None:
        """Why the service is not ready, or None when it is."""
        if self.waiting_bytes >= self.max_spool_size:
            return f"spool holds {self.waiting_bytes} bytes, at or above --max-spool-size"
        if self.paused_for & {"disk", "disk reserve"}:
            return "the spool's filesystem is full"
        if self.last_attempt_error is not None and self.segments_waiting:
            return f"the last delivery attempt failed: {self.last_attempt_error}"
        return None


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
            "eventpipe_spool_bytes_waiting",
            "Bytes in the spool not yet delivered (current, sealed, rendered).",
            status.waiting_bytes,
        )
        yield gauge(
            "eventpipe_oldest_event_age_seconds",
            "Age of the oldest event not yet delivered (0 when none).",
            status.oldest_event_age,
        )
        since = status.seconds_since_delivery
        yield gauge(
            "eventpipe_seconds_since_last_upload",
            "Seconds since the last successful delivery (-1 before the first).",
            -1 if since is None else since,
        )
        yield gauge(
            "eventpipe_ingest_paused", "1 while reading is paused.", 1 if status.paused_for else 0
        )
        yield gauge(
            "eventpipe_segments_waiting",
            "Sealed segments not yet delivered.",
            status.segments_waiting,
        )


class _Text(Resource):
    isLeaf = True

    def __init__(self, render: Any) -> None:
        super().__init__()
        self._render = render

    def render_GET(self, request: Request) -> bytes:
        return self._render(request)  # type: ignore[no-any-return]


def health_resource(status: StatusSource, metrics: Metrics) -> Resource:
    """The web root: /metrics, /healthz, /readyz."""
    metrics.registry.register(StatusCollector(status))

    def scrape(request: Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(metrics.registry)

    def healthz(request: Request) -> bytes:
        # Answering at all shows the reactor is alive.
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"ok\n"

    def readyz(request: Request) -> bytes:
        reason = status().not_ready_because()
        request.setHeader(b"content-type", b"application/json")
        if reason is None:
            return b'{"ready": true}\n'
        request.setResponseCode(503)
        return json.dumps({"ready": False, "reason": reason}).encode("utf-8") + b"\n"

    root = Resource()
    root.putChild(b"metrics", _Text(scrape))
    root.putChild(b"healthz", _Text(healthz))
    root.putChild(b"readyz", _Text(readyz))
    return root


class QuietSite(Site):
    """A site that writes no access-log line per request (scrapes, probes)."""

    def log(self, request: Request) -> None:  # type: ignore[override]
        pass


def health_site(status: StatusSource, metrics: Metrics) -> Site:
    """The site that serves operators: no tracebacks, no access log."""
    site = QuietSite(health_resource(status, metrics))
    site.displayTracebacks = False
    return site
