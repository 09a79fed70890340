"""The spool: plain files, no reactor."""

from __future__ import annotations

import errno
import os
import stat

from twisted.trial.unittest import SynchronousTestCase

from eventpipe import spool as spool_module
from eventpipe.framing import Rejected
from eventpipe.naming import sequence_of
from eventpipe.records import KIND_EVENT, KIND_REJECTED, KIND_TORN, read_records
from eventpipe.spool import Spool, SpoolWriteError


class FakeTime:
    def __init__(self, now: float = 1753805700.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def records(path: str) -> list[tuple[bytes, bytes, str]]:
    with open(path, "rb") as stream:
        return [(r.kind, r.data, r.reason) for r in read_records(stream)]


class SpoolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = self.mktemp()
        self.time = FakeTime()

    def spool(self, **kwargs: object) -> Spool:
        return Spool(self.directory, "gw1", self.time, **kwargs)  # type: ignore[arg-type]

    def test_append_and_seal(self) -> None:
        """
        Appended events are sealed into a segment named by time, instance
        and sequence, and read back in order; rejected pieces keep their
        reason.
        """
        spool = self.spool()
        spool.append([b"<EVENT>1</EVENT>", b"<EVENT>2</EVENT>"])
        self.time.now += 5
        self.assertEqual(spool.current_age(), 5)
        spool.append([], [Rejected("junk", b"\x00\xff")])
        segment = spool.seal()
        assert segment is not None
        self.assertEqual(segment.name, "20250729_161505_gw1_000000")
        self.assertEqual(
            records(segment.path),
            [
                (KIND_EVENT, b"<EVENT>1</EVENT>", ""),
                (KIND_EVENT, b"<EVENT>2</EVENT>", ""),
                (KIND_REJECTED, b"\x00\xff", "junk"),
            ],
        )
        self.assertFalse(os.path.exists(spool.current_path))
        self.assertEqual(spool.current_size, 0)
        self.assertIsNone(spool.seal(), "an empty segment is never sealed")

    def test_sequence_never_reused(self) -> None:
        """
        Two seals in one second get different sequence numbers, and a new
        start continues after them even when all segments were delivered.
        """
        spool = self.spool()
        names = []
        for _ in range(3):
            spool.append([b"<EVENT/>"])
            segment = spool.seal()
            assert segment is not None
            names.append(segment.name)
            spool.delete(segment)
        self.assertEqual([sequence_of(n) for n in names], [0, 1, 2])
        again = self.spool()
        again.recover()
        again.append([b"<EVENT/>"])
        segment = again.seal()
        assert segment is not None
        self.assertEqual(segment.sequence, 3)

    def test_recover(self) -> None:
        """
        At start-up a leftover current segment is sealed, sealed segments
        keep their names, and half-made rendered files are removed.
        """
        spool = self.spool()
        spool.append([b"<EVENT>a</EVENT>"])
        first = spool.seal()
        spool.append([b"<EVENT>b</EVENT>"])
        spool.close()
        with open(os.path.join(spool.rendered_dir, "stale.xml"), "wb") as stream:
            stream.write(b"half")
        self.time.now += 3600
        again = self.spool()
        segments = again.recover()
        assert first is not None
        self.assertEqual([s.name for s in segments][0], first.name)
        self.assertEqual(len(segments), 2)
        self.assertEqual(segments[1].sequence, 1)
        self.assertEqual(os.listdir(again.rendered_dir), [])
        self.assertEqual(records(segments[1].path), [(KIND_EVENT, b"<EVENT>b</EVENT>", "")])
        self.assertEqual(again.sealed_bytes, sum(s.size for s in segments))

    def test_torn_tail(self) -> None:
        """
        A record cut short (the process died mid-write) is read back as
        torn, never as an event; the records before it are intact.
        """
        spool = self.spool()
        spool.append([b"<EVENT>whole</EVENT>", b"<EVENT>torn</EVENT>"])
        spool.close()
        with open(spool.current_path, "r+b") as stream:
            stream.truncate(os.path.getsize(spool.current_path) - 7)
        segments = self.spool().recover()
        found = records(segments[0].path)
        self.assertEqual(found[0], (KIND_EVENT, b"<EVENT>whole</EVENT>", ""))
        self.assertEqual(len(found), 2)
        self.assertEqual(found[1][0], KIND_TORN)
        self.assertTrue(found[1][1].endswith(b"<EVENT>torn</"))

    def test_corrupt_record(self) -> None:
        """A flipped byte fails the CRC: the rest is torn, not an event."""
        spool = self.spool()
        spool.append([b"<EVENT>one</EVENT>"])
        segment = spool.seal()
        assert segment is not None
        with open(segment.path, "r+b") as stream:
            stream.seek(20)
            stream.write(b"X")
        self.assertEqual([r[0] for r in records(segment.path)], [KIND_TORN])

    def test_disk_full(self) -> None:
        """
        When the disk refuses part of a write, nothing of that append is
        kept; the next append works once it accepts again.
        """
        spool = self.spool()
        spool.append([b"<EVENT>before</EVENT>"])
        real_write = os.write
        calls = []

        def full(fd: int, data: bytes) -> int:
            calls.append(len(data))
            if len(calls) == 1:
                return real_write(fd, bytes(data[:10]))
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(spool_module.os, "write", full)
        error = self.assertRaises(SpoolWriteError, spool.append, [b"<EVENT>lost?</EVENT>"])
        self.assertEqual(error.error.errno, errno.ENOSPC)
        self.assertIn("No space left", str(error))
        self.patch(spool_module.os, "write", real_write)
        spool.append([b"<EVENT>after</EVENT>"])
        segment = spool.seal()
        assert segment is not None
        self.assertEqual(
            [r[1] for r in records(segment.path)],
            [b"<EVENT>before</EVENT>", b"<EVENT>after</EVENT>"],
        )

    def test_permissions(self) -> None:
        """Spool files are the service user's alone."""
        spool = self.spool()
        spool.append([b"<EVENT/>"])
        self.assertEqual(stat.S_IMODE(os.stat(spool.current_path).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(spool.sealed_dir).st_mode) & 0o077, 0)

    def test_fsync_modes(self) -> None:
        """Every mode writes the same records; an unknown mode is refused."""
        for mode in ("never", "seal", "always"):
            self.directory = self.mktemp()
            spool = self.spool(fsync=mode)
            spool.append([b"<EVENT/>"])
            segment = spool.seal()
            assert segment is not None
            self.assertEqual(records(segment.path), [(KIND_EVENT, b"<EVENT/>", "")])
        self.assertRaises(ValueError, self.spool, fsync="sometimes")
