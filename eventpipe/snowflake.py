"""
Snowflake set-up for what eventpipe delivers, as text to run: the storage
integration and the IAM policies it needs, file format, stage, tables,
Snowpipe, the bucket notification, a backfill and typed views.  Pure text.

Every value is kept as sent: the XML file format sets C{PRESERVE_SPACE}
(padding such as C{<plasectrxCardno>         8339220</plasectrxCardno>}
stays) and C{DISABLE_AUTO_CONVERT} (no text is turned into a number, so
leading zeros stay); JSON batches carry every value as a string already.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from eventpipe.naming import QUARANTINE, normalize_prefix

# An unquoted Snowflake identifier, optionally qualified (db.schema.name).
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,254}(\.[A-Za-z_][A-Za-z0-9_$]{0,254}){0,2}$")


@dataclass(frozen=True)
class SnowflakeNames:
    table: str = "acm_events"
    stage: str = "acm_events_stage"
    pipe: str = "acm_events_pipe"
    file_format: str = ""
    storage_integration: str = "acm_events_integration"
    view: str = "acm_events_typed"
    rejected_table: str = "acm_events_rejected"
    role_arn: str = "arn:aws:iam::123456789012:role/snowflake-acm-events"

    def check(self) -> None:
        """
        @raise ValueError: a name is not a plain Snowflake identifier
            (letters, digits, _ and $, optionally db.schema.name); the
            message names it.
        """
        for field in ("table", "stage", "pipe", "file_format", "storage_integration", "view"):
            value = getattr(self, field)
            if field == "file_format" and not value:
                continue
            if not _IDENTIFIER.match(value):
                raise ValueError(
                    f"--{field.replace('_', '-')}: invalid name {value!r} (letters, digits, "
                    "_ and $, not starting with a digit; optionally database.schema.name)"
                )
        if not self.rejected_table or not _IDENTIFIER.match(self.rejected_table):
            raise ValueError(f"invalid name {self.rejected_table!r}")
        if not re.match(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$", self.role_arn):
            raise ValueError(
                f"--role-arn: invalid value {self.role_arn!r} (arn:aws:iam::ACCOUNT:role/NAME)"
            )


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


def view_columns(fmt: str) -> list[str]:
    """The typed view's select list, for XML or JSON rows."""
    columns = []
    for column, field, kind in FIELDS:
        if fmt == "xml":
            value = f'XMLGET(event, {_literal(field)}):"$"::STRING'
        else:
            value = f"event:EVENT:{field}::STRING"
        columns.append(f"  {_typed(value, kind)} AS {column}")
    return columns


def batch_pattern(fmt: str, compress: str) -> str:
    """
    The keys of batches, never quarantine objects (those end in C{.jsonl}).
    The leading C{.*} makes it match whether Snowflake applies it to the
    path below the stage (Snowpipe) or to a longer one.
    """
    return r".*[0-9]{4}/[0-9]{2}/[0-9]{2}/[^/]+[.]" + fmt + ("[.]gz" if compress == "gzip" else "")


def snowflake_sql(
    bucket: str | None,
    prefix: str,
    fmt: str,
    compress: str,
    names: SnowflakeNames = SnowflakeNames(),
) -> str:
    """
    The SQL that loads eventpipe's batches, one row per event.

    @raise ValueError: a name is not a valid identifier.
    """
    names.check()
    prefix = normalize_prefix(prefix)
    bucket = bucket or "your-bucket"
    file_format = names.file_format or f"acm_events_{fmt}"
    location = f"s3://{bucket}/{prefix}"
    extension = f".{fmt}" + (".gz" if compress == "gzip" else "")
    pattern = batch_pattern(fmt, compress)
    compression = "GZIP" if compress == "gzip" else "NONE"
    if fmt == "xml":
        format_options = (
            "  TYPE = XML\n"
            "  STRIP_OUTER_ELEMENT = TRUE\n"
            "  PRESERVE_SPACE = TRUE\n"
            "  DISABLE_AUTO_CONVERT = TRUE\n"
            f"  COMPRESSION = {compression}"
        )
    else:
        format_options = f"  TYPE = JSON\n  COMPRESSION = {compression}"
    copy_select = (
        f"COPY INTO {names.table} (event, file_name, file_row_number, loaded_at)\n"
        "FROM (\n"
        "  SELECT $1, METADATA$FILENAME, METADATA$FILE_ROW_NUMBER, METADATA$START_SCAN_TIME\n"
        f"  FROM @{names.stage}\n"
        ")\n"
        f"FILE_FORMAT = (FORMAT_NAME = {file_format})"
    )
    trust_policy = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": "<STORAGE_AWS_IAM_USER_ARN>"},
                    "Action": "sts:AssumeRole",
                    "Condition": {"StringEquals": {"sts:ExternalId": "<STORAGE_AWS_EXTERNAL_ID>"}},
                }
            ],
        },
        indent=2,
    )
    access_policy = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["s3:GetObject", "s3:GetObjectVersion"],
                    "Resource": f"arn:aws:s3:::{bucket}/{prefix}*",
                },
                {
                    "Effect": "Allow",
                    "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
                    "Resource": f"arn:aws:s3:::{bucket}",
                    "Condition": {"StringLike": {"s3:prefix": [f"{prefix}*"]}},
                },
            ],
        },
        indent=2,
    )
    notification = json.dumps(
        {
            "QueueConfigurations": [
                {
                    "QueueArn": "<notification_channel>",
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {
                        "Key": {
                            "FilterRules": [
                                {"Name": "prefix", "Value": prefix},
                                {"Name": "suffix", "Value": extension},
                            ]
                        }
                    },
                }
            ]
        }
    )
    return f"""-- Snowflake set-up for eventpipe batches in {location}
-- (format {fmt}, compression {compress}).  Generated by `eventpipe snowflake-sql`.
-- Run it in order, as a role that may create integrations (ACCOUNTADMIN or
-- one granted CREATE INTEGRATION), in the database and schema of your choice.

-- 1. Let Snowflake read the bucket: a storage integration and an IAM role.
--    First create an IAM role in AWS ({names.role_arn}) with this
--    permissions policy (read access to the batches and the prefix only):
/*
{access_policy}
*/
CREATE STORAGE INTEGRATION IF NOT EXISTS {names.storage_integration}
  TYPE = EXTERNAL_STAGE
  STORAGE_PROVIDER = 'S3'
  ENABLED = TRUE
  STORAGE_AWS_ROLE_ARN = {_literal(names.role_arn)}
  STORAGE_ALLOWED_LOCATIONS = ({_literal(location)});

-- Read STORAGE_AWS_IAM_USER_ARN and STORAGE_AWS_EXTERNAL_ID from this, and put
-- them in the role's trust policy in AWS:
DESC INTEGRATION {names.storage_integration};
/*
{trust_policy}
*/

-- 2. How the batches read.  XML: PRESERVE_SPACE keeps padding such as
--    "         8339220", DISABLE_AUTO_CONVERT keeps "0042" a string: every
--    value as ACM sent it.
CREATE FILE FORMAT IF NOT EXISTS {file_format}
{format_options};

CREATE STAGE IF NOT EXISTS {names.stage}
  URL = {_literal(location)}
  STORAGE_INTEGRATION = {names.storage_integration}
  FILE_FORMAT = {file_format};

CREATE TABLE IF NOT EXISTS {names.table} (
  event VARIANT,
  file_name STRING,
  file_row_number NUMBER,
  loaded_at TIMESTAMP_LTZ
);

-- 3. Snowpipe: one row per event.  The pattern takes batches only, so
--    {QUARANTINE} is never loaded.  Snowpipe skips a file name it has loaded;
--    eventpipe never reuses or renames a key, so a batch sent again after a
--    crash is not loaded twice.
CREATE PIPE IF NOT EXISTS {names.pipe}
  AUTO_INGEST = TRUE
AS
{copy_select}
PATTERN = {_literal(pattern)};

-- 4. Tell the pipe about new batches: its SQS queue is the notification_channel
--    column of
SHOW PIPES LIKE {_literal(names.pipe)};
--    Point the bucket's event notifications at it, for batches only (this
--    replaces the bucket's notification configuration: merge by hand if it
--    has one):
/*
aws s3api put-bucket-notification-configuration --bucket {bucket} \\
  --notification-configuration '{notification}'
*/

-- 5. Batches delivered before the pipe existed.  ALTER PIPE ... REFRESH loads
--    the ones staged in the last 7 days:
ALTER PIPE {names.pipe} REFRESH;
--    Older ones: a COPY, one month at a time (edit the month).  The pipe's and
--    COPY's load histories are separate: only copy months the pipe never saw.
{copy_select}
PATTERN = {_literal(batch_pattern(fmt, compress).replace("[0-9]{4}/[0-9]{2}/", "2025/07/", 1))};

-- 6. The ACM fields, typed.  Text stays text (card numbers keep their padding);
--    times are ACM's UTC stamps.
CREATE OR REPLACE VIEW {names.view} AS
SELECT
{("," + chr(10)).join(view_columns(fmt))},
  file_name,
  loaded_at
FROM {names.table};

-- 7. What was set aside, for investigations: {QUARANTINE} holds JSON Lines, one
--    piece a line, with when it arrived, the sender and the listener, the
--    reason, and its bytes (as text, or base64 when they are not UTF-8).
--    Load them when needed (the pipe above never does):
CREATE FILE FORMAT IF NOT EXISTS {names.rejected_table}_json
  TYPE = JSON
  COMPRESSION = NONE;

CREATE TABLE IF NOT EXISTS {names.rejected_table} (
  received TIMESTAMP_NTZ,
  sender STRING,
  listener STRING,
  reason STRING,
  size NUMBER,
  content_text STRING,
  content_base64 STRING,
  file_name STRING,
  loaded_at TIMESTAMP_LTZ
);

COPY INTO {names.rejected_table}
  (received, sender, listener, reason, size, content_text, content_base64, file_name, loaded_at)
FROM (
  SELECT
    TRY_TO_TIMESTAMP_NTZ($1:received::STRING, 'YYYY-MM-DD"T"HH24:MI:SS.FF3"Z"'),
    $1:sender::STRING,
    $1:listener::STRING,
    $1:reason::STRING,
    $1:size::NUMBER,
    $1:text::STRING,
    $1:base64::STRING,
    METADATA$FILENAME,
    METADATA$START_SCAN_TIME
  FROM @{names.stage}
)
FILE_FORMAT = (FORMAT_NAME = {names.rejected_table}_json)
PATTERN = {_literal(".*" + QUARANTINE + r"[0-9]{4}/[0-9]{2}/[0-9]{2}/[^/]+[.]jsonl")};

-- Example: the last alarms.
SELECT recorded_utc, event_name, panel, source, card_number, last_name, first_name
FROM {names.view}
WHERE is_alarm
ORDER BY recorded_utc DESC
LIMIT 100;
"""
