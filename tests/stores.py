"""
The promises every store written over the network keeps, as scenarios of
real twistd processes against an emulator: exactly once, through an
emulator outage, a kill -9, and twins sharing an instance id.  A test case
of a store mixes L{StoreScenarios} in and says how to start a service on
it, how to read the event numbers delivered, and how its outage reads in
the log.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import time
from typing import Any

from eventpipe.destinations import UploadRequest
from tests.support import Twistd, exactly_once_problems, make_stream, send, spooled, wait_for

# Short intervals: the scenarios run in seconds.
FAST = [
    "--rotation-interval=0.5",
    "--check-interval=0.1",
    "--retry-initial-delay=0.2",
    "--retry-max-delay=1",
]


def upload_request(path: str, key: str, source: str) -> UploadRequest:
    """A delivery of the file at C{path} under C{key}, of the segment C{source}."""
    with open(path, "rb") as stream:
        sha = hashlib.sha256(stream.read()).hexdigest()
    return UploadRequest(path, key, sha, "application/xml", metadata={"events": "3"}, source=source)


def written(testcase: Any, data: bytes) -> str:
    """A file of the test's holding C{data}."""
    path = os.path.abspath(testcase.mktemp())
    with open(path, "wb") as stream:
        stream.write(data)
    return path


class StoreScenarios:
    """Mixed into a test case that has C{server} (the emulator) and these."""

    server: Any
    # What the log says while the emulator is down.
    unreachable = ""

    def service(self, name: str = "service", *args: str) -> Twistd:
        raise NotImplementedError

    def numbers(self) -> list[int]:
        raise NotImplementedError

    def keys(self) -> list[str]:
        raise NotImplementedError

    def test_delivered_exactly_once(self) -> None:
        process = self.service().start()
        send(process.port, make_stream(range(200)))
        wait_for(lambda: len(self.numbers()) >= 200, 60, "the objects")
        self.assertEqual(process.stop(), -signal.SIGTERM)  # type: ignore[attr-defined]
        self.assertEqual(  # type: ignore[attr-defined]
            exactly_once_problems(self.numbers(), range(200)), ([], [], [])
        )
        keys = self.keys()
        self.assertTrue(all(k.startswith("acm/20") for k in keys), keys)  # type: ignore[attr-defined]
        self.assertIn("everything received was delivered", process.log())  # type: ignore[attr-defined]

    def test_emulator_stopped_and_started_while_sending(self) -> None:
        """
        The emulator stops with batches on their way (a SIGTERM: an
        emulator's store is not durable across a kill -9, a cloud's is) and
        comes back 100 events later; nothing is lost or doubled.
        """
        process = self.service().start()
        connection = socket.create_connection(("127.0.0.1", process.port))
        self.addCleanup(connection.close)  # type: ignore[attr-defined]
        for n in range(300):
            connection.sendall(make_stream([n]))
            if n == 100:
                self.server.stop()
            if n == 200:
                self.server.start()
            time.sleep(0.01)
        connection.close()
        wait_for(lambda: len(set(self.numbers())) >= 300, 90, "the objects after the outage")
        self.assertEqual(process.stop(), -signal.SIGTERM)  # type: ignore[attr-defined]
        self.assertEqual(  # type: ignore[attr-defined]
            exactly_once_problems(self.numbers(), range(300)), ([], [], [])
        )
        self.assertIn(self.unreachable, process.log())  # type: ignore[attr-defined]

    def test_kill_nine_and_restart(self) -> None:
        process = self.service().start()
        send(process.port, make_stream(range(150)))
        # Killed once the 150 events are read (what the kernel holds at a
        # kill -9 is outside the promise): in the spool, or delivered.
        wait_for(
            lambda: len(spooled(process.spool) | set(self.numbers())) >= 150,
            30,
            "the events read",
        )
        process.kill()
        process.start()
        send(process.port, make_stream(range(150, 300)))
        wait_for(lambda: len(set(self.numbers())) >= 300, 60, "the objects after the restart")
        process.stop()
        self.assertEqual(  # type: ignore[attr-defined]
            exactly_once_problems(self.numbers(), range(300)), ([], [], [])
        )

    def test_twins_share_an_instance_id(self) -> None:
        """Two processes with one id: the key a twin took is left alone, nothing is lost."""
        twins = [self.service(f"twin-{n}").start() for n in range(2)]
        connections = [socket.create_connection(("127.0.0.1", t.port)) for t in twins]
        self.addCleanup(lambda: [c.close() for c in connections])  # type: ignore[attr-defined]
        for n in range(60):
            connections[0].sendall(make_stream([n]))
            connections[1].sendall(make_stream([1000 + n]))
            time.sleep(1 / 12)
        for twin in twins:
            self.assertEqual(twin.stop(), -signal.SIGTERM)  # type: ignore[attr-defined]
        expected = [*range(60), *range(1000, 1060)]
        self.assertEqual(  # type: ignore[attr-defined]
            exactly_once_problems(self.numbers(), expected), ([], [], [])
        )
