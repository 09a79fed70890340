"""
End to end with real processes: C{twistd -n eventpipe} on a free loopback
port, events over real TCP, batches in the local outbox.
"""

from __future__ import annotations

import os
import signal
import threading

from twisted.trial.unittest import SynchronousTestCase

from eventpipe.records import count_events
from tests.support import (
    DECLARATION,
    Twistd,
    batch_files,
    delivered_numbers,
    exactly_once_problems,
    make_event,
    make_stream,
    quarantine_files,
    quarantined,
    quarantined_text,
    read_object,
    send,
    wait_for,
)

FAST = ["--rotation-interval=1", "--check-interval=0.2"]


def spooled_events(spool: str) -> int:
    """Events in the spool's current segment (read while it grows)."""
    path = os.path.join(spool, "current")
    if not os.path.exists(path):
        return 0
    with open(path, "rb") as stream:
        return count_events(stream)


class ProcessTestCase(SynchronousTestCase):
    def twistd(self, *args: str) -> Twistd:
        workdir = self.mktemp()
        os.makedirs(workdir)
        process = Twistd(workdir, list(args))
        self.addCleanup(process.cleanup)
        return process

    def outbox(self, process: Twistd) -> str:
        return os.path.join(process.spool, "outbox")

    def assertExactlyOnce(self, process: Twistd, expected: list[int]) -> None:
        problems = exactly_once_problems(delivered_numbers(self.outbox(process)), expected)
        self.assertEqual(problems, ([], [], []), "missing, duplicated, unexpected")


class EndToEndTests(ProcessTestCase):
    def test_many_connections_odd_splits(self) -> None:
        """
        Four connections at once, each split at a different odd size:
        every event arrives exactly once, in well-formed batches named by
        the key scheme.
        """
        process = self.twistd(*FAST).start()
        batches = [list(range(i * 500, (i + 1) * 500)) for i in range(4)]
        chunks = [1, 7, 1021, 0]
        errors: list[BaseException] = []

        def sender(numbers: list[int], chunk: int) -> None:
            try:
                send(process.port, make_stream(numbers, b"\r\n" if chunk == 7 else b"\n"), chunk)
            except BaseException as error:  # pragma: no cover - reported below
                errors.append(error)

        threads = [
            threading.Thread(target=sender, args=(numbers, chunk))
            for numbers, chunk in zip(batches, chunks)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        self.assertEqual(errors, [])
        expected = [n for numbers in batches for n in numbers]
        wait_for(
            lambda: len(delivered_numbers(self.outbox(process))) >= len(expected),
            30,
            "every event in the outbox",
        )
        self.assertExactlyOnce(process, expected)
        for path in batch_files(self.outbox(process)):
            relative = os.path.relpath(path, self.outbox(process))
            self.assertRegex(relative, r"^\d{4}/\d\d/\d\d/\d{8}_\d{6}_test_\d{6}\.xml$")
            self.assertEqual(read_object(path).count(b"<?xml"), 1)
        status = process.stop()
        self.assertIn(status, (0, -signal.SIGTERM))

    def test_malformed_event(self) -> None:
        """
        A malformed event and junk between documents go to quarantine with
        a reason; their neighbours are delivered.
        """
        process = self.twistd(*FAST).start()
        bad = DECLARATION + b"<EVENT><plasectrxCardno>1</plasectrxcardno></EVENT>\n"
        send(process.port, make_stream([1]) + bad + b"GARBAGE\n" + make_stream([2]))
        wait_for(lambda: quarantine_files(self.outbox(process)), 20, "a quarantine object")
        wait_for(lambda: len(delivered_numbers(self.outbox(process))) == 2, 20, "the good events")
        self.assertExactlyOnce(process, [1, 2])
        entries = quarantined(self.outbox(process))
        text = quarantined_text(entries)
        self.assertIn(b"<EVENT><plasectrxCardno>1</plasectrxcardno></EVENT>", text)
        self.assertIn(b"not well-formed", text)
        self.assertIn(b"GARBAGE", text)
        # The line comes once the segment is removed, after both objects.
        wait_for(lambda: "quarantined 2 pieces" in process.log(), 10, "the quarantine line")
        # For forensics: when, from whom, on which listener.
        for entry in entries:
            self.assertRegex(str(entry["sender"]), r"^127\.0\.0\.1:\d+$")
            self.assertEqual(entry["listener"], f"tcp 127.0.0.1:{process.port}")
            self.assertRegex(str(entry["received"]), r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

    def test_declared_encodings(self) -> None:
        """
        Well-formed events that declare ISO-8859-1 or windows-1252 are
        delivered, as UTF-8 in the one UTF-8 batch, their text unchanged;
        none is quarantined.
        """
        process = self.twistd(*FAST).start()
        stream = make_stream([1])
        for number, encoding in ((2, "ISO-8859-1"), (3, "windows-1252")):
            declaration = f'<?xml version="1.0" encoding="{encoding}"?>\n'.encode("ascii")
            event = make_event(number).decode("utf-8").replace("</cn>", "</cn><note>Café €</note>")
            if encoding == "ISO-8859-1":
                event = event.replace(" €", "")
            stream += declaration + event.encode(encoding) + b"\n"
        send(process.port, stream + make_stream([4]), 7)
        wait_for(lambda: len(delivered_numbers(self.outbox(process))) == 4, 20, "four events")
        self.assertExactlyOnce(process, [1, 2, 3, 4])
        self.assertEqual(quarantine_files(self.outbox(process)), [])
        [batch] = batch_files(self.outbox(process))
        text = read_object(batch).decode("utf-8")
        self.assertIn("<note>Café</note>", text)
        self.assertIn("<note>Café €</note>", text)
        self.assertIn("Jürgen", text)
        self.assertEqual(text.count("<?xml"), 1)

    def test_json_format(self) -> None:
        process = self.twistd(*FAST, "--format=json", "--compress=gzip").start()
        send(process.port, make_stream(range(50)))
        wait_for(lambda: len(delivered_numbers(self.outbox(process))) == 50, 20, "the events")
        self.assertExactlyOnce(process, list(range(50)))
        for path in batch_files(self.outbox(process)):
            self.assertTrue(path.endswith(".json.gz"), path)


class RestartTests(ProcessTestCase):
    def test_sigterm_ships_before_exit(self) -> None:
        """
        With a long rotation interval, SIGTERM seals the current segment
        and ships it before the process ends.
        """
        process = self.twistd("--rotation-interval=3600").start()
        send(process.port, make_stream(range(300)), 500)
        wait_for(lambda: spooled_events(process.spool) == 300, 20, "events in the spool")
        status = process.stop()
        self.assertIn(status, (0, -signal.SIGTERM))
        self.assertExactlyOnce(process, list(range(300)))
        self.assertEqual(os.listdir(os.path.join(process.spool, "sealed")), [])

    def test_kill_and_restart(self) -> None:
        """
        kill -9 with events only in the spool: the next start recovers and
        ships them, nothing lost, nothing twice; a later restart ships
        nothing again.
        """
        process = self.twistd("--rotation-interval=3600", "--check-interval=0.2")
        process.start()
        send(process.port, make_stream(range(400)), 999)
        wait_for(lambda: spooled_events(process.spool) == 400, 20, "events in the spool")
        self.assertEqual(process.kill(), -signal.SIGKILL)
        self.assertEqual(batch_files(self.outbox(process)), [])
        process.start()
        wait_for(
            lambda: len(delivered_numbers(self.outbox(process))) >= 400, 20, "recovered events"
        )
        send(process.port, make_stream(range(400, 500)))
        wait_for(lambda: spooled_events(process.spool) == 100, 20, "new events in the spool")
        process.stop()
        process.start()
        process.stop()
        self.assertExactlyOnce(process, list(range(500)))
        self.assertIn("recovered 1 sealed segments", process.log())


class BatchSizeTests(ProcessTestCase):
    def test_max_file_size_with_eight_senders(self) -> None:
        """
        Eight connections sending at once into --max-file-size 64KiB: no
        batch passes the limit (a segment is sealed before the event that
        would take it past), and every event arrives once.
        """
        process = self.twistd("--max-file-size=64KiB", "--rotation-interval=3600").start()
        senders = [
            threading.Thread(
                target=send, args=(process.port, make_stream(range(n * 200, n * 200 + 200)))
            )
            for n in range(8)
        ]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        wait_for(lambda: len(delivered_numbers(self.outbox(process))) >= 1500, 30, "most batches")
        process.stop()
        self.assertExactlyOnce(process, list(range(1600)))
        sizes = [os.path.getsize(path) for path in batch_files(self.outbox(process))]
        self.assertGreater(len(sizes), 20)
        self.assertLessEqual(max(sizes), 64 * 1024)


class UpgradeTests(ProcessTestCase):
    def test_spool_of_the_previous_release(self) -> None:
        """
        A spool written by the previous release (record format 1: a sealed
        segment, a leftover current one, a piece set aside) is delivered by
        this one, every event once, the piece in quarantine; the spool then
        says format 2, and a spool from a newer release is refused with one
        line.
        """
        import shutil

        old = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "spool-format-1")
        process = self.twistd(*FAST)
        shutil.copytree(old, process.spool)
        process.start()
        wait_for(lambda: len(delivered_numbers(self.outbox(process))) >= 8, 20, "old events")
        process.stop()
        self.assertExactlyOnce(process, list(range(8)))
        self.assertIn(b"GARBAGE", quarantined_text(quarantined(self.outbox(process))))
        with open(os.path.join(process.spool, "format")) as stream:
            self.assertEqual(stream.read().strip(), "2")
        with open(os.path.join(process.spool, "format"), "w") as stream:
            stream.write("3\n")
        process.process = None
        import subprocess

        result = subprocess.run(process.command, capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 1)
        self.assertIn("newer eventpipe (record format 3)", result.stderr + result.stdout)
        self.assertNotIn("Traceback", result.stderr + result.stdout)
