"""
Snowflake-ready output: the generated SQL, the ACM tag-name repair, the
lossless JSON mapping, and batches from a real twistd run loaded by a real
engine (DuckDB) and checked by xmllint.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree
from twisted.trial.unittest import SynchronousTestCase

from eventpipe.cli import run
from eventpipe.render.batch import render_segment
from eventpipe.render.jsonlines import event_to_json
from eventpipe.render.validate import make_parser, repair_tag_names
from eventpipe.spool.spool import Spool
from tests.support import (
    SAMPLE,
    Twistd,
    batch_files,
    make_event,
    make_stream,
    missing,
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


def comment_blocks(sql: str) -> list[str]:
    """What the script prints for reading, between /* and */."""
    return re.findall(r"^/\*\n(.*?)\n\*/$", sql, re.S | re.M)


def parts(sql: str) -> dict[int, str]:
    """The numbered parts, each up to the next part or AWS step."""
    found = re.split(r"^(-- =====.*|-- ----- In AWS.*)$", sql, flags=re.M)
    numbered = {}
    for title, body in zip(found[1::2], found[2::2], strict=True):
        match = re.match(r"-- ===== Part (\d) of 7", title)
        if match:
            numbered[int(match.group(1))] = title + body
    return numbered


def created(sql: str) -> set[str]:
    """The objects the script creates, by kind and name."""
    return {
        f"{kind} {name}"
        for kind, name in re.findall(
            r"^CREATE (?:OR REPLACE )?(STORAGE INTEGRATION|FILE FORMAT|WAREHOUSE|DATABASE|"
            r"SCHEMA|ROLE|STAGE|TABLE|VIEW|PIPE) (?:IF NOT EXISTS )?([\w.$]+)",
            sql,
            re.M,
        )
    }


def duckdb_view(sql: str) -> str:
    """
    The generated typed view as DuckDB runs it: transpiled by sqlglot, with
    the two places where the dialects differ put right (a VARIANT path cast
    to a string is DuckDB's ->>, and DuckDB's strptime takes the Z bare).
    """
    import sqlglot

    match = re.search(r"^CREATE OR REPLACE VIEW .*?;$", sql, re.S | re.M)
    assert match is not None
    view = sqlglot.transpile(match.group(0), read="snowflake", write="duckdb")[0]
    view = re.sub(r"CAST\((\w+) -> ('[^']+') AS TEXT\)", r"(\1 ->> \2)", view)
    return view.replace('%S"Z"', "%SZ")


ROLE = "arn:aws:iam::123456789012:role/snowflake-acm-events"


class SqlTests(SynchronousTestCase):
    # What the tests give unless they say otherwise: a bucket and a role.
    GIVEN = ("--s3-bucket=acm-events", f"--role-arn={ROLE}")

    def sql(self, *args: str) -> str:
        out = io.StringIO()
        given = [
            g
            for g in self.GIVEN
            if not any(a.startswith(g.split("=")[0] + "=") for a in args)
            and not (
                g.startswith("--s3-bucket")
                and any("--azure-container" in a or "--gcs-bucket" in a for a in args)
            )
        ]
        self.assertEqual(run(["snowflake-sql", *given, *args], out), 0)
        return out.getvalue()

    def test_reserved_words_refused(self) -> None:
        """A name that is a reserved word would not run bare: refused, with the option."""
        for args in (["--database=select"], ["--table=acm.events.table"], ["--schema=Order"]):
            line = self.refused("--s3-bucket=acm-events", *args)
            self.assertIn(args[0].split("=")[0], line)
            self.assertIn("is a reserved word in Snowflake", line)

    def test_azure_check_names_the_azure_step(self) -> None:
        sql = self.azure()
        self.assertIn("An error here is the\n-- Azure step above", sql)
        self.assertNotIn("AWS step", sql)

    def test_no_placeholder_scripts(self) -> None:
        """
        No bucket (nor container): refused with one line.  No --role-arn (or
        Azure tenant): the script says <SET ME: ...> there, which Snowflake
        refuses, and stderr warns.
        """
        self.assertIn(
            "--s3-bucket (EVENTPIPE_S3_BUCKET), --azure-container or --gcs-bucket", self.refused()
        )
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        out = io.StringIO()
        self.assertEqual(run(["snowflake-sql", "--s3-bucket=acm-events"], out), 0)
        self.assertIn("STORAGE_AWS_ROLE_ARN = '<SET ME: --role-arn>'", out.getvalue())
        self.assertNotIn("123456789012", out.getvalue())
        self.assertIn("warning: no --role-arn", stderr.getvalue())
        statements(out.getvalue())
        self.assertIn(
            "--azure-account-url (or AZURE_STORAGE_CONNECTION_STRING) is needed",
            self.refused("--azure-container=acm-events"),
        )
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        out = io.StringIO()
        args = [
            "--azure-container=acm-events",
            "--azure-account-url=https://a.blob.core.windows.net",
        ]
        self.assertEqual(run(["snowflake-sql", *args], out), 0)
        self.assertIn("AZURE_TENANT_ID = '<SET ME: --azure-tenant-id>'", out.getvalue())
        self.assertNotIn("00000000-0000", out.getvalue())
        self.assertIn("warning: no --azure-tenant-id", stderr.getvalue())

    def refused(self, *args: str) -> str:
        """The one line that refuses these arguments (exit status 1)."""
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        try:
            status = run(["snowflake-sql", *args], io.StringIO())
        except SystemExit as exit:
            status = int(exit.code or 0)
        self.assertEqual(status, 1, args)
        self.assertEqual(stderr.getvalue().count("\n"), 1, stderr.getvalue())
        return stderr.getvalue()

    def test_every_combination_parses(self) -> None:
        """
        The SQL for every format, compression and prefix parses as Snowflake
        SQL, what it prints for later parses too, and every policy and the
        notification are valid JSON.
        """
        import sqlglot.expressions as exp

        for fmt in ("xml", "json"):
            for compress in ("none", "gzip"):
                for prefix in ("acm", ""):
                    where = (fmt, compress, prefix)
                    sql = self.sql(
                        "--s3-bucket=acm-events",
                        f"--s3-prefix={prefix}",
                        f"--format={fmt}",
                        f"--compress={compress}",
                    )
                    parsed = statements(sql)
                    kinds = [type(p).__name__ for p in parsed]
                    self.assertGreaterEqual(kinds.count("Create"), 8, (where, kinds))
                    self.assertEqual(len([p for p in parsed if isinstance(p, exp.Copy)]), 2, where)
                    later = [b for b in comment_blocks(sql) if b.startswith("USE ")]
                    self.assertEqual(len(later), 1, where)
                    self.assertEqual(
                        [type(p).__name__ for p in statements(later[0])],
                        ["Use", "Use", "Use", "Copy"],
                    )
                    documents = [b for b in comment_blocks(sql) if b.startswith("{")]
                    self.assertEqual(len(documents), 2, where)
                    for block in documents:
                        json.loads(block)
                    [command] = [b for b in comment_blocks(sql) if b.startswith("aws ")]
                    notification = json.loads(command.split("'", 1)[1].rsplit("'", 1)[0])
                    # The prefix only (the pipe's pattern takes the batches),
                    # and no filter at all without one (never an empty rule).
                    queue = notification["QueueConfigurations"][0]
                    if prefix:
                        self.assertEqual(
                            queue["Filter"]["Key"]["FilterRules"],
                            [{"Name": "prefix", "Value": f"{prefix}/"}],
                            where,
                        )
                    else:
                        self.assertNotIn("Filter", queue, where)

    def test_patterns(self) -> None:
        """
        Batch patterns take batches, plain or gzipped, and never a quarantine
        object (for JSON, .json is the start of .jsonl: the $ matters); the
        quarantine pattern takes those only.
        """
        key = "2025/07/29/20250729_161500_gw1_000042"
        quarantine = "quarantine/" + key + ".jsonl"
        for fmt in ("xml", "json"):
            sql = self.sql("--s3-bucket=acm-events", "--s3-prefix=acm", f"--format={fmt}")
            found = re.findall(r"PATTERN = '([^']+)'", sql)
            self.assertEqual(len(set(found)), 2, found)
            batches, rejected = found[0], found[-1]
            self.assertEqual(found[:-1], [batches] * (len(found) - 1))
            for where in ("", "acm/", "s3://acm-events/acm/"):
                for name in (f"{key}.{fmt}", f"{key}.{fmt}.gz"):
                    self.assertTrue(re.fullmatch(batches, where + name), (batches, name))
                    self.assertTrue(re.match(batches, where + name))
                    self.assertFalse(re.fullmatch(rejected, where + name))
                self.assertTrue(re.fullmatch(rejected, where + quarantine))
                # Snowflake's match must not stop at a prefix either.
                self.assertFalse(re.match(batches, where + quarantine), where)
                self.assertFalse(re.match(batches, where + key + ".xml.tmp"))
            self.assertTrue(batches.endswith("$") and rejected.endswith("$"))

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

    def test_parts_run_in_order(self) -> None:
        """
        Seven numbered parts in order, each naming its role and opening with
        USE statements; the AWS steps stand between parts 1 and 2 and
        between 4 and 5; the backfill comes before the pipe, the REFRESH
        after the notification, and the quarantine load is commented out.
        """
        sql = self.sql("--s3-bucket=acm-events", "--s3-prefix=acm")
        numbered = parts(sql)
        self.assertEqual(list(numbered), [1, 2, 3, 4, 5, 6, 7])
        order = [m.group(0) for m in re.finditer(r"^-- (=====|----- In AWS)", sql, re.M)]
        self.assertEqual(order[1], "-- ----- In AWS")
        self.assertEqual(order[5], "-- ----- In AWS")
        self.assertEqual(order.count("-- ----- In AWS"), 2)
        for number, text in numbered.items():
            role = re.match(r"-- ===== Part \d of 7, as (\w+):", text)
            assert role is not None
            lines = text.splitlines()
            first = [line for line in lines if line and not line.startswith(("--", "/*"))]
            self.assertEqual(first[0], f"USE ROLE {role.group(1)};", number)
        self.assertIn("USE ROLE ACCOUNTADMIN;", numbered[1])
        self.assertIn("LOAD_UNCERTAIN_FILES = TRUE;", numbered[3])
        self.assertNotIn("CREATE PIPE", numbered[3])
        self.assertIn("CREATE PIPE IF NOT EXISTS acm_events_xml_pipe", numbered[4])
        self.assertIn("ALTER PIPE acm_events_xml_pipe REFRESH;", numbered[5])
        self.assertNotIn(
            "REFRESH", numbered[4].split("SHOW PIPES")[0].replace("do not REFRESH", "")
        )
        self.assertIn("SYSTEM$PIPE_STATUS('acm_events_xml_pipe')", numbered[6])
        self.assertIn("INFORMATION_SCHEMA.COPY_HISTORY(", numbered[6])
        active = re.sub(r"^/\*\n.*?\n\*/$", "", sql, flags=re.S | re.M)
        self.assertNotIn("acm_events_xml_rejected\n  (received", active)
        self.assertIn("FROM @acm_events_xml_stage/quarantine/", numbered[7])
        self.assertNotRegex(sql, r"20[0-9]{2}/[0-9]{2}/")

    def test_a_rerun_sets_what_it_says(self) -> None:
        """
        Run again with a fixed prefix, the script moves the stage and the
        integration's allowed location: each CREATE ... IF NOT EXISTS that
        holds a location is followed by an ALTER ... SET of the same.
        """
        sql = self.sql("--s3-bucket=acm-events", "--s3-prefix=fixed/")
        for kind, name in (
            ("STORAGE INTEGRATION", "acm_events_integration"),
            ("STAGE", "acm_events_xml_stage"),
            ("FILE FORMAT", "acm_events_xml_format"),
        ):
            created = re.search(rf"^CREATE {kind} IF NOT EXISTS {name}\n(.*?);$", sql, re.S | re.M)
            altered = re.search(rf"^ALTER {kind} {name} SET\n(.*?);$", sql, re.S | re.M)
            assert created is not None and altered is not None, kind
            self.assertTrue(created.group(1).endswith(altered.group(1)), kind)
        self.assertIn("STORAGE_ALLOWED_LOCATIONS = ('s3://acm-events/fixed/');\n", sql)
        self.assertRegex(
            sql, r"ALTER STAGE acm_events_xml_stage SET\n  URL = 's3://acm-events/fixed/'"
        )
        self.assertIn("CREATE OR REPLACE VIEW acm_events_xml_typed COPY GRANTS AS", sql)
        self.assertNotIn("CREATE OR REPLACE STAGE", sql)
        self.assertNotIn("CREATE OR REPLACE TABLE", sql)

    def test_formats_never_share_an_object(self) -> None:
        """
        The XML and the JSON set-up, with default names, create different
        objects; only the warehouse, database, schema, reader role and
        storage integration are shared, and those are made alike by both.
        """
        xml = self.sql("--s3-bucket=acm-events", "--s3-prefix=acm", "--format=xml")
        json_ = self.sql("--s3-bucket=acm-events", "--s3-prefix=acm", "--format=json")
        self.assertEqual(
            created(xml) & created(json_),
            {
                "WAREHOUSE acm_wh",
                "DATABASE acm",
                "SCHEMA acm.events",
                "ROLE acm_events_reader",
                # One integration, one trust policy, for the bucket.
                "STORAGE INTEGRATION acm_events_integration",
            },
        )
        self.assertGreaterEqual(len(created(xml)), 12)

    def test_grants(self) -> None:
        sql = self.sql("--s3-bucket=acm-events", "--role=loader", "--reader-role=analysts")
        for grant in (
            "GRANT USAGE ON INTEGRATION acm_events_integration TO ROLE loader;",
            "GRANT ROLE analysts TO ROLE loader;",
            "GRANT USAGE ON WAREHOUSE acm_wh TO ROLE analysts;",
            "GRANT USAGE ON DATABASE acm TO ROLE analysts;",
            "GRANT USAGE ON SCHEMA acm.events TO ROLE analysts;",
            "GRANT SELECT ON VIEW acm_events_xml_typed TO ROLE analysts;",
            "GRANT SELECT ON TABLE acm_events_xml_rejected TO ROLE analysts;",
            "GRANT MONITOR ON PIPE acm_events_xml_pipe TO ROLE analysts;",
        ):
            self.assertIn(grant, sql)
        self.assertEqual(parts(sql)[2].splitlines()[1], "USE ROLE loader;")

    def test_qualified_pipe(self) -> None:
        """SHOW PIPES LIKE matches the bare name, in the pipe's own schema."""
        sql = self.sql("--s3-bucket=acm-events", "--pipe=ops.loading.acm_pipe")
        self.assertIn("SHOW PIPES LIKE 'acm_pipe' IN SCHEMA ops.loading;", sql)
        self.assertIn("SELECT SYSTEM$PIPE_STATUS('ops.loading.acm_pipe');", sql)
        sql = self.sql("--s3-bucket=acm-events", "--pipe=loading.acm_pipe", "--database=ops")
        self.assertIn("SHOW PIPES LIKE 'acm_pipe' IN SCHEMA ops.loading;", sql)

    def test_partitions(self) -> None:
        """A GovCloud or China role reads from its own partition, or is refused."""
        for partition, provider, scheme in (
            ("aws-us-gov", "S3GOV", "s3gov"),
            ("aws-cn", "S3CHINA", "s3china"),
        ):
            sql = self.sql(
                "--s3-bucket=acm-events",
                "--s3-prefix=acm",
                f"--role-arn=arn:{partition}:iam::123456789012:role/snowflake",
            )
            self.assertIn(f"STORAGE_PROVIDER = '{provider}'", sql)
            self.assertIn(f"STORAGE_ALLOWED_LOCATIONS = ('{scheme}://acm-events/acm/')", sql)
            self.assertIn(f"URL = '{scheme}://acm-events/acm/'", sql)
            self.assertIn(f'"Resource": "arn:{partition}:s3:::acm-events/acm/*"', sql)
            self.assertNotIn("arn:aws:", sql)
            self.assertNotIn("'s3://", sql)
        line = self.refused("--role-arn=arn:aws-iso:iam::123456789012:role/snowflake")
        self.assertIn("--role-arn: partition 'aws-iso'", line)

    def test_event_tag(self) -> None:
        """
        The JSON view reads the event tag the service frames by (from the
        option or the environment); the XML view reads the event element
        whatever its tag.
        """
        sql = self.sql("--s3-bucket=acm-events", "--format=json", "--event-tag=AcmEvent")
        self.assertIn('event:"AcmEvent".plasectrxCardno::STRING AS card_number', sql)
        self.assertNotIn('"EVENT"', sql)
        self.patch(os, "environ", {"EVENTPIPE_EVENT_TAG": "acm.event", "OUTPUT_FORMAT": "json"})
        self.assertIn('event:"acm.event".cn::STRING AS event_id', self.sql("--s3-bucket=b-1"))
        self.assertIn("--event-tag", self.refused("--event-tag=<EVENT>"))

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
        self.assertNotIn("CURRENT_TIMESTAMP", parts(sql)[4])
        self.assertIn("METADATA$FILENAME", sql)
        self.assertIn("METADATA$FILE_ROW_NUMBER", sql)
        self.assertIn("DESC INTEGRATION acm_events_integration;", sql)
        self.assertNotIn('"suffix"', sql)
        self.assertNotIn('"Name": "prefix"', sql)
        self.assertNotIn('"Condition": {\n        "StringLike"', sql)
        self.assertNotRegex(sql, r"(?i)aws_secret|credentials\s*=")

    def test_json_gzip_from_environment(self) -> None:
        self.patch(
            os,
            "environ",
            {"S3_BUCKET": "bkt", "OUTPUT_FORMAT": "json", "EVENTPIPE_COMPRESS": "gzip"},
        )
        out = io.StringIO()
        self.assertEqual(run(["snowflake-sql", f"--role-arn={ROLE}"], out), 0)
        sql = out.getvalue()
        self.assertIn("TYPE = JSON", sql)
        self.assertIn("COMPRESSION = AUTO", sql)
        self.assertIn('event:"EVENT".plasectrxCardno::STRING AS card_number', sql)
        self.assertNotIn('"suffix"', sql)
        self.assertIn("s3://bkt/", sql)

    def test_names_checked(self) -> None:
        """A name that is not an identifier is refused with one line."""
        for args in (
            ["--table=my table"],
            ["--stage=x;DROP TABLE y"],
            ["--pipe=1pipe"],
            ["--storage-integration=<your_storage_integration>"],
            ["--database=acm.events"],
            ["--warehouse=my wh"],
            ["--reader-role=analysts;"],
            ["--role-arn=not-an-arn"],
            ["--s3-bucket=s3://acm-events/acm/"],
        ):
            self.assertIn(args[0].split("=")[0], self.refused(*args))
        self.assertIn(
            "CREATE TABLE IF NOT EXISTS acm.raw.events (", self.sql("--table=acm.raw.events")
        )

    def azure(self, *args: str) -> str:
        return self.sql(
            "--azure-container=acm-events",
            "--azure-account-url=https://acmstore.blob.core.windows.net",
            "--azure-prefix=acm",
            "--azure-tenant-id=11111111-2222-3333-4444-555555555555",
            *args,
        )

    def parses_and_golden(self, script: Callable[..., str], golden: str) -> None:
        """
        A cloud's set-up, for every format and compression, parses like the
        S3 one and names nothing of AWS; its default output is the golden
        file C{golden}.
        """
        import sqlglot.expressions as exp

        for fmt in ("xml", "json"):
            for compress in ("none", "gzip"):
                sql = script(f"--format={fmt}", f"--compress={compress}")
                parsed = statements(sql)
                self.assertEqual(len([p for p in parsed if isinstance(p, exp.Copy)]), 2)
                self.assertEqual(list(parts(sql)), [1, 2, 3, 4, 5, 6, 7])
                self.assertNotIn("In AWS", sql)
                self.assertNotIn("arn:aws", sql)
        sql = script()
        path = os.path.join(GOLDEN, golden)
        if os.environ.get("EVENTPIPE_REGENERATE_GOLDEN"):
            with open(path, "w") as stream:
                stream.write(sql)
        with open(path) as stream:
            self.assertEqual(sql, stream.read(), f"{path} (EVENTPIPE_REGENERATE_GOLDEN=1)")

    def test_azure_parses_and_golden(self) -> None:
        self.parses_and_golden(self.azure, "setup-azure-xml.sql")

    def test_azure_steps(self) -> None:
        """
        The storage integration on Azure, the consent and the roles, the queue
        that Event Grid fills, and the pipe on the notification integration.
        """
        sql = self.azure()
        numbered = parts(sql)
        self.assertIn("STORAGE_PROVIDER = 'AZURE'", numbered[1])
        self.assertIn("AZURE_TENANT_ID = '11111111-2222-3333-4444-555555555555'", numbered[1])
        self.assertIn(
            "STORAGE_ALLOWED_LOCATIONS = ('azure://acmstore.blob.core.windows.net/acm-events/acm/')",
            numbered[1],
        )
        self.assertIn("NOTIFICATION_PROVIDER = AZURE_STORAGE_QUEUE", numbered[1])
        self.assertIn(
            "AZURE_STORAGE_QUEUE_PRIMARY_URI = "
            "'https://acmstore.queue.core.windows.net/acm-events-snowpipe'",
            numbered[1],
        )
        self.assertIn("DESC INTEGRATION acm_events_xml_notification;", numbered[1])
        self.assertIn("-- ----- In Azure, before part 2", sql)
        self.assertIn('--role "Storage Blob Data Reader"', sql)
        self.assertIn('--role "Storage Queue Data Contributor"', sql)
        self.assertIn(
            "--subject-begins-with /blobServices/default/containers/acm-events/blobs/acm/", sql
        )
        self.assertNotIn("--subject-ends-with", sql)
        self.assertIn("URL = 'azure://acmstore.blob.core.windows.net/acm-events/acm/'", numbered[2])
        self.assertIn("  INTEGRATION = 'ACM_EVENTS_XML_NOTIFICATION'\nAS\n", numbered[4])
        self.assertNotIn("notification_channel", sql)
        self.assertEqual(sql.count("-- ----- In "), 1)
        queue = self.azure("--azure-queue-url=https://other.queue.core.windows.net/q-1")
        self.assertIn("'https://other.queue.core.windows.net/q-1'", queue)

    def test_azure_refusals(self) -> None:
        self.assertIn(
            "--azure-tenant-id",
            self.refused(
                "--azure-container=acm-events",
                "--azure-account-url=https://a.blob.core.windows.net",
                "--azure-tenant-id=not-a-guid",
            ),
        )
        self.assertIn(
            "one destination at a time",
            self.refused("--azure-container=acm-events", "--s3-bucket=acm-events"),
        )
        self.assertIn("--azure-container", self.refused("--azure-container=Not_Valid"))

    def gcs(self, *args: str) -> str:
        return self.sql(
            "--gcs-bucket=acm-events",
            "--gcs-prefix=acm",
            "--gcs-pubsub-subscription=projects/acme-security/subscriptions/acm-events-snowpipe",
            *args,
        )

    def test_gcs_parses_and_golden(self) -> None:
        self.parses_and_golden(self.gcs, "setup-gcs-xml.sql")
        self.assertNotIn("azure", self.gcs().lower())

    def test_gcs_steps(self) -> None:
        """
        The storage integration on GCS, the service accounts' roles, the topic,
        the bucket notification under the prefix, the subscription, and the
        pipe on the notification integration.
        """
        sql = self.gcs()
        numbered = parts(sql)
        self.assertIn("STORAGE_PROVIDER = 'GCS'", numbered[1])
        self.assertIn("STORAGE_ALLOWED_LOCATIONS = ('gcs://acm-events/acm/')", numbered[1])
        self.assertIn("TYPE = QUEUE", numbered[1])
        self.assertIn("NOTIFICATION_PROVIDER = GCP_PUBSUB", numbered[1])
        self.assertIn(
            "GCP_PUBSUB_SUBSCRIPTION_NAME = "
            "'projects/acme-security/subscriptions/acm-events-snowpipe'",
            numbered[1],
        )
        self.assertIn("DESC INTEGRATION acm_events_integration;", numbered[1])
        self.assertIn("DESC INTEGRATION acm_events_xml_notification;", numbered[1])
        self.assertIn("-- ----- In GCP, before part 2", sql)
        self.assertIn("--role=roles/storage.objectViewer", sql)
        self.assertIn("--event-types=OBJECT_FINALIZE --object-prefix=acm/", sql)
        self.assertIn("--role=roles/pubsub.subscriber", sql)
        self.assertIn("--role=roles/monitoring.viewer", sql)
        self.assertIn("URL = 'gcs://acm-events/acm/'", numbered[2])
        self.assertIn("  INTEGRATION = 'ACM_EVENTS_XML_NOTIFICATION'\nAS\n", numbered[4])
        self.assertNotIn("notification_channel", sql)
        self.assertEqual(sql.count("-- ----- In "), 1)

    def test_gcs_refusals(self) -> None:
        self.assertIn(
            "--gcs-pubsub-subscription",
            self.refused("--gcs-bucket=acm-events", "--gcs-pubsub-subscription=acm-sub"),
        )
        self.assertIn(
            "one destination at a time",
            self.refused("--gcs-bucket=acm-events", "--s3-bucket=acm-events"),
        )
        self.assertIn("--gcs-bucket", self.refused("--gcs-bucket=gs://acm-events"))

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

    def run_service(self, *args: str, count: int = 300, tag: str = "EVENT") -> str:
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        process = Twistd(workdir, ["--rotation-interval=0.5", "--check-interval=0.1", *args])
        self.addCleanup(process.cleanup)
        process.start()
        with open(os.path.join(os.path.dirname(__file__), "data", "acm-sample.stream"), "rb") as f:
            sample = f.read()
        stream = make_stream(range(count)) + sample
        if tag != "EVENT":
            stream = stream.replace(b"<EVENT>", f"<{tag}>".encode()).replace(
                b"</EVENT>", f"</{tag}>".encode()
            )
        send(process.port, stream)
        outbox = os.path.join(process.spool, "outbox")

        def enough() -> bool:
            lines = 0
            for path in batch_files(outbox):
                data = read_object(path)
                lines += data.count(b"\n") if ".json" in path else data.count(b"</" + tag.encode())
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

    def typed_view_rows(
        self, outbox: str, *args: str, where: tuple[str, ...] = ("--s3-bucket=acm-events",)
    ) -> list[dict[str, Any]]:
        """
        The generated typed view (for the destination C{where}), run by
        DuckDB over a table loaded from the real JSON batches as the pipe
        loads them (one row per line).
        """
        import duckdb

        out = io.StringIO()
        self.assertEqual(run(["snowflake-sql", *where, "--format=json", *args], out), 0)
        files = [p for p in batch_files(outbox) if p.endswith(".json")]
        connection = duckdb.connect()
        connection.execute(
            "CREATE TABLE acm_events_json AS SELECT json AS event, filename AS file_name, "
            "now() AS loaded_at FROM read_json_objects(?, format='newline_delimited', "
            "filename=true)",
            [files],
        )
        connection.execute(duckdb_view(out.getvalue()))
        cursor = connection.execute(
            "SELECT * FROM acm_events_json_typed WHERE event_id LIKE 'e%' ORDER BY event_id"
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def check_typed(self, rows: list[dict[str, Any]]) -> None:
        import datetime

        from eventpipe.snowflake.setup import FIELDS

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
        self.assertTrue(first["file_name"].endswith(".json"))
        with open(SAMPLE, "rb") as stream:
            alarms = stream.read().count(b"<plasectrxIsAlarm>1</plasectrxIsAlarm>")
        self.assertEqual(sum(1 for row in rows if row["is_alarm"] is True), alarms)

    def test_duckdb_typed_view(self) -> None:
        """
        The typed view as generated, run by DuckDB over real JSON batches:
        every ACM field it names is there, text keeps its padding, times and
        flags come out typed.
        """
        outbox = self.run_service("--format=json")
        self.check_typed(self.typed_view_rows(outbox))

    def test_duckdb_typed_view_azure_and_gcs(self) -> None:
        """The view the Azure and GCS scripts create reads the batches as the S3 one's does."""
        outbox = self.run_service("--format=json")
        for where in (
            (
                "--azure-container=acm-events",
                "--azure-account-url=https://acmstore.blob.core.windows.net",
                "--azure-tenant-id=11111111-2222-3333-4444-555555555555",
            ),
            (
                "--gcs-bucket=acm-events",
                "--gcs-pubsub-subscription=projects/acme-security/subscriptions/acm-1",
            ),
        ):
            self.check_typed(self.typed_view_rows(outbox, where=where))

    def test_duckdb_typed_view_other_event_tag(self) -> None:
        """
        With another event tag, the view generated for it reads every field;
        the view for the default tag would read none.
        """
        outbox = self.run_service("--format=json", "--event-tag=AcmEvent", tag="AcmEvent")
        self.check_typed(self.typed_view_rows(outbox, "--event-tag=AcmEvent"))
        rows = self.typed_view_rows(outbox)
        self.assertEqual(rows, [])

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
            missing("xmllint", "apt-get install libxml2-utils")
        outbox = self.run_service()
        files = batch_files(outbox)
        self.assertTrue(files)
        for path in files:
            checked = subprocess.run(["xmllint", "--noout", path], capture_output=True, text=True)
            self.assertEqual(checked.returncode, 0, checked.stderr)
