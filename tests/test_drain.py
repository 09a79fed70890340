"""
The spool's lock, and C{eventpipe drain}: a spool left by a stopped or
killed service is shipped by a real process, exactly once, under the keys
its own host would have used; a spool a running service holds is refused.
"""

from __future__ import annotations

import os
import re

from twisted.trial.unittest import SynchronousTestCase

from eventpipe.lock import SpoolBusy, acquire, holder, last_instance
from eventpipe.spool.waiting import waiting_in
from tests.support import (
    BUCKET,
    CONTAINER,
    CREDENTIALS,
    Twistd,
    azurite_rig,
    batch_files,
    blobs,
    delivered_numbers,
    eventpipe,
    exactly_once_problems,
    gcs_objects,
    gcs_rig,
    make_stream,
    numbers_in_objects,
    s3_objects,
    s3_rig,
    send,
    wait_for,
)


class LockTests(SynchronousTestCase):
    def test_one_holder(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        self.assertIsNone(holder(directory))
        lock = acquire(directory, "gw1")
        self.assertEqual(holder(directory), {"pid": os.getpid(), "instance": "gw1"})
        error = self.assertRaises(SpoolBusy, acquire, directory, "gw2")
        self.assertIn(f"in use by process {os.getpid()}", str(error))
        lock.release()
        self.assertIsNone(holder(directory))
        # Who held it last is remembered for drain.
        self.assertEqual(last_instance(directory), "gw1")
        acquire(directory, "gw3").release()
        self.assertEqual(last_instance(directory), "gw3")

    def test_second_service_refused(self) -> None:
        """A second twistd on the same spool stops with one line, the first goes on."""
        workdir = os.path.abspath(self.mktemp())
        first = Twistd(workdir, [])
        self.addCleanup(first.cleanup)
        first.start()
        second = Twistd(workdir, [])
        self.addCleanup(second.cleanup)
        second.start(wait=False)
        assert second.process is not None
        self.assertEqual(second.process.wait(60), 1)
        with open(second.log_path + ".stderr") as stream:
            stderr = stream.read()
        self.assertRegex(
            stderr, r"^eventpipe: --spool-dir: cannot use .*: .* is in use by process \d+"
        )
        self.assertEqual(stderr.count("\n"), 1, stderr)
        send(first.port, make_stream(range(3)))
        first.stop()

    def test_refused_start_touches_nothing(self) -> None:
        """
        A spool of the previous format (no format file) that another
        process holds: a second service is refused before it writes
        anything into it.
        """
        workdir = os.path.abspath(self.mktemp())
        spool = os.path.join(workdir, "spool")
        os.makedirs(os.path.join(spool, "sealed"))
        held = acquire(spool, "old")
        self.addCleanup(held.release)
        before = sorted(os.listdir(spool))
        second = Twistd(workdir, [])
        self.addCleanup(second.cleanup)
        second.start(wait=False)
        assert second.process is not None
        self.assertEqual(second.process.wait(60), 1)
        self.assertEqual(sorted(os.listdir(spool)), before)
        self.assertFalse(os.path.exists(os.path.join(spool, "format")))
        self.assertEqual(last_instance(spool), "old")


def leave_a_spool(testcase: SynchronousTestCase, count: int, extra: bytes = b"") -> Twistd:
    """
    A service that took C{count} events, could deliver none (its bucket is
    behind a closed port), and was killed: sealed segments and a current one
    are left.
    """
    workdir = os.path.abspath(testcase.mktemp())
    service = Twistd(
        workdir,
        [
            "--rotation-interval=0.5",
            "--check-interval=0.1",
            f"--s3-bucket={BUCKET}",
            "--s3-endpoint-url=http://127.0.0.1:9",
        ],
        CREDENTIALS,
    )
    testcase.addCleanup(service.cleanup)
    service.start()
    send(service.port, make_stream(range(count // 2)))
    wait_for(lambda: os.listdir(os.path.join(service.spool, "sealed")), 30, "a sealed segment")
    send(service.port, make_stream(range(count // 2, count)) + extra)
    # Every event spooled (a current segment alone may hold part of them).
    wait_for(
        lambda: (
            os.path.exists(os.path.join(service.spool, "current"))
            and waiting_in(service.spool).events >= count
        ),
        30,
        "a current segment with every event",
    )
    service.kill()
    return service


class DrainTests(SynchronousTestCase):
    def test_drain_to_outbox(self) -> None:
        """
        Everything the dead service took is delivered once, under its
        instance id (not this host's), and drain says so and exits 0.
        """
        dead = leave_a_spool(self, 40)
        self.assertTrue(os.listdir(os.path.join(dead.spool, "sealed")))
        outbox = os.path.abspath(self.mktemp())
        drained = eventpipe("drain", f"--spool-dir={dead.spool}", f"--outbox={outbox}")
        self.assertEqual(drained.returncode, 0, drained.stdout + drained.stderr)
        self.assertIn("(instance test)", drained.stdout)
        self.assertIn("drained: 40 events delivered; nothing is left", drained.stdout)
        numbers = delivered_numbers(outbox)
        self.assertEqual(exactly_once_problems(numbers, range(40)), ([], [], []))
        for path in batch_files(outbox):
            self.assertRegex(os.path.basename(path), r"^\d{8}_\d{6}_test_\d{6}\.xml$")
        self.assertEqual(os.listdir(os.path.join(dead.spool, "sealed")), [])
        again = eventpipe("drain", f"--spool-dir={dead.spool}", f"--outbox={outbox}")
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertIn("no segments, no events", again.stdout)
        self.assertEqual(sorted(delivered_numbers(outbox)), sorted(numbers))

    def test_quarantined_pieces_are_said(self) -> None:
        """What drain delivered includes what it quarantined, said so."""
        dead = leave_a_spool(self, 10, b'<?xml version="1.0"?><EVENT><a></b></EVENT>\n')
        outbox = os.path.abspath(self.mktemp())
        drained = eventpipe("drain", f"--spool-dir={dead.spool}", f"--outbox={outbox}")
        self.assertEqual(drained.returncode, 0, drained.stdout + drained.stderr)
        self.assertIn(
            "drained: 10 events delivered, 1 piece quarantined; nothing is left", drained.stdout
        )

    def test_the_spools_own_instance_wins(self) -> None:
        """
        drain with the service's env file (which names this host's
        EVENTPIPE_INSTANCE_ID) ships the dead host's spool under the dead
        host's id, and leaves the lock saying so; an explicit different
        --instance-id is refused with one line.
        """
        dead = leave_a_spool(self, 20)
        outbox = os.path.abspath(self.mktemp())
        env_file = os.path.abspath(self.mktemp())
        with open(env_file, "w") as stream:
            stream.write(f"EVENTPIPE_INSTANCE_ID=thishost\nEVENTPIPE_OUTBOX={outbox}\n")
        refused = eventpipe(
            "drain", f"--spool-dir={dead.spool}", f"--outbox={outbox}", "--instance-id=other"
        )
        self.assertEqual(refused.returncode, 1, refused.stdout + refused.stderr)
        self.assertRegex(
            refused.stderr, r"^eventpipe: --instance-id: .* written as instance 'test'"
        )
        self.assertEqual(refused.stderr.count("\n"), 1, refused.stderr)
        self.assertEqual(last_instance(dead.spool), "test")
        drained = eventpipe("drain", f"--spool-dir={dead.spool}", f"--env-file={env_file}")
        self.assertEqual(drained.returncode, 0, drained.stdout + drained.stderr)
        self.assertIn("(instance test)", drained.stdout)
        self.assertEqual(last_instance(dead.spool), "test")
        for path in batch_files(outbox):
            self.assertRegex(os.path.basename(path), r"^\d{8}_\d{6}_test_\d{6}\.xml$")
        numbers = delivered_numbers(outbox)
        self.assertEqual(exactly_once_problems(numbers, range(20)), ([], [], []))

    def test_drain_to_s3(self) -> None:
        dead = leave_a_spool(self, 30)
        workdir = os.path.abspath(self.mktemp())
        server, client, cable = s3_rig(self, workdir)
        drained = eventpipe(
            "drain",
            f"--spool-dir={dead.spool}",
            f"--s3-bucket={BUCKET}",
            f"--s3-endpoint-url=http://127.0.0.1:{cable.port}",
            env=CREDENTIALS,
        )
        self.assertEqual(drained.returncode, 0, drained.stdout + drained.stderr)
        objects = s3_objects(client, BUCKET)
        self.assertEqual(
            exactly_once_problems(numbers_in_objects(objects), range(30)), ([], [], [])
        )
        self.assertTrue(all("_test_" in key for key in objects), list(objects))

    def test_drain_to_azure(self) -> None:
        dead = leave_a_spool(self, 30)
        server, container = azurite_rig(self, os.path.abspath(self.mktemp()))
        drained = eventpipe(
            "drain",
            f"--spool-dir={dead.spool}",
            f"--azure-container={CONTAINER}",
            env=server.environment,
        )
        self.assertEqual(drained.returncode, 0, drained.stdout + drained.stderr)
        found = blobs(container)
        self.assertEqual(exactly_once_problems(numbers_in_objects(found), range(30)), ([], [], []))
        self.assertTrue(all("_test_" in key for key in found), list(found))

    def test_drain_to_gcs(self) -> None:
        dead = leave_a_spool(self, 30)
        server, bucket = gcs_rig(self, os.path.abspath(self.mktemp()))
        drained = eventpipe(
            "drain",
            f"--spool-dir={dead.spool}",
            f"--gcs-bucket={BUCKET}",
            f"--gcs-endpoint-url={server.endpoint}",
        )
        self.assertEqual(drained.returncode, 0, drained.stdout + drained.stderr)
        found = gcs_objects(bucket)
        self.assertEqual(exactly_once_problems(numbers_in_objects(found), range(30)), ([], [], []))
        self.assertTrue(all("_test_" in key for key in found), list(found))

    def test_refused_while_the_service_runs(self) -> None:
        workdir = os.path.abspath(self.mktemp())
        service = Twistd(workdir, [])
        self.addCleanup(service.cleanup)
        service.start()
        refused = eventpipe("drain", f"--spool-dir={service.spool}")
        self.assertEqual(refused.returncode, 1)
        self.assertRegex(refused.stderr, r"is in use by process \d+ \(a running eventpipe\)\n$")
        self.assertEqual(refused.stderr.count("\n"), 1, refused.stderr)
        self.assertEqual(refused.stdout, "")

    def test_what_is_left_is_said(self) -> None:
        """A destination that does not answer: exit 1, what is left, and it stays."""
        dead = leave_a_spool(self, 20)
        drained = eventpipe(
            "drain",
            f"--spool-dir={dead.spool}",
            f"--s3-bucket={BUCKET}",
            "--s3-endpoint-url=http://127.0.0.1:9",
            "--timeout=2",
            env=CREDENTIALS,
        )
        self.assertEqual(drained.returncode, 1, drained.stdout + drained.stderr)
        match = re.search(r"not drained: (\d+) segments? \((\d+) events\) left", drained.stdout)
        assert match is not None, drained.stdout
        self.assertEqual(int(match.group(2)), 20)
        self.assertTrue(os.listdir(os.path.join(dead.spool, "sealed")))
        # Its log does not promise a next start: drain is run again.
        self.assertIn("ship when drain runs again", drained.stderr)
        self.assertNotIn("ship at the next start", drained.stderr)
