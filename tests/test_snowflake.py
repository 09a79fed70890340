"""
Snowflake-ready output: the generated SQL, the ACM tag-name repair, the
lossless JSON mapping, and batches from a real twistd run loaded by a real
engine (DuckDB) and checked by xmllint.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from eventpipe.cli import run
from eventpipe.render import event_to_json, make_parser, render_segment, repair_tag_names
from eventpipe.spool import Spool
from tests.support import (
    SAMPLE,
    Twistd,
    batch_files,
    make_event,
    make_stream,
    read_object,
    send,
    wait_for,
)

SPACED = (
    b"<EVENT><plasectrxPanel date>20250804033640-0500</plasectrxPanel date>"
    b"<plasectrxPanel dateUTC>20250804083640Z</plasectrxPanel dateUTC>"
    b"<plasectrxPanel name>Panel 34</plasectrxPanel name><plasectrxPri>50</plasectrxPri></EVENT>"
)


GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "snowflake")


def statements(sql: str) -> list[Any]:
    """Parse generated SQL with sqlglot's Snowflake dialect, strictly."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import ErrorLevel

    parsed = []
    for statement in sqlglot.parse(sql, read="snowflake", error_level=ErrorLevel.RAISE):
        if statement is None:
            continue
        text = statement.sql(dialect="snowflake")
        pipe = re.search(r"CREATE PIPE .*?\bAS\s+(COPY INTO .*)$", text, re.S)
        if isinstance(statement, exp.Command) and pipe is not None:
            # sqlglot keeps CREATE PIPE whole; its COPY must parse on its own.
            parsed.extend(
                sqlglot.parse(pipe.group(1), read="snowflake", error_level=ErrorLevel.RAISE)
            )
        parsed.append(statement)
    return parsed


class SqlTests(SynchronousTestCase):
    def sql(self, *args: str) -> str:
        out = io.StringIO()
        self.assertEqual(run(["snowflake-sql", *args], out), 0)
        return out.getvalue()

    def test_every_combination_parses(self) -> None:
        """The SQL for every format and compression parses as Snowflake SQL."""
        import sqlglot.expressions as exp

        for fmt in ("xml", "json"):
            for compress in ("none", "gzip"):
                sql = self.sql(
                    "--s3-bucket=acm-events",
                    "--s3-prefix=acm",
                    f"--format={fmt}",
                    f"--compress={compress}",
                )
                parsed = statements(sql)
                kinds = [type(p).__name__ for p in parsed]
                self.assertGreaterEqual(kinds.count("Create"), 5, (fmt, compress, kinds))
                self.assertEqual(len([p for p in parsed if isinstance(p, exp.Copy)]), 3)
                pattern = re.findall(r"PATTERN = '([^']+)'", sql)[0]
                key = "2025/07/29/20250729_161500_gw1_000042." + fmt
                key += ".gz" if compress == "gzip" else ""
                for where in ("", "acm/"):
                    self.assertTrue(re.fullmatch(pattern, where + key), (pattern, key))
                    quarantine = where + "quarantine/" + key.split(".")[0] + ".jsonl"
                    self.assertFalse(re.fullmatch(pattern, quarantine), quarantine)
                rejected = re.findall(r"PATTERN = '([^']+)'", sql)[-1]
                self.assertTrue(
                    re.fullmatch(
                        rejected, "acm/quarantine/2025/07/29/20250729_161500_gw1_000042.jsonl"
                    )
                )
                self.assertFalse(re.fullmatch(rejected, "acm/" + key))

    def test_golden(self) -> None:
        """The default output, for each format, as reviewed."""
        for fmt in ("xml", "json"):
            sql = self.sql("--s3-bucket=acm-events", "--s3-prefix=acm", f"--format={fmt}")
            path = os.path.join(GOLDEN, f"setup-{fmt}.sql")
            if os.environ.get("EVENTPIPE_REGENERATE_GOLDEN"):
                with open(path, "w") as stream:
                    stream.write(sql)
            with open(path) as stream:
                self.assertEqual(sql, stream.read(), f"{path} (EVENTPIPE_REGENERATE_GOLDEN=1)")

    def test_values_kept_as_sent(self) -> None:
        """
        XML keeps padding and leading zeros (PRESERVE_SPACE,
        DISABLE_AUTO_CONVERT); the pipe stamps rows with the scan time, as
        Snowflake advises for Snowpipe, not CURRENT_TIMESTAMP().
        """
        sql = self.sql("--s3-bucket=acm-events")
        self.assertIn("PRESERVE_SPACE = TRUE", sql)
        self.assertIn("DISABLE_AUTO_CONVERT = TRUE", sql)
        self.assertIn("METADATA$START_SCAN_TIME", sql)
        self.assertNotIn("CURRENT_TIMESTAMP", sql)
        self.assertIn("METADATA$FILENAME", sql)
        self.assertIn("METADATA$FILE_ROW_NUMBER", sql)
        self.assertIn("CREATE STORAGE INTEGRATION IF NOT EXISTS acm_events_integration", sql)
        self.assertIn("DESC INTEGRATION acm_events_integration;", sql)
        self.assertIn("SHOW PIPES LIKE 'acm_events_pipe';", sql)
        self.assertIn("ALTER PIPE acm_events_pipe REFRESH;", sql)
        self.assertIn('"Name": "suffix", "Value": ".xml"', sql)
        self.assertNotRegex(sql, r"(?i)aws_secret|credentials\s*=")

    def test_json_gzip_from_environment(self) -> None:
        self.patch(
            os,
            "environ",
            {"S3_BUCKET": "bkt", "OUTPUT_FORMAT": "json", "EVENTPIPE_COMPRESS": "gzip"},
        )
        sql = self.sql()
        self.assertIn("TYPE = JSON", sql)
        self.assertIn("COMPRESSION = GZIP", sql)
        self.assertIn("event:EVENT:plasectrxCardno::STRING AS card_number", sql)
        self.assertIn('"Name": "suffix", "Value": ".json.gz"', sql)

    def test_names_checked(self) -> None:
        """A name that is not an identifier is refused with one line."""
        for args in (
            ["--table=my table"],
            ["--stage=x;DROP TABLE y"],
            ["--pipe=1pipe"],
            ["--storage-integration=<your_storage_integration>"],
            ["--role-arn=not-an-arn"],
            ["--s3-bucket=s3://acm-events/acm/"],
        ):
            stderr = io.StringIO()
            self.patch(sys, "stderr", stderr)
            try:
                status = run(["snowflake-sql", *args], io.StringIO())
            except SystemExit as exit:
                status = int(exit.code or 0)
            self.assertEqual(status, 1)
            self.assertEqual(stderr.getvalue().count("\n"), 1, stderr.getvalue())
            self.assertIn(args[0].split("=")[0], stderr.getvalue())
        self.assertIn(
            "CREATE TABLE IF NOT EXISTS acm.raw.events (", self.sql("--table=acm.raw.events")
        )

    def test_usage_errors(self) -> None:
        self.assertEqual(run([]), 1)
        self.assertEqual(run(["no-such-command"]), 1)


class RepairTests(SynchronousTestCase):
    def render(self, events: list[bytes], repair: bool) -> tuple[Any, bytes]:
        spool = Spool(self.mktemp(), "gw1", lambda: 1753805700.0)
        spool.append(events)
        segment = spool.seal()
        assert segment is not None
        batch = segment.path + ".xml"
        result = render_segment(segment.path, batch, batch + ".q", repair=repair)
        return result, read_object(batch) if os.path.exists(batch) else b""

    def test_repairs_spaced_names(self) -> None:
        repaired, changes = repair_tag_names(SPACED)
        self.assertEqual(changes, 6)
        root = etree.fromstring(repaired, make_parser())
        self.assertEqual(
            [child.tag for child in root],
            ["plasectrxPaneldate", "plasectrxPaneldateUTC", "plasectrxPanelname", "plasectrxPri"],
        )
        result, batch = self.render([SPACED, make_event(1)], repair=True)
        self.assertEqual((result.events, result.repaired, result.quarantined), (2, 1, 0))
        self.assertIn(b"<plasectrxPaneldate>20250804033640-0500</plasectrxPaneldate>", batch)

    def test_off_by_default(self) -> None:
        result, _ = self.render([SPACED, make_event(1)], repair=False)
        self.assertEqual((result.events, result.repaired, result.quarantined), (1, 0, 1))

    def test_well_formed_untouched(self) -> None:
        """An event that parses is delivered byte for byte, repair on or off."""
        event = b"<EVENT><plasectrxMsg>&lt;plasectrxPanel date&gt; as text</plasectrxMsg></EVENT>"
        result, batch = self.render([event], repair=True)
        self.assertEqual(result.repaired, 0)
        self.assertIn(event, batch)


# The JSON mapping, reversed: enough to show nothing is lost.


def json_to_xml(document: dict[str, Any]) -> bytes:
    [(name, value)] = document.items()
    return etree.tostring(_element(name, value, {}), encoding="utf-8")


def _element(name: str, value: Any, namespaces: dict[str, str]) -> Any:
    scope = dict(namespaces)
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "@xmlns":
                scope[""] = item
            elif key.startswith("@xmlns:"):
                scope[key[7:]] = item
    element = etree.Element(_qualified(name, scope), nsmap={k or None: v for k, v in scope.items()})
    if isinstance(value, str):
        element.text = value
        return element
    for key, item in value.items():
        if key.startswith("@xmlns"):
            continue
        if key.startswith("@"):
            element.set(_qualified(key[1:], scope, attribute=True), item)
        elif key == "#text":
            element.text = item
        else:
            for one in item if isinstance(item, list) else [item]:
                element.append(_element(key, one, scope))
    return element


def _qualified(name: str, scope: dict[str, str], attribute: bool = False) -> str:
    if ":" in name:
        prefix, local = name.split(":", 1)
        return f"{{{scope[prefix]}}}{local}"
    if not attribute and "" in scope:
        return f"{{{scope['']}}}{name}"
    return name


def canonical(data: bytes) -> bytes:
    """C14N with whitespace-only text between elements dropped."""
    parser = etree.XMLParser(remove_blank_text=True, resolve_entities=False)
    return etree.tostring(etree.fromstring(data, parser), method="c14n")


names = st.sampled_from(
    ["plasectrxCardno", "plasectrxLname", "plasectrxFname", "plasectrxPri", "cn", "note", "x"]
)
texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\r"),
    max_size=12,
).filter(lambda t: t.strip() != "" or t == "")
padded = st.builds(lambda n, w: str(n).rjust(w), st.integers(-5, 99999999), st.integers(0, 16))


@st.composite
def events(draw: Any) -> bytes:
    root = etree.Element("EVENT")
    for key, value in draw(st.dictionaries(names, texts, max_size=2)).items():
        root.set(key, value)
    # As ACM sends them: repeated children stand next to each other (the
    # mapping groups repeats into one list, so the relative order of
    # interleaved repeats, a-b-a, is the one thing it does not keep).
    children = [
        name
        for name in draw(st.lists(names, unique=True, max_size=5))
        for _ in range(draw(st.integers(1, 3)))
    ]
    for name in children:
        child = etree.SubElement(root, name)
        child.text = draw(st.one_of(texts, padded))
        for key, value in draw(st.dictionaries(names, texts, max_size=1)).items():
            child.set(key, value)
        if draw(st.booleans()):
            grandchild = etree.SubElement(child, draw(names))
            grandchild.text = draw(texts)
            if not (child.text or "").strip():
                child.text = None
    return etree.tostring(root, encoding="utf-8")


class JsonRoundTripTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(events())
    def test_lossless(self, event: bytes) -> None:
        """XML -> JSON -> XML gives the same document (C14N)."""
        document = event_to_json(etree.fromstring(event, make_parser()))
        self.assertEqual(canonical(json_to_xml(document)), canonical(event))

    def test_acm_sample_and_namespaces(self) -> None:
        for event in [
            make_event(12),
            b'<EVENT xmlns="urn:d" xmlns:p="urn:p" p:a="1"><p:b>  0</p:b><c/><c>2</c></EVENT>',
        ]:
            document = event_to_json(etree.fromstring(event, make_parser()))
            self.assertEqual(canonical(json_to_xml(document)), canonical(event))


class RealEngineTests(SynchronousTestCase):
    """Batches from a real twistd run, read by DuckDB and xmllint."""

    def run_service(self, *args: str, count: int = 300) -> str:
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        process = Twistd(workdir, ["--rotation-interval=0.5", "--check-interval=0.1", *args])
        self.addCleanup(process.cleanup)
        process.start()
        with open(os.path.join(os.path.dirname(__file__), "data", "acm-sample.stream"), "rb") as f:
            sample = f.read()
        send(process.port, make_stream(range(count)) + sample)
        outbox = os.path.join(process.spool, "outbox")

        def enough() -> bool:
            lines = 0
            for path in batch_files(outbox):
                data = read_object(path)
                lines += data.count(b"\n") if ".json" in path else data.count(b"</EVENT>")
            return lines >= count + 25

        wait_for(enough, 30, "the batches")
        process.stop()
        return outbox

    def duckdb_rows(self, outbox: str, pattern: str) -> list[tuple[Any, ...]]:
        import duckdb

        files = [p for p in batch_files(outbox) if p.endswith(pattern)]
        self.assertTrue(files)
        connection = duckdb.connect()
        return connection.execute(
            "SELECT EVENT.cn, EVENT.plasectrxCardno, EVENT.plasectrxFname, EVENT.plasectrxIsAlarm "
            "FROM read_json(?, format='newline_delimited', union_by_name=true) ORDER BY 1",
            [files],
        ).fetchall()

    def check_rows(self, rows: list[tuple[Any, ...]]) -> None:
        ours = [r for r in rows if str(r[0]).startswith("n")]
        self.assertEqual([r[0] for r in ours], [f"n{n:012d}" for n in range(300)])
        self.assertEqual({r[1] for r in ours}, {"         8339220"})
        self.assertEqual({r[2] for r in ours}, {"J\u00fcrgen"})
        self.assertEqual(len(rows), 325)

    def test_duckdb_json_lines(self) -> None:
        outbox = self.run_service("--format=json")
        self.check_rows(self.duckdb_rows(outbox, ".json"))

    def test_duckdb_json_lines_gzip(self) -> None:
        outbox = self.run_service("--format=json", "--compress=gzip")
        self.check_rows(self.duckdb_rows(outbox, ".json.gz"))

    def test_duckdb_typed_view(self) -> None:
        """
        The typed view's logic, run as the equivalent DuckDB query over real
        JSON batches: every ACM field it names is there, text keeps its
        padding, times and flags come out typed.
        """
        import datetime

        import duckdb

        from eventpipe.snowflake import FIELDS

        outbox = self.run_service("--format=json")
        files = [p for p in batch_files(outbox) if p.endswith(".json")]
        duck = {
            "text": "{v}",
            "utc": "try_strptime({v}, '%Y%m%d%H%M%SZ')",
            "number": "TRY_CAST(trim({v}) AS DECIMAL(18, 0))",
            "flag": "({v} = '1')",
        }
        columns = ", ".join(
            duck[kind].format(v=f"json_extract_string(line, '$.EVENT.{field}')") + f" AS {name}"
            for name, field, kind in FIELDS
        )
        connection = duckdb.connect()
        cursor = connection.execute(
            f"SELECT {columns} FROM read_json_objects(?, format='newline_delimited') AS t(line) "
            "WHERE json_extract_string(line, '$.EVENT.cn') LIKE 'e%' ORDER BY 1",
            [files],
        )
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        self.assertEqual(len(rows), 25)
        for name, _, _ in FIELDS:
            self.assertTrue(any(row[name] is not None for row in rows), f"{name} is never set")
        first = rows[0]
        self.assertEqual(first["card_number"], "         8339220")
        self.assertEqual(first["point_address"], "       651")
        self.assertEqual(first["recorded_utc"], datetime.datetime(2025, 8, 4, 8, 36, 40))
        self.assertIs(first["is_alarm"], False)
        self.assertEqual(first["priority"], 50)
        self.assertEqual(first["first_name"], "J\u00fcrgen")
        with open(SAMPLE, "rb") as stream:
            alarms = stream.read().count(b"<plasectrxIsAlarm>1</plasectrxIsAlarm>")
        self.assertEqual(sum(1 for row in rows if row["is_alarm"] is True), alarms)

    def test_xml_batches_parse(self) -> None:
        outbox = self.run_service()
        files = batch_files(outbox)
        self.assertTrue(files)
        total = 0
        for path in files:
            root = etree.parse(path, make_parser()).getroot()
            self.assertEqual(root.tag, "EVENTS")
            total += len(root)
        self.assertEqual(total, 325)

    def test_xml_batches_pass_xmllint(self) -> None:
        if shutil.which("xmllint") is None:
            raise SkipTest("xmllint is not installed (.ci/run installs libxml2-utils)")
        outbox = self.run_service()
        files = batch_files(outbox)
        self.assertTrue(files)
        for path in files:
            checked = subprocess.run(["xmllint", "--noout", path], capture_output=True, text=True)
            self.assertEqual(checked.returncode, 0, checked.stderr)
