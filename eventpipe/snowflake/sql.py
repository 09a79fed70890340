"""
SQL as text: quoting, identifiers, the object names (L{SnowflakeNames}),
and the small pieces every part is written with.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any, NamedTuple

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


def literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def typed(value: str, kind: str) -> str:
    """A typed column from a STRING expression."""
    if kind == "utc":
        return f"TRY_TO_TIMESTAMP_NTZ({value}, '{UTC_FORMAT}')"
    if kind == "number":
        return f"TRY_TO_NUMBER(TRIM({value}))"
    if kind == "flag":
        return f"({value} = '1')"
    return value


def part(number: int, role: str, title: str, *lines: str) -> str:
    rule = f"-- ===== Part {number} of {PARTS}, as {role}: {title} "
    return "\n".join([rule + "=" * max(3, 78 - len(rule)), *lines]) + "\n"


def outside(cloud: str, title: str, *lines: str) -> str:
    """A step done in the cloud's own console or CLI, between two parts."""
    rule = f"-- ----- In {cloud}, {title} "
    return "\n".join([rule + "-" * max(3, 78 - len(rule)), *lines]) + "\n"


def comment(text: str) -> str:
    """A block of text the script does not run (a policy, a command, SQL for later)."""
    return f"/*\n{text}\n*/"


def create_then_set(kind: str, name: str, first: list[str], settings: list[str]) -> list[str]:
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


def bare(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def set_me(option: str) -> str:
    """What stands where a value was not given: Snowflake refuses it as it is."""
    return f"<SET ME: {option}>"


class Provider(NamedTuple):
    """
    One cloud's parts of the set-up, around the parts every cloud shares:
    the storage integration (part 1), the access to grant in the cloud,
    and the notification Snowpipe's auto-ingest listens to (empty when
    part 4 creates it).
    """

    integration: Callable[[Any], str]
    access: Callable[[Any], str]
    notification: Callable[[Any], str]


UTC_FORMAT = 'YYYYMMDDHH24MISS"Z"'
