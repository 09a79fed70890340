"""
What an operator watches: Prometheus metrics, liveness and readiness.

Counters are counted where things happen (L{Metrics}); gauges are read off
the pipeline when scraped (L{PipelineCollector}).  Served by twisted.web:
C{/metrics}, C{/healthz}, C{/readyz}.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.web.resource import Resource
from twisted.web.server import Request

if TYPE_CHECKING:
    from eventpipe.service import Pipeline


class Metrics:
    """The counters and the histogram, in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events_received = Counter(
            "eventpipe_events_received", "Events read off connections and spooled.", registry=r
        )
        self.bytes_received = Counter(
            "eventpipe_bytes_received", "Bytes written to the spool.", registry=r
        )
        self.events_quarantined = Counter(
            "eventpipe_events_quarantined",
            "Pieces set aside for quarantine, by reason.",
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
        self.upload_retries = Counter(
            "eventpipe_upload_retries", "Delivery attempts that will be retried.", registry=r
        )
        self.upload_seconds = Histogram(
            "eventpipe_upload_duration_seconds",
            "Time of a successful delivery attempt (render and upload).",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r,
        )
        self.events_delivered = Counter(
            "eventpipe_events_delivered", "Events delivered in batches.", registry=r
        )


def quarantine_reason(reason: str) -> str:
    """A short, bounded label for a quarantine reason (no event content)."""
    for prefix, label in (
        ("not well-formed", "malformed"),
        ("a DOCTYPE", "doctype"),
        ("root element", "wrong_root"),
        ("bytes outside", "outside_event"),
        ("event larger", "too_large"),
        ("connection closed", "truncated"),
        ("torn record", "torn"),
    ):
        if reason.startswith(prefix):
            return label
    return "other"


class PipelineCollector:
    """Gauges read off the pipeline at scrape time."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pipeline = self.pipeline
        ingest = pipeline.ingest

        def gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, text, value=value)

        yield gauge("eventpipe_connections_open", "Connections open now.", len(ingest.receivers))
        yield gauge(
            "eventpipe_spool_bytes_waiting",
            "Bytes in the spool not yet delivered (current, sealed, rendered).",
            pipeline.spool.waiting_bytes,
        )
        yield gauge(
            "eventpipe_oldest_event_age_seconds",
            "Age of the oldest event not yet delivered (0 when none).",
            pipeline.oldest_waiting_age(),
        )
        since = pipeline.seconds_since_delivery()
        yield gauge(
            "eventpipe_seconds_since_last_upload",
            "Seconds since the last successful delivery (-1 before the first).",
            -1 if since is None else since,
        )
        yield gauge(
            "eventpipe_ingest_paused", "1 while reading is paused.", 1 if ingest.paused_for else 0
        )
        yield gauge(
            "eventpipe_segments_waiting", "Sealed segments not yet delivered.", pipeline.shipping
        )


class _Text(Resource):
    isLeaf = True

    def __init__(self, render: Any) -> None:
        super().__init__()
        self._render = render

    def render_GET(self, request: Request) -> bytes:
        return self._render(request)  # type: ignore[no-any-return]


def health_resource(pipeline: Pipeline, metrics: Metrics) -> Resource:
    """The web root: /metrics, /healthz, /readyz."""

    def scrape(request: Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(metrics.registry)

    def healthz(request: Request) -> bytes:
        # Answering at all shows the reactor is alive.
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"ok\n"

    def readyz(request: Request) -> bytes:
        reason = pipeline.not_ready_because()
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
