"""Wiring, the order of start and stop, and the installed plugin."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys

from twisted.application.service import IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from eventpipe.config.options import Options
from eventpipe.service import EventpipeService
from eventpipe.tap import makeService
from tests.support import TWISTD, free_port
from tests.test_options import parse


class WiringTests(SynchronousTestCase):
    def test_listeners_with_backlog(self) -> None:
        """
        makeService only wires: one service that owns the listeners (it
        starts them last and stops them first), and plain TCP gets a large
        backlog.
        """
        reactor = MemoryReactorClock()
        options = parse(["--listen=tcp:8123:interface=127.0.0.1", f"--spool-dir={self.mktemp()}"])
        service = makeService(options, reactor)
        self.assertIsInstance(service, EventpipeService)
        assert isinstance(service, EventpipeService)
        self.assertEqual(len(service.listeners), 1)
        service.privilegedStartService()
        [(port, factory, backlog, interface)] = reactor.tcpServers
        self.assertEqual((port, backlog, interface), (8123, 1024, "127.0.0.1"))

    def test_unusable_spool(self) -> None:
        path = self.mktemp()
        with open(path, "w") as stream:
            stream.write("a file, not a directory")
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        options = parse([f"--spool-dir={path}/spool"])
        self.assertRaises(SystemExit, makeService, options, MemoryReactorClock())
        self.assertIn("--spool-dir", stderr.getvalue())


class ListenFailureTests(SynchronousTestCase):
    def start(self, *args: str, env: dict[str, str] | None = None) -> str:
        """A twistd that must stop at start-up with one line, no traceback."""
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        result = subprocess.run(
            [*TWISTD, "-n", "--pidfile=", "eventpipe", f"--spool-dir={workdir}/spool", *args],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ, **(env or {})),
        )
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 1, output)
        self.assertNotIn("Traceback", output)
        return output

    def test_misspelled_setting(self) -> None:
        """
        As a unit's EnvironmentFile= or docker --env-file passes them: a
        misspelled EVENTPIPE_ variable stops twistd and eventpipe check
        alike, with one line naming the setting meant; nothing is delivered
        into the outbox meanwhile.
        """
        env = {"EVENTPIPE_S3_BUCKT": "acm-events", "EVENTPIPE_S3_ENDPOINT_URL": "http://x:9"}
        output = self.start("--listen=tcp:0:interface=127.0.0.1", env=env)
        self.assertIn("EVENTPIPE_S3_BUCKT (in the environment) is not a setting", output)
        self.assertIn("did you mean EVENTPIPE_S3_BUCKET?", output)
        self.assertEqual(output.count("\n"), 1, output)
        check = subprocess.run(
            [sys.executable, "-c", "from eventpipe.cli import main; main()", "check"],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ, **env),
        )
        self.assertEqual(check.returncode, 1, check.stdout + check.stderr)
        self.assertIn("did you mean EVENTPIPE_S3_BUCKET?", check.stderr)
        self.assertNotIn("\u2713", check.stdout)
        # Spelled right, but its bucket missing: refused, not ignored.
        output = self.start(env={"EVENTPIPE_S3_ENDPOINT_URL": "http://127.0.0.1:9000"})
        self.assertIn("EVENTPIPE_S3_ENDPOINT_URL: given without --s3-bucket", output)

    def test_port_in_use(self) -> None:
        """A port that cannot be bound stops start-up with one line."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            port = taken.getsockname()[1]
            output = self.start(f"--listen=tcp:{port}:interface=127.0.0.1")
        self.assertIn(f"--listen tcp:{port}:interface=127.0.0.1: cannot listen", output)

    def test_busy_metrics_and_udp_ports(self) -> None:
        """A busy --metrics or --listen-udp port stops start-up with one line, too."""
        with socket.socket() as taken, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            udp.bind(("127.0.0.1", 0))
            tcp_port, udp_port = taken.getsockname()[1], udp.getsockname()[1]
            listen = f"--listen=tcp:{free_port()}:interface=127.0.0.1"
            output = self.start(listen, f"--metrics=tcp:{tcp_port}:interface=127.0.0.1")
            self.assertIn(
                f"eventpipe: --metrics tcp:{tcp_port}:interface=127.0.0.1: cannot listen", output
            )
            output = self.start(listen, f"--listen-udp=127.0.0.1:{udp_port}")
            self.assertIn(f"eventpipe: --listen-udp 127.0.0.1:{udp_port}: cannot listen", output)


class PluginTests(SynchronousTestCase):
    def test_discovered(self) -> None:
        """The plugin is found and provides IServiceMaker."""
        makers = [m for m in getPlugins(IServiceMaker) if m.tapname == "eventpipe"]
        self.assertEqual(len(makers), 1)
        verifyObject(IServiceMaker, makers[0])
        self.assertIsInstance(makers[0].options(), Options)

    def test_installed(self) -> None:
        """
        Outside the source tree, the installed twistd lists the plugin and
        documents every option.
        """
        workdir = self.mktemp()
        os.makedirs(workdir)

        def twistd(*args: str) -> str:
            return subprocess.run(
                [*TWISTD, *args],
                cwd=workdir,
                env=dict(os.environ, PYTHONPATH=""),
                capture_output=True,
                text=True,
                check=True,
            ).stdout

        self.assertIn("eventpipe", twistd("--help"))
        help_text = twistd("eventpipe", "--help")
        from eventpipe.config.table import PARAMETERS

        for name, *_ in PARAMETERS:
            self.assertIn(f"--{name}=", help_text)
        self.assertIn("--listen=", help_text)


class TlsLibraryTests(SynchronousTestCase):
    """pyOpenSSL and cryptography load only where a listener uses TLS."""

    def loaded(self, *args: str) -> tuple[bool, float]:
        """Start a real twistd; whether it mapped cryptography, and its RSS in MiB."""
        from tests.support import Twistd, peak_rss_mib

        process = Twistd(self.mktemp(), list(args))
        self.addCleanup(process.cleanup)
        process.start()
        assert process.process is not None
        with open(f"/proc/{process.process.pid}/maps") as stream:
            maps = stream.read()
        rss = peak_rss_mib(process.process.pid)
        process.stop()
        return "cryptography" in maps or "OpenSSL" in maps, rss

    def test_plain_tcp_without_tls_libraries(self) -> None:
        from tests.support import free_port, make_certificate

        plain, plain_rss = self.loaded()
        self.assertFalse(plain)
        key, certificate = make_certificate(os.path.abspath(self.mktemp()))
        port = free_port()
        tls, tls_rss = self.loaded(
            f"--listen=ssl:{port}:privateKey={key}:certKey={certificate}:interface=127.0.0.1"
        )
        self.assertTrue(tls)
        print(
            f"\n    peak RSS: plain TCP {plain_rss:.1f} MiB, with a TLS listener {tls_rss:.1f} MiB"
        )
