"""
The top service: start-up recovery and the order of the stop.  On a fake
clock with synchronous rendering; then on a fake clock with the real thread
pools (the order bugs a synchronous double hides); then with real twistd
processes, connections held open and S3 unreachable.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import time

from twisted.application.service import Service
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from eventpipe.config.settings import Settings
from eventpipe.destinations import UploadError
from eventpipe.destinations.outbox import LocalDirectoryUploader
from eventpipe.protocol import EventReceiverFactory
from eventpipe.service import EventpipeService
from eventpipe.spool.spool import Spool
from eventpipe.threads import ThreadedWork
from tests.harness import SETTINGS, ServiceHarness
from tests.support import (
    DECLARATION,
    FAST_S3,
    Twistd,
    delivered_numbers,
    exactly_once_problems,
    free_port,
    make_certificate,
    make_event,
    make_stream,
    numbers_in_objects,
    s3_objects,
    s3_rig,
    s3_service,
    wait_for,
    wait_for_udp_port,
)


class FakeClockTests(ServiceHarness):
    def test_recovery(self) -> None:
        """
        A restart seals the leftover current segment and ships every sealed
        segment under the name it already had.
        """
        spool = Spool(self.directory, "gw1", self.clock.seconds, "never")
        spool.append([make_event(1)])
        old = spool.seal()
        spool.append([make_event(2)])
        spool.close()
        assert old is not None
        self.clock.advance(3600)
        service = self.service()
        self.assertEqual(self.delivered(), [1, 2])
        self.assertIn(service.shipping.key_for(old), self.uploader.objects)

    def test_reload_reaches_every_stage(self) -> None:
        """
        A reload's time limits reach the render and the delivery steps,
        which read them (and the other reloadable settings the stages).
        """
        from eventpipe.config.options import Options, changes

        service = self.service()
        running = Options(environ={})
        running.parseOptions([f"--spool-dir={self.directory}"])
        fresh = Options(environ={})
        fresh.parseOptions(
            [f"--spool-dir={self.directory}", "--upload-timeout=7", "--render-timeout=9"]
        )
        applied, restart = service.reload(fresh, changes(running, fresh))
        self.assertEqual((sorted(applied), restart), (["render-timeout", "upload-timeout"], []))
        shipping = service.shipping
        for settings in (shipping.settings, shipping.delivery.settings, service.rotation.settings):
            self.assertEqual(settings.upload_timeout, 7.0)
        self.assertEqual(shipping.rendering.settings.render_timeout, 9.0)

    def test_shutdown_ships(self) -> None:
        """Stopping seals the current segment and ships it."""
        service = self.service()
        receiver, transport = self.connect(service)
        receiver.dataReceived(make_stream(range(4)))
        d = service.stopService()
        self.assertTrue(transport.disconnecting)
        receiver.connectionLost(None)
        self.successResultOf(d)
        self.assertEqual(self.delivered(), list(range(4)))
        self.assertTrue(self.uploader.stopped)

    def test_shutdown_timeout(self) -> None:
        """
        When the destination does not answer, stopping gives up after
        shutdown-timeout and the segment stays in the spool.
        """
        service = self.service(shutdown_timeout=5.0)
        self.uploader.hold = True
        receiver, _ = self.connect(service)
        receiver.dataReceived(make_stream(range(2)))
        receiver.connectionLost(None)
        d = service.stopService()
        self.assertNoResult(d)
        self.clock.advance(5)
        self.successResultOf(d)
        self.assertEqual(len(os.listdir(service.spool.sealed_dir)), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_connection_that_never_closes(self) -> None:
        """
        A connection whose close never completes (a TLS peer that does not
        answer) is aborted after a bounded wait; its events still ship.
        """
        service = self.service()
        receiver, transport = self.connect(service)
        receiver.dataReceived(make_stream(range(3)))
        d = service.stopService()
        self.assertNoResult(d)
        self.clock.advance(2)
        self.assertTrue(transport.disconnecting)
        receiver.connectionLost(None)
        self.successResultOf(d)
        self.assertEqual(self.delivered(), [0, 1, 2])

    def test_seal_fails_at_stop(self) -> None:
        """
        If sealing fails while stopping, the stop still closes the uploader
        and the spool, and the current segment stays for the next start.
        """
        service = self.service()
        receiver, _ = self.connect(service)
        receiver.dataReceived(make_stream(range(3)))
        receiver.connectionLost(None)

        def broken() -> None:
            raise OSError(5, "Input/output error")

        self.patch(service.spool, "detach", broken)
        self.successResultOf(service.stopService())
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertTrue(self.uploader.stopped)
        self.assertIsNone(service.spool._fd)
        self.assertTrue(os.path.getsize(os.path.join(self.directory, "current")) > 0)

    def test_failing_step_skips_nothing(self) -> None:
        """
        A step of the stop that raises (the uploader's stop) is logged, and
        the steps after it still run: the render and the sealer stop, the
        spool is closed, what stays behind is counted, and the metrics
        server and the signal handler are stopped.
        """
        service = self.service(shutdown_timeout=5.0)
        support = Service()
        service.add_support(support)
        support.startService()
        receiver, _ = self.connect(service)
        receiver.dataReceived(make_stream(range(3)))
        receiver.connectionLost(None)
        self.uploader.hold = True

        def broken(timeout: float = 5.0) -> None:
            raise RuntimeError("the uploader cannot stop")

        self.patch(self.uploader, "stop", broken)
        stopping = service.stopService()
        self.clock.advance(5)
        self.successResultOf(stopping)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertFalse(service.render.running)  # type: ignore[attr-defined]
        self.assertIsNone(service.spool._fd)
        self.assertFalse(support.running)
        self.assertEqual(len(os.listdir(service.spool.sealed_dir)), 1)

    def test_stop_tries_waiting_segments_at_once(self) -> None:
        """
        A segment waiting out a long backoff when the stop begins is tried
        at once, and ships (the destination is back).
        """
        service = self.service(retry_initial=30.0, retry_max=30.0)
        self.uploader.failures = [UploadError("503", transient=True)]
        receiver, _ = self.connect(service)
        receiver.dataReceived(make_stream(range(3)))
        receiver.connectionLost(None)
        self.clock.advance(60)
        self.assertEqual(self.delivered(), [])
        self.successResultOf(service.stopService())
        self.assertEqual(self.delivered(), [0, 1, 2])


class HeldOpenTransport(StringTransport):
    """
    Like a TCP connection whose peer keeps it open: it ends only when this
    side closes it, a moment later, as the kernel would report it.
    """

    def loseConnection(self) -> None:
        super().loseConnection()
        reactor.callLater(0, self.protocol.connectionLost, Failure(ConnectionDone()))


class RealThreadPoolTests(TestCase):
    """
    The stop order with the real render and outbox thread pools; the clock
    is fake, so a stop that waited for any timer would never end.
    """

    timeout = 30

    def test_held_open_connection_ships_at_stop(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._held_open())

    async def _held_open(self) -> None:
        clock = Clock()
        clock.advance(1753805700)
        directory = self.mktemp()
        outbox = os.path.join(directory, "outbox")
        settings = Settings(**dict(SETTINGS, rotation_interval=3600.0))
        service = EventpipeService(
            settings,
            Spool(os.path.join(directory, "spool"), "gw1", clock.seconds, "seal"),
            LocalDirectoryUploader(reactor, outbox, threads=2, clock=clock),
            clock,
            ThreadedWork(reactor, clock, 1, "test-render"),
            sealer=ThreadedWork(reactor, clock, 1, "test-seal"),
        )
        service.startService()
        receiver = EventReceiverFactory(service.ingest).buildProtocol(None)
        assert receiver is not None
        transport = HeldOpenTransport()
        receiver.makeConnection(transport)
        transport.protocol = receiver
        receiver.dataReceived(make_stream(range(25)))
        started = clock.seconds()
        await service.stopService()
        self.assertEqual(clock.seconds(), started, "the stop waited for a timer")
        self.assertEqual(sorted(delivered_numbers(outbox)), list(range(25)))
        self.assertEqual(os.listdir(service.spool.sealed_dir), [])
        self.assertFalse(os.path.exists(service.spool.current_path))
        self.assertFalse(service.render.pool.started)  # type: ignore[attr-defined]


def open_connection(port: int, data: bytes) -> socket.socket:
    """A connection that has sent C{data} and stays open (as ACM's does)."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    connection.sendall(data)
    return connection


def spooled(process: Twistd, count: int) -> None:
    from tests.test_integration import spooled_events

    wait_for(lambda: spooled_events(process.spool) == count, 20, f"{count} events in the spool")


class ProcessStopTests(SynchronousTestCase):
    """SIGTERM and SIGHUP to a real twistd process."""

    def twistd(self, *args: str, env: dict[str, str] | None = None) -> Twistd:
        process = Twistd(self.mktemp(), list(args), env)
        self.addCleanup(process.cleanup)
        return process

    def test_held_open_connections_ship_at_once(self) -> None:
        """
        Connections still open at SIGTERM, a rotation hours away: the events
        are delivered and the process ends as soon as they are, not at the
        shutdown timeout.
        """
        process = self.twistd("--rotation-interval=3600", "--shutdown-timeout=30").start()
        connections = [
            open_connection(process.port, make_stream(range(n * 25, n * 25 + 25))) for n in range(3)
        ]
        self.addCleanup(lambda: [c.close() for c in connections])
        spooled(process, 75)
        began = time.monotonic()
        status = process.stop(signal.SIGTERM)
        took = time.monotonic() - began
        self.assertEqual(status, -signal.SIGTERM)
        self.assertLess(took, 10, "the stop waited for the shutdown timeout")
        outbox = os.path.join(process.spool, "outbox")
        missing, duplicated, unexpected = exactly_once_problems(
            delivered_numbers(outbox), range(75)
        )
        self.assertEqual((missing, duplicated, unexpected), ([], [], []))
        self.assertEqual(os.listdir(os.path.join(process.spool, "sealed")), [])
        self.assertIn("everything received was delivered", process.log())

    def test_every_kind_of_listener_at_sigterm(self) -> None:
        """
        Two plain TCP connections and a TLS connection held open, and UDP
        datagrams, at SIGTERM: everything that was read is delivered, and
        the process ends at once.
        """
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        key, certificate = make_certificate(workdir)
        tls_port, udp_port = free_port(), free_port(socket.SOCK_DGRAM)
        process = self.twistd(
            "--rotation-interval=3600",
            f"--listen=ssl:{tls_port}:privateKey={key}:certKey={certificate}:interface=127.0.0.1",
            f"--listen-udp=127.0.0.1:{udp_port}",
        )
        process.start()
        wait_for_udp_port(udp_port)
        connections = [
            open_connection(process.port, make_stream(range(n * 25, n * 25 + 25))) for n in range(2)
        ]
        context = ssl.create_default_context(cafile=certificate)
        tls = context.wrap_socket(
            socket.create_connection(("127.0.0.1", tls_port)), server_hostname="localhost"
        )
        tls.sendall(make_stream(range(50, 75)))
        self.addCleanup(lambda: [c.close() for c in [*connections, tls]])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for n in range(75, 85):
                udp.sendto(DECLARATION + make_event(n), ("127.0.0.1", udp_port))
        spooled(process, 85)
        began = time.monotonic()
        self.assertEqual(process.stop(signal.SIGTERM), -signal.SIGTERM)
        self.assertLess(time.monotonic() - began, 10)
        outbox = os.path.join(process.spool, "outbox")
        self.assertEqual(exactly_once_problems(delivered_numbers(outbox), range(85)), ([], [], []))
        self.assertIn("everything received was delivered", process.log())

    def test_s3_unreachable_at_sigterm(self) -> None:
        """
        S3 unreachable at SIGTERM: the process ends at --shutdown-timeout,
        its log counts what stays in the spool, and the next start (S3 back)
        ships it once.
        """
        workdir = self.mktemp()
        dead = f"http://127.0.0.1:{free_port()}"
        process = s3_service(workdir, dead, *FAST_S3, "--shutdown-timeout=3")
        self.addCleanup(process.cleanup)
        process.start()
        connection = open_connection(process.port, make_stream(range(40)))
        self.addCleanup(connection.close)
        wait_for(lambda: "failed (attempt" in process.log(), 20, "a failed delivery")
        began = time.monotonic()
        self.assertEqual(process.stop(signal.SIGTERM), -signal.SIGTERM)
        took = time.monotonic() - began
        self.assertGreater(took, 2.5)
        self.assertLess(took, 12)
        self.assertIn("events not delivered; they stay in", process.log())
        self.assertIn("40 events not delivered", process.log())

        server, client, cable = s3_rig(self, workdir)
        process.args = [a for a in process.args if not a.startswith("--s3-endpoint-url")]
        process.args.append(f"--s3-endpoint-url=http://127.0.0.1:{cable.port}")
        process.start()
        wait_for(
            lambda: not os.listdir(os.path.join(process.spool, "sealed")),
            30,
            "the spool to empty",
        )
        numbers = numbers_in_objects(s3_objects(client, "acm-events"))
        self.assertEqual(exactly_once_problems(numbers, range(40)), ([], [], []))
        process.stop()

    def test_sighup_reloads(self) -> None:
        """
        SIGHUP reads the env file again, as log shippers do: what can change
        live is applied (here the allow-list and the rotation), what cannot
        is named as needing a restart, and the open connection goes on; a
        bad value keeps the running settings.
        """
        env_file = os.path.abspath(self.mktemp())
        with open(env_file, "w") as stream:
            stream.write("EVENTPIPE_ROTATION_INTERVAL=3600\n")
        process = self.twistd(f"--env-file={env_file}", "--check-interval=0.1").start()
        connection = open_connection(process.port, make_stream(range(10)))
        self.addCleanup(connection.close)
        spooled(process, 10)
        with open(env_file, "w") as stream:
            stream.write(
                "EVENTPIPE_ROTATION_INTERVAL=0.5\nEVENTPIPE_ALLOW=127.0.0.2\n"
                "EVENTPIPE_FORMAT=json\n"
            )
        assert process.process is not None
        process.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "SIGHUP: settings read again" in process.log(), 30, "the reload")
        log = process.log()
        self.assertIn("applied --allow 127.0.0.2/32 (was (none))", log)
        self.assertIn("--rotation-interval 0.5 (was 3600.0)", log)
        self.assertIn("needs a restart to take effect: --format json (was xml)", log)
        # The rotation applies: the events are delivered within a second or two.
        outbox = os.path.join(process.spool, "outbox")
        wait_for(lambda: sorted(delivered_numbers(outbox)) == list(range(10)), 30, "delivery")
        # The open connection goes on; a new one from 127.0.0.1 is refused.
        connection.sendall(make_stream(range(10, 15)))
        wait_for(lambda: len(delivered_numbers(outbox)) >= 15, 30, "the open connection's events")
        refused = socket.create_connection(("127.0.0.1", process.port))
        refused.settimeout(5)
        self.assertEqual(refused.recv(1), b"", "not on the allow-list now")
        refused.close()
        # A bad value: said, and the running settings stay.
        with open(env_file, "w") as stream:
            stream.write("EVENTPIPE_ROTATON_INTERVAL=5\n")
        process.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "the settings were not read again" in process.log(), 30, "the refusal")
        self.assertIn("did you mean EVENTPIPE_ROTATION_INTERVAL?", process.log())
        connection.sendall(make_stream(range(15, 20)))
        wait_for(lambda: len(delivered_numbers(outbox)) >= 20, 30, "still running")
        self.assertEqual(process.stop(), -signal.SIGTERM)
        self.assertEqual(sorted(delivered_numbers(outbox)), list(range(20)))
