"""The spool: plain files, no reactor."""

from __future__ import annotations

import errno
import os
import shutil
import stat

from twisted.trial.unittest import SynchronousTestCase

from eventpipe import fs
from eventpipe.framing.common import Rejected
from eventpipe.naming import sequence_of
from eventpipe.records import KIND_EVENT, KIND_REJECTED, KIND_TORN, read_records
from eventpipe.spool import current, recovery, sequence, written
from eventpipe.spool import spool as spool_module
from eventpipe.spool.layout import SpoolWriteError
from eventpipe.spool.spool import Spool


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
        kwargs.setdefault("monotonic", self.time)
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
            spool.forget(segment, spool.remove(segment))
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

    def test_gathered_write(self) -> None:
        """
        Records go to disk in one gathered write; what it leaves unwritten
        is written after it, and more records than one writev takes are
        written too.
        """
        spool = self.spool()
        real_writev = os.writev
        self.patch(
            current.os,
            "writev",
            lambda fd, buffers: real_writev(fd, [b"".join(buffers)[:7]]),
        )
        spool.append([b"<EVENT>1</EVENT>", b"<EVENT>2</EVENT>"])
        self.patch(current.os, "writev", real_writev)
        many = [b"<EVENT>%d</EVENT>" % n for n in range(3000)]
        spool.append(many)
        segment = spool.seal()
        assert segment is not None
        self.assertEqual(
            [r[1] for r in records(segment.path)],
            [b"<EVENT>1</EVENT>", b"<EVENT>2</EVENT>", *many],
        )
        self.assertEqual(segment.events, 3002)

    def test_disk_full(self) -> None:
        """
        When the disk refuses part of a write, nothing of that append is
        kept; the next append works once it accepts again.
        """
        spool = self.spool()
        spool.append([b"<EVENT>before</EVENT>"])
        real_write, real_writev = os.write, os.writev

        def partly(fd: int, buffers: list[bytes]) -> int:
            return real_write(fd, b"".join(buffers)[:10])

        def full(fd: int, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(current.os, "writev", partly)
        self.patch(current.os, "write", full)
        error = self.assertRaises(SpoolWriteError, spool.append, [b"<EVENT>lost?</EVENT>"])
        self.assertEqual(error.error.errno, errno.ENOSPC)
        self.assertIn("No space left", str(error))
        self.patch(current.os, "write", real_write)
        self.patch(current.os, "writev", real_writev)
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

    def test_fsync_order(self) -> None:
        """
        Sealing with --fsync seal: the segment's data reaches the disk, then
        the sequence counter, then the rename, then the directories; with
        never, nothing is flushed; with always, every append is.
        """
        calls: list[str] = []
        real_rename = fs.rename_noreplace
        self.patch(fs, "fsync_file", lambda fd: calls.append(_what(fd)))
        self.patch(fs, "fsync_directory", lambda path: calls.append("dir " + path))

        def rename(source: str, target: str) -> None:
            calls.append("rename")
            real_rename(source, target)

        self.patch(fs, "rename_noreplace", rename)
        spool = self.spool(fsync="seal")
        spool.append([b"<EVENT/>"])
        self.assertEqual(calls, [])
        spool.seal()
        self.assertRegex(calls[0], r"^\d{15}-\d{6}\.xml$", "the set-aside segment first")
        calls[0] = "segment"
        self.assertEqual(
            calls,
            [
                "segment",
                "sequence",
                "rename",
                "dir " + spool.sealed_dir,
                "dir " + spool.directory,
            ],
        )
        for mode, expected in (("never", []), ("always", ["current"])):
            calls.clear()
            self.directory = self.mktemp()
            spool = self.spool(fsync=mode)
            spool.append([b"<EVENT/>"])
            self.assertEqual(calls, expected, mode)

    def test_lost_sequence_file(self) -> None:
        """
        The sequence file lost, a leftover current segment, a restart in the
        same second: the counter is raised above every sealed name before
        anything is sealed, and no sealed segment is replaced.
        """
        spool = self.spool()
        for n in range(2):
            spool.append([b"<EVENT>%d</EVENT>" % n])
            spool.seal()
        spool.append([b"<EVENT>2</EVENT>"])
        spool.close()
        os.unlink(os.path.join(self.directory, "sequence"))
        segments = self.spool().recover()
        self.assertEqual([s.sequence for s in segments], [0, 1, 2])
        self.assertEqual(
            [records(s.path)[0][1] for s in segments],
            [b"<EVENT>0</EVENT>", b"<EVENT>1</EVENT>", b"<EVENT>2</EVENT>"],
        )

    def test_seal_never_replaces(self) -> None:
        """
        A name already taken in sealed/ (a damaged counter) is skipped, and
        every number tried is consumed.
        """
        spool = self.spool()
        spool.append([b"<EVENT>a</EVENT>"])
        first = spool.seal()
        assert first is not None
        spool._next_sequence = 0
        spool.append([b"<EVENT>b</EVENT>"])
        second = spool.seal()
        assert second is not None
        self.assertEqual(second.sequence, 1)
        self.assertEqual(records(first.path), [(KIND_EVENT, b"<EVENT>a</EVENT>", "")])
        self.assertEqual(self.spool()._next_sequence, 2)
        target = os.path.join(self.directory, "taken")
        with open(target, "wb") as stream:
            stream.write(b"theirs")
        source = os.path.join(self.directory, "mine")
        with open(source, "wb") as stream:
            stream.write(b"mine")
        self.assertRaises(FileExistsError, fs.rename_noreplace, source, target)
        with open(target, "rb") as stream:
            self.assertEqual(stream.read(), b"theirs")
        self.patch(fs, "_RENAMEAT2", None)
        self.assertRaises(FileExistsError, fs.rename_noreplace, source, target)
        fs.rename_noreplace(source, target + "2")
        self.assertFalse(os.path.exists(source))

    def test_format_fixed_at_seal(self) -> None:
        """
        A segment keeps the format it was sealed with, whatever the next
        start says; one sealed by an older release takes the current one.
        """
        spool = self.spool(extension=".json.gz")
        spool.append([b"<EVENT/>"])
        segment = spool.seal()
        assert segment is not None
        self.assertEqual(segment.format, ("json", "gzip"))
        shutil.copy(segment.path, os.path.join(spool.sealed_dir, "20250729_161500_gw1_000007"))
        [mine, legacy] = self.spool(extension=".xml").recover()
        self.assertEqual((mine.name, mine.extension), (segment.name, ".json.gz"))
        self.assertEqual((legacy.sequence, legacy.extension), (7, ".xml"))

    def test_age_on_the_monotonic_clock(self) -> None:
        """A step of the wall clock neither delays nor hastens rotation."""
        monotonic = FakeTime(100.0)
        spool = self.spool(monotonic=monotonic)
        spool.append([b"<EVENT/>"])
        self.time.now -= 3600
        monotonic.now += 60
        self.assertEqual(spool.current_age(), 60)
        self.time.now += 7200
        self.assertEqual(spool.current_age(), 60)


def _what(fd: int) -> str:
    """The name of the file an open descriptor refers to."""
    return os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))


class RunsTests(SynchronousTestCase):
    def test_cuts(self) -> None:
        """
        Cut before the record that would pass the limit; a record larger
        than the limit stands alone; a header never leaves the record after
        it; a new segment counts the header written again.
        """
        from eventpipe.spool.waiting import runs_within

        self.assertEqual(runs_within([40, 40, 40], 0, 100), [2, 1])
        self.assertEqual(runs_within([40, 40], 70, 100), [0, 2])
        self.assertEqual(runs_within([500, 10], 0, 100), [1, 1])
        self.assertEqual(runs_within([], 50, 100), [0])
        headers = [True, False, False, True, False]
        self.assertEqual(runs_within([10, 40, 40, 10, 40], 0, 100, headers, 10), [3, 2])
        self.assertEqual(
            runs_within([10, 40, 40, 40], 0, 100, [True, False, False, False], 10), [3, 1]
        )
        self.assertEqual(runs_within([10, 45, 45], 0, 100, [True, False, False], 10), [3])
        self.assertEqual(runs_within([10, 45, 46], 0, 100, [True, False, False], 10), [2, 1])


class DetachTests(SynchronousTestCase):
    def test_detach_then_finish(self) -> None:
        """
        Detaching is immediate and flushes nothing; appends go to a new
        segment at once; the seal is finished later, in order, under names
        that follow the order of detaching.
        """
        time = FakeTime()
        flushed: list[int] = []
        self.patch(fs, "fsync_file", flushed.append)
        spool = Spool(self.mktemp(), "gw1", time, "seal", monotonic=time)
        spool.append([b"<EVENT>1</EVENT>"])
        first = spool.detach()
        spool.append([b"<EVENT>2</EVENT>"])
        second = spool.detach()
        assert first is not None and second is not None
        self.assertEqual(flushed, [])
        self.assertEqual(spool.current_size, 0)
        self.assertEqual(spool.waiting_bytes, first.size + second.size)
        self.assertEqual(os.listdir(spool.sealed_dir), [])
        a, b = spool.finish(first), spool.finish(second)
        self.assertEqual((a.sequence, b.sequence), (0, 1))
        self.assertEqual(os.listdir(spool.sealing_dir), [])
        self.assertEqual(records(b.path), [(KIND_EVENT, b"<EVENT>2</EVENT>", "")])

    def test_unfinished_seal_recovered(self) -> None:
        """
        A segment set aside but not sealed when the process died is sealed
        at the next start, after the counter is raised above sealed names,
        before a leftover current segment, with the time it was set aside.
        """
        time = FakeTime()
        directory = self.mktemp()
        spool = Spool(directory, "gw1", time, "never", monotonic=time)
        spool.append([b"<EVENT>old</EVENT>"])
        spool.seal()
        spool.append([b"<EVENT>detached</EVENT>"])
        spool.detach()
        spool.append([b"<EVENT>current</EVENT>"])
        spool.close()
        time.now += 3600
        segments = Spool(directory, "gw1", time, "never", monotonic=time).recover()
        self.assertEqual([s.sequence for s in segments], [0, 1, 2])
        self.assertEqual(
            [records(s.path)[0][1] for s in segments],
            [b"<EVENT>old</EVENT>", b"<EVENT>detached</EVENT>", b"<EVENT>current</EVENT>"],
        )
        self.assertEqual(segments[1].name.split("_")[1], "161500")
        self.assertEqual(segments[2].name.split("_")[1], "171500")


class Crash(BaseException):
    """The process died here (nothing after this step ran)."""


class CrashingOs:
    """
    The C{os} module as the spool sees it, dying at the C{at}-th step that
    changes the disk (a link, an unlink, a rename, a write, an fsync).
    """

    STEPS = frozenset({"link", "unlink", "rename", "pwrite", "write", "writev", "fsync"})

    def __init__(self, at: int) -> None:
        self.at = at
        self.steps: list[str] = []

    def __getattr__(self, name: str) -> object:
        real = getattr(os, name)
        if name not in self.STEPS:
            return real

        def step(*args: object) -> object:
            self.steps.append(name)
            if len(self.steps) == self.at:
                raise Crash(name)
            return real(*args)

        return step


def events_in(path: str) -> list[bytes]:
    with open(path, "rb") as stream:
        return [r.data for r in read_records(stream) if r.kind == KIND_EVENT]


class CrashWindowTests(SynchronousTestCase):
    """
    Every move of a segment (seal, renumber, set aside), on the path taken
    where the filesystem has no atomic no-replace rename (NFS, CIFS, some
    FUSE mounts: a link, then an unlink), killed at each of its steps, then
    started again: each event is in exactly one segment under one name,
    never in two, never lost -- and another hard link (a backup tool's)
    changes nothing.
    """

    def setUp(self) -> None:
        self.patch(fs, "_RENAMEAT2", None)
        self.time = FakeTime()
        self.notices: list[str] = []

    def spool(self, directory: str) -> Spool:
        return Spool(
            directory,
            "gw1",
            self.time,
            monotonic=self.time,
            notice=lambda text, **fields: self.notices.append(text.format(**fields)),
        )

    def shipped(self, directory: str) -> tuple[list[bytes], list[bytes]]:
        """What a new start ships, and what stays set aside; each file once."""
        spool = self.spool(directory)
        segments = spool.recover()
        shipped = [event for s in segments for event in events_in(s.path)]
        aside = [event for s in spool.set_aside() for event in events_in(s.path)]
        names: dict[tuple[int, int], list[str]] = {}
        for folder in (spool.sealed_dir, spool.failed_dir, spool.sealing_dir):
            for name in os.listdir(folder):
                path = os.path.join(folder, name)
                names.setdefault((os.stat(path).st_dev, os.stat(path).st_ino), []).append(path)
        self.assertEqual([n for n in names.values() if len(n) > 1], [], "one name each")
        self.assertEqual(os.listdir(spool.sealing_dir), [])
        return shipped, aside

    def crash_everywhere(self, prepare: object, move: object) -> int:
        """
        Run C{move} on a spool C{prepare}d alike, dying at its first step,
        then its second, ... until it runs through; check each restart.
        """
        at = 1
        while True:
            directory = self.mktemp()
            spool = self.spool(directory)
            expected, extra = prepare(spool)  # type: ignore[operator]
            crashing = CrashingOs(at)
            for module in (fs, spool_module, current, recovery, sequence, written):
                self.patch(module, "os", crashing)
            try:
                move(spool)  # type: ignore[operator]
                done = True
            except Crash:
                done = False
            finally:
                for module in (fs, spool_module, current, recovery, sequence, written):
                    self.patch(module, "os", os)
            shipped, aside = self.shipped(directory)
            self.assertEqual(sorted(shipped + aside), sorted(expected), (at, crashing.steps))
            if extra is not None:
                extra(shipped, aside, done)
            if done:
                return at
            at += 1

    def events(self, spool: Spool, *numbers: int) -> list[bytes]:
        events = [b"<EVENT>%d</EVENT>" % n for n in numbers]
        spool.append(events)
        return events

    def test_seal(self) -> None:
        def prepare(spool: Spool) -> tuple[list[bytes], None]:
            spool.recover()
            return self.events(spool, 1, 2, 3), None

        steps = self.crash_everywhere(prepare, lambda spool: spool.seal())
        self.assertGreaterEqual(steps, 5)  # fsync, write the counter, link, unlink, ...

    def test_seal_of_a_leftover_current_segment(self) -> None:
        def prepare(spool: Spool) -> tuple[list[bytes], None]:
            spool.recover()
            events = self.events(spool, 1, 2)
            spool.close()
            return events, None

        self.crash_everywhere(prepare, lambda spool: self.spool(spool.directory).recover())

    def test_renumber(self) -> None:
        def prepare(spool: Spool) -> tuple[list[bytes], object]:
            spool.recover()
            events = self.events(spool, 1, 2)
            self.segment = spool.seal()
            events += self.events(spool, 3)
            spool.seal()

            def check(shipped: list[bytes], aside: list[bytes], done: bool) -> None:
                # Renumbered: it ships under its new number, not the old.
                numbers = [s.sequence for s in self.spool(spool.directory).sealed()]
                if done:
                    self.assertEqual(numbers, [1, 2])

            return events, check

        self.crash_everywhere(prepare, lambda spool: spool.renumber(self.segment))

    def test_put_aside(self) -> None:
        def prepare(spool: Spool) -> tuple[list[bytes], object]:
            spool.recover()
            events = self.events(spool, 1, 2)
            self.segment = spool.seal()

            def check(shipped: list[bytes], aside: list[bytes], done: bool) -> None:
                if done:
                    self.assertEqual((shipped, len(aside)), ([], 2))

            return events, check

        self.crash_everywhere(prepare, lambda spool: spool.put_aside(self.segment))

    def test_old_name_cannot_be_removed(self) -> None:
        """
        The unlink after the link fails (EIO, EACCES): the move is done all
        the same (no second sequence number), the old name goes before the
        segment does, and a start in between keeps one name.
        """
        directory = self.mktemp()
        spool = self.spool(directory)
        spool.recover()
        events = self.events(spool, 1, 2)
        real_unlink = os.unlink
        refused = []

        def unlink(path: str) -> None:
            if not refused:
                refused.append(path)
                raise PermissionError(errno.EACCES, "Permission denied", path)
            real_unlink(path)

        self.patch(os, "unlink", unlink)
        segment = spool.seal()
        assert segment is not None
        self.assertEqual(segment.sequence, 0)
        self.assertEqual(len(os.listdir(spool.sealing_dir)), 1)
        self.assertIn("the old name stays (Permission denied)", self.notices[-1])
        # A start now finds the pair and keeps the sealed name.
        shipped, _ = self.shipped(directory)
        self.assertEqual(shipped, events)
        # Or the same life delivers it: both names go.
        spool = self.spool(self.mktemp())
        spool.recover()
        self.events(spool, 3)
        refused.clear()
        segment = spool.seal()
        assert segment is not None
        self.assertTrue(spool.remove(segment))
        self.assertEqual(os.listdir(spool.sealing_dir), [])
        self.assertEqual(os.listdir(spool.sealed_dir), [])

    def test_other_links_change_nothing(self) -> None:
        """
        A backup that hard-links the spool (cp -al, rsnapshot) or an
        operator's ln: the current segment and an unfinished seal are
        sealed and shipped at the next start, not deleted.
        """
        directory = self.mktemp()
        backup = self.mktemp()
        os.mkdir(backup)
        spool = self.spool(directory)
        spool.recover()
        events = self.events(spool, *range(500))
        detached = spool.detach()
        assert detached is not None
        events += self.events(spool, *range(500, 1000))
        spool.close()
        os.link(spool.current_path, os.path.join(backup, "current"))
        os.link(detached.path, os.path.join(backup, "sealing"))
        shipped, _ = self.shipped(directory)
        self.assertEqual(sorted(shipped), sorted(events))
        self.assertEqual(len(shipped), 1000)
        self.assertEqual(self.notices, [])
