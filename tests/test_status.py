"""
C{eventpipe status} against real processes (running, failing, stopped),
and the status page at C{/}, loaded from a real process by headless
Chromium (Debian's C{chromium}; CI installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request

from lxml import html
from twisted.trial.unittest import SynchronousTestCase

from eventpipe.page import CSS, HTML, JS
from tests.support import (
    BUCKET,
    CREDENTIALS,
    Twistd,
    eventpipe,
    free_port,
    make_stream,
    missing,
    s3_rig,
    send,
    wait_for,
)

FAST = ["--rotation-interval=0.5", "--check-interval=0.1"]


def get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())  # type: ignore[no-any-return]


class Running:
    """A real service with --metrics, and the options the tools read it with."""

    def __init__(
        self, testcase: SynchronousTestCase, *args: str, env: dict[str, str] | None = None
    ) -> None:
        self.metrics_port = free_port()
        self.metrics = f"tcp:{self.metrics_port}:interface=127.0.0.1"
        workdir = os.path.abspath(testcase.mktemp())
        self.service = Twistd(workdir, [*FAST, f"--metrics={self.metrics}", *args], env)
        testcase.addCleanup(self.service.cleanup)
        self.service.start()
        self.options = [f"--spool-dir={self.service.spool}", f"--metrics={self.metrics}"]
        self.url = f"http://127.0.0.1:{self.metrics_port}/"

    def status(self) -> dict[str, object]:
        return get_json(self.url + "status")

    def wait_failing(self, what: str, timeout: float = 60) -> None:
        """Until /status says delivery is failing."""
        wait_for(
            lambda: self.status()["delivery"]["state"] == "failing",  # type: ignore[index]
            timeout,
            what,
        )


class ScreenTests(SynchronousTestCase):
    def test_what_waits_reads_right(self) -> None:
        """
        The current segment is named when only it waits (never "no segments
        (326 events)"), nothing waiting says so (no "0s old"), and sizes
        follow the unit family of the limit.
        """
        from eventpipe.status import _size, _waiting

        self.assertEqual(
            _waiting(0, 326, 326, True, 4),
            "the current segment (326 events) waiting; oldest event 4s old",
        )
        self.assertEqual(
            _waiting(2, 5, 25, False, 70),
            "2 sealed segments and the current one (at least 25 events) waiting; oldest event 1m 10s old",
        )
        self.assertEqual(_waiting(0, 0, 0, True, 0), "nothing waits")
        self.assertEqual(_size(10**9, 10**9), "1.0 GB")
        self.assertEqual(_size(2**30, 2**30), "1.0 GiB")
        self.assertEqual(_size(1_500_000, 10**9), "1.5 MB")


class StatusCommandTests(SynchronousTestCase):
    def test_healthy(self) -> None:
        running = Running(self)
        send(running.service.port, make_stream(range(20)) + b"junk outside any event\n")
        wait_for(
            lambda: running.status()["since_start"]["events_delivered"] == 20,  # type: ignore[index]
            30,
            "the deliveries",
        )
        shown = eventpipe("status", *running.options)
        self.assertEqual(shown.returncode, 0, shown.stdout + shown.stderr)
        self.assertTrue(shown.stdout.startswith("eventpipe: healthy\n"), shown.stdout)
        self.assertIn(f"from {running.url}status", shown.stdout)
        self.assertIn("20 events received, 20 delivered, 1 piece quarantined", shown.stdout)
        self.assertIn("delivery     idle to outbox ", shown.stdout)
        # Sizes in the unit the limit was set in (1GB), and nothing waits.
        self.assertIn(" of 1.0 GB; nothing waits", shown.stdout)
        as_json = eventpipe("status", "--json", *running.options)
        self.assertEqual(as_json.returncode, 0)
        report = json.loads(as_json.stdout)
        self.assertEqual(report["health"], "healthy")
        self.assertTrue(report["running"])
        self.assertEqual(report["status"]["since_start"]["events_received"], 20)

    def test_degraded_when_delivery_fails(self) -> None:
        """The bucket does not answer: exit 1, and the screen says why."""
        running = Running(
            self,
            f"--s3-bucket={BUCKET}",
            "--s3-endpoint-url=http://127.0.0.1:9",
            env=CREDENTIALS,
        )
        send(running.service.port, make_stream(range(5)))
        running.wait_failing("a failed delivery", 60)
        # The probe fails at once: wait for a failed delivery of the sealed
        # segment itself (rendered once, so its events are known).
        wait_for(
            lambda: running.status()["delivery"]["failed_attempts"] >= 1,  # type: ignore[index]
            60,
            "a failed delivery of the segment",
        )
        shown = eventpipe("status", *running.options)
        self.assertEqual(shown.returncode, 1, shown.stdout + shown.stderr)
        self.assertTrue(shown.stdout.startswith("eventpipe: degraded: delivery failing: "))
        self.assertIn("delivery     failing to s3://acm-events", shown.stdout)
        # Rendered once already: its events are counted.
        self.assertIn("1 sealed segment (5 events) waiting", shown.stdout)

    def test_failed_probe_is_the_delivery_state(self) -> None:
        """
        A quiet site whose destination does not answer at start-up: before
        any event, /status says delivery failing (and status exits 1), the
        failure is counted for the alert, and the probe is tried again until
        the destination is back -- then healthy again.
        """
        workdir = os.path.abspath(self.mktemp())
        server, client, cable = s3_rig(self, workdir, plugged=False)
        running = Running(
            self,
            f"--s3-bucket={BUCKET}",
            f"--s3-endpoint-url=http://127.0.0.1:{cable.port}",
            "--retry-initial-delay=0.2",
            "--retry-max-delay=0.5",
            env=CREDENTIALS,
        )
        running.wait_failing("the probe's failure", 30)
        shown = eventpipe("status", *running.options)
        self.assertEqual(shown.returncode, 1, shown.stdout + shown.stderr)
        self.assertIn("delivery failing: cannot connect to the S3 endpoint", shown.stdout)
        # Ready (it takes events, which the spool keeps), and says why delivery fails.
        ready = get_json(running.url + "readyz")
        self.assertTrue(ready["ready"])
        self.assertIn("cannot connect to the S3 endpoint", str(ready["delivery_failing"]))
        with urllib.request.urlopen(running.url + "metrics", timeout=10) as answer:
            scraped = answer.read().decode()
        self.assertRegex(scraped, r'eventpipe_uploads_total\{result="failure"\} [1-9]')
        wait_for(lambda: "probed again" in running.service.log(), 30, "a second probe")
        cable.plug()
        wait_for(lambda: running.status()["health"] == "healthy", 30, "healthy once it is back")
        self.assertIn("is reachable again", running.service.log())

    def test_stopped_reads_the_spool(self) -> None:
        """
        Killed with events in its spool: exit 2, and the figures come from
        the spool directory (segments and events waiting counted there).
        """
        running = Running(
            self, f"--s3-bucket={BUCKET}", "--s3-endpoint-url=http://127.0.0.1:9", env=CREDENTIALS
        )
        send(running.service.port, make_stream(range(12)))
        wait_for(
            lambda: running.status()["since_start"]["events_received"] == 12,  # type: ignore[index]
            30,
            "the events",
        )
        running.service.kill()
        shown = eventpipe("status", *running.options)
        self.assertEqual(shown.returncode, 2, shown.stdout + shown.stderr)
        self.assertTrue(shown.stdout.startswith("eventpipe: down: not running"), shown.stdout)
        self.assertIn("from the spool directory", shown.stdout)
        self.assertIn("(12 events) waiting", shown.stdout)
        report = json.loads(eventpipe("status", "--json", *running.options).stdout)
        self.assertEqual(report["spool"]["events_waiting"], 12)
        self.assertFalse(report["running"])

    def test_running_without_metrics(self) -> None:
        """
        A service that serves no /status: the spool's lock still says it
        runs, and who, but whether it delivers is unknown (exit 3), never
        "healthy".
        """
        workdir = os.path.abspath(self.mktemp())
        service = Twistd(workdir, FAST)
        self.addCleanup(service.cleanup)
        service.start()
        assert service.process is not None
        shown = eventpipe("status", f"--spool-dir={service.spool}")
        self.assertEqual(shown.returncode, 3, shown.stdout + shown.stderr)
        self.assertTrue(shown.stdout.startswith("eventpipe: unknown: running, but"), shown.stdout)
        self.assertIn(f"running (pid {service.process.pid})", shown.stdout)
        self.assertIn("from the spool directory", shown.stdout)

    def test_status_finds_the_services_figures(self) -> None:
        """
        During an S3 outage, status without --metrics finds the running
        service's /status through the spool's lock and says degraded, exit
        1 -- not healthy from the spool alone.
        """
        running = Running(
            self, f"--s3-bucket={BUCKET}", "--s3-endpoint-url=http://127.0.0.1:9", env=CREDENTIALS
        )
        send(running.service.port, make_stream(range(5)))
        running.wait_failing("a failed delivery", 60)
        shown = eventpipe("status", f"--spool-dir={running.service.spool}")
        self.assertEqual(shown.returncode, 1, shown.stdout + shown.stderr)
        self.assertTrue(shown.stdout.startswith("eventpipe: degraded: delivery failing"))
        self.assertIn(f"from {running.url}status", shown.stdout)


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        missing("chromium", "apt-get install chromium")
    return found


def browse(url: str, *how: str) -> str:
    """Headless Chromium, as the page's users' browsers would load it."""
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [
                chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=6000",
                *how,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    if done.returncode != 0:
        raise AssertionError(f"chromium failed: {done.stderr[-2000:]}")
    return done.stdout


class PageTests(SynchronousTestCase):
    def test_small_and_self_contained(self) -> None:
        """A few KiB, nothing from elsewhere, no markup written from data."""
        self.assertLess(len(HTML) + len(CSS) + len(JS), 16 * 1024)
        for part in (HTML, CSS, JS):
            self.assertNotRegex(part, rb"https?://")
        self.assertNotIn(b"innerHTML", JS)
        self.assertNotIn(b"insertAdjacentHTML", JS)
        self.assertNotIn(b"document.write", JS)

    def test_in_a_real_browser(self) -> None:
        """
        Headless Chromium loads the page from a real process: the figures in
        its DOM are the service's, the chart is drawn, and a quarantine
        reason that quotes markup shows as text, never as an element.  A
        screenshot is kept beside the test's files.
        """
        running = Running(self)
        send(running.service.port, b"<img src=x onerror=alert(1)> not an event\n")
        send(running.service.port, make_stream(range(30)))
        wait_for(
            lambda: running.status()["since_start"]["events_delivered"] == 30,  # type: ignore[index]
            30,
            "the deliveries",
        )
        # Let the chart gather a few samples.
        wait_for(
            lambda: len(get_json(running.url + "rates")["received_per_second"]) >= 3,  # type: ignore[arg-type]
            30,
            "the rate samples",
        )
        status = running.status()
        headers = urllib.request.urlopen(running.url, timeout=10).headers
        self.assertIn("script-src 'self'", headers["content-security-policy"])
        dom = html.fromstring(browse(running.url, "--dump-dom"))

        def text(id: str) -> str:
            [element] = dom.xpath(f'//*[@id="{id}"]')
            return str(element.text_content())

        self.assertEqual(text("health"), "healthy")
        self.assertEqual(text("received"), str(status["since_start"]["events_received"]))  # type: ignore[index]
        self.assertEqual(text("delivered"), "30")
        self.assertEqual(text("quarantined"), "1")
        self.assertEqual(text("reading"), "not paused")
        self.assertEqual(text("segments"), "nothing waits")
        self.assertEqual(text("spool"), "0 B of 1.0 GB (0.0%)")
        # The chart says what it shows: a scale and the time.
        self.assertEqual(
            dom.xpath('//div[@class="x"]/span/text()'), ["5 min ago", "2.5 min ago", "now"]
        )
        self.assertEqual(dom.xpath('//div[@class="y"]/span/text()')[-1], "0")
        self.assertEqual(text("attempts"), "no failure")
        self.assertIn("outbox", text("destination"))
        self.assertEqual(text("last-error"), "none")
        rows = dom.xpath('//tbody[@id="quarantine"]/tr')
        self.assertEqual(len(rows), 1)
        self.assertIn("bytes outside any <EVENT> document", rows[0].text_content())
        self.assertEqual(dom.xpath("//img"), [])
        self.assertEqual(dom.xpath("//main//EVENT | //main//event"), [])
        points = dom.xpath('//*[@id="line-received"]/@points')[0].split()
        self.assertGreaterEqual(len(points), 2)
        self.assertNotEqual(text("chart-peak"), "-")
        for width in (1400, 800):
            screenshot = os.path.abspath(f"page-{width}.png")
            browse(running.url, f"--window-size={width},1000", f"--screenshot={screenshot}")
            with open(screenshot, "rb") as stream:
                self.assertEqual(stream.read(8), b"\x89PNG\r\n\x1a\n")

    def test_failing_delivery_in_a_real_browser(self) -> None:
        """
        A destination that refuses: the delivery card is marked failing and
        shows the attempts, the next try and what to do.
        """
        running = Running(
            self,
            f"--s3-bucket={BUCKET}",
            "--s3-endpoint-url=http://127.0.0.1:9",
            "--retry-max-delay=30",
            env=CREDENTIALS,
        )
        send(running.service.port, make_stream(range(3)))
        wait_for(
            lambda: running.status()["delivery"]["failed_attempts"] >= 1,  # type: ignore[index]
            60,
            "a failed attempt",
        )
        dom = html.fromstring(browse(running.url, "--dump-dom"))
        [card] = dom.xpath('//*[@id="delivery-card"]')
        self.assertEqual(card.get("class"), "failing")
        [attempts] = dom.xpath('//*[@id="attempts"]')
        self.assertRegex(attempts.text_content(), r"^\d+ failed since the last delivery; next in ")
        [hint] = dom.xpath('//*[@id="hint"]')
        self.assertIn("--s3-endpoint-url", hint.text_content())
        screenshot = os.path.abspath("page-failing.png")
        browse(running.url, "--window-size=1400,1000", f"--screenshot={screenshot}")

    def test_says_down_when_the_service_stops(self) -> None:
        """The page keeps what it showed and says the service does not answer."""
        running = Running(self)
        running.service.stop()
        port = free_port()
        # A plain server of the page alone: the service is gone.
        server = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import http.server,sys,functools;"
                "from eventpipe.page import HTML,JS,CSS\n"
                "class H(http.server.BaseHTTPRequestHandler):\n"
                " def do_GET(self):\n"
                "  body={'/':HTML,'/page.js':JS,'/page.css':CSS}.get(self.path)\n"
                "  if body is None: self.send_error(503); return\n"
                "  self.send_response(200); self.end_headers(); self.wfile.write(body)\n"
                " def log_message(self,*a): pass\n"
                f"http.server.HTTPServer(('127.0.0.1',{port}),H).serve_forever()",
            ],
            env=dict(
                os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            ),
        )
        self.addCleanup(server.wait)
        self.addCleanup(server.kill)
        from tests.support import wait_for_port

        wait_for_port(port)
        dom = html.fromstring(browse(f"http://127.0.0.1:{port}/", "--dump-dom"))
        [badge] = dom.xpath('//*[@id="health"]')
        self.assertEqual(badge.text_content(), "down")
        self.assertIn("does not answer", dom.xpath('//*[@id="health-because"]')[0].text_content())
