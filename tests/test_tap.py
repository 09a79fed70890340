"""Options, environment fallbacks, wiring and the installed plugin."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys

from twisted.application.service import IServiceMaker, MultiService
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from eventpipe.tap import Options, makeService, parse_size
from tests.support import TWISTD


def parse(args: list[str], environ: dict[str, str] | None = None) -> Options:
    options = Options(environ=environ or {})
    options.parseOptions(args)
    return options


class OptionTests(SynchronousTestCase):
    def error(self, args: list[str], environ: dict[str, str] | None = None) -> str:
        """Parse, expecting a one-line error and exit status 1."""
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        exit = self.assertRaises(SystemExit, parse, args, environ)
        self.assertEqual(exit.code, 1)
        message = stderr.getvalue()
        self.assertEqual(message.count("\n"), 1, message)
        self.assertNotIn("Traceback", message)
        return message

    def test_defaults(self) -> None:
        options = parse([])
        self.assertEqual(options["listen"], ["tcp:8080"])
        self.assertEqual(options["spool-dir"], "./eventpipe-spool")
        self.assertEqual(options["rotation-interval"], 60.0)
        self.assertEqual(options["max-file-size"], 5 * 2**20)
        self.assertEqual(options["check-interval"], 10.0)
        self.assertEqual(options["format"], "xml")
        self.assertEqual(options["outbox"], os.path.join("./eventpipe-spool", "outbox"))
        self.assertEqual(options["event-tag"], "EVENT")
        self.assertEqual(options["max-event-size"], 2**20)
        self.assertEqual(options["shutdown-timeout"], 30.0)
        self.assertEqual(options["fsync"], "seal")
        self.assertIsNone(options["s3-bucket"])
        self.assertTrue(options["instance-id"])

    def test_environment(self) -> None:
        env = {
            "EVENTPIPE_LISTEN": "tcp:1000, tcp:1001",
            "EVENTPIPE_SPOOL_DIR": "/tmp/s",
            "ROTATION_INTERVAL": "5",
            "MAX_FILE_SIZE": "5MB",
            "CHECK_INTERVAL": "0.5",
            "OUTPUT_FORMAT": "json",
            "EVENTPIPE_INSTANCE_ID": "gw-2",
            "EVENTPIPE_MAX_EVENT_SIZE": "512KiB",
            "BUCKET_NAME": "b",
            "PREFIX": "acm",
        }
        options = parse([], env)
        self.assertEqual(options["listen"], ["tcp:1000", "tcp:1001"])
        self.assertEqual(options["spool-dir"], "/tmp/s")
        self.assertEqual(options["outbox"], "/tmp/s/outbox")
        self.assertEqual(options["rotation-interval"], 5.0)
        self.assertEqual(options["max-file-size"], 5_000_000)
        self.assertEqual(options["check-interval"], 0.5)
        self.assertEqual(options["format"], "json")
        self.assertEqual(options["instance-id"], "gw-2")
        self.assertEqual(options["max-event-size"], 512 * 1024)
        self.assertEqual(options["s3-bucket"], "b")
        self.assertEqual(options["s3-prefix"], "acm/")

    def test_command_line_beats_environment(self) -> None:
        options = parse(
            ["--rotation-interval=7", "--listen=tcp:2000", "--s3-bucket=x"],
            {"ROTATION_INTERVAL": "5", "PORT": "3000", "S3_BUCKET": "y", "BUCKET_NAME": "z"},
        )
        self.assertEqual(options["rotation-interval"], 7.0)
        self.assertEqual(options["listen"], ["tcp:2000"])
        self.assertEqual(options["s3-bucket"], "x")
        self.assertEqual(parse([], {"S3_BUCKET": "y", "BUCKET_NAME": "z"})["s3-bucket"], "y")

    def test_port(self) -> None:
        self.assertEqual(parse([], {"PORT": "9000"})["listen"], ["tcp:9000"])
        self.assertIn("PORT", self.error([], {"PORT": "http"}))

    def test_bad_values(self) -> None:
        """Each bad value stops start-up with one line naming the option."""
        for args, env, name in [
            (["--rotation-interval=-5"], {}, "--rotation-interval"),
            (["--check-interval=0"], {}, "--check-interval"),
            (["--format=csv"], {}, "--format"),
            (["--max-file-size=5 parsecs"], {}, "--max-file-size"),
            (["--listen=tcp:notaport"], {}, "--listen"),
            (["--listen=carrier-pigeon:1"], {}, "--listen"),
            (["--instance-id=a/b"], {}, "--instance-id"),
            (["--fsync=sometimes"], {}, "--fsync"),
            ([], {"ROTATION_INTERVAL": "soon"}, "ROTATION_INTERVAL"),
            ([], {"EVENTPIPE_LISTEN": "nope"}, "EVENTPIPE_LISTEN"),
            (["--no-such-option"], {}, "no-such-option"),
        ]:
            message = self.error(args, env)
            self.assertIn(name, message)

    def test_sizes(self) -> None:
        self.assertEqual(parse_size("5242880"), 5242880)
        self.assertEqual(parse_size("5MiB"), 5242880)
        self.assertEqual(parse_size("5MB"), 5_000_000)
        self.assertEqual(parse_size("512KiB"), 524288)
        self.assertEqual(parse_size("1.5 GB"), 1_500_000_000)
        for bad in ("", "MB", "5 MX", "-1"):
            self.assertRaises(ValueError, parse_size, bad)


class WiringTests(SynchronousTestCase):
    def test_listeners_with_backlog(self) -> None:
        """
        makeService only wires: the pipeline first, listeners last (so they
        stop first), and plain TCP gets a large backlog.
        """
        reactor = MemoryReactorClock()
        options = parse(["--listen=tcp:8123:interface=127.0.0.1", f"--spool-dir={self.mktemp()}"])
        service = makeService(options, reactor)
        self.assertIsInstance(service, MultiService)
        children = list(service)  # type: ignore[call-overload]
        self.assertEqual(children[1].name, "eventpipe-pipeline")
        children[-1].startService()
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
    def test_port_in_use(self) -> None:
        """A port that cannot be bound stops start-up with one line."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            port = taken.getsockname()[1]
            workdir = os.path.abspath(self.mktemp())
            os.makedirs(workdir)
            result = subprocess.run(
                [
                    *TWISTD,
                    "-n",
                    "--pidfile=",
                    "eventpipe",
                    f"--listen=tcp:{port}:interface=127.0.0.1",
                    f"--spool-dir={workdir}/spool",
                ],
                cwd=workdir,
                capture_output=True,
                text=True,
                timeout=60,
            )
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 1, output)
        self.assertIn(f"--listen tcp:{port}:interface=127.0.0.1: cannot listen", output)
        self.assertNotIn("Traceback", output)


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
        from eventpipe.tap import PARAMETERS

        for name, *_ in PARAMETERS:
            self.assertIn(f"--{name}=", help_text)
        self.assertIn("--listen=", help_text)
