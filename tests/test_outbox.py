"""
The outbox: a unit test against its interface, then a real process killed
before each step of a write.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import signal
import subprocess
import sys

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from eventpipe.destinations import IUploader, KeyConflict, UploadRequest
from eventpipe.destinations.outbox import LocalDirectoryUploader
from eventpipe.fs import copy_file, file_sha256
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
uploader.deliver(UploadRequest(source, key, sha, "application/xml", source="segment-digest"))
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
        self.request = UploadRequest(
            self.source, KEY, file_sha256(self.source), "application/xml", source="segment-digest"
        )

    def target(self) -> str:
        return os.path.join(self.directory, *KEY.split("/"))

    def leftovers(self) -> list[str]:
        """Temporaries: what a write leaves behind when it is killed."""
        return glob.glob(os.path.join(self.directory, "**", ".*.part"), recursive=True)

    def other(self, content: bytes, source: str) -> UploadRequest:
        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as stream:
            stream.write(content)
        return UploadRequest(path, KEY, file_sha256(path), "application/xml", source=source)

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
        # Another segment's batch (a twin sharing the instance id), even
        # with the very same bytes: not ours.
        for other in (
            self.other(b"<EVENTS/>\n", "another segment"),
            self.other(b"<EVENTS><EVENT/></EVENTS>\n", "another segment"),
        ):
            self.failureResultOf(outbox.upload(other), KeyConflict)
        with open(self.target(), "rb") as stream:
            self.assertEqual(stream.read(), b"<EVENTS><EVENT/></EVENTS>\n")
        self.assertEqual(self.leftovers(), [])

    def test_same_segment_rendered_otherwise(self) -> None:
        """
        The same segment rendered again with other bytes (a newer release):
        delivered before, not a new key.
        """
        outbox = uploader(self.directory)
        self.successResultOf(outbox.upload(self.request))
        self.successResultOf(outbox.upload(self.other(b"<EVENTS></EVENTS>\n", "segment-digest")))
        with open(self.target(), "rb") as stream:
            self.assertEqual(stream.read(), b"<EVENTS><EVENT/></EVENTS>\n")

    def test_claim_of_a_killed_render(self) -> None:
        """
        A claim left by a render killed before its link (bytes A), then
        another render of the same segment delivered (bytes B: another
        --event-tag, a new release), then a third redelivery (bytes C):
        each finds the segment delivered, none is a conflict, and the claim
        says what is under the key.
        """
        outbox = uploader(self.directory)
        killed = self.other(b"<EVENTS>render A</EVENTS>\n", "segment-digest")
        claim = os.path.join(self.directory, ".metadata", *KEY.split("/")) + ".json"
        os.makedirs(os.path.dirname(claim))
        with open(claim, "w") as stream:
            json.dump(killed.object_metadata(), stream)
        second = self.other(b"<EVENTS>render B</EVENTS>\n", "segment-digest")
        self.successResultOf(outbox.upload(second))
        self.assertEqual(outbox.metadata(KEY)["sha256"], second.sha256)
        third = self.other(b"<EVENTS>render C</EVENTS>\n", "segment-digest")
        self.successResultOf(outbox.upload(third))
        with open(self.target(), "rb") as stream:
            self.assertEqual(stream.read(), b"<EVENTS>render B</EVENTS>\n")
        self.assertEqual(outbox.metadata(KEY)["sha256"], second.sha256)
        self.assertEqual(self.leftovers(), [])

    def test_file_of_an_earlier_release(self) -> None:
        """
        A file with no claim (written by a release that made none): the
        same bytes are this delivery; other bytes are another writer's, and
        no claim of ours is left over them.
        """
        outbox = uploader(self.directory)
        os.makedirs(os.path.dirname(self.target()))
        with open(self.target(), "wb") as stream:
            stream.write(b"<EVENTS><EVENT/></EVENTS>\n")
        self.successResultOf(outbox.upload(self.request))
        self.directory = os.path.abspath(self.mktemp())
        outbox = uploader(self.directory)
        os.makedirs(os.path.dirname(self.target()))
        with open(self.target(), "wb") as stream:
            stream.write(b"<EVENTS>someone else's</EVENTS>\n")
        self.failureResultOf(outbox.upload(self.request), KeyConflict)
        self.assertEqual(
            glob.glob(os.path.join(self.directory, ".metadata", "**", "*.json"), recursive=True), []
        )
        self.failureResultOf(outbox.upload(self.request), KeyConflict)

    def test_killed_before_each_step(self) -> None:
        """
        Killed before the file's fsync, the claim's fsync, the claim's link,
        its directory's fsync, the file's link, its directory's fsync or
        either unlink: the key holds nothing or the whole file; the retry
        finds its own claim and never writes into a delivered file; the next
        start removes what was left.
        """
        steps = [("fsync", n) for n in (1, 2, 3, 4)]
        steps += [("link", 1), ("link", 2), ("unlink", 1), ("unlink", 2)]
        for step, nth in steps:
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


class CopyFileTests(SynchronousTestCase):
    """The outbox's copy: in the kernel where it can, through a buffer where it cannot."""

    def files(self) -> tuple[str, str, bytes]:
        data = os.urandom(3 << 20) + b"tail"
        source, sink = self.mktemp(), self.mktemp()
        with open(source, "wb") as stream:
            stream.write(data)
        return source, sink, data

    def copy(self, source: str, sink: str) -> bytes:
        with open(source, "rb") as reading, open(sink, "wb") as writing:
            writing.write(b"head")
            copy_file(reading, writing)
        with open(sink, "rb") as stream:
            return stream.read()

    def test_in_the_kernel(self) -> None:
        source, sink, data = self.files()
        self.assertEqual(self.copy(source, sink), b"head" + data)

    def test_where_the_kernel_cannot(self) -> None:
        """Another filesystem (EXDEV), or none that copies: the same bytes, through a buffer."""
        for code in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP):
            source, sink, data = self.files()

            def refuse(*args: object, code: int = code) -> int:
                raise OSError(code, os.strerror(code))

            self.patch(os, "copy_file_range", refuse)
            self.assertEqual(self.copy(source, sink), b"head" + data)

    def test_a_fault_of_the_disk_is_raised(self) -> None:
        """EIO is the machine's fault, not a way around: the delivery fails and says so."""
        source, sink, _ = self.files()

        def fail(*args: object) -> int:
            raise OSError(errno.EIO, os.strerror(errno.EIO))

        self.patch(os, "copy_file_range", fail)
        error = self.assertRaises(OSError, self.copy, source, sink)
        self.assertEqual(error.errno, errno.EIO)
