"""The render worker process: real processes, the real reactor."""

from __future__ import annotations

import os
import signal
import sys
import time

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

from eventpipe.render.batch import render_segment
from eventpipe.spool.spool import Spool
from eventpipe.threads import ProcessWork, WorkerDied
from tests.support import Twistd, make_event, make_stream, send, wait_for


class WorkerTests(TestCase):
    timeout = 60

    def segment(self) -> str:
        spool = Spool(self.mktemp(), "gw1", lambda: 1753805700.0, "never")
        spool.append([make_event(n) for n in range(50)] + [b"<EVENT><broken></EVENT>"])
        segment = spool.seal()
        assert segment is not None
        return segment.path

    def test_renders_as_in_process(self) -> Deferred[None]:
        """A render in the worker gives the same result and files as in process."""

        async def go() -> None:
            work = ProcessWork(reactor, reactor)
            work.start()
            self.addCleanup(work.stop)
            path = self.segment()
            result = await work.run(render_segment, path, path + ".w.xml", path + ".w.q")
            local = render_segment(path, path + ".l.xml", path + ".l.q")
            self.assertEqual(result, local)
            with open(path + ".w.xml", "rb") as a, open(path + ".l.xml", "rb") as b:
                self.assertEqual(a.read(), b.read())
            failure = None
            try:
                await work.run(render_segment, path + ".missing", path + ".x", path + ".q")
            except OSError as error:
                failure = error
            assert failure is not None
            self.assertEqual(failure.errno, 2)
            await work.stop()
            self.assertIsNone(work.pid)

        return Deferred.fromCoroutine(go())

    def test_worker_killed(self) -> Deferred[None]:
        """
        A worker that dies fails what it was doing; the next render starts
        a new one.
        """

        async def go() -> None:
            work = ProcessWork(reactor, reactor)
            work.start()
            self.addCleanup(work.stop)
            path = self.segment()
            await work.run(render_segment, path, path + ".1.xml", path + ".1.q")
            first = work.pid
            assert first is not None
            os.kill(first, signal.SIGKILL)
            while work.pid is not None:
                await _sleep(0.05)
            result = await work.run(render_segment, path, path + ".2.xml", path + ".2.q")
            self.assertEqual(result.events, 50)
            self.assertNotEqual(work.pid, first)

        return Deferred.fromCoroutine(go())

    def test_two_workers(self) -> Deferred[None]:
        """Two renders at once go to two workers; both end at stop."""

        async def go() -> None:
            work = ProcessWork(reactor, reactor, workers=2)
            work.start()
            path = self.segment()
            first = work.run(render_segment, path, path + ".a.xml", path + ".a.q")
            second = work.run(render_segment, path, path + ".b.xml", path + ".b.q")
            self.assertEqual(len(set(work.pids)), 2)
            self.assertEqual((await first).events, (await second).events)
            await work.stop()
            self.assertEqual(work.pids, [])

        return Deferred.fromCoroutine(go())

    def test_pending_render_fails_when_the_worker_dies(self) -> Deferred[None]:
        async def go() -> None:
            # A worker that reads the request and never answers.
            stuck = [sys.executable, "-c", "import sys, time; sys.stdin.readline(); time.sleep(60)"]
            work = ProcessWork(reactor, reactor, argv=stuck)
            work.start()
            path = self.segment()
            pending = work.run(render_segment, path, path + ".xml", path + ".q")
            await _sleep(0.2)
            assert work.pid is not None
            os.kill(work.pid, signal.SIGKILL)
            with self.assertRaises(WorkerDied) as caught:
                await pending
            self.assertEqual(caught.exception.fault, "machine")
            self.assertIn("killed from outside by signal 9", str(caught.exception))
            await work.stop()

        return Deferred.fromCoroutine(go())

    def test_whose_fault_a_death_is(self) -> Deferred[None]:
        """
        A worker that cannot start (an upgrade in place broke its import) is
        the machine's fault for every request; one that crashes on a request
        is unclear for that request and the machine's for those behind it.
        """

        async def go() -> None:
            path = self.segment()
            cases = [
                ([sys.executable, "-c", "import eventpipe.no_such_module"], ["machine", "machine"]),
                (
                    [sys.executable, "-c", "import os, sys; sys.stdin.readline(); os.abort()"],
                    ["unclear", "machine"],
                ),
            ]
            for argv, expected in cases:
                work = ProcessWork(reactor, reactor, argv=argv)
                work.start()
                pending = [
                    work.run(render_segment, path, path + ".xml", path + ".q") for _ in range(2)
                ]
                faults = []
                for d in pending:
                    with self.assertRaises(WorkerDied) as caught:
                        await d
                    faults.append(caught.exception.fault)
                self.assertEqual(faults, expected, argv)
                await work.stop()

        return Deferred.fromCoroutine(go())


def _sleep(seconds: float) -> Deferred[None]:
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds, lambda: None)


class NoOrphanTests(SynchronousTestCase):
    def test_worker_ends_with_the_service(self) -> None:
        """kill -9 of the service leaves no worker behind."""
        process = Twistd(self.mktemp(), ["--rotation-interval=0.5", "--check-interval=0.1"])
        self.addCleanup(process.cleanup)
        process.start()
        send(process.port, make_stream(range(5)))
        outbox = os.path.join(process.spool, "outbox")
        wait_for(lambda: os.path.isdir(outbox) and os.listdir(outbox), 20, "a delivery")
        assert process.process is not None
        pid = process.process.pid
        with open(f"/proc/{pid}/task/{pid}/children") as stream:
            workers = [int(c) for c in stream.read().split()]
        self.assertTrue(workers, "a render worker")
        for worker in workers:
            with open(f"/proc/{worker}/cmdline", "rb") as stream:
                self.assertIn(b"eventpipe.worker", stream.read())
        process.kill()
        deadline = time.monotonic() + 10
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertFalse([w for w in workers if _alive(w)], "a worker outlived the service")


def _alive(pid: int) -> bool:
    """Running (not gone, and not a zombie waiting for init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as stream:
            return stream.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
