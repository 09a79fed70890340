"""
Fault isolation, on the paths a deployment takes: real twistd processes,
the moto S3 server, real render workers and thread pools.

- Two instances that (wrongly) share an instance id lose nothing.
- Sealed entries that can never render are set aside; the rest flows.
- Declared documents of another root count against their sender.
- A stop tries the segments waiting to retry, and ends within its window
  even when S3 never answers.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
import urllib.request

from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    BUCKET,
    CREDENTIALS,
    DECLARATION,
    FAST_S3,
    BlackHole,
    Twistd,
    delivered_numbers,
    exactly_once_problems,
    free_port,
    make_event,
    make_stream,
    numbers_in_objects,
    s3_objects,
    s3_rig,
    s3_service,
    wait_for,
)


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def status(port: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10) as answer:
        return json.loads(answer.read())  # type: ignore[no-any-return]


def paced(connections: list[tuple[socket.socket, range]], per_second: float) -> None:
    """Send each connection's events one at a time, C{per_second} each."""
    iterators = [(c, iter(numbers)) for c, numbers in connections]
    more = True
    while more:
        more = False
        for connection, numbers in iterators:
            number = next(numbers, None)
            if number is not None:
                connection.sendall(DECLARATION + make_event(number) + b"\n")
                more = True
        time.sleep(1 / per_second)


def watched(testcase: SynchronousTestCase, *args: str) -> tuple[Twistd, int]:
    """A twistd process on fast timers, with its metrics port."""
    metrics = free_port()
    process = Twistd(
        os.path.abspath(testcase.mktemp()),
        [
            "--rotation-interval=0.5",
            "--check-interval=0.1",
            f"--metrics=tcp:{metrics}:interface=127.0.0.1",
            *args,
        ],
    )
    testcase.addCleanup(process.cleanup)
    return process, metrics


class TwinTests(SynchronousTestCase):
    """Two instances given one --instance-id (cloned hosts), one destination."""

    def twins(self, *args: str) -> list[Twistd]:
        processes = []
        for n in range(2):
            process = Twistd(
                os.path.join(self.workdir, f"twin-{n}"),
                ["--rotation-interval=1", "--check-interval=0.1", *args],
                CREDENTIALS,
            )
            self.addCleanup(process.cleanup)
            processes.append(process.start())
        return processes

    def send_to_both(self, processes: list[Twistd]) -> list[int]:
        """12 events a second to each twin for 6 seconds."""
        connections = [socket.create_connection(("127.0.0.1", p.port)) for p in processes]
        self.addCleanup(lambda: [c.close() for c in connections])
        numbers = [range(0, 72), range(1000, 1072)]
        paced(list(zip(connections, numbers)), 12)
        # The stop reads what the kernel has already accepted, then ships it.
        return [*numbers[0], *numbers[1]]

    def setUp(self) -> None:
        self.workdir = os.path.abspath(self.mktemp())
        os.makedirs(self.workdir)

    def test_twins_on_s3(self) -> None:
        """
        Every event of both twins is in the bucket once: a key that holds
        the twin's object is left alone, the segment takes the next number
        at once, and the log says why, loudly.
        """
        server, client, _ = s3_rig(self, self.workdir)
        processes = self.twins(
            f"--s3-bucket={BUCKET}",
            f"--s3-endpoint-url={server.endpoint}",
            "--retry-initial-delay=0.2",
            "--retry-max-delay=1",
        )
        expected = self.send_to_both(processes)
        for process in processes:
            self.assertEqual(process.stop(), -signal.SIGTERM)
        numbers = numbers_in_objects(s3_objects(client, BUCKET))
        self.assertEqual(exactly_once_problems(numbers, expected), ([], [], []))
        logs = processes[0].log() + processes[1].log()
        self.assertIn("two writers share instance id test", logs)
        for process in processes:
            self.assertIn("everything received was delivered", process.log())

    def test_twins_in_one_outbox(self) -> None:
        """The same, with both twins writing into one outbox directory."""
        outbox = os.path.join(self.workdir, "outbox")
        processes = self.twins(f"--outbox={outbox}")
        expected = self.send_to_both(processes)
        for process in processes:
            self.assertEqual(process.stop(), -signal.SIGTERM)
        numbers = delivered_numbers(outbox)
        self.assertEqual(exactly_once_problems(numbers, expected), ([], [], []))
        self.assertIn("two writers share instance id test", processes[0].log() + processes[1].log())


class UnrenderableTests(SynchronousTestCase):
    def test_unrenderable_entries_beside_good_traffic(self) -> None:
        """
        Two directories and a FIFO in sealed/ with segment names: the
        render names each as not a regular file (never opening the FIFO,
        which would block), the good events are delivered meanwhile, each
        bad entry is moved to failed/ after three renders, and the metric,
        /status and the log say so.
        """
        process, metrics = watched(
            self, "--retry-initial-delay=0.2", "--retry-max-delay=0.5", "--render-timeout=1"
        )
        sealed = os.path.join(process.spool, "sealed")
        os.makedirs(sealed)
        bad = [f"20250729_16150{n}_test_00000{n}.xml" for n in range(3)]
        os.mkdir(os.path.join(sealed, bad[0]))
        os.mkdir(os.path.join(sealed, bad[1]))
        os.mkfifo(os.path.join(sealed, bad[2]))
        process.start()
        outbox = os.path.join(process.spool, "outbox")
        began = time.monotonic()
        connection = socket.create_connection(("127.0.0.1", process.port))
        self.addCleanup(connection.close)
        paced([(connection, range(40))], 20)
        wait_for(lambda: len(delivered_numbers(outbox)) >= 40, 20, "the good events")
        took = time.monotonic() - began
        wait_for(
            lambda: sorted(os.listdir(os.path.join(process.spool, "failed"))) == bad,
            20,
            "the bad entries in failed/",
        )
        self.assertEqual(os.listdir(sealed), [])
        self.assertEqual(metric(metrics, "eventpipe_segments_failed"), 3)
        self.assertEqual(metric(metrics, "eventpipe_segments_set_aside_total"), 3)
        self.assertEqual(
            status(metrics)["spool"]["segments_set_aside"],  # type: ignore[index]
            [name[:-4] for name in bad],
        )
        self.assertEqual(exactly_once_problems(delivered_numbers(outbox), range(40)), ([], [], []))
        log = process.log()
        self.assertIn("is not a regular file (a FIFO)", log)
        self.assertIn("is not a regular file (a directory)", log)
        self.assertNotIn("killing render worker", log)
        self.assertEqual(log.count("set aside 20250729_"), 3)
        self.assertEqual(process.stop(), -signal.SIGTERM)
        self.assertLess(took, 15)
        # Still there, whole, after the stop: never deleted.
        self.assertEqual(sorted(os.listdir(os.path.join(process.spool, "failed"))), bad)


def render_workers(pid: int) -> list[int]:
    """The render worker processes of a twistd process."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stream:
                parent = int(stream.read().rsplit(b")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as stream:
                command = stream.read()
        except (OSError, ValueError, IndexError):
            continue
        if parent == pid and b"eventpipe.worker" in command:
            found.append(int(entry))
    return found


class MachineFaultTests(SynchronousTestCase):
    def test_render_workers_killed_from_outside(self) -> None:
        """
        The render workers are killed from outside (as the OOM killer does)
        again and again while events arrive: no segment is set aside, every
        event is delivered once the killing stops, and the log says whose
        fault it was.
        """
        process, metrics = watched(
            self, "--retry-initial-delay=0.2", "--retry-max-delay=0.5", "--render-timeout=5"
        )
        process.start()
        assert process.process is not None
        outbox = os.path.join(process.spool, "outbox")
        connection = socket.create_connection(("127.0.0.1", process.port))
        self.addCleanup(connection.close)
        kills = 0
        sent = 0
        began = time.monotonic()
        while time.monotonic() - began < 5:
            connection.sendall(make_stream(range(sent, sent + 5)))
            sent += 5
            for pid in render_workers(process.process.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                    kills += 1
                except ProcessLookupError:
                    pass
            time.sleep(0.08)
        self.assertGreaterEqual(kills, 6)
        wait_for(lambda: len(delivered_numbers(outbox)) >= sent, 30, "every event")
        self.assertEqual(
            exactly_once_problems(delivered_numbers(outbox), range(sent)), ([], [], [])
        )
        self.assertEqual(os.listdir(os.path.join(process.spool, "failed")), [])
        self.assertEqual(metric(metrics, "eventpipe_segments_set_aside_total"), 0)
        log = process.log()
        self.assertIn("a fault of the machine, not of the segment", log)
        self.assertIn("killed from outside by signal 9", log)
        self.assertEqual(process.stop(), -signal.SIGTERM)


class DeclaredJunkTests(SynchronousTestCase):
    def test_declared_junk_counts_against_its_sender(self) -> None:
        """
        A connection sending declared documents of another root is cut off
        like any other garbage, and its documents are not counted as
        received events, nor do they move the last-event time.
        """
        process, metrics = watched(self, "--max-event-size=64KiB")
        process.start()
        with socket.create_connection(("127.0.0.1", process.port)) as good:
            good.sendall(make_stream(range(20)))
        wait_for(lambda: metric(metrics, "eventpipe_events_received_total") >= 20, 20, "events")
        last = metric(metrics, "eventpipe_last_event_received_timestamp_seconds")
        junk = DECLARATION + b"<JUNK>" + b"j" * 100 + b"</JUNK>\n"
        sent = 0
        cut = False
        with socket.create_connection(("127.0.0.1", process.port)) as hostile:
            hostile.settimeout(20)
            try:
                while sent < 8 << 20:
                    hostile.sendall(junk * 500)
                    sent += len(junk) * 500
            except OSError:
                cut = True
        self.assertTrue(cut, "the junk sender was never cut off")
        self.assertLess(sent, 8 << 20)
        wait_for(lambda: "that are not events" in process.log(), 10, "the cut-off line")
        self.assertEqual(metric(metrics, "eventpipe_events_received_total"), 20)
        self.assertEqual(metric(metrics, "eventpipe_last_event_received_timestamp_seconds"), last)
        self.assertGreater(
            metric(metrics, 'eventpipe_events_quarantined_total{reason="outside_event"}'), 0
        )
        self.assertEqual(process.stop(), -signal.SIGTERM)
        outbox = os.path.join(process.spool, "outbox")
        self.assertEqual(exactly_once_problems(delivered_numbers(outbox), range(20)), ([], [], []))


class StopWindowTests(SynchronousTestCase):
    def test_waiting_retries_are_tried_at_stop(self) -> None:
        """
        S3 down, a segment waiting out a 30 s backoff, S3 back, SIGTERM with
        --shutdown-timeout 15: the stop tries it at once and ships it.
        """
        workdir = os.path.abspath(self.mktemp())
        _, client, cable = s3_rig(self, workdir, plugged=False)
        process = s3_service(
            workdir,
            f"http://127.0.0.1:{cable.port}",
            "--rotation-interval=0.5",
            "--check-interval=0.1",
            "--retry-initial-delay=30",
            "--retry-max-delay=30",
            "--shutdown-timeout=15",
        )
        self.addCleanup(process.cleanup)
        process.start()
        connection = socket.create_connection(("127.0.0.1", process.port))
        self.addCleanup(connection.close)
        connection.sendall(make_stream(range(30)))
        wait_for(lambda: "next attempt in" in process.log(), 30, "a failed delivery")
        cable.plug()
        began = time.monotonic()
        self.assertEqual(process.stop(), -signal.SIGTERM)
        self.assertLess(time.monotonic() - began, 15)
        numbers = numbers_in_objects(s3_objects(client, BUCKET))
        self.assertEqual(exactly_once_problems(numbers, range(30)), ([], [], []))
        self.assertIn("everything received was delivered", process.log())

    def test_stop_within_its_window_when_s3_never_answers(self) -> None:
        """
        S3 accepts connections and never answers (a firewall that swallows
        packets): /status and the log say "failing" with the timeout within
        seconds; and the stop ends within --shutdown-timeout plus a small
        margin, and counts what stays.
        """
        hole = BlackHole()
        self.addCleanup(hole.close)
        workdir = os.path.abspath(self.mktemp())
        metrics = free_port()
        process = s3_service(
            workdir,
            f"http://127.0.0.1:{hole.port}",
            *FAST_S3,
            "--shutdown-timeout=5",
            f"--metrics=tcp:{metrics}:interface=127.0.0.1",
        )
        self.addCleanup(process.cleanup)
        process.start()
        connection = socket.create_connection(("127.0.0.1", process.port))
        self.addCleanup(connection.close)
        connection.sendall(make_stream(range(30)))
        sent = time.monotonic()
        # Seen for what it is within seconds: /status and the log say so.
        wait_for(
            lambda: status(metrics)["delivery"]["state"] == "failing",  # type: ignore[index]
            30,
            "/status to say failing",
        )
        self.assertLess(time.monotonic() - sent, 30)
        last_error = status(metrics)["delivery"]["last_error"]  # type: ignore[index]
        self.assertIn("no answer from the S3 endpoint within 20 s", last_error)
        self.assertIn("a firewall or proxy that drops the traffic", process.log())
        wait_for(lambda: len(hole.held) >= 2, 30, "the next attempt in flight")
        time.sleep(0.5)
        began = time.monotonic()
        self.assertEqual(process.stop(), -signal.SIGTERM)
        took = time.monotonic() - began
        self.assertGreater(took, 4.5)
        self.assertLess(took, 5 + 3)
        log = process.log()
        self.assertIn("30 events not delivered", log)
        self.assertNotIn("Traceback", log)
