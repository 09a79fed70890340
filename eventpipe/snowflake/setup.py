"""
Where the batches are and how they are written (L{Setup}), and what the
typed views read from them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from eventpipe.snowflake.sql import (
    PARTITIONS,
    SnowflakeNames,
    literal,
    typed,
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
class GCSTarget:
    """Where the batches are in Google Cloud Storage, and the subscription the pipe reads."""

    bucket: str
    # projects/PROJECT/subscriptions/NAME; empty: not given (the script
    # then says <SET ME: --gcs-pubsub-subscription>).
    subscription: str = ""

    def check(self) -> None:
        """@raise ValueError: the subscription is not a full name; the message names the option."""
        if self.subscription and not re.match(
            r"^projects/[a-z][a-z0-9-]{4,28}[a-z0-9]/subscriptions/[A-Za-z][\w.~+%-]{2,254}$",
            self.subscription,
        ):
            raise ValueError(
                f"--gcs-pubsub-subscription: invalid value {self.subscription!r} "
                "(projects/PROJECT/subscriptions/NAME)"
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
    gcs: GCSTarget | None = None

    @property
    def cloud(self) -> str:
        return "Azure" if self.azure else "GCP" if self.gcs else "AWS"

    @property
    def queued(self) -> bool:
        """Whether the pipe listens on a notification integration of ours (not on S3's SQS)."""
        return self.azure is not None or self.gcs is not None

    @property
    def location(self) -> str:
        if self.azure:
            return f"azure://{self.azure.blob_host}/{self.azure.container}/{self.prefix}"
        if self.gcs:
            return f"gcs://{self.gcs.bucket}/{self.prefix}"
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


DATE_PATH = "[0-9]{4}/[0-9]{2}/[0-9]{2}/[^/]+"


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
            value = f'XMLGET(event, {literal(field)}):"$"::STRING'
        else:
            value = f'event:"{event_tag}".{field}::STRING'
        columns.append(f"  {typed(value, kind)} AS {column}")
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


def use_role(setup: Setup, role: str) -> list[str]:
    return [
        f"USE ROLE {role};",
        f"USE WAREHOUSE {setup.names.warehouse};",
        f"USE SCHEMA {setup.schema};",
    ]


def schema_of(setup: Setup, name: str) -> tuple[str, str]:
    """The database and schema a (possibly qualified) name lives in."""
    parts = name.split(".")
    if len(parts) == 3:
        return parts[0], parts[1]
    if len(parts) == 2:
        return setup.names.database, parts[0]
    return setup.names.database, setup.names.schema
