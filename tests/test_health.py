"""Metrics, liveness and readiness: with a fake clock, then a real process."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from eventpipe import __version__
from eventpipe.destinations import UploadError
from eventpipe.health import health_resource
from tests.harness import ServiceHarness
from tests.support import (
    DECLARATION,
    FAST_S3,
    free_port,
    make_stream,
    missing,
    s3_rig,
    s3_service,
    send,
    wait_for,
)


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
        receiver.dataReceived(
            make_stream(range(5)) + b"GARBAGE " + DECLARATION + b"<EVENT><bad></EVENT>"
        )
        code, body = get(root, b"metrics")
        text = body.decode()
        self.assertEqual(code, 200)
        self.assertEqual(sample(text, "eventpipe_events_received_total"), 6)
        self.assertEqual(sample(text, "eventpipe_connections_open"), 1)
        self.assertGreater(sample(text, "eventpipe_spool_waiting_bytes"), 0)
        self.assertEqual(
            sample(text, "eventpipe_last_event_received_timestamp_seconds"), self.clock.seconds()
        )
        self.assertEqual(sample(text, "eventpipe_last_delivery_timestamp_seconds"), 0)
        self.clock.advance(30)
        self.assertEqual(
            sample(get(root, b"metrics")[1].decode(), "eventpipe_oldest_event_age_seconds"), 30
        )
        self.clock.advance(30)
        text = get(root, b"metrics")[1].decode()
        self.assertEqual(sample(text, "eventpipe_segments_sealed_total", '{trigger="time"}'), 1)
        self.assertEqual(sample(text, "eventpipe_uploads_total", '{result="success"}'), 1)
        self.assertEqual(sample(text, "eventpipe_events_delivered_total"), 5)
        # Found by the render (whole documents are framed there): counted then.
        self.assertEqual(
            sample(text, "eventpipe_events_quarantined_total", '{reason="malformed"}'), 1
        )
        self.assertEqual(
            sample(text, "eventpipe_events_quarantined_total", '{reason="outside_event"}'), 1
        )
        self.assertEqual(sample(text, "eventpipe_spool_waiting_bytes"), 0)
        self.assertEqual(sample(text, "eventpipe_oldest_event_age_seconds"), 0)
        self.assertEqual(sample(text, "eventpipe_upload_duration_seconds_count"), 1)
        self.assertEqual(sample(text, "eventpipe_ingest_paused"), 0)
        self.assertEqual(
            sample(text, "eventpipe_last_delivery_timestamp_seconds"), self.clock.seconds()
        )
        # /status counts the same since the start.
        status = json.loads(get(root, b"status")[1])
        self.assertEqual(
            status["since_start"],
            {"events_received": 6, "events_delivered": 5, "pieces_quarantined": 2},
        )

    def test_conventions(self) -> None:
        """
        No _created series; the version in eventpipe_build_info; the
        process collector; every help text names the metric's own unit.
        """
        service = self.service()
        text = get(health_resource(service.status, service.metrics), b"metrics")[1].decode()
        self.assertNotIn("_created", text)
        self.assertEqual(sample(text, "eventpipe_build_info", f'{{version="{__version__}"}}'), 1)
        self.assertIn("process_resident_memory_bytes", text)
        self.assertNotIn("seconds_since_last_upload", text)
        for name in re.findall(r"^# HELP (eventpipe_\S+)", text, re.M):
            if name.endswith("_bytes") or name.endswith("_bytes_total"):
                self.assertRegex(text, rf"# HELP {name} .*(bytes|Bytes|size)")

    def test_readiness_is_about_taking_events(self) -> None:
        """
        An S3 outage leaves the receiver ready (the spool absorbs it) and
        shows in /status; a full spool makes it unready; so does a stop.
        """
        service = self.service(max_spool_size=20_000, max_file_size=5_000)
        root = health_resource(service.status, service.metrics)
        self.assertEqual(get(root, b"healthz"), (200, b"ok\n"))
        self.assertEqual(get(root, b"readyz")[0], 200)
        self.uploader.failures = [UploadError("S3 said 503", transient=True)] * 2
        receiver, _ = self.connect(service)
        receiver.dataReceived(make_stream([1]))
        self.clock.advance(60)
        self.assertEqual(get(root, b"readyz")[0], 200)
        status = json.loads(get(root, b"status")[1])
        self.assertEqual(status["delivery"]["state"], "failing")
        self.assertIn("503", status["delivery"]["last_error"])
        self.assertEqual(status["spool"]["segments_waiting"], 1)
        self.assertTrue(status["ready"])
        text = get(root, b"metrics")[1].decode()
        self.assertEqual(sample(text, "eventpipe_uploads_total", '{result="failure"}'), 1)
        self.assertEqual(sample(text, "eventpipe_upload_retries_total"), 1)
        self.clock.advance(1)
        self.clock.advance(2)
        status = json.loads(get(root, b"status")[1])
        self.assertEqual(status["delivery"]["state"], "idle")
        self.assertEqual(self.delivered(), [1])
        self.uploader.hold = True
        receiver.dataReceived(make_stream(range(2, 30)))
        code, body = get(root, b"readyz")
        self.assertEqual(code, 503)
        self.assertIn("max-spool-size", json.loads(body)["reason"])
        self.uploader.release()
        self.clock.advance(60)
        self.assertEqual(get(root, b"readyz")[0], 200)
        service.stopService()
        self.assertEqual(json.loads(get(root, b"readyz")[1])["reason"], "not listening")


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
        self.assertGreater(sample(scrape, "eventpipe_received_bytes_total"), 100_000)
        self.assertEqual(fetch("/readyz")[0], 200)
        cable.unplug()
        send(process.port, make_stream(range(100, 110)))

        def failing() -> bool:
            return bool(json.loads(fetch("/status")[1])["delivery"]["state"] == "failing")

        wait_for(failing, 20, "delivery to fail")
        outage = fetch("/status")[1]
        self.assertEqual(fetch("/readyz")[0], 200, "an S3 outage must not take the receiver out")
        self.assertGreater(sample(fetch("/metrics")[1], "eventpipe_upload_retries_total"), 0)
        cable.plug()
        wait_for(lambda: not failing(), 20, "delivery to recover")
        final = fetch("/metrics")[1]
        self.assertEqual(sample(final, "eventpipe_events_delivered_total"), 110)
        with open(os.path.join(workdir, "sample-scrape.txt"), "w") as stream:
            stream.write(final)
        print("\n/status during the outage:\n" + outage)
        print(
            "\n" + "\n".join(line for line in final.splitlines() if line.startswith("eventpipe_"))
        )
        process.stop()


class AlertRuleTests(ServiceHarness):
    def test_rules_name_real_metrics(self) -> None:
        """
        The example alert rules load, and every eventpipe metric they name
        is one the service exports.
        """
        import yaml

        path = os.path.join(
            os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            "contrib",
            "prometheus",
            "eventpipe-alerts.yml",
        )
        with open(path) as stream:
            rules = yaml.safe_load(stream)
        with open(
            os.path.join(os.path.dirname(path), "..", "..", "docs", "operating.rst")
        ) as stream:
            readme = stream.read()
        service = self.service()
        text = get(health_resource(service.status, service.metrics), b"metrics")[1].decode()
        exported = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
        named = set()
        alerts = []
        for group in rules["groups"]:
            for rule in group["rules"]:
                alerts.append(rule["alert"])
                self.assertIn("summary", rule["annotations"])
                self.assertTrue(rule["alert"].startswith("Eventpipe"), rule["alert"])
                # Its runbook: its own section of the manual's operating page.
                self.assertEqual(
                    rule["annotations"]["runbook_url"],
                    f"docs/operating.rst#{rule['alert'].lower()}",
                )
                self.assertIn(f"\n{rule['alert']}\n{'^' * len(rule['alert'])}\n", readme)
                named.update(re.findall(r"\b(eventpipe_[a-z_]+)", rule["expr"]))
        self.assertGreaterEqual(
            set(alerts),
            {"EventpipeAcmSilent", "EventpipeDeliveryFailing", "EventpipeSpoolFilling"},
        )
        for name in named:
            family = re.sub(r"_(total|bucket|count|sum)$", "", name)
            self.assertTrue(name in exported or family in exported, f"{name} is not exported")

    def test_rules_under_promtool(self) -> None:
        """
        promtool (Debian's prometheus package; CI installs it) checks the
        rules and runs tests/data/alerts-test.yml: every alert firing, and
        not firing, on the series eventpipe exports.
        """
        promtool = shutil.which("promtool")
        if promtool is None:
            missing("promtool", "apt-get install prometheus")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        rules = os.path.join(root, "contrib", "prometheus", "eventpipe-alerts.yml")
        cases = os.path.join(root, "tests", "data", "alerts-test.yml")
        for command in ([promtool, "check", "rules", rules], [promtool, "test", "rules", cases]):
            result = subprocess.run(command, capture_output=True, text=True, timeout=120)
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        with open(cases) as stream:
            tested = set(re.findall(r"alertname: (\w+)", stream.read()))
        with open(rules) as stream:
            defined = set(re.findall(r"- alert: (\w+)", stream.read()))
        self.assertEqual(tested, defined, "every alert has its promtool test")

    def test_both_upload_results_exported_from_the_start(self) -> None:
        """
        Before any upload, /metrics has both result series at 0, so that
        "failures and no success" can be seen before the first success.
        """
        service = self.service()
        text = get(health_resource(service.status, service.metrics), b"metrics")[1].decode()
        self.assertIn('eventpipe_uploads_total{result="success"} 0.0', text)
        self.assertIn('eventpipe_uploads_total{result="failure"} 0.0', text)


class ReactorLagTests(ServiceHarness):
    def test_lag_histogram(self) -> None:
        """A timer that fires late is counted in eventpipe_reactor_lag_seconds."""
        service = self.service()
        root = health_resource(service.status, service.metrics)
        for _ in range(10):
            self.clock.advance(0.1)
        self.clock.advance(0.35)  # the reactor was busy: 0.25 s late
        text = get(root, b"metrics")[1].decode()
        self.assertEqual(sample(text, "eventpipe_reactor_lag_seconds_count"), 11)
        self.assertEqual(sample(text, "eventpipe_reactor_lag_seconds_bucket", '{le="0.001"}'), 10)
        self.assertEqual(sample(text, "eventpipe_reactor_lag_seconds_bucket", '{le="0.1"}'), 10)
        self.assertEqual(sample(text, "eventpipe_reactor_lag_seconds_bucket", '{le="0.25"}'), 11)
