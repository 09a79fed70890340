"""Logs an operator can live with: levels, flat JSON Lines, no per-request noise."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import urllib.request

from twisted.logger import Logger as TwistedLogger
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from eventpipe import __version__
from eventpipe.logs import JsonLinesObserver, Logger, flatten, set_level
from tests.support import TWISTD, free_port, make_stream, send, wait_for


class UnitTests(SynchronousTestCase):
    def test_flat_record(self) -> None:
        """Time in UTC ISO-8601, the level as a word, the rendered message, the fields."""
        event = {
            "log_time": 1753805700.25,
            "log_level": LogLevel.warn,
            "log_namespace": "eventpipe.shipping",
            "log_format": "delivered {key}: {events} events",
            "key": "2025/07/29/x.xml",
            "events": 12,
            "peer": object(),
        }
        record = flatten(event)
        self.assertEqual(record["time"], "2025-07-29T16:15:00.250Z")
        self.assertEqual(record["level"], "warn")
        self.assertEqual(record["logger"], "eventpipe.shipping")
        self.assertEqual(record["message"], "delivered 2025/07/29/x.xml: 12 events")
        self.assertEqual((record["key"], record["events"]), ("2025/07/29/x.xml", 12))
        self.assertIsInstance(record["peer"], str)
        self.assertFalse([k for k in record if k.startswith("log_")])
        stream = io.StringIO()
        failure = Failure(ZeroDivisionError("division by zero"))
        JsonLinesObserver(stream)(dict(event, log_failure=failure, log_level=LogLevel.error))
        line = json.loads(stream.getvalue())
        self.assertEqual(line["level"], "error")
        self.assertIn("ZeroDivisionError", line["traceback"])

    def test_level(self) -> None:
        """eventpipe's lines below --log-level are dropped; Twisted's own are not ours to drop."""
        seen: list[dict[str, object]] = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        self.addCleanup(set_level, "info")
        log = Logger(namespace="eventpipe.test")
        log.debug("hidden")
        log.info("shown")
        set_level("debug")
        log.debug("now shown")
        set_level("error")
        log.warn("hidden again")
        TwistedLogger(namespace="other").info("not ours")
        messages = [e.get("log_format") for e in seen]
        self.assertEqual(messages, ["shown", "now shown", "not ours"])


class ProcessTests(SynchronousTestCase):
    def run_service(self, *args: str, journal: bool = False) -> tuple[str, str]:
        """
        A real twistd writing JSON Lines; 30 connections of one event each.
        With C{journal}, its standard output is said to be the journal (as
        systemd says it, in JOURNAL_STREAM).
        """
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        port, metrics = free_port(), free_port()
        log_path = os.path.join(workdir, "eventpipe.log")
        log = open(log_path, "wb")
        env = dict(os.environ)
        env.pop("JOURNAL_STREAM", None)
        if journal:
            found = os.fstat(log.fileno())
            env["JOURNAL_STREAM"] = f"{found.st_dev}:{found.st_ino}"
        process = subprocess.Popen(
            [
                *TWISTD,
                "-n",
                "--pidfile=",
                "--logger=eventpipe.logs.json",
                "eventpipe",
                f"--listen=tcp:{port}:interface=127.0.0.1",
                f"--metrics=tcp:{metrics}:interface=127.0.0.1",
                f"--spool-dir={workdir}/spool",
                "--rotation-interval=0.5",
                "--check-interval=0.1",
                *args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.addCleanup(lambda: process.poll() is None and process.kill())
        wait_for(
            lambda: os.path.exists(log_path) and "starting" in open(log_path).read(), 30, "start"
        )
        wait_for(lambda: _answers(metrics), 30, "the metrics port")
        for n in range(30):
            send(port, make_stream([n]))
        for _ in range(5):
            urllib.request.urlopen(f"http://127.0.0.1:{metrics}/healthz", timeout=5).read()
        outbox = os.path.join(workdir, "spool", "outbox")
        wait_for(lambda: _delivered(outbox) >= 30, 30, "30 events")
        process.terminate()
        process.wait(30)
        with open(log_path, encoding="utf-8") as stream:
            return stream.read(), workdir

    def test_json_lines_at_info(self) -> None:
        """
        Every line is a flat JSON object; a connection per event makes no
        line per connection at info, one summary does; scrapes and probes
        leave no access-log line; the first lines say the version and the
        settings with their sources.
        """
        text, _ = self.run_service()
        lines = [json.loads(line) for line in text.splitlines()]
        for line in lines:
            self.assertEqual(set(line) >= {"time", "level", "logger", "message"}, True, line)
            self.assertTrue(line["time"].endswith("Z"))
            self.assertIn(line["level"], ("debug", "info", "warn", "error", "critical"))
            self.assertNotIn("{", line["message"].replace("{}", ""), line)
        messages = [line["message"] for line in lines]
        self.assertFalse([m for m in messages if "connection from" in m])
        self.assertFalse([m for m in messages if "GET /healthz" in m or "HTTP/1.1" in m])
        [summary] = [line for line in lines if "connections opened" in line["message"]]
        self.assertGreaterEqual(summary["opened"], 30)
        self.assertEqual(summary["logger"], "eventpipe.ingest")
        [start] = [line for line in lines if "starting:" in line["message"]]
        self.assertIn(f"eventpipe {__version__} starting", start["message"])
        self.assertIn("rotation-interval=0.5 (--rotation-interval)", start["message"])
        delivered = [line for line in lines if line["message"].startswith("delivered ")]
        self.assertTrue(delivered)
        self.assertEqual(
            {k for k in ("key", "events", "bytes", "seconds", "attempt") if k in delivered[0]},
            {"key", "events", "bytes", "seconds", "attempt"},
        )
        self.assertLess(len(lines), 60, "a line per connection or per request crept in")
        # Where it listens; the metrics site starts and stops without a line.
        [where] = [line for line in lines if "listening for events on" in line["message"]]
        self.assertIn("interface=127.0.0.1", where["message"])
        self.assertFalse([m for m in messages if "anyone who can reach it" in m])
        self.assertFalse([m for m in messages if "Starting factory" in m])

    def test_priorities_for_the_journal(self) -> None:
        """
        To the journal, every JSON line starts with its syslog priority
        (journald takes it off and keeps it: journalctl -p err works); to
        anything else, it does not.
        """
        text, _ = self.run_service("--listen=tcp:0", journal=True)
        levels = {"debug": 7, "info": 6, "warn": 4, "error": 3, "critical": 2}
        for line in text.splitlines():
            self.assertRegex(line, r"^<[2-7]>\{", line)
            record = json.loads(line[3:])
            self.assertEqual(int(line[1]), levels[record["level"]], line)
        self.assertIn("<4>", text, "the open-to-anyone warning, at warn")

    def test_open_to_anyone_is_said(self) -> None:
        """
        A listener on every interface without --allow: the start-up says
        that anyone who can reach it may send events.
        """
        text, _ = self.run_service(f"--listen-udp={free_port()}")
        lines = [json.loads(line) for line in text.splitlines()]
        [warning] = [line for line in lines if "anyone who can reach it" in line["message"]]
        self.assertEqual(warning["level"], "warn")
        self.assertIn("udp ", warning["message"])
        self.assertIn("set --allow", warning["message"])

    def test_debug_shows_connections(self) -> None:
        text, _ = self.run_service("--log-level=debug")
        self.assertGreaterEqual(text.count("connection from 127.0.0.1"), 60)


class LogFileTests(SynchronousTestCase):
    def test_log_file_is_private(self) -> None:
        """twistd's log file is created 0600, like the spool."""
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        port = free_port()
        log_path = os.path.join(workdir, "twistd.log")
        process = subprocess.Popen(
            [
                *TWISTD,
                "-n",
                "--pidfile=",
                f"--logfile={log_path}",
                "eventpipe",
                f"--listen=tcp:{port}:interface=127.0.0.1",
                f"--spool-dir={workdir}/spool",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.addCleanup(lambda: process.poll() is None and process.kill())
        wait_for(lambda: os.path.exists(log_path), 30, "the log file")
        process.terminate()
        process.wait(30)
        self.assertEqual(stat.S_IMODE(os.stat(log_path).st_mode), 0o600)


def _answers(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
    except OSError:
        return False
    return True


def _delivered(outbox: str) -> int:
    from tests.support import delivered_numbers

    return len(delivered_numbers(outbox))
