"""
Hostile input against a real twistd process over real TCP, UDP and TLS on
loopback, while a well-behaved sender's events must all arrive.
"""

from __future__ import annotations

import collections
import glob
import os
import socket
import ssl
import threading
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    DECLARATION,
    Twistd,
    delivered_numbers,
    free_port,
    make_certificate,
    make_event,
    make_stream,
    peak_rss_mib,
    quarantine_files,
    quarantined,
    quarantined_text,
    read_object,
    send,
    wait_for,
    wait_for_udp_port,
)

HOSTILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hostile")
FAST = ["--rotation-interval=0.5", "--check-interval=0.1"]
MEMORY_BOUND_MIB = 150


class Steady(threading.Thread):
    """A well-behaved ACM: numbered events at a steady pace on one connection."""

    def __init__(self, port: int, start: int, count: int) -> None:
        super().__init__(daemon=True)
        self.port, self.numbers, self.error = port, range(start, start + count), None
        self.slowest = 0.0

    def run(self) -> None:
        try:
            with socket.create_connection(("127.0.0.1", self.port)) as connection:
                for n in self.numbers:
                    began = time.monotonic()
                    connection.sendall(make_stream([n]))
                    self.slowest = max(self.slowest, time.monotonic() - began)
                    time.sleep(0.002)
        except OSError as error:  # pragma: no cover - reported by the test
            self.error = error


class HostileTestCase(SynchronousTestCase):
    def service(self, *args: str) -> Twistd:
        process = Twistd(os.path.abspath(self.mktemp()), [*FAST, *args])
        self.addCleanup(process.cleanup)
        return process.start()

    def outbox(self, process: Twistd) -> str:
        return os.path.join(process.spool, "outbox")

    def quarantined(self, process: Twistd) -> bytes:
        return quarantined_text(quarantined(self.outbox(process)))

    def all_bytes_written(self, process: Twistd) -> bytes:
        found = b""
        for path in glob.glob(os.path.join(process.workdir, "**", "*"), recursive=True):
            if os.path.isfile(path):
                found += read_object(path)
        return found

    def assertDelivered(self, process: Twistd, expected: list[int]) -> None:
        wait_for(
            lambda: len(delivered_numbers(self.outbox(process))) >= len(expected),
            30,
            f"{len(expected)} good events",
        )
        counts = collections.Counter(delivered_numbers(self.outbox(process)))
        self.assertEqual(sorted(counts), sorted(expected))
        self.assertEqual(max(counts.values()), 1)


class XmlAttackTests(HostileTestCase):
    def test_corpus(self) -> None:
        """
        XXE (file and network), an external DTD, billion laughs, quadratic
        blow-up, undefined entities, mismatched tags, control characters,
        invalid UTF-8 and a wrong root: each is quarantined with a reason,
        no file is read, nothing connects out, memory stays flat, and the
        events around them are delivered.
        """
        secret_path = os.path.abspath(self.mktemp())
        secret = b"TOP-SECRET-" + os.urandom(8).hex().encode()
        with open(secret_path, "wb") as stream:
            stream.write(secret)
        trap = socket.socket()
        trap.bind(("127.0.0.1", 0))
        trap.listen(8)
        trap.settimeout(0.2)
        self.addCleanup(trap.close)
        trap_port = trap.getsockname()[1]
        process = self.service()
        steady = Steady(process.port, 100_000, 300)
        steady.start()
        number = 0
        names = sorted(name for name in os.listdir(HOSTILE) if name.endswith(".xml"))
        self.assertGreaterEqual(len(names), 10)
        for name in names:
            with open(os.path.join(HOSTILE, name), "rb") as stream:
                attack = stream.read()
            attack = attack.replace(b"@SECRET@", secret_path.encode())
            attack = attack.replace(b"@PORT@", str(trap_port).encode())
            send(process.port, make_stream([number]) + attack + make_stream([number + 1]))
            number += 2
        steady.join(60)
        self.assertIsNone(steady.error)
        self.assertDelivered(process, [*range(number), *steady.numbers])
        wait_for(
            lambda: len(quarantined(self.outbox(process))) >= 10,
            20,
            "quarantine",
        )
        found = self.quarantined(process)
        for reason in (
            b"a DOCTYPE is not allowed",
            b"Entity 'x' not defined",
            b"Entity 'lol9' not defined",
            b"Entity 'a' not defined",
            b"Opening and ending tag mismatch",
            b"not well-formed XML",
            b"bytes outside any <EVENT> document",
            b"<ALARM>",
            b"\xc3\x28",
        ):
            self.assertTrue(reason in found, reason)
        self.assertFalse(secret in self.all_bytes_written(process), "the secret leaked")
        with self.assertRaises(socket.timeout):
            trap.accept()
        assert process.process is not None
        self.assertLess(peak_rss_mib(process.process.pid), MEMORY_BOUND_MIB)
        self.assertLess(steady.slowest, 1.0)
        process.stop()


class StreamAbuseTests(HostileTestCase):
    def test_garbage_giant_slow_silent(self) -> None:
        """
        Random binary garbage, a 100 MB event with no end tag, a sender of
        one byte at a time and a connection that says nothing, all at once:
        each is contained to its own connection (the garbage and the giant
        are cut off after a bounded amount), memory stays bounded, and the
        well-behaved sender's events all arrive without slowing down.
        """
        process = self.service("--max-event-size=64KiB")
        steady = Steady(process.port, 0, 1500)
        steady.start()
        silent = socket.create_connection(("127.0.0.1", process.port))
        self.addCleanup(silent.close)
        outcomes: dict[str, object] = {}

        def garbage() -> None:
            try:
                with socket.create_connection(("127.0.0.1", process.port)) as connection:
                    for _ in range(200):
                        connection.sendall(os.urandom(64 * 1024))
                outcomes["garbage"] = "sent everything"
            except OSError as error:
                outcomes["garbage"] = error

        def giant() -> None:
            try:
                with socket.create_connection(("127.0.0.1", process.port)) as connection:
                    connection.sendall(DECLARATION + b"<EVENT><plasectrxMsg>")
                    chunk = b"A" * (1 << 20)
                    for _ in range(100):
                        connection.sendall(chunk)
                outcomes["giant"] = "sent everything"
            except OSError as error:
                outcomes["giant"] = error

        def slow() -> None:
            # One byte at a time (every 0.1 s) through the declaration and
            # the start of the event, then the rest in small pieces.
            data = make_stream([900_000])
            with socket.create_connection(("127.0.0.1", process.port)) as connection:
                for i in range(60):
                    connection.sendall(data[i : i + 1])
                    time.sleep(0.1)
                for i in range(60, len(data), 100):
                    connection.sendall(data[i : i + 100])
                    time.sleep(0.01)
            outcomes["slow"] = "done"

        threads = [threading.Thread(target=f, daemon=True) for f in (garbage, giant, slow)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        steady.join(120)
        self.assertIsNone(steady.error)
        self.assertIsInstance(outcomes["garbage"], OSError, "the garbage sender was cut off")
        self.assertIsInstance(outcomes["giant"], OSError, "the giant was cut off")
        self.assertEqual(outcomes["slow"], "done")
        self.assertDelivered(process, [*steady.numbers, 900_000])
        log = process.log()
        self.assertIn("bytes that are not events", log)
        self.assertLess(log.count("set aside"), 20, "garbage is not logged per piece")
        assert process.process is not None
        self.assertLess(peak_rss_mib(process.process.pid), MEMORY_BOUND_MIB)
        self.assertLess(steady.slowest, 1.0)
        silent.sendall(make_stream([900_001]))
        silent.close()
        self.assertDelivered(process, [*steady.numbers, 900_000, 900_001])
        process.stop()

    def test_many_connections(self) -> None:
        """Five hundred connections at once, each with its events: all arrive."""
        process = self.service("--max-connections-per-host=500")
        connections = []
        for n in range(500):
            connection = socket.create_connection(("127.0.0.1", process.port))
            connections.append(connection)
            connection.sendall(make_stream([n]))
        for n, connection in enumerate(connections):
            connection.sendall(make_stream([1000 + n]))
        for connection in connections:
            connection.close()
        self.assertDelivered(process, [*range(500), *range(1000, 1500)])
        self.assertNotIn("refused", process.log())
        process.stop()

    def test_connection_limit_and_idle_timeout(self) -> None:
        """
        Beyond --max-connections new connections are closed at once, the
        others are unaffected; with --idle-timeout a quiet connection is
        closed.
        """
        process = self.service("--max-connections=3", "--idle-timeout=2", "--log-level=debug")
        # The start-up probe's connection must be gone before counting.
        wait_for(lambda: "closed" in process.log(), 10, "the probe to close")
        kept = [socket.create_connection(("127.0.0.1", process.port)) for _ in range(3)]
        for n, connection in enumerate(kept):
            connection.sendall(make_stream([n]))
        wait_for(lambda: process.log().count("connection from") >= 4, 10, "three connections")
        extra = socket.create_connection(("127.0.0.1", process.port))
        extra.settimeout(5)
        self.assertEqual(extra.recv(1), b"", "the fourth is closed")
        extra.close()
        for n, connection in enumerate(kept):
            connection.sendall(make_stream([10 + n]))
        self.assertDelivered(process, [0, 1, 2, 10, 11, 12])
        self.assertIn("refused 127.0.0.1", process.log())
        self.assertIn("--max-connections", process.log())
        kept[0].settimeout(10)
        self.assertEqual(kept[0].recv(1), b"", "idle connections are closed")
        self.assertIn("--idle-timeout", process.log())
        for connection in kept:
            connection.close()
        process.stop()

    def test_one_host_cannot_take_every_slot(self) -> None:
        """
        One address that opens connections and holds them idle reaches
        --max-connections-per-host and is refused there; ACM, from another
        address, still connects and delivers.
        """
        process = self.service(
            "--max-connections=10", "--max-connections-per-host=3", "--log-level=debug"
        )
        wait_for(lambda: "closed" in process.log(), 10, "the probe to close")
        hog = [socket.create_connection(("127.0.0.1", process.port)) for _ in range(3)]
        wait_for(lambda: process.log().count("connection from") >= 4, 10, "three connections")
        extra = socket.create_connection(("127.0.0.1", process.port))
        extra.settimeout(5)
        self.assertEqual(extra.recv(1), b"", "the fourth from that address is closed")
        extra.close()
        acm = socket.create_connection(("127.0.0.1", process.port), source_address=("127.0.0.2", 0))
        acm.sendall(make_stream(range(5)))
        acm.close()
        self.assertDelivered(process, list(range(5)))
        self.assertIn("--max-connections-per-host", process.log())
        for connection in hog:
            connection.close()
        process.stop()


class AccessTests(HostileTestCase):
    def test_allow_list(self) -> None:
        """
        A connection from outside --allow is closed before a byte is read,
        and logged with the peer address; inside, events flow.
        """
        process = self.service("--allow=192.0.2.0/24")
        connection = socket.create_connection(("127.0.0.1", process.port))
        connection.settimeout(5)
        try:
            connection.sendall(make_stream([1]))
            self.assertEqual(connection.recv(1), b"")
        except ConnectionResetError:
            pass
        connection.close()
        wait_for(lambda: "refused 127.0.0.1" in process.log(), 10, "the refusal")
        self.assertIn("not in --allow", process.log())
        # A clean stop delivers whatever was received: nothing, here.
        process.stop()
        self.assertEqual(delivered_numbers(self.outbox(process)), [])
        self.assertEqual(self.quarantined(process), b"")
        self.assertIn("everything received was delivered", process.log())
        allowed = self.service("--allow=127.0.0.0/8", "--allow=::1")
        send(allowed.port, make_stream([1, 2]))
        self.assertDelivered(allowed, [1, 2])
        allowed.stop()

    def test_udp(self) -> None:
        """
        One event per datagram, or several in one, through the same framer,
        spool and quarantine.
        """
        udp_port = free_port(socket.SOCK_DGRAM)
        process = self.service(f"--listen-udp=127.0.0.1:{udp_port}")
        wait_for_udp_port(udp_port)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for n in range(20):
                udp.sendto(DECLARATION + make_event(n), ("127.0.0.1", udp_port))
                time.sleep(0.001)
            udp.sendto(make_stream([20, 21, 22]), ("127.0.0.1", udp_port))
            udp.sendto(DECLARATION + b"<EVENT><broken></EVENT>", ("127.0.0.1", udp_port))
        self.assertDelivered(process, list(range(23)))
        wait_for(lambda: b"<EVENT><broken></EVENT>" in self.quarantined(process), 10, "quarantine")
        process.stop()

    def test_tls(self) -> None:
        """Events over TLS, with a certificate made here, arrive intact."""
        key_path, cert_path = self.certificate()
        port = free_port()
        process = self.service(
            f"--listen=ssl:{port}:privateKey={key_path}:certKey={cert_path}:interface=127.0.0.1"
        )
        context = ssl.create_default_context(cafile=cert_path)
        with socket.create_connection(("127.0.0.1", port)) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(make_stream(range(50)))
                # A clean TLS close: closing with the server's session
                # ticket unread would reset the connection.
                tls.unwrap()
        self.assertDelivered(process, list(range(50)))
        with socket.create_connection(("127.0.0.1", port)) as raw:
            raw.sendall(make_stream([99]))  # plain text on the TLS port
        # A clean stop delivers whatever was received.
        process.stop()
        self.assertNotIn(99, delivered_numbers(self.outbox(process)))

    def test_mutual_tls(self) -> None:
        """
        With mtls: a client with a certificate the server trusts delivers;
        one without a certificate gets nothing in.
        """
        key_path, cert_path = self.certificate()
        client_key, client_cert = self.certificate("acm-appliance")
        port = free_port()
        process = self.service(
            f"--listen=mtls:{port}:privateKey={key_path}:certKey={cert_path}"
            f":caCerts={client_cert}:interface=127.0.0.1"
        )
        anonymous = ssl.create_default_context(cafile=cert_path)
        with socket.create_connection(("127.0.0.1", port)) as raw:
            try:
                with anonymous.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.sendall(make_stream([666]))
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass
        trusted = ssl.create_default_context(cafile=cert_path)
        trusted.load_cert_chain(client_cert, client_key)
        with socket.create_connection(("127.0.0.1", port)) as raw:
            with trusted.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(make_stream(range(10)))
                tls.unwrap()
        self.assertDelivered(process, list(range(10)))
        self.assertNotIn(666, delivered_numbers(self.outbox(process)))
        process.stop()

    def certificate(self, common_name: str = "localhost") -> tuple[str, str]:
        return make_certificate(os.path.abspath(self.mktemp()), common_name)


class PermissionTests(HostileTestCase):
    def test_files_are_private(self) -> None:
        """Spool, outbox and quarantine: files 0600, directories 0700."""
        process = self.service("--rotation-interval=3600")
        send(process.port, make_stream([1]) + DECLARATION + b"<EVENT><x></EVENT>")
        wait_for(lambda: os.path.exists(os.path.join(process.spool, "current")), 10, "the spool")
        process.stop()
        for path in glob.glob(os.path.join(process.spool, "**"), recursive=True):
            mode = os.stat(path).st_mode & 0o777
            if os.path.isdir(path):
                self.assertEqual(mode, 0o700, path)
            else:
                self.assertEqual(mode, 0o600, path)
        self.assertTrue(quarantine_files(self.outbox(process)))
