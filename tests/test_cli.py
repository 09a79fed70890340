"""The eventpipe command: check and simulate."""

from __future__ import annotations

import collections
import io
import os
import socket
import subprocess
import sys
import time

from botocore.exceptions import ClientError
from lxml import etree
from twisted.trial.unittest import SynchronousTestCase

from eventpipe.check import check_s3, run_checks
from eventpipe.config.options import Options
from eventpipe.metrics import quarantine_reason
from eventpipe.simulate import AcmEvents
from tests.support import (
    BUCKET,
    CREDENTIALS,
    TWISTD,
    BlackHole,
    Cable,
    MotoServer,
    Twistd,
    batch_files,
    eventpipe,
    free_port,
    quarantined,
    read_object,
    wait_for,
)

EVENTPIPE = [sys.executable, "-c", "from eventpipe.cli import main; main()"]


def options(*args: str) -> Options:
    parsed = Options(environ={})
    parsed.parseOptions(list(args))
    return parsed


class CheckTests(SynchronousTestCase):
    def run_checks(self, *args: str, client: object = None) -> tuple[int, list[str]]:
        out = io.StringIO()
        status = run_checks(options(*args), out, client)
        return status, out.getvalue().splitlines()

    def test_all_good(self) -> None:
        spool = self.mktemp()
        status, lines = self.run_checks(
            "--listen=tcp:0:interface=127.0.0.1", f"--spool-dir={spool}"
        )
        self.assertEqual(status, 0)
        self.assertEqual(len(lines), 3)
        self.assertTrue(all(line.startswith("\u2713 ") for line in lines), lines)

    def test_port_in_use_and_bad_spool(self) -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            port = taken.getsockname()[1]
            blocker = self.mktemp()
            with open(blocker, "w") as stream:
                stream.write("not a directory")
            status, lines = self.run_checks(
                f"--listen=tcp:{port}:interface=127.0.0.1", f"--spool-dir={blocker}/spool"
            )
        self.assertEqual(status, 1)
        self.assertIn(f"\u2717 listen tcp:{port}:interface=127.0.0.1: port {port} is in use", lines)
        self.assertTrue(
            any(line.startswith("\u2717 spool") and "not writable" in line for line in lines)
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            busy = udp.getsockname()[1]
            status, lines = self.run_checks(
                "--listen=tcp:0:interface=127.0.0.1",
                f"--listen-udp=127.0.0.1:{busy}",
                f"--spool-dir={self.mktemp()}",
            )
        self.assertEqual(status, 1)
        self.assertIn(f"\u2717 listen-udp 127.0.0.1:{busy}: port {busy} is in use", lines)

    def test_s3_against_a_server(self) -> None:
        server = MotoServer(self.mktemp()).start()
        self.addCleanup(server.stop)
        client = server.client()
        args = (
            "--listen=tcp:0",
            f"--spool-dir={self.mktemp()}",
            f"--s3-bucket={BUCKET}",
            "--s3-prefix=acm",
        )
        status, lines = self.run_checks(*args, client=client)
        self.assertEqual(status, 1)
        self.assertIn(f"\u2717 bucket {BUCKET}: does not exist", lines)
        client.create_bucket(Bucket=BUCKET)
        status, lines = self.run_checks(*args, client=client)
        self.assertEqual(status, 0, lines)
        self.assertIn(f"\u2713 s3://{BUCKET}/acm/: can write objects (s3:PutObject)", lines)
        self.assertIn(
            f"\u2713 s3://{BUCKET}/acm/: refuses to overwrite an object written only if absent",
            lines,
        )
        listing = client.list_objects_v2(Bucket=BUCKET).get("Contents", [])
        self.assertEqual(listing, [], "the probe object is deleted")

    def test_store_that_ignores_conditional_writes(self) -> None:
        """
        An S3-compatible store that ignores If-None-Match (here, moto behind
        a relay that drops the header): check says so in one line and fails,
        unless --allow-unconditional-writes.
        """
        server = MotoServer(self.mktemp()).start()
        self.addCleanup(server.stop)
        server.client().create_bucket(Bucket=BUCKET)
        cable = Cable(server.port).plug()
        self.addCleanup(cable.unplug)
        cable.strip = b"If-None-Match: *\r\n"
        args = [
            "check",
            "--listen=tcp:0",
            f"--spool-dir={self.mktemp()}",
            f"--s3-bucket={BUCKET}",
            f"--s3-endpoint-url=http://127.0.0.1:{cable.port}",
        ]
        refused = eventpipe(*args, env=CREDENTIALS)
        self.assertEqual(refused.returncode, 1, refused.stdout + refused.stderr)
        [line] = [x for x in refused.stdout.splitlines() if "conditional" in x]
        self.assertTrue(line.startswith("\u2717 "), line)
        self.assertIn("ignores conditional writes", line)
        self.assertIn("--allow-unconditional-writes", line)
        allowed = eventpipe(*args, "--allow-unconditional-writes", env=CREDENTIALS)
        self.assertEqual(allowed.returncode, 0, allowed.stdout + allowed.stderr)
        self.assertIn("allowed by --allow-unconditional-writes", allowed.stdout)

    def test_minimal_policy_without_delete(self) -> None:
        """
        README's minimal IAM policy has no s3:DeleteObject (the service never
        deletes): the probe object's delete is a warning, not a failure.
        """
        server = MotoServer(self.mktemp()).start()
        self.addCleanup(server.stop)
        client = server.client()
        client.create_bucket(Bucket=BUCKET)

        class NoDelete:
            def __getattr__(self, name: str) -> object:
                return getattr(client, name)

            def delete_object(self, **kwargs: object) -> None:
                raise ClientError(
                    {"Error": {"Code": "AccessDenied", "Message": "denied"}}, "DeleteObject"
                )

        status, lines = self.run_checks(
            "--listen=tcp:0",
            f"--spool-dir={self.mktemp()}",
            f"--s3-bucket={BUCKET}",
            client=NoDelete(),
        )
        self.assertEqual(status, 0, lines)
        [warning] = [line for line in lines if line.startswith("! ")]
        self.assertIn("lacks s3:DeleteObject, which the service does not need", warning)

    def test_a_check_creates_nothing(self) -> None:
        """
        Run where nothing exists yet (no --spool-dir: ./eventpipe-spool and
        its outbox): it says they can be created, and creates nothing.
        """
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        result = subprocess.run(
            [*EVENTPIPE, "check", "--listen=tcp:0"],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("spool ./eventpipe-spool: does not exist yet, can be created", result.stdout)
        self.assertEqual(os.listdir(workdir), [])

    def test_help_into_a_closed_pipe(self) -> None:
        """
        eventpipe ... --help | head: no traceback when the reader has gone
        away (here it is gone before the help is written: the command
        waits a moment before it runs).
        """
        late = "import time; time.sleep(0.3); from eventpipe.cli import main; main()"
        for command in (["check"], ["status"], ["drain"], ["quarantine", "list"], []):
            argv = subprocess.list2cmdline([sys.executable, "-c", late, *command, "--help"])
            result = subprocess.run(
                f"{argv} | true", shell=True, capture_output=True, text=True, timeout=60
            )
            self.assertNotIn("Traceback", result.stderr, command)
            self.assertNotIn("BrokenPipeError", result.stderr, command)

    def test_help_flushed_before_exit(self) -> None:
        """
        What --help printed is flushed by the command itself, where a reader
        that went away is caught: never left to the interpreter's exit,
        which would print "Exception ignored ... BrokenPipeError".
        """
        from eventpipe import cli

        read, write = os.pipe()
        self.addCleanup(os.close, read)
        self.addCleanup(os.close, write)
        attempts = []

        class Gone(io.StringIO):
            def fileno(self) -> int:
                return write

            def flush(self) -> None:
                attempts.append(len(self.getvalue()))
                if self.getvalue():
                    raise BrokenPipeError(32, "Broken pipe")

        self.patch(sys, "stdout", Gone())
        self.patch(sys, "argv", ["eventpipe", "check", "--help"])
        exit = self.assertRaises(SystemExit, cli.main)
        self.assertEqual(exit.code, 0)
        self.assertTrue([n for n in attempts if n], "main flushed what --help printed")

    def test_what_twistd_would_refuse(self) -> None:
        """
        --listen and --metrics on one port, and a spool a running service
        holds: check fails as twistd would.
        """
        port = free_port()
        status, lines = self.run_checks(
            f"--listen=tcp:{port}:interface=127.0.0.1",
            f"--metrics=tcp:{port}:interface=127.0.0.1",
            f"--spool-dir={self.mktemp()}",
        )
        self.assertEqual(status, 1)
        self.assertIn(
            f"\u2717 metrics tcp:{port}:interface=127.0.0.1: port {port} is also listen "
            f"tcp:{port}:interface=127.0.0.1",
            lines,
        )
        service = Twistd(os.path.abspath(self.mktemp()), [])
        self.addCleanup(service.cleanup)
        service.start()
        assert service.process is not None
        status, lines = self.run_checks("--listen=tcp:0", f"--spool-dir={service.spool}")
        self.assertEqual(status, 1)
        self.assertIn(
            f"\u2717 spool {service.spool}: in use by process {service.process.pid} (a running "
            "eventpipe): a second service cannot start on it",
            lines,
        )

    def test_black_hole_endpoint(self) -> None:
        """
        An S3 endpoint that accepts connections and never answers: each line
        is printed as soon as it is decided, the bucket line names the
        timeout and what to look at, and the whole check ends within 30 s.
        """
        hole = BlackHole()
        self.addCleanup(hole.close)
        began = time.monotonic()
        check = subprocess.Popen(
            [
                *EVENTPIPE,
                "check",
                "--listen=tcp:0:interface=127.0.0.1",
                f"--spool-dir={self.mktemp()}",
                f"--s3-bucket={BUCKET}",
                f"--s3-endpoint-url=http://127.0.0.1:{hole.port}",
                "--s3-region=us-east-1",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing"),
        )
        self.addCleanup(lambda: check.poll() is None and check.kill())
        assert check.stdout is not None
        first = check.stdout.readline().decode()
        self.assertTrue(first.startswith("\u2713 listen"), first)
        self.assertIsNone(check.poll(), "the first line came only at the end")
        self.assertLess(time.monotonic() - began, 15)
        rest = check.stdout.read().decode()
        self.assertEqual(check.wait(30), 1)
        self.assertLess(time.monotonic() - began, 30)
        self.assertIn(
            f"\u2717 bucket {BUCKET}: no answer from the S3 endpoint within 20 s (ReadTimeoutError)",
            rest,
        )
        self.assertIn("a firewall or proxy that drops the traffic", rest)
        self.assertNotIn("probe object", rest)

    def test_names_the_missing_action(self) -> None:
        class Denying:
            def head_bucket(self, **kwargs: object) -> None:
                pass

            def put_object(self, **kwargs: object) -> None:
                raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "PutObject")

        results = list(check_s3(Denying(), "b", "acm/", "gw1"))
        self.assertEqual(results[0], (True, "bucket b: reachable"))
        self.assertFalse(results[1][0])
        self.assertIn("lacks s3:PutObject", results[1][1])

    def test_says_the_credentials_are_wrong(self) -> None:
        """
        A wrong key is named as such, not as a missing permission: S3's HEAD
        answer is a bare 403, so the check asks again with a call whose
        answer says why.
        """

        def refused(code: str, status: int, operation: str) -> ClientError:
            return ClientError(
                {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
                operation,
            )

        class WrongKey:
            def __init__(self, code: str) -> None:
                self.code = code

            def head_bucket(self, **kwargs: object) -> None:
                raise refused("403", 403, "HeadBucket")

            def list_objects_v2(self, **kwargs: object) -> None:
                raise refused(self.code, 403, "ListObjectsV2")

            def put_object(self, **kwargs: object) -> None:
                raise refused(self.code, 403, "PutObject")

        for code, words in (
            ("InvalidAccessKeyId", "the access key id is unknown"),
            ("SignatureDoesNotMatch", "the secret access key is wrong"),
            ("ExpiredToken", "the session token has expired"),
        ):
            results = list(check_s3(WrongKey(code), "b", "acm/", "gw1"))
            self.assertEqual([ok for ok, _ in results], [False, False], results)
            for _, line in results:
                self.assertIn(f"the credentials are refused: {words} ({code})", line)
                self.assertNotIn("lacks", line)


class SimulatorTests(SynchronousTestCase):
    def test_events_look_like_acm(self) -> None:
        events = AcmEvents(seed=7)
        first = events.document(0)
        self.assertEqual(first, AcmEvents(seed=7).document(0), "seeded: the same events")
        self.assertTrue(first.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<EVENT>'))
        root = etree.fromstring(first.split(b"\n", 1)[1])
        self.assertEqual(len(root), 42)
        self.assertEqual(root[0].tag, "plasectrxGatewayDN")
        self.assertEqual(root[-1].tag, "plasectrxIsAlarm")
        self.assertRegex(root.findtext("plasectrxCardno") or "", r"^ +\d+$")
        for kind in ("spaced_name", "wrong_end_tag"):
            broken = events.document(1, malformed=True, kind=kind).split(b"\n", 1)[1]
            self.assertRaises(etree.XMLSyntaxError, etree.fromstring, broken)
        spaced = events.document(2, malformed=True, kind="spaced_name")
        self.assertIn(b"<plasectrxPanel date>", spaced)
        cut = events.document(3, malformed=True, kind="truncated")
        self.assertNotIn(b"</EVENT>", cut)
        self.assertTrue(events.document(4, malformed=True, kind="outside").startswith(b"ACM"))
        # Distinct numbers per seed; the run's own time.
        other = etree.fromstring(AcmEvents(seed=8).document(0).split(b"\n", 1)[1])
        self.assertNotEqual(other.findtext("cn"), root.findtext("cn"))
        self.assertNotEqual(other.findtext("plasectrxSeqno"), root.findtext("plasectrxSeqno"))
        now = AcmEvents(seed=7, start=1_800_000_000).document(0)
        self.assertIn(b"<plasectrxRecdateUTC>20270115", now)

    def simulate(self, port: int, *args: str) -> str:
        result = subprocess.run(
            [*EVENTPIPE, "simulate", f"--to=tcp:127.0.0.1:{port}", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout

    def test_service_accepts_the_simulator(self) -> None:
        """
        The simulator's events, over several connections and one connection
        per event, with every 50th malformed: the service delivers the good
        ones and quarantines the bad ones.
        """
        workdir = os.path.abspath(self.mktemp())
        process = Twistd(workdir, ["--rotation-interval=0.5", "--check-interval=0.1"])
        self.addCleanup(process.cleanup)
        process.start()
        summary = self.simulate(
            process.port, "--rate=2000", "--count=1000", "--connections=3", "--malformed-every=50"
        )
        self.assertIn("sent 1,000 events (20 malformed) over 3 connections", summary)
        self.simulate(process.port, "--rate=500", "--count=40", "--reconnect-per-event", "--seed=1")
        outbox = os.path.join(process.spool, "outbox")

        def delivered() -> int:
            return sum(read_object(p).count(b"</EVENT>") for p in batch_files(outbox))

        # Of the 20 malformed, in turn: 5 spaced names, 5 wrong end tags, 5
        # cut short, and 5 events behind bytes outside any event (delivered).
        wait_for(lambda: delivered() >= 1000 - 15 + 40, 20, "the good events")
        reasons = [quarantine_reason(str(e["reason"])) for e in quarantined(outbox)]
        self.assertEqual(
            collections.Counter(reasons), {"malformed": 10, "truncated": 5, "outside_event": 5}
        )
        process.stop()

    def test_refused(self) -> None:
        result = subprocess.run(
            [*EVENTPIPE, "simulate", "--to=tcp:127.0.0.1:1", "--count=3"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 1)
        self.assertIn("cannot connect", result.stderr)
        self.assertNotIn("Traceback", result.stderr)

    def test_duration_and_wording(self) -> None:
        """
        --duration at a rate sends duration x rate events; one connection is
        "1 connection"; a bad number names its option.
        """
        workdir = os.path.abspath(self.mktemp())
        process = Twistd(workdir, ["--rotation-interval=0.5", "--check-interval=0.1"])
        self.addCleanup(process.cleanup)
        process.start()
        summary = self.simulate(process.port, "--rate=100", "--duration=2")
        self.assertIn("sent 200 events (0 malformed) over 1 connection in", summary)
        process.stop()
        for bad, name in (("--rate=abc", "--rate"), ("--count=x", "--count")):
            result = subprocess.run(
                [*EVENTPIPE, "simulate", bad], capture_output=True, text=True, timeout=60
            )
            self.assertEqual(result.returncode, 1)
            self.assertIn(f"{name}: invalid value", result.stderr)

    def test_versions(self) -> None:
        """Both commands say eventpipe's version, not Twisted's."""
        from eventpipe import __version__

        for command in (
            [*EVENTPIPE, "--version"],
            [*TWISTD, "eventpipe", "--version"],
            *(
                [*EVENTPIPE, *sub, "--version"]
                for sub in (
                    ["simulate"],
                    ["quarantine"],
                    ["status"],
                    ["drain"],
                    ["check"],
                    ["snowflake-sql"],
                )
            ),
        ):
            result = subprocess.run(command, capture_output=True, text=True, timeout=60)
            self.assertEqual(result.stdout.strip(), f"eventpipe {__version__}", command)
        listed = subprocess.run(
            [*EVENTPIPE, "quarantine", "list", "--help"], capture_output=True, text=True, timeout=60
        ).stdout
        self.assertTrue(
            listed.startswith("Usage: eventpipe quarantine list [service options] [--since WHEN]"),
            listed,
        )
        # A tool's own options first, then the service's under their heading.
        for tool, own in (("status", "--json"), ("drain", "--timeout"), ("quarantine", "--since")):
            text = subprocess.run(
                [*EVENTPIPE, *([tool, "list"] if tool == "quarantine" else [tool]), "--help"],
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout
            heading = text.index("Service options (as for twistd eventpipe):")
            self.assertLess(text.index(own), heading, tool)
            self.assertGreater(text.index("      --spool-dir="), heading, tool)
        usage = subprocess.run(
            [*EVENTPIPE, "snowflake-sql", "--help"], capture_output=True, text=True, timeout=60
        ).stdout
        self.assertTrue(usage.startswith("Usage: eventpipe snowflake-sql [options]"), usage)
        self.assertNotIn("--spool-dir", usage)
        self.assertIn("--s3-prefix", usage)
