"""
C{eventpipe quarantine list | show | replay}, against what a real twistd
process quarantined, in the outbox and on the S3 test server: replay
delivers each piece that passes now exactly once, however often it runs.
"""

from __future__ import annotations

import glob
import io
import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from eventpipe.cli import run
from eventpipe.quarantine.replay import MAX_RUNS
from eventpipe.quarantine.store import ranges, unranges
from eventpipe.render.output import quarantine_entry
from eventpipe.snowflake.setup import batch_pattern
from tests.support import (
    BUCKET,
    CONTAINER,
    CREDENTIALS,
    DECLARATION,
    EVENTPIPE_COMMAND,
    Twistd,
    azurite_rig,
    batch_files,
    blobs,
    eventpipe,
    gcs_objects,
    gcs_rig,
    quarantine_files,
    read_object,
    s3_objects,
    s3_rig,
    send,
    wait_for,
)

FAST = ["--rotation-interval=0.5", "--check-interval=0.1"]


def good(n: int) -> bytes:
    return (
        DECLARATION + b"<EVENT><cn>g%d</cn><plasectrxCardno>   0042</plasectrxCardno></EVENT>\n" % n
    )


def spaced(n: int) -> bytes:
    """ACM's spaced element name: fixed by --repair-acm-tag-names."""
    return DECLARATION + (
        b"<EVENT><cn>s%d</cn><plasectrxPanel date>20250804033640-0500</plasectrxPanel date>"
        b"</EVENT>\n" % n
    )


def other_tag(n: int) -> bytes:
    """An event under another root name: passes with --event-tag=Event."""
    return DECLARATION + b"<Event><cn>t%d</cn></Event>\n" % n


BROKEN = DECLARATION + b"<EVENT><cn>b0</cn><a>x</b></EVENT>\n"


def cns(data: bytes) -> list[str]:
    return re.findall(r"<cn>([^<]+)</cn>", read_object(data).decode("utf-8"))


class Scenario:
    """What one real service quarantined: spaced names, another tag, a broken event."""

    def __init__(
        self, testcase: SynchronousTestCase, *args: str, env: dict[str, str] | None = None
    ) -> None:
        self.workdir = os.path.abspath(testcase.mktemp())
        self.service = Twistd(self.workdir, [*FAST, *args], env)
        testcase.addCleanup(self.service.cleanup)
        self.service.start()
        send(
            self.service.port,
            b"".join(good(n) for n in range(10)) + b"".join(spaced(n) for n in range(5)),
        )
        send(self.service.port, b"".join(other_tag(n) for n in range(3)))
        send(self.service.port, BROKEN + b"".join(good(n) for n in range(10, 12)))
        self.options = [f"--spool-dir={self.service.spool}", "--instance-id=test", *args]
        self.env = env

    def tool(self, *args: str) -> subprocess.CompletedProcess[str]:
        command, *rest = args
        return eventpipe(command, *rest, *self.options, env=self.env)

    def quarantine(self, command: str, *args: str) -> subprocess.CompletedProcess[str]:
        # Options first: what follows the first argument is arguments.
        flags = [a for a in args if a.startswith("--")]
        rest = [a for a in args if not a.startswith("--")]
        return eventpipe("quarantine", command, *self.options, *flags, *rest, env=self.env)


class Checks:
    """The same tests, for the outbox and for S3."""

    scenario: Scenario

    def test_list_and_show(self) -> None:
        self.wait_quarantined()
        self.check_list_and_show()

    def test_replays_exactly_once(self) -> None:
        self.wait_quarantined()
        self.check_replays_exactly_once()
        self.after_replays()

    def after_replays(self) -> None:
        """What a destination checks beyond the rest."""

    def delivered(self) -> dict[str, bytes]:
        raise NotImplementedError

    def replayed_cns(self) -> Counter[str]:
        found: Counter[str] = Counter()
        for key, data in self.delivered().items():
            if re.search(r"-r\d+\.xml$", key):
                found.update(cns(data))
        return found

    def wait_quarantined(self) -> None:
        def done() -> bool:
            objects = self.delivered()
            quarantine = [k for k in objects if "quarantine/" in k]
            normal = Counter(
                c for k, d in objects.items() if "quarantine/" not in k for c in cns(d)
            )
            pieces = sum(len(read_object(objects[k]).splitlines()) for k in quarantine)
            return pieces >= 3 and len(normal) == 12

        wait_for(done, 60, "the quarantine")
        self.scenario.service.stop()

    def check_list_and_show(self) -> None:
        listed = self.scenario.quarantine("list")
        self.assertEqual(listed.returncode, 0, listed.stderr)
        lines = listed.stdout.splitlines()
        [summary] = [line for line in lines if re.match(r"^\d+ pieces in \d+ objects? at ", line)]
        # ACM's spaced names are among the reasons: the repair is named.
        self.assertIn("hint: ACM's element names with a space? --repair-acm-tag-names", lines[-1])
        self.assertIn("malformed", summary)
        self.assertIn("cn=b0", listed.stdout)
        self.assertIn("cn=s0", listed.stdout)
        broken = next(line for line in lines if "cn=b0" in line)
        self.assertIn("127.0.0.1:", broken)
        where = re.search(r"(\S+\.jsonl:\d+)", broken)
        assert where is not None
        shown = self.scenario.quarantine("show", where.group(1))
        self.assertEqual(shown.returncode, 0, shown.stderr)
        # As it arrived: the event's bytes (the framer kept the declaration apart).
        self.assertIn("<EVENT><cn>b0</cn><a>x</b></EVENT>", shown.stdout)
        missing = self.scenario.quarantine("show", "quarantine/2020/01/01/nothing.jsonl:1")
        self.assertEqual(missing.returncode, 1)
        self.assertEqual(missing.stderr.count("\n"), 1, missing.stderr)

    def check_replays_exactly_once(self) -> None:
        """
        Three replays with growing powers, then the same again: every piece
        that passes is delivered once, in the order the powers came.
        """
        dry = self.scenario.quarantine("replay", "--repair-acm-tag-names", "--dry-run")
        self.assertEqual(dry.returncode, 0, dry.stderr)
        self.assertIn("would replay 5 pieces", dry.stdout)
        self.assertEqual(self.replayed_cns(), Counter())

        first = self.scenario.quarantine("replay", "--repair-acm-tag-names")
        self.assertEqual(first.returncode, 0, first.stderr)
        self.assertIn("replayed 5 pieces (5 events)", first.stdout)
        self.assertEqual(self.replayed_cns(), Counter(f"s{n}" for n in range(5)))

        second = self.scenario.quarantine("replay", "--event-tag=Event")
        self.assertEqual(second.returncode, 0, second.stderr)
        self.assertIn("replayed 3 pieces (3 events)", second.stdout)
        self.assertIn("5 replayed before", second.stdout)

        for _ in range(2):
            rerun = self.scenario.quarantine("replay", "--repair-acm-tag-names")
            self.assertEqual(rerun.returncode, 0, rerun.stderr)
            self.assertIn("replayed 0 pieces", rerun.stdout)
            self.assertIn("8 replayed before; 1 still fail", rerun.stdout)
        expected = Counter([*(f"s{n}" for n in range(5)), *(f"t{n}" for n in range(3))])
        self.assertEqual(self.replayed_cns(), expected)
        replays = sorted(k for k in self.delivered() if re.search(r"-r\d+\.xml$", k))
        self.assertEqual(len(replays), 2, replays)
        for key in replays:
            self.assertTrue(re.fullmatch(batch_pattern("xml"), key), key)
        listed = self.scenario.quarantine("list")
        self.assertEqual(listed.stdout.count("  replayed  "), 8, listed.stdout)
        self.assertIn("; 8 pieces replayed", listed.stdout)


class OutboxTests(Checks, SynchronousTestCase):
    def setUp(self) -> None:
        self.scenario = Scenario(self)
        self.outbox = os.path.join(self.scenario.service.spool, "outbox")

    def delivered(self) -> dict[str, bytes]:
        found = {}
        for path in [*batch_files(self.outbox), *quarantine_files(self.outbox)]:
            with open(path, "rb") as stream:
                found[os.path.relpath(path, self.outbox)] = stream.read()
        return found

    def test_replays_at_the_same_time(self) -> None:
        """Two replays racing on one quarantine deliver each piece once."""
        self.wait_quarantined()
        command = [
            *EVENTPIPE_COMMAND,
            "quarantine",
            "replay",
            "--repair-acm-tag-names",
            *self.scenario.options,
        ]
        racing = [
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(3)
        ]
        for process in racing:
            out, err = process.communicate(timeout=120)
            self.assertEqual(process.returncode, 0, err)
        self.assertEqual(self.replayed_cns(), Counter(f"s{n}" for n in range(5)))

    def killed_replay(self, *args: str) -> None:
        """A replay killed (SIGKILL) after claiming its key, before linking its batch."""
        killing = (
            "import os, signal\n"
            "real = os.link\n"
            "def link(source, target, *args, **kwargs):\n"
            "    if '/.metadata/' not in target:\n"
            "        os.kill(os.getpid(), signal.SIGKILL)\n"
            "    return real(source, target, *args, **kwargs)\n"
            "os.link = link\n"
            "from eventpipe.cli import main; main()\n"
        )
        killed = subprocess.run(
            [sys.executable, "-c", killing, "quarantine", "replay", *self.scenario.options, *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual(killed.returncode, -signal.SIGKILL, killed.stderr)
        self.assertEqual([p for p in batch_files(self.outbox) if "-r1." in p], [])
        claims = glob.glob(
            os.path.join(self.outbox, ".metadata", "**", "*-r1.xml.json"), recursive=True
        )
        self.assertEqual(len(claims), 1)

    def test_replay_killed_between_claim_and_link(self) -> None:
        """
        A replay killed after claiming its key and before linking the
        batch: the next one makes the same batch, finds its own claim, and
        the pieces arrive once.
        """
        self.wait_quarantined()
        self.killed_replay("--repair-acm-tag-names")
        again = self.scenario.quarantine("replay", "--repair-acm-tag-names")
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertIn("replayed 5 pieces (5 events)", again.stdout)
        self.assertIn("-r1.xml", again.stdout)
        self.assertEqual(self.replayed_cns(), Counter(f"s{n}" for n in range(5)))

    def test_orphaned_claim_of_other_lines(self) -> None:
        """
        A replay killed between claim and link leaves a claim of its lines;
        a later replay of other lines (another --event-tag) steps over that
        number instead of meeting it again and again, and a replay of the
        first lines afterwards delivers them once.
        """
        self.wait_quarantined()
        self.killed_replay("--repair-acm-tag-names")
        other = self.scenario.quarantine("replay", "--event-tag=Event")
        self.assertEqual(other.returncode, 0, other.stderr)
        self.assertIn("-r2.xml", other.stdout)
        self.assertIn("replayed 3 pieces (3 events)", other.stdout)
        first = self.scenario.quarantine("replay", "--repair-acm-tag-names")
        self.assertEqual(first.returncode, 0, first.stderr)
        self.assertIn("replayed 5 pieces (5 events)", first.stdout)
        self.assertEqual(
            self.replayed_cns(),
            Counter([*(f"s{n}" for n in range(5)), *(f"t{n}" for n in range(3))]),
        )


class S3Tests(Checks, SynchronousTestCase):
    def setUp(self) -> None:
        workdir = os.path.abspath(self.mktemp())
        server, self.client, cable = s3_rig(self, workdir)
        endpoint = f"http://127.0.0.1:{cable.port}"
        self.scenario = Scenario(
            self, f"--s3-bucket={BUCKET}", f"--s3-endpoint-url={endpoint}", env=CREDENTIALS
        )

    def delivered(self) -> dict[str, bytes]:
        return s3_objects(self.client, BUCKET)

    def after_replays(self) -> None:
        # The replayed batch says where it came from.
        replay = next(k for k in self.delivered() if k.endswith("-r1.xml"))
        metadata = self.client.head_object(Bucket=BUCKET, Key=replay)["Metadata"]
        self.assertTrue(metadata["replayed"].startswith("quarantine/"))
        self.assertEqual(len(unranges(metadata["lines"])), 5)
        self.assertEqual(metadata["events"], "5")


class AzureTests(Checks, SynchronousTestCase):
    def setUp(self) -> None:
        workdir = os.path.abspath(self.mktemp())
        server, self.container = azurite_rig(self, workdir)
        self.scenario = Scenario(
            self, f"--azure-container={CONTAINER}", "--azure-prefix=acm", env=server.environment
        )

    def delivered(self) -> dict[str, bytes]:
        return {key[len("acm/") :]: data for key, data in blobs(self.container).items()}


class GCSTests(Checks, SynchronousTestCase):
    def setUp(self) -> None:
        workdir = os.path.abspath(self.mktemp())
        server, self.bucket = gcs_rig(self, workdir)
        self.scenario = Scenario(
            self,
            f"--gcs-bucket={BUCKET}",
            "--gcs-prefix=acm",
            f"--gcs-endpoint-url={server.endpoint}",
        )

    def delivered(self) -> dict[str, bytes]:
        return {key[len("acm/") :]: data for key, data in gcs_objects(self.bucket).items()}

    def after_replays(self) -> None:
        # The replayed batch says where it came from, in its custom metadata.
        replay = next(k for k in gcs_objects(self.bucket) if k.endswith("-r1.xml"))
        metadata = self.bucket.get_blob(replay).metadata
        self.assertTrue(metadata["replayed"].startswith("acm/quarantine/"), metadata)
        self.assertEqual(metadata["events"], "5")


class ReplayUnitTests(SynchronousTestCase):
    """A quarantine written in an outbox by hand, replayed in this process."""

    def test_window(self) -> None:
        """--since and --until choose objects by the time in their names."""
        from eventpipe.destinations.outbox import LocalDirectoryUploader
        from eventpipe.quarantine.options import _since
        from eventpipe.quarantine.store import Quarantine

        outbox = os.path.abspath(self.mktemp())
        for day in ("20261120_101500", "20261124_101500", "20261128_235959"):
            key = f"quarantine/{day[:4]}/{day[4:6]}/{day[6:8]}/{day}_gw1_000001.jsonl"
            os.makedirs(os.path.dirname(os.path.join(outbox, key)), exist_ok=True)
            with open(os.path.join(outbox, key), "wb") as stream:
                stream.write(quarantine_entry("not well-formed XML: x", BROKEN))
        quarantine = Quarantine(LocalDirectoryUploader(None, outbox), "")  # type: ignore[arg-type]
        self.assertEqual(len(quarantine.objects()), 3)
        chosen = quarantine.objects(_since("2026-11-21", 0.0), _since("2026-11-28T23:59", 0.0))
        self.assertEqual(chosen, ["quarantine/2026/11/24/20261124_101500_gw1_000001.jsonl"])
        self.assertRaises(ValueError, _since, "last week", 0.0)
        self.assertEqual(_since("2d", 200000.0), 200000.0 - 2 * 86400)
        listed = io.StringIO()
        args = ["quarantine", "list", f"--outbox={outbox}", "--since=2026-11-24"]
        args.append(f"--spool-dir={os.path.abspath(self.mktemp())}")
        self.assertEqual(run(args, listed), 0)
        self.assertTrue(listed.getvalue().endswith(": malformed 2\n"), listed.getvalue())

    def test_ranges(self) -> None:
        self.assertEqual(ranges([5, 0, 1, 2, 9, 10]), "0-2,5,9-10")
        self.assertEqual(unranges("0-2,5,9-10"), {0, 1, 2, 5, 9, 10})
        self.assertEqual(unranges(""), set())

    def test_many_runs_take_several_replays(self) -> None:
        """
        Pieces good and bad in turn: more runs of lines than one replay's
        metadata holds go into the next replay, and each piece once.
        """
        outbox = os.path.abspath(self.mktemp())
        key = "quarantine/2026/11/24/20261124_101500_gw1_000042.jsonl"
        path = os.path.join(outbox, *key.split("/"))
        os.makedirs(os.path.dirname(path))
        count = MAX_RUNS * 2 + 10
        with open(path, "wb") as stream:
            for n in range(count):
                data = spaced(n) if n % 2 == 0 else BROKEN
                stream.write(quarantine_entry("not well-formed XML: test", data))
        out = io.StringIO()
        self.patch(sys, "stderr", io.StringIO())
        args = ["quarantine", "replay", f"--outbox={outbox}", "--repair-acm-tag-names"]
        args.append(f"--spool-dir={os.path.abspath(self.mktemp())}")
        self.assertEqual(run(args, out), 0)
        replays = sorted(p for p in batch_files(outbox) if "-r" in os.path.basename(p))
        self.assertEqual(len(replays), 2, out.getvalue())
        found = Counter(c for p in replays for c in cns(open(p, "rb").read()))
        self.assertEqual(found, Counter(f"s{n}" for n in range(0, count, 2)))
        again = io.StringIO()
        self.assertEqual(run(args, again), 0)
        self.assertIn(
            f"replayed 0 pieces (0 events) from 1 object; {count // 2} replayed before",
            again.getvalue(),
        )
        for replay in replays:
            claim = os.path.join(outbox, ".metadata", os.path.relpath(replay, outbox) + ".json")
            with open(claim) as stream:
                metadata: dict[str, Any] = json.load(stream)
            self.assertLessEqual(len(metadata["lines"]), MAX_RUNS * 8)
