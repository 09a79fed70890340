"""
Snowflake set-up for what eventpipe delivers, as text to run part by part:
the storage integration and roles, the IAM policies, file format, stage,
tables and views, the backfill, Snowpipe, the bucket notification, the
catch-up, monitoring queries, and the quarantine load for later.  Pure text:
one function per numbered part, joined by L{snowflake_sql}.

Every value is kept as sent: the XML file format sets C{PRESERVE_SPACE}
(padding such as C{<plasectrxCardno>         8339220</plasectrxCardno>}
stays) and C{DISABLE_AUTO_CONVERT} (no text is turned into a number, so
leading zeros stay); JSON batches carry every value as a string already.

Parts 1, 2, 4, 5 and 6 may be run again: they set what the run that
printed them says (a fixed prefix moves the stage, the integration allows the new
location, the view follows the event tag).  Part 3 is for the first set-up
only; part 7 is commented out until an investigation needs it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields, replace
from typing import Any

from eventpipe.naming import QUARANTINE, normalize_prefix

# An unquoted Snowflake identifier, and one optionally qualified
# (db.schema.name).
_NAME = r"[A-Za-z_][A-Za-z0-9_$]{0,254}"
_IDENTIFIER = re.compile(rf"^{_NAME}$")
# Snowflake's reserved words: not usable as a bare name.
RESERVED = frozenset(
    """ACCOUNT ALL ALTER AND ANY AS BETWEEN BY CASE CAST CHECK COLUMN CONNECT
    CONNECTION CONSTRAINT CREATE CROSS CURRENT CURRENT_DATE CURRENT_TIME
    CURRENT_TIMESTAMP CURRENT_USER DATABASE DELETE DISTINCT DROP ELSE EXISTS
    FALSE FOLLOWING FOR FROM FULL GRANT GROUP GSCLUSTER HAVING ILIKE IN INCREMENT
    INNER INSERT INTERSECT INTO IS ISSUE JOIN LATERAL LEFT LIKE LOCALTIME
    LOCALTIMESTAMP MINUS NATURAL NOT NULL OF ON OR ORDER ORGANIZATION QUALIFY
    REGEXP REVOKE RIGHT RLIKE ROW ROWS SAMPLE SCHEMA SELECT SET SOME START TABLE
    TABLESAMPLE THEN TO TRIGGER TRUE TRY_CAST UNION UNIQUE UPDATE USING VALUES VIEW
    WHEN WHENEVER WHERE WITH""".split()
)
_QUALIFIED = re.compile(rf"^{_NAME}(\.{_NAME}){{0,2}}$")

# Role ARN partition -> (STORAGE_PROVIDER, the URL scheme of its locations).
PARTITIONS = {
    "aws": ("S3", "s3"),
    "aws-us-gov": ("S3GOV", "s3gov"),
    "aws-cn": ("S3CHINA", "s3china"),
}
_ROLE_ARN = re.compile(r"^arn:(?P<partition>[a-z-]+):iam::\d{12}:role/[\w+=,.@/-]+$")

PARTS = 7


@dataclass(frozen=True)
class SnowflakeNames:
    """
    What the set-up creates and uses.  Empty object names take defaults
    from the format (L{for_format}): every default starts with
    C{acm_events_xml} or C{acm_events_json}, so the XML and the JSON set-up
    never share an object.
    """

    table: str = ""
    stage: str = ""
    pipe: str = ""
    file_format: str = ""
    storage_integration: str = ""
    view: str = ""
    # Azure only: how Event Grid's messages reach the pipe.
    notification_integration: str = ""
    database: str = "acm"
    schema: str = "events"
    warehouse: str = "acm_wh"
    admin_role: str = "ACCOUNTADMIN"
    role: str = "SYSADMIN"
    reader_role: str = "acm_events_reader"
    # Empty: not given (the script then says <SET ME: --role-arn>).
    role_arn: str = ""

    def for_format(self, fmt: str) -> SnowflakeNames:
        base = f"acm_events_{fmt}"
        defaults = {
            "table": base,
            "stage": f"{base}_stage",
            "pipe": f"{base}_pipe",
            "file_format": f"{base}_format",
            # One for both formats: one trust policy for the bucket.
            "storage_integration": "acm_events_integration",
            "view": f"{base}_typed",
            "notification_integration": f"{base}_notification",
        }
        return replace(self, **{k: getattr(self, k) or v for k, v in defaults.items()})

    @property
    def rejected_table(self) -> str:
        return f"{self.table}_rejected"

    @property
    def rejected_format(self) -> str:
        return f"{self.table}_rejected_format"

    @property
    def partition(self) -> str:
        if not self.role_arn:
            return "aws"
        match = _ROLE_ARN.match(self.role_arn)
        assert match is not None, "check() first"
        return match.group("partition")

    @property
    def shown_role_arn(self) -> str:
        """The role ARN, or what Snowflake refuses until it is set."""
        return self.role_arn or set_me("--role-arn")

    def check(self) -> None:
        """
        @raise ValueError: a name is not a plain Snowflake identifier
            (letters, digits, _ and $; table, stage, pipe, file format and
            view may be database.schema.name), or the role ARN is not one
            in a partition Snowflake reads from; the message names the
            option.
        """
        qualified = ("table", "stage", "pipe", "file_format", "view")
        for field in fields(self):
            if field.name == "role_arn":
                continue
            value = getattr(self, field.name)
            pattern = _QUALIFIED if field.name in qualified else _IDENTIFIER
            reserved = [p for p in str(value).split(".") if p.upper() in RESERVED]
            if value and reserved:
                raise ValueError(
                    f"--{field.name.replace('_', '-')}: {reserved[0]!r} is a reserved word in "
                    "Snowflake: choose another name"
                )
            if value and not pattern.match(value):
                form = "; optionally database.schema.name" if field.name in qualified else ""
                raise ValueError(
                    f"--{field.name.replace('_', '-')}: invalid name {value!r} (letters, "
                    f"digits, _ and $, not starting with a digit{form})"
                )
        if not self.role_arn:
            return
        match = _ROLE_ARN.match(self.role_arn)
        if match is None:
            raise ValueError(
                f"--role-arn: invalid value {self.role_arn!r} (arn:aws:iam::ACCOUNT:role/NAME)"
            )
        if match.group("partition") not in PARTITIONS:
            raise ValueError(
                f"--role-arn: partition {match.group('partition')!r} is not one Snowflake "
                f"loads from ({', '.join(PARTITIONS)})"
            )


@dataclass(frozen=True)
class AzureTarget:
    """Where the batches are in Azure, and what Snowflake needs to reach them."""

    # ACCOUNT.blob.core.windows.net
    blob_host: str
    container: str
    # Empty: not given (the script then says <SET ME: --azure-tenant-id>).
    tenant_id: str = ""
    # https://ACCOUNT.queue.core.windows.net/QUEUE; default: CONTAINER-snowpipe.
    queue_url: str = ""

    @property
    def account(self) -> str:
        return self.blob_host.split(".", 1)[0]

    @property
    def queue(self) -> str:
        if self.queue_url:
            return self.queue_url
        host = self.blob_host.replace(".blob.", ".queue.", 1)
        return f"https://{host}/{self.container}-snowpipe"

    def check(self) -> None:
        """@raise ValueError: the tenant id or queue URL is not one; the message names the option."""
        if self.tenant_id and not re.match(
            r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$", self.tenant_id
        ):
            raise ValueError(
                f"--azure-tenant-id: invalid value {self.tenant_id!r} (a directory's GUID)"
            )
        if not re.match(r"^https://[^/\s]+/[a-z0-9-]{3,63}$", self.queue):
            raise ValueError(
                f"--azure-queue-url: invalid value {self.queue!r} "
                "(https://ACCOUNT.queue.core.windows.net/QUEUE)"
            )


@dataclass(frozen=True)
class Setup:
    """Where the batches are and how they are written."""

    bucket: str
    prefix: str
    fmt: str
    compress: str
    event_tag: str
    names: SnowflakeNames
    azure: AzureTarget | None = None

    @property
    def cloud(self) -> str:
        return "Azure" if self.azure else "AWS"

    @property
    def location(self) -> str:
        if self.azure:
            return f"azure://{self.azure.blob_host}/{self.azure.container}/{self.prefix}"
        scheme = PARTITIONS[self.names.partition][1]
        return f"{scheme}://{self.bucket}/{self.prefix}"

    @property
    def schema(self) -> str:
        return f"{self.names.database}.{self.names.schema}"

    @property
    def extension(self) -> str:
        return f".{self.fmt}" + (".gz" if self.compress == "gzip" else "")


# The typed view's columns: (column, ACM field, Snowflake type).  Text stays
# text (card numbers keep their padding); times are ACM's UTC stamps.
FIELDS: list[tuple[str, str, str]] = [
    ("event_id", "cn", "text"),
    ("event_name", "plasectrxEventname", "text"),
    ("event_type", "plasectrxEvtypename", "text"),
    ("recorded_utc", "plasectrxRecdateUTC", "utc"),
    ("panel_utc", "plasectrxPaneldateUTC", "utc"),
    ("panel", "plasectrxPanelname", "text"),
    ("source", "plasectrxSourcename", "text"),
    ("source_location", "plasectrxSourcelocation", "text"),
    ("source_dn", "plasectrxSourceDN", "text"),
    ("point_address", "plasectrxPointaddress", "text"),
    ("card_number", "plasectrxCardno", "text"),
    ("embossed_number", "plasectrxEmbossedno", "text"),
    ("facility_code", "plasectrxFacilityCode", "text"),
    ("last_name", "plasectrxLname", "text"),
    ("first_name", "plasectrxFname", "text"),
    ("identity_dn", "plasectrxIdentityDN", "text"),
    ("operator", "plasectrxOperatorname", "text"),
    ("priority", "plasectrxPri", "number"),
    ("message", "plasectrxMsg", "text"),
    ("is_alarm", "plasectrxIsAlarm", "flag"),
    ("gateway_dn", "plasectrxGatewayDN", "text"),
]
UTC_FORMAT = 'YYYYMMDDHH24MISS"Z"'
DATE_PATH = "[0-9]{4}/[0-9]{2}/[0-9]{2}/[^/]+"


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def _typed(value: str, kind: str) -> str:
    """A typed column from a STRING expression."""
    if kind == "utc":
        return f"TRY_TO_TIMESTAMP_NTZ({value}, '{UTC_FORMAT}')"
    if kind == "number":
        return f"TRY_TO_NUMBER(TRIM({value}))"
    if kind == "flag":
        return f"({value} = '1')"
    return value


def view_columns(fmt: str, event_tag: str = "EVENT") -> list[str]:
    """
    The typed view's select list, for XML or JSON rows.  An XML row is the
    event element itself (whatever its tag); a JSON row is one object keyed
    by the event tag, which is quoted: path names are case-sensitive and an
    XML name may hold dots and hyphens.
    """
    columns = []
    for column, field, kind in FIELDS:
        if fmt == "xml":
            value = f'XMLGET(event, {_literal(field)}):"$"::STRING'
        else:
            value = f'event:"{event_tag}".{field}::STRING'
        columns.append(f"  {_typed(value, kind)} AS {column}")
    return columns


def batch_pattern(fmt: str) -> str:
    """
    The keys of batches, plain or gzipped, never quarantine objects (those
    end in C{.jsonl}, hence the C{$}).  The leading C{.*} makes it match
    whether Snowflake applies it to the path below the stage (Snowpipe) or to
    the whole location (COPY).
    """
    return rf".*{DATE_PATH}[.]{fmt}([.]gz)?$"


QUARANTINE_PATTERN = rf".*{DATE_PATH}[.]jsonl$"


def _part(number: int, role: str, title: str, *lines: str) -> str:
    rule = f"-- ===== Part {number} of {PARTS}, as {role}: {title} "
    return "\n".join([rule + "=" * max(3, 78 - len(rule)), *lines]) + "\n"


def _use(setup: Setup, role: str) -> list[str]:
    return [
        f"USE ROLE {role};",
        f"USE WAREHOUSE {setup.names.warehouse};",
        f"USE SCHEMA {setup.schema};",
    ]


def _outside(cloud: str, title: str, *lines: str) -> str:
    """A step done in the cloud's own console or CLI, between two parts."""
    rule = f"-- ----- In {cloud}, {title} "
    return "\n".join([rule + "-" * max(3, 78 - len(rule)), *lines]) + "\n"


def _comment(text: str) -> str:
    """A block of text the script does not run (a policy, a command, SQL for later)."""
    return f"/*\n{text}\n*/"


def _create_then_set(kind: str, name: str, first: list[str], settings: list[str]) -> list[str]:
    """
    C{CREATE kind IF NOT EXISTS} with C{first} and C{settings}, then C{ALTER
    kind ... SET} of the settings: a re-run sets what this run says, where
    C{IF NOT EXISTS} alone would keep an old URL or location.
    """
    body = [f"  {line}" for line in [*first, *settings]]
    return [
        f"CREATE {kind} IF NOT EXISTS {name}",
        *body[:-1],
        body[-1] + ";",
        f"ALTER {kind} {name} SET",
        *[f"  {line}" for line in settings[:-1]],
        f"  {settings[-1]};",
    ]


def header(setup: Setup) -> str:
    return f"""-- Snowflake set-up for eventpipe batches in {setup.location}
-- (format {setup.fmt}, compression {setup.compress}, event tag {setup.event_tag}).
-- Generated by `eventpipe snowflake-sql`.
--
-- Run it part by part, in order.  Each part names the role that runs it and
-- starts with its USE statements, so it runs in a session of its own; the
-- steps marked "In {setup.cloud}" come between two parts.
--   Parts 1, 2, 4, 5 and 6 may be run again: they set what this script says
--     (a new prefix moves the stage and the integration's allowed location).
--   Part 3 is for the first set-up only.
--   Part 7 is for later, when an investigation needs the quarantine.
"""


def part_1_integration(setup: Setup) -> str:
    names = setup.names
    provider = PARTITIONS[names.partition][0]
    return _part(
        1,
        names.admin_role,
        "the storage integration and the reader role",
        f"USE ROLE {names.admin_role};",
        "",
        *_create_then_set(
            "STORAGE INTEGRATION",
            names.storage_integration,
            ["TYPE = EXTERNAL_STAGE", f"STORAGE_PROVIDER = '{provider}'"],
            [
                "ENABLED = TRUE",
                f"STORAGE_AWS_ROLE_ARN = {_literal(names.shown_role_arn)}",
                f"STORAGE_ALLOWED_LOCATIONS = ({_literal(setup.location)})",
            ],
        ),
        "-- (ALTER keeps the external id, so the trust policy in AWS stays valid.)",
        f"GRANT USAGE ON INTEGRATION {names.storage_integration} TO ROLE {names.role};",
        "",
        "-- Analysts: reads the typed view and the quarantine table, sees the pipe's status.",
        f"CREATE ROLE IF NOT EXISTS {names.reader_role};",
        f"GRANT ROLE {names.reader_role} TO ROLE {names.role};",
        "",
        "-- STORAGE_AWS_IAM_USER_ARN and STORAGE_AWS_EXTERNAL_ID, for the AWS step below:",
        f"DESC INTEGRATION {names.storage_integration};",
    )


def aws_role(setup: Setup) -> str:
    names = setup.names
    arn = f"arn:{names.partition}:s3:::{setup.bucket}"
    listing: dict[str, object] = {
        "Effect": "Allow",
        "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
        "Resource": arn,
    }
    if setup.prefix:
        listing["Condition"] = {"StringLike": {"s3:prefix": [f"{setup.prefix}*"]}}
    access = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:GetObjectVersion"],
                "Resource": f"{arn}/{setup.prefix}*",
            },
            listing,
        ],
    }
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": "<STORAGE_AWS_IAM_USER_ARN>"},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"sts:ExternalId": "<STORAGE_AWS_EXTERNAL_ID>"}},
            }
        ],
    }
    return _outside(
        "AWS",
        "before part 2: the IAM role Snowflake assumes",
        f"-- Create the role {names.shown_role_arn} with this permissions",
        "-- policy (read access to the batches under the prefix, nothing else):",
        _comment(json.dumps(access, indent=2)),
        "-- and this trust policy, with the two values DESC INTEGRATION printed:",
        _comment(json.dumps(trust, indent=2)),
    )


def _format_settings(setup: Setup) -> list[str]:
    # AUTO reads plain and gzipped batches alike, so a change of --compress
    # needs no change here.
    if setup.fmt == "xml":
        return [
            "STRIP_OUTER_ELEMENT = TRUE",
            "PRESERVE_SPACE = TRUE",
            "DISABLE_AUTO_CONVERT = TRUE",
            "COMPRESSION = AUTO",
        ]
    return ["COMPRESSION = AUTO"]


def part_2_objects(setup: Setup) -> str:
    names = setup.names
    reader = names.reader_role
    columns = ("," + "\n").join(view_columns(setup.fmt, setup.event_tag))
    return _part(
        2,
        names.role,
        "warehouse, schema, file format, stage, tables, view",
        f"USE ROLE {names.role};",
        f"CREATE WAREHOUSE IF NOT EXISTS {names.warehouse}",
        "  WAREHOUSE_SIZE = XSMALL AUTO_SUSPEND = 60 AUTO_RESUME = TRUE INITIALLY_SUSPENDED = TRUE;",
        f"USE WAREHOUSE {names.warehouse};",
        f"CREATE DATABASE IF NOT EXISTS {names.database};",
        f"CREATE SCHEMA IF NOT EXISTS {setup.schema};",
        f"USE SCHEMA {setup.schema};",
        "",
        "-- How the batches read.  XML: PRESERVE_SPACE keeps padding such as",
        '-- "         8339220", DISABLE_AUTO_CONVERT keeps "0042" a string: every',
        "-- value as ACM sent it.",
        *_create_then_set(
            "FILE FORMAT",
            names.file_format,
            [f"TYPE = {setup.fmt.upper()}"],
            _format_settings(setup),
        ),
        "",
        *_create_then_set(
            "STAGE",
            names.stage,
            [],
            [
                f"URL = {_literal(setup.location)}",
                f"STORAGE_INTEGRATION = {names.storage_integration}",
                f"FILE_FORMAT = (FORMAT_NAME = {names.file_format})",
            ],
        ),
        "",
        f"CREATE TABLE IF NOT EXISTS {names.table} (",
        "  event VARIANT,",
        "  file_name STRING,",
        "  file_row_number NUMBER,",
        "  loaded_at TIMESTAMP_LTZ",
        ");",
        "",
        "-- The ACM fields, typed.  Text stays text (card numbers keep their",
        "-- padding); times are ACM's UTC stamps.",
        f"CREATE OR REPLACE VIEW {names.view} COPY GRANTS AS",
        "SELECT",
        columns + ",",
        "  file_name,",
        "  loaded_at",
        f"FROM {names.table};",
        "",
        f"-- What was set aside ({QUARANTINE}, loaded by part 7 when needed).",
        *_create_then_set(
            "FILE FORMAT", names.rejected_format, ["TYPE = JSON"], ["COMPRESSION = AUTO"]
        ),
        f"CREATE TABLE IF NOT EXISTS {names.rejected_table} (",
        "  received TIMESTAMP_NTZ,",
        "  sender STRING,",
        "  listener STRING,",
        "  reason STRING,",
        "  size NUMBER,",
        "  content_text STRING,",
        "  content_base64 STRING,",
        "  file_name STRING,",
        "  loaded_at TIMESTAMP_LTZ",
        ");",
        "",
        f"GRANT USAGE ON WAREHOUSE {names.warehouse} TO ROLE {reader};",
        f"GRANT USAGE ON DATABASE {names.database} TO ROLE {reader};",
        f"GRANT USAGE ON SCHEMA {setup.schema} TO ROLE {reader};",
        f"GRANT SELECT ON VIEW {names.view} TO ROLE {reader};",
        f"GRANT SELECT ON TABLE {names.rejected_table} TO ROLE {reader};",
        "",
        "-- Check: this lists the batches delivered so far.  An error here is the",
        "-- AWS step above (the trust policy, or the permissions policy)."
        if setup.azure is None
        else "-- Azure step above (the consent, or the role on the container).",
        f"LIST @{names.stage} PATTERN = {_literal(batch_pattern(setup.fmt))};",
    )


def _copy(setup: Setup) -> str:
    names = setup.names
    return (
        f"COPY INTO {names.table} (event, file_name, file_row_number, loaded_at)\n"
        "FROM (\n"
        "  SELECT $1, METADATA$FILENAME, METADATA$FILE_ROW_NUMBER, METADATA$START_SCAN_TIME\n"
        f"  FROM @{names.stage}\n"
        ")\n"
        f"FILE_FORMAT = (FORMAT_NAME = {names.file_format})\n"
        f"PATTERN = {_literal(batch_pattern(setup.fmt))}"
    )


def part_3_backfill(setup: Setup) -> str:
    return _part(
        3,
        setup.names.role,
        "the first set-up only, before part 4",
        "-- Loads every batch delivered before the pipe exists, however old",
        "-- (LOAD_UNCERTAIN_FILES: also those older than 64 days, whose load",
        "-- status Snowflake no longer knows).  Once the pipe has loaded files",
        "-- this would load them again: the pipe's load history and COPY's are",
        "-- separate.  Never run it after part 4.",
        *_use(setup, setup.names.role),
        _copy(setup),
        "LOAD_UNCERTAIN_FILES = TRUE;",
    )


def part_4_pipe(setup: Setup) -> str:
    names = setup.names
    database, schema = _schema_of(setup, names.pipe)
    return _part(
        4,
        names.role,
        "Snowpipe",
        "-- One row per event.  The pattern takes batches only, plain or gzipped,",
        f"-- so {QUARANTINE} is never loaded.  Snowpipe skips a file name it has",
        "-- loaded; eventpipe never reuses or renames a key, so a batch sent again",
        "-- after a crash is not loaded twice.",
        *_use(setup, names.role),
        f"CREATE PIPE IF NOT EXISTS {names.pipe}",
        "  AUTO_INGEST = TRUE",
        *(
            [f"  INTEGRATION = {_literal(_bare(names.notification_integration).upper())}"]
            if setup.azure
            else []
        ),
        "AS",
        _copy(setup) + ";",
        f"GRANT MONITOR ON PIPE {names.pipe} TO ROLE {names.reader_role};",
        "",
        *(
            [
                "-- On a re-run, the definition column shows the COPY the pipe",
            ]
            if setup.azure
            else [
                "-- The pipe's SQS queue, for the AWS step below, is the notification_channel",
                "-- column.  On a re-run, its definition column shows the COPY the pipe",
            ]
        ),
        "-- runs: a pipe keeps the COPY it was created with (to change it, pause it",
        "-- with ALTER PIPE ... SET PIPE_EXECUTION_PAUSED = TRUE, CREATE OR REPLACE",
        "-- it, and resume it; do not REFRESH it afterwards).",
        f"SHOW PIPES LIKE {_literal(_bare(names.pipe))} IN SCHEMA {database}.{schema};",
    )


def _bare(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _schema_of(setup: Setup, name: str) -> tuple[str, str]:
    """The database and schema a (possibly qualified) name lives in."""
    parts = name.split(".")
    if len(parts) == 3:
        return parts[0], parts[1]
    if len(parts) == 2:
        return setup.names.database, parts[0]
    return setup.names.database, setup.names.schema


def aws_notification(setup: Setup) -> str:
    # The prefix only: the pipe's pattern takes the batches (plain or
    # gzipped) and leaves the quarantine, so a change of --compress needs
    # nothing here.
    queue: dict[str, Any] = {"QueueArn": "<notification_channel>", "Events": ["s3:ObjectCreated:*"]}
    if setup.prefix:
        queue["Filter"] = {"Key": {"FilterRules": [{"Name": "prefix", "Value": setup.prefix}]}}
    notification = {"QueueConfigurations": [queue]}
    return _outside(
        "AWS",
        "before part 5: tell the pipe about new batches",
        "-- Point the bucket's event notifications at the pipe's queue, for what is",
        "-- written under the prefix (the pipe's pattern takes the batches only, so",
        "-- a change of --compress or --format needs nothing here).",
        "-- This replaces the bucket's notification configuration: if",
        f"-- `aws s3api get-bucket-notification-configuration --bucket {setup.bucket}`",
        "-- shows one, merge by hand.",
        _comment(
            f"aws s3api put-bucket-notification-configuration --bucket {setup.bucket} \\\n"
            f"  --notification-configuration '{json.dumps(notification)}'"
        ),
    )


def part_5_catch_up(setup: Setup) -> str:
    names = setup.names
    return _part(
        5,
        names.role,
        "what arrived while the set-up ran",
        "-- Queues the batches of the last 7 days that neither part 3 nor the pipe",
        "-- loaded (REFRESH checks both load histories).  Safe to run again.",
        *_use(setup, names.role),
        f"ALTER PIPE {names.pipe} REFRESH;",
        f"SELECT SYSTEM$PIPE_STATUS({_literal(names.pipe)});",
    )


def part_6_monitoring(setup: Setup) -> str:
    names = setup.names
    return _part(
        6,
        names.role,
        "monitoring, any time",
        *_use(setup, names.role),
        "-- executionState RUNNING, and pendingFileCount near 0:",
        f"SELECT SYSTEM$PIPE_STATUS({_literal(names.pipe)});",
        "",
        "-- Batches of the last 24 hours that did not load whole:",
        "SELECT file_name, last_load_time, status, row_count, row_parsed, first_error_message",
        "FROM TABLE(INFORMATION_SCHEMA.COPY_HISTORY(",
        f"  TABLE_NAME => {_literal(names.table)},",
        "  START_TIME => DATEADD(HOUR, -24, CURRENT_TIMESTAMP())))",
        "WHERE status <> 'Loaded'",
        "ORDER BY last_load_time DESC;",
        "",
        "-- Events loaded per hour, to set beside eventpipe_events_delivered_total:",
        "SELECT DATE_TRUNC('HOUR', loaded_at) AS hour, COUNT(*) AS events",
        f"FROM {names.table}",
        "WHERE loaded_at > DATEADD(HOUR, -24, CURRENT_TIMESTAMP())",
        "GROUP BY 1",
        "ORDER BY 1;",
        "",
        f"-- What analysts ({names.reader_role}) see: the last alarms.",
        "SELECT recorded_utc, event_name, panel, source, card_number, last_name, first_name",
        f"FROM {names.view}",
        "WHERE is_alarm",
        "ORDER BY recorded_utc DESC",
        "LIMIT 100;",
    )


def part_7_quarantine(setup: Setup) -> str:
    names = setup.names
    columns = "received, sender, listener, reason, size, content_text, content_base64"
    load = "\n".join(
        [
            *_use(setup, names.role),
            f"COPY INTO {names.rejected_table}",
            f"  ({columns}, file_name, loaded_at)",
            "FROM (",
            "  SELECT",
            '    TRY_TO_TIMESTAMP_NTZ($1:received::STRING, \'YYYY-MM-DD"T"HH24:MI:SS.FF3"Z"\'),',
            "    $1:sender::STRING,",
            "    $1:listener::STRING,",
            "    $1:reason::STRING,",
            "    $1:size::NUMBER,",
            "    $1:text::STRING,",
            "    $1:base64::STRING,",
            "    METADATA$FILENAME,",
            "    METADATA$START_SCAN_TIME",
            f"  FROM @{names.stage}/{QUARANTINE}",
            ")",
            f"FILE_FORMAT = (FORMAT_NAME = {names.rejected_format})",
            f"PATTERN = {_literal(QUARANTINE_PATTERN)}",
            "LOAD_UNCERTAIN_FILES = TRUE;",
        ]
    )
    return _part(
        7,
        names.role,
        "later, when an investigation needs the quarantine",
        f"-- {QUARANTINE} holds JSON Lines, one piece a line: when it arrived, the",
        "-- sender and the listener, the reason, and its bytes (as text, or base64",
        "-- when they are not UTF-8).  The pipe never loads them.  To load them,",
        "-- run what is between the comment marks (LOAD_UNCERTAIN_FILES: also",
        "-- pieces older than 64 days; a piece loaded before is skipped).",
        _comment(load),
    )


def set_me(option: str) -> str:
    """What stands where a value was not given: Snowflake refuses it as it is."""
    return f"<SET ME: {option}>"


def snowflake_sql(
    bucket: str | None,
    prefix: str,
    fmt: str,
    compress: str,
    names: SnowflakeNames = SnowflakeNames(),
    event_tag: str = "EVENT",
    azure: AzureTarget | None = None,
) -> str:
    """
    The SQL that loads eventpipe's batches, one row per event, in numbered
    parts with the steps in AWS (or Azure, with C{azure}) between them.

    @raise ValueError: a name is not a valid identifier, or the role ARN
        (or the Azure tenant or queue) is not one Snowflake can use; the
        message names the option.
    """
    names = names.for_format(fmt)
    names.check()
    if azure is not None:
        azure.check()
    if not bucket and azure is None:
        raise ValueError(
            "--s3-bucket (EVENTPIPE_S3_BUCKET) or --azure-container is needed: the script "
            "names where the batches are"
        )
    setup = Setup(bucket or "", normalize_prefix(prefix), fmt, compress, event_tag, names, azure)
    if azure is not None:
        from eventpipe.snowflake_azure import azure_access, part_1_azure

        first, access, notification = part_1_azure(setup), azure_access(setup), ""
    else:
        first, access, notification = (
            part_1_integration(setup),
            aws_role(setup),
            aws_notification(setup),
        )
    return "\n".join(
        part
        for part in [
            header(setup),
            first,
            access,
            part_2_objects(setup),
            part_3_backfill(setup),
            part_4_pipe(setup),
            notification,
            part_5_catch_up(setup),
            part_6_monitoring(setup),
            part_7_quarantine(setup),
        ]
        if part
    )
