"""
Fault injection with real processes: kill -9 at seeded random moments while
uploads are slow, a long S3 outage under a sender that pushes more than the
spool may hold, and a spool on a filesystem that runs full.
"""

from __future__ import annotations

import collections
import fcntl
import glob
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import termios
import threading
import time

from twisted.trial.unittest import SynchronousTestCase

from eventpipe.records import count_events
from tests.support import (
    BUCKET,
    FAST_S3,
    Twistd,
    delivered_numbers,
    exactly_once_problems,
    make_event,
    make_stream,
    missing,
    numbers_in_objects,
    peak_rss_mib,
    quarantine_entries,
    read_object,
    s3_objects,
    s3_rig,
    s3_service,
    send,
    spooled,
    wait_for,
)

_NUMBER = re.compile(rb"<cn>n(\d{12})</cn>")
TORN = "torn record: the process stopped in the middle of writing it"


def spool_bytes(spool: str) -> int:
    total = 0
    for path in glob.glob(os.path.join(spool, "**", "*"), recursive=True):
        if os.path.isfile(path) and "/outbox/" not in path:
            total += os.path.getsize(path)
    return total


class Sender(threading.Thread):
    """
    Sends numbered events, a few at a time, reconnecting whenever the
    connection goes (the service is being killed and restarted).
    """

    def __init__(self, port: int, total: int, per_send: int = 10, pause: float = 0.002) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.total = total
        self.per_send = per_send
        self.pause = pause
        self.sent: set[int] = set()
        self.next = 0
        self.stopping = False

    def run(self) -> None:
        while self.next < self.total and not self.stopping:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as connection:
                    while self.next < self.total and not self.stopping:
                        numbers = range(self.next, min(self.next + self.per_send, self.total))
                        connection.sendall(make_stream(numbers))
                        self.sent.update(numbers)
                        self.next = numbers[-1] + 1
                        time.sleep(self.pause)
            except OSError:
                time.sleep(0.05)


def _stuck(sender: Sender) -> bool:
    """Whether the sender sent nothing for half a second."""
    before = sender.next
    time.sleep(0.5)
    return sender.is_alive() and sender.next == before


def in_flight_events(event_size: int) -> int:
    """
    The most events a kill can catch in flight on loopback: what the
    sender's socket buffer and the receiver's can hold at their largest.
    """
    largest = 0
    for name in ("tcp_wmem", "tcp_rmem"):
        with open(f"/proc/sys/net/ipv4/{name}") as stream:
            largest += int(stream.read().split()[2])
    return largest // event_size + 1


class KillTests(SynchronousTestCase):
    def test_kill_nine_at_random_moments(self) -> None:
        """
        Ten kill -9 at seeded random moments while events stream in and
        uploads crawl: every event that reached the spool is delivered
        exactly once and byte for byte; the only events missing are ones
        the service never read.
        """
        rng = random.Random(20261128)
        workdir = os.path.abspath(self.mktemp())
        _, s3, cable = s3_rig(self, workdir)
        cable.delay = 0.05
        process = s3_service(workdir, f"http://127.0.0.1:{cable.port}", *FAST_S3)
        self.addCleanup(process.cleanup)
        process.start()
        sender = Sender(process.port, total=1_000_000)
        sender.start()
        self.addCleanup(setattr, sender, "stopping", True)
        seen_in_spool: set[int] = set()
        kills = during_upload = 0
        for _ in range(10):
            time.sleep(rng.uniform(0.3, 1.5))
            uploading = bool(os.listdir(os.path.join(process.spool, "rendered")))
            process.kill()
            kills += 1
            during_upload += uploading
            seen_in_spool |= spooled(process.spool)
            process.start()
        time.sleep(1)
        sender.stopping = True
        sender.join(10)
        cable.delay = 0
        time.sleep(0.5)
        process.stop()
        seen_in_spool |= spooled(process.spool)
        process.start()
        wait_for(
            lambda: (
                not spooled(process.spool) and not os.listdir(os.path.join(process.spool, "sealed"))
            ),
            60,
            "the spool to drain",
        )
        process.stop()
        objects = s3_objects(s3, BUCKET)
        delivered = numbers_in_objects(objects)
        counts = collections.Counter(delivered)
        duplicates = [n for n, c in counts.items() if c > 1]
        lost_from_spool = seen_in_spool - set(counts)
        never_read = sender.sent - set(counts)
        # Byte for byte: every delivered event is exactly what was sent.  A
        # kill in the middle of an append can tear the last record; its
        # bytes must be in quarantine, never in a batch.
        torn = checked = 0
        for key, data in objects.items():
            body = read_object(data)
            if "quarantine/" in key:
                reasons = [str(e["reason"]) for e in quarantine_entries(body)]
                self.assertEqual(set(reasons) - {TORN}, set(), key)
                torn += len(reasons)
                continue
            for n in _NUMBER.findall(body):
                self.assertTrue(make_event(int(n)) in body, f"event {int(n)} altered")
                checked += 1
        self.assertGreater(len(delivered), 10_000)
        self.assertEqual(checked, len(delivered), "every delivered event checked byte for byte")
        self.assertEqual(kills, 10)
        self.assertGreaterEqual(during_upload, 3, "kills during uploads")
        self.assertEqual(duplicates, [])
        self.assertEqual(sorted(lost_from_spool), [])
        self.assertLessEqual(set(counts), sender.sent)
        # What the sender had in flight when a kill landed is all that may
        # be missing: at most what socket buffers hold, per kill.
        self.assertLessEqual(len(never_read), kills * in_flight_events(len(make_stream([0]))))
        print(
            f"\n    kills={kills} during_upload={during_upload} sent={len(sender.sent)} "
            f"delivered={len(delivered)} duplicates={len(duplicates)} "
            f"lost_from_spool={len(lost_from_spool)} never_read={len(never_read)} "
            f"torn_quarantined={torn} objects={len(objects)}"
        )


class OutageTests(SynchronousTestCase):
    def test_long_outage_backpressure(self) -> None:
        """
        With S3 unreachable, a sender pushing far more than --max-spool-size
        is slowed down, not failed; the spool and the process's memory stay
        bounded; everything arrives once S3 is back.
        """
        workdir = os.path.abspath(self.mktemp())
        _, s3, cable = s3_rig(self, workdir, plugged=False)
        limit = 2_000_000
        process = s3_service(
            workdir,
            f"http://127.0.0.1:{cable.port}",
            *FAST_S3,
            "--max-file-size=256KiB",
            f"--max-spool-size={limit}",
        )
        self.addCleanup(process.cleanup)
        process.start()
        total = 20_000  # about 32 MB, sixteen times the spool limit
        sender = Sender(process.port, total, per_send=50, pause=0)
        sender.start()
        self.addCleanup(setattr, sender, "stopping", True)
        wait_for(lambda: "reading paused" in process.log(), 30, "ingest to pause")
        wait_for(lambda: _stuck(sender), 30, "the sender to be held back")
        self.assertTrue(sender.is_alive(), "the sender was not slowed down")
        self.assertLess(sender.next, total)
        waiting = spool_bytes(process.spool)
        # The limit, plus what is rendered for the two upload slots, a
        # segment being sealed and one read in flight.
        self.assertLess(waiting, limit + 3 * 256 * 1024 + 512 * 1024)
        self.assertIn("reading paused", process.log())
        cable.plug()
        sender.join(90)
        self.assertFalse(sender.is_alive())
        wait_for(
            lambda: len(numbers_in_objects(s3_objects(s3, BUCKET))) >= total, 60, "every event"
        )
        assert process.process is not None
        peak = peak_rss_mib(process.process.pid)
        counts = collections.Counter(numbers_in_objects(s3_objects(s3, BUCKET)))
        self.assertEqual(sorted(counts), list(range(total)))
        self.assertEqual([n for n, c in counts.items() if c > 1], [])
        self.assertIn("reading resumed", process.log())
        self.assertLess(peak, 150, "peak RSS in MiB")
        print(f"\n    peak_rss_mib={peak:.1f} spool_bytes_at_outage={waiting}")
        process.stop()


class StopKeepsWhatTheKernelAcceptedTests(SynchronousTestCase):
    def test_stop_while_reading_is_paused(self) -> None:
        """
        The spool is full, S3 is down and reading is paused, the sender is
        held back with bytes in eventpipe's socket, and SIGTERM comes with
        the connection still open: every event the kernel had accepted is
        read and kept in the spool (to ship at the next start), none twice.
        """
        workdir = os.path.abspath(self.mktemp())
        process = Twistd(
            workdir,
            [
                "--rotation-interval=0.5",
                "--check-interval=0.1",
                "--max-spool-size=64KiB",
                "--max-event-size=16KiB",
                "--max-file-size=32KiB",
                "--shutdown-timeout=3",
                f"--s3-bucket={BUCKET}",
                "--s3-endpoint-url=http://127.0.0.1:9",
            ],
            {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"},
        )
        self.addCleanup(process.cleanup)
        process.start()
        wire = make_stream(range(20000))
        connection = socket.create_connection(("127.0.0.1", process.port))
        self.addCleanup(connection.close)
        connection.setblocking(False)
        sent = 0
        stuck_since = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sent < len(wire):
            try:
                sent += connection.send(wire[sent : sent + 65536])
                stuck_since = None
            except BlockingIOError:
                stuck_since = stuck_since or time.monotonic()
                if time.monotonic() - stuck_since > 1 and "reading paused" in process.log():
                    break
                time.sleep(0.01)
        self.assertLess(sent, len(wire), "the sender was held back")
        # What the receiving kernel took: sent, less what still waits in
        # this side's send queue.
        outq = struct.unpack("i", fcntl.ioctl(connection.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[
            0
        ]
        accepted = sent - outq
        expected = set(range(wire[:accepted].count(b"</EVENT>")))
        before = spooled(process.spool)
        self.assertLess(len(before), len(expected), "some bytes wait in eventpipe's socket")
        self.assertEqual(process.stop(), -signal.SIGTERM)
        kept = spooled(process.spool)
        self.assertEqual(expected - kept, set(), "events the kernel had accepted were lost")
        self.assertIn("stopping with", process.log())


class ExtraLinkTests(SynchronousTestCase):
    def test_backup_links_lose_nothing(self) -> None:
        """
        A backup tool hard-linked the spool (cp -al) while a killed service
        left a current segment: the next start seals and ships every event,
        and deletes nothing.
        """
        workdir = os.path.abspath(self.mktemp())
        outbox = os.path.join(workdir, "outbox")
        process = Twistd(workdir, ["--rotation-interval=3600", f"--outbox={outbox}"])
        self.addCleanup(process.cleanup)
        process.start()
        send(process.port, make_stream(range(1000)))
        current = os.path.join(process.spool, "current")
        wait_for(lambda: _events_in(current) == 1000, 30, "1000 events in the current segment")
        process.kill()
        backup = os.path.join(workdir, "backup")
        subprocess.run(["cp", "-al", process.spool, backup], check=True)
        self.assertEqual(os.stat(current).st_nlink, 2)
        process.start()
        wait_for(lambda: len(delivered_numbers(outbox)) >= 1000, 30, "every event")
        self.assertEqual(
            exactly_once_problems(delivered_numbers(outbox), range(1000)), ([], [], [])
        )
        self.assertNotIn("removed", process.log())
        process.stop()


def _events_in(path: str) -> int:
    try:
        with open(path, "rb") as stream:
            return count_events(stream)
    except FileNotFoundError:
        return 0


class DiskFullTests(SynchronousTestCase):
    def test_spool_filesystem_full(self) -> None:
        """
        The spool's filesystem runs full: reading pauses, nothing is lost,
        and ingest resumes once space comes back.
        """
        if os.geteuid() != 0 or shutil.which("mount") is None:
            missing("root and mount (to mount a small tmpfs)", "run as root")
        workdir = os.path.abspath(self.mktemp())
        spool_fs = os.path.join(workdir, "small")
        os.makedirs(spool_fs)
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", spool_fs], capture_output=True
        )
        if mounted.returncode != 0:
            missing(f"a tmpfs ({mounted.stderr.decode().strip()})", "run as root where mount works")
        self.addCleanup(subprocess.run, ["umount", "-l", spool_fs])
        process = Twistd(
            workdir,
            [
                "--rotation-interval=0.5",
                "--check-interval=0.1",
                "--retry-max-delay=1",
                "--max-file-size=256KiB",
                "--outbox",
                os.path.join(workdir, "outbox"),
            ],
        )
        process.spool = os.path.join(spool_fs, "spool")
        self.addCleanup(process.cleanup)
        process.start()
        ballast = os.path.join(spool_fs, "ballast")
        # Unbuffered: the write that fills the disk fails, and closing has
        # nothing left to flush.
        with open(ballast, "wb", buffering=0) as stream:
            try:
                while True:
                    stream.write(b"\0" * 65536)
            except OSError:
                pass
        sender = Sender(process.port, 3000, per_send=20, pause=0)
        sender.start()
        self.addCleanup(setattr, sender, "stopping", True)
        # Either the free-space reserve or the disk itself stops ingest.
        wait_for(lambda: "reading paused" in process.log(), 20, "ingest to pause")
        # Held back: blocked in sendall, short of the end, making no progress.
        wait_for(lambda: _stuck(sender), 20, "the sender to be held back")
        self.assertLess(sender.next, 3000)
        os.unlink(ballast)
        sender.join(60)
        self.assertFalse(sender.is_alive())
        outbox = os.path.join(workdir, "outbox")
        wait_for(lambda: len(delivered_numbers(outbox)) >= 3000, 30, "every event")
        counts = collections.Counter(delivered_numbers(outbox))
        self.assertEqual(sorted(counts), list(range(3000)))
        self.assertEqual(max(counts.values()), 1)
        log = process.log()
        self.assertTrue("No space left on device" in log or "bytes free on the spool" in log)
        self.assertTrue("accepts writes again" in log or "reading resumed" in log)
        process.stop()
