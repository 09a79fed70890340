"""
The outbox: a unit test against its interface, then a real process killed
before each step of a write.
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from eventpipe.destinations import IUploader, KeyConflict, UploadRequest, file_sha256
from eventpipe.destinations.outbox import LocalDirectoryUploader
from tests.test_s3 import ImmediateReactor, SynchronousPool

KEY = "acm/2025/07/29/20250729_161500_gw1_000000.xml"

# Runs one write in a process of its own, killed just before the Nth call
# of one step (os.fsync, os.link, os.unlink).
_KILLED_WRITE = """
import os, signal, sys
from eventpipe.destinations import UploadRequest
from eventpipe.destinations.outbox import LocalDirectoryUploader
directory, source, sha, key, step, nth = sys.argv[1:7]
calls = {"n": 0}
real = getattr(os, step)
def killing(*args, **kwargs):
    calls["n"] += 1
    if calls["n"] == int(nth):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
setattr(os, step, killing)
uploader = LocalDirectoryUploader(None, directory)
uploader._upload(UploadRequest(source, key, sha, "application/xml"))
"""


def uploader(directory: str) -> LocalDirectoryUploader:
    outbox = LocalDirectoryUploader(ImmediateReactor(), directory, clock=Clock())  # type: ignore[arg-type]
    outbox.work.pool = SynchronousPool()  # type: ignore[assignment]
    return outbox


class OutboxTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        self.source = os.path.abspath(self.mktemp())
        with open(self.source, "wb") as stream:
            stream.write(b"<EVENTS><EVENT/></EVENTS>\n")
        self.request = UploadRequest(self.source, KEY, file_sha256(self.source), "application/xml")

    def target(self) -> str:
        return os.path.join(self.directory, *KEY.split("/"))

    def leftovers(self) -> list[str]:
        return glob.glob(os.path.join(self.directory, "**", ".*"), recursive=True)

    def test_interface_and_conditional_write(self) -> None:
        """
        A write lands whole, private, once; the same content again counts as
        delivered; other content under the key is a conflict that leaves the
        delivered file alone.
        """
        outbox = uploader(self.directory)
        verifyObject(IUploader, outbox)
        self.assertIn(self.directory, self.successResultOf(outbox.check()))
        self.successResultOf(outbox.upload(self.request))
        self.successResultOf(outbox.upload(self.request))
        with open(self.target(), "rb") as stream:
            self.assertEqual(stream.read(), b"<EVENTS><EVENT/></EVENTS>\n")
        self.assertEqual(os.stat(self.target()).st_mode & 0o777, 0o600)
        other = os.path.abspath(self.mktemp())
        with open(other, "wb") as stream:
            stream.write(b"<EVENTS/>\n")
        self.failureResultOf(
            outbox.upload(UploadRequest(other, KEY, file_sha256(other), "application/xml")),
            KeyConflict,
        )
        with open(self.target(), "rb") as stream:
            self.assertEqual(stream.read(), b"<EVENTS><EVENT/></EVENTS>\n")
        self.assertEqual(self.leftovers(), [])

    def test_killed_before_each_step(self) -> None:
        """
        Killed before the file's fsync, the link, the directory's fsync or
        the unlink: the key holds nothing or the whole file; the retry never
        writes into a delivered file; the next start removes what was left.
        """
        for step, nth in (("fsync", 1), ("link", 1), ("fsync", 2), ("unlink", 1)):
            self.directory = os.path.abspath(self.mktemp())
            result = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    _KILLED_WRITE,
                    self.directory,
                    self.source,
                    self.request.sha256,
                    KEY,
                    step,
                    str(nth),
                ],
                capture_output=True,
            )
            self.assertEqual(result.returncode, -signal.SIGKILL, (step, nth, result.stderr))
            if os.path.exists(self.target()):
                self.assertEqual(file_sha256(self.target()), self.request.sha256)
                delivered = os.stat(self.target())
            else:
                delivered = None
            self.assertTrue(self.leftovers() or delivered, (step, nth))
            outbox = uploader(self.directory)
            self.successResultOf(outbox.check())
            self.assertEqual(self.leftovers(), [], (step, nth))
            self.successResultOf(outbox.upload(self.request))
            self.assertEqual(file_sha256(self.target()), self.request.sha256)
            if delivered is not None:
                after = os.stat(self.target())
                self.assertEqual(
                    (after.st_ino, after.st_mtime_ns), (delivered.st_ino, delivered.st_mtime_ns)
                )
            self.assertEqual(self.leftovers(), [])
