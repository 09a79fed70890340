"""Metrics, liveness and readiness: with a fake clock, then a real process."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from eventpipe.destinations import UploadError
from eventpipe.health import health_resource
from tests.harness import ServiceHarness
from tests.support import FAST_S3, free_port, make_stream, s3_rig, s3_service, send, wait_for


def get(resource, path: bytes) -> tuple[int, bytes]:  # type: ignore[no-untyped-def]
    request = DummyRequest([path])
    child = resource.getChildWithDefault(path, request)
    body = child.render(request)
    return request.responseCode or 200, body


def sample(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    assert match is not None, f"{name}{labels} not in the scrape"
    return float(match.group(1))


class MetricsUnitTests(ServiceHarness):
    """The fake-clock service of the unit tests, scraped."""

    def test_counters_move(self) -> None:
        service = self.service()
        root = health_resource(service.status, service.metrics)
        receiver, _ = self.connect(service)
        receiver.dataReceived(make_stream(range(5)) + b"<EVENT><bad></EVENT>")
        code, body = get(root, b"metrics")
        text = body.decode()
        self.assertEqual(code, 200)
        self.assertEqual(sample(text, "eventpipe_events_received_total"), 6)
        self.assertEqual(sample(text, "eventpipe_connections_open"), 1)
        self.assertGreater(sample(text, "eventpipe_spool_bytes_waiting"), 0)
        self.clock.advance(30)
        self.assertEqual(
            sample(get(root, b"metrics")[1].decode(), "eventpipe_oldest_event_age_seconds"), 30
        )
        self.assertEqual(sample(text, "eventpipe_seconds_since_last_upload"), -1)
        self.clock.advance(30)
        text = get(root, b"metrics")[1].decode()
        self.assertEqual(sample(text, "eventpipe_segments_sealed_total", '{trigger="time"}'), 1)
        self.assertEqual(sample(text, "eventpipe_uploads_total", '{result="success"}'), 1)
        self.assertEqual(sample(text, "eventpipe_events_delivered_total"), 5)
        self.assertEqual(
            sample(text, "eventpipe_events_quarantined_total", '{reason="malformed"}'), 1
        )
        self.assertEqual(sample(text, "eventpipe_spool_bytes_waiting"), 0)
        self.assertEqual(sample(text, "eventpipe_oldest_event_age_seconds"), 0)
        self.assertEqual(sample(text, "eventpipe_upload_duration_seconds_count"), 1)
        self.assertEqual(sample(text, "eventpipe_ingest_paused"), 0)

    def test_readiness(self) -> None:
        service = self.service()
        root = health_resource(service.status, service.metrics)
        self.assertEqual(get(root, b"healthz"), (200, b"ok\n"))
        self.assertEqual(get(root, b"readyz")[0], 200)
        self.uploader.failures = [UploadError("S3 said 503", transient=True)] * 2
        receiver, _ = self.connect(service)
        receiver.dataReceived(make_stream([1]))
        self.clock.advance(60)
        code, body = get(root, b"readyz")
        self.assertEqual(code, 503)
        self.assertIn("503", json.loads(body)["reason"])
        text = get(root, b"metrics")[1].decode()
        self.assertEqual(sample(text, "eventpipe_uploads_total", '{result="failure"}'), 1)
        self.assertEqual(sample(text, "eventpipe_upload_retries_total"), 1)
        self.clock.advance(1)
        self.clock.advance(2)
        self.assertEqual(get(root, b"readyz")[0], 200)
        self.assertEqual(self.delivered(), [1])


class MetricsProcessTests(SynchronousTestCase):
    def test_scrape_a_running_service(self) -> None:
        """
        Scrape a real twistd: counters move as events flow, readiness turns
        503 while S3 cannot be reached and 200 once it can.
        """
        workdir = os.path.abspath(self.mktemp())
        _, _, cable = s3_rig(self, workdir)
        port = free_port()
        process = s3_service(
            workdir,
            f"http://127.0.0.1:{cable.port}",
            *FAST_S3,
            f"--metrics=tcp:{port}:interface=127.0.0.1",
        )
        self.addCleanup(process.cleanup)
        process.start()

        def fetch(path: str) -> tuple[int, str]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
                    return answer.status, answer.read().decode()
            except urllib.error.HTTPError as error:
                return error.code, error.read().decode()

        self.assertEqual(fetch("/healthz"), (200, "ok\n"))
        send(process.port, make_stream(range(100)))
        wait_for(
            lambda: sample(fetch("/metrics")[1], "eventpipe_events_delivered_total") == 100,
            20,
            "100 events delivered",
        )
        scrape = fetch("/metrics")[1]
        self.assertEqual(sample(scrape, "eventpipe_events_received_total"), 100)
        self.assertGreater(sample(scrape, "eventpipe_bytes_received_total"), 100_000)
        self.assertEqual(fetch("/readyz")[0], 200)
        cable.unplug()
        send(process.port, make_stream(range(100, 110)))
        wait_for(lambda: fetch("/readyz")[0] == 503, 20, "readiness to fail")
        self.assertIn("failed", json.loads(fetch("/readyz")[1])["reason"])
        self.assertGreater(sample(fetch("/metrics")[1], "eventpipe_upload_retries_total"), 0)
        cable.plug()
        wait_for(lambda: fetch("/readyz")[0] == 200, 20, "readiness to return")
        final = fetch("/metrics")[1]
        self.assertEqual(sample(final, "eventpipe_events_delivered_total"), 110)
        with open(os.path.join(workdir, "sample-scrape.txt"), "w") as stream:
            stream.write(final)
        print(
            "\n" + "\n".join(line for line in final.splitlines() if line.startswith("eventpipe_"))
        )
        process.stop()
