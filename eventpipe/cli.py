"""
The C{eventpipe} command.  The daemon is C{twistd eventpipe}; this command
holds the tools around it and reads the same options and environment.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString
from twisted.python import usage

from eventpipe import __version__
from eventpipe.config.help import option_lines, print_version
from eventpipe.config.options import Options as ServiceOptions
from eventpipe.config.options import SettingsOptions
from eventpipe.config.table import PARAMETERS
from eventpipe.drain import DrainOptions
from eventpipe.quarantine.options import QuarantineOptions
from eventpipe.snowflake.script import snowflake_sql
from eventpipe.snowflake.setup import AzureTarget, GCSTarget
from eventpipe.snowflake.sql import SnowflakeNames
from eventpipe.status import StatusOptions

SNOWFLAKE_SETTINGS = (
    "s3-bucket",
    "s3-prefix",
    "azure-container",
    "azure-prefix",
    "azure-account-url",
    "gcs-bucket",
    "gcs-prefix",
    "format",
    "compress",
    "event-tag",
)
_SNOWFLAKE_PARAMETERS = [p for p in PARAMETERS if p[0] in SNOWFLAKE_SETTINGS]
_DEFAULTS = SnowflakeNames()


class SnowflakeOptions(SettingsOptions):
    synopsis = "[options]"
    longdesc = (
        "Print the Snowflake SQL that loads the batches eventpipe delivers, in "
        "numbered parts to run in order with the AWS steps between them: the "
        "storage integration and a reader role, the IAM policies, warehouse, "
        "schema, file format, stage, tables and typed view, the backfill, the "
        "pipe, the bucket notification, the catch-up, monitoring queries and "
        "the quarantine load.  Bucket, prefix, format, compression and event "
        "tag are read as the service reads them (options, environment, env "
        "file).  Object names default to acm_events_xml_* or acm_events_json_*, "
        "so the two formats never share an object."
    )
    parameters = _SNOWFLAKE_PARAMETERS
    optParameters = [
        *option_lines(_SNOWFLAKE_PARAMETERS),
        ["table", None, None, "Target table (default acm_events_FORMAT)."],
        [
            "stage",
            None,
            None,
            "External stage on the bucket and prefix (default acm_events_FORMAT_stage).",
        ],
        ["pipe", None, None, "Snowpipe name (default acm_events_FORMAT_pipe)."],
        ["file-format", None, None, "File format name (default acm_events_FORMAT_format)."],
        ["view", None, None, "View with the ACM fields typed (default acm_events_FORMAT_typed)."],
        [
            "storage-integration",
            None,
            None,
            "Storage integration the stage uses; no keys in the SQL "
            "(default acm_events_FORMAT_integration).",
        ],
        ["database", None, _DEFAULTS.database, "Database the objects are created in."],
        ["schema", None, _DEFAULTS.schema, "Schema the objects are created in."],
        [
            "warehouse",
            None,
            _DEFAULTS.warehouse,
            "Warehouse for the backfill and the queries (created X-Small, "
            "auto-suspended, when missing; Snowpipe itself needs none).",
        ],
        ["admin-role", None, _DEFAULTS.admin_role, "Role that creates the integration (part 1)."],
        ["role", None, _DEFAULTS.role, "Role that owns and runs everything else."],
        [
            "reader-role",
            None,
            _DEFAULTS.reader_role,
            "Role for analysts: reads the view and the quarantine table, monitors the pipe.",
        ],
        [
            "role-arn",
            None,
            "",
            "The IAM role the storage integration assumes (aws, aws-us-gov or aws-cn); "
            "without it the script says <SET ME: --role-arn> there, which Snowflake refuses.",
        ],
        [
            "azure-tenant-id",
            None,
            "",
            "Azure: the directory (tenant) id of the storage account; without it the script "
            "says <SET ME: --azure-tenant-id> there, which Snowflake refuses.",
        ],
        [
            "azure-queue-url",
            None,
            None,
            "Azure: the storage queue Event Grid fills for the pipe "
            "(default https://ACCOUNT.queue.core.windows.net/CONTAINER-snowpipe).",
        ],
        [
            "gcs-pubsub-subscription",
            None,
            "",
            "GCP: the Pub/Sub subscription the bucket's notifications fill, "
            "projects/PROJECT/subscriptions/NAME; without it the script says "
            "<SET ME: --gcs-pubsub-subscription> there, which Snowflake refuses.",
        ],
        [
            "notification-integration",
            None,
            None,
            "Azure and GCP: the notification integration (default acm_events_FORMAT_notification).",
        ],
    ]


class CheckOptions(ServiceOptions):
    synopsis = "[service options]"
    longdesc = (
        "Check what the service needs, reading the same options and environment: "
        "the listen endpoints parse and their ports are free, the spool directory "
        "is writable with room to spare, and the destination (outbox, S3 bucket, "
        "Azure container or GCS bucket, and prefix) can be written. One line each; exit status 0 "
        "when all pass."
    )


class SimulateOptions(usage.Options):
    synopsis = "[options]"

    def opt_version(self) -> None:
        """Print eventpipe's version and exit."""
        print_version()

    longdesc = (
        "Act as an ACM appliance: send realistic Generic XML events (a declaration "
        "before each, ACM's 42 fields, padded numbers, non-ASCII names) to a "
        "Twisted client endpoint."
    )
    optParameters = [
        ["to", None, "tcp:localhost:8080", "Where to send: a Twisted client endpoint string."],
        ["rate", None, "100", "Events per second."],
        ["count", None, None, "Stop after this many events (default 1000 without --duration)."],
        ["duration", None, None, "Stop after this many seconds."],
        ["connections", None, "1", "Connections to spread the events over."],
        [
            "malformed-every",
            None,
            "0",
            "Make every Nth event malformed (0: none), the ways ACM does in turn: names "
            "with a space, a wrong end tag, cut short, bytes outside any event.",
        ],
        ["seed", None, "0", "Random seed (the same seed sends the same events)."],
    ]
    optFlags = [
        ["reconnect-per-event", None, "Open a new connection for every event."],
    ]

    def postOptions(self) -> None:
        for name, convert, expected in (
            ("rate", float, "a number of events per second"),
            ("count", int, "a whole number"),
            ("duration", float, "a number of seconds"),
            ("connections", int, "a whole number"),
            ("malformed-every", int, "a whole number"),
            ("seed", int, "a whole number"),
        ):
            if self[name] is not None:
                try:
                    self[name] = convert(self[name])
                except ValueError:
                    raise usage.UsageError(
                        f"--{name}: invalid value {self[name]!r} ({expected})"
                    ) from None
        if self["count"] is None and self["duration"] is None:
            self["count"] = 1000
        if self["duration"] is not None and not self["duration"] > 0:
            raise usage.UsageError("--duration: must be above 0")
        if not self["rate"] > 0:
            raise usage.UsageError("--rate: must be above 0")
        if self["connections"] < 1:
            raise usage.UsageError("--connections: must be 1 or more")
        if self["count"] is not None and self["count"] < 0:
            raise usage.UsageError("--count: must be 0 or more")
        if self["malformed-every"] < 0:
            raise usage.UsageError("--malformed-every: must be 0 or more")
        try:
            # Only parsed here: an endpoint object just keeps its reactor.
            clientFromString(None, self["to"])  # type: ignore[arg-type]
        except Exception as error:
            raise usage.UsageError(f"--to: invalid endpoint {self['to']!r} ({error})") from None


class Options(usage.Options):
    longdesc = "Tools for eventpipe; the service itself runs as `twistd eventpipe`."

    def getSynopsis(self) -> str:
        if self.subCommand is not None:
            # The start of a command's own usage line.
            return "Usage: eventpipe"
        return "Usage: eventpipe <command> [options]"

    subCommands = [
        ["check", None, CheckOptions, "Check the listen ports, spool and destination."],
        ["status", None, StatusOptions, "Show what the service is doing, or what its spool holds."],
        ["quarantine", None, QuarantineOptions, "List, show and replay quarantined pieces."],
        ["drain", None, DrainOptions, "Ship everything a spool directory holds, then exit."],
        ["simulate", None, SimulateOptions, "Send simulated ACM events (demos, load tests)."],
        ["snowflake-sql", None, SnowflakeOptions, "Print the Snowflake set-up SQL."],
    ]

    def opt_version(self) -> None:
        """Print the version and exit."""
        print(f"eventpipe {__version__}")
        raise SystemExit(0)

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("name a command; see --help")


def run(argv: Sequence[str], out: TextIO | None = None) -> int:
    stream = out if out is not None else sys.stdout
    options = Options()
    try:
        options.parseOptions(argv)
    except usage.UsageError as error:
        sys.stderr.write(f"eventpipe: {error}\n")
        return 1
    sub = options.subOptions
    if options.subCommand == "check":
        from eventpipe.check import run_checks

        return run_checks(sub, stream)
    if options.subCommand == "drain":
        from eventpipe.drain import run_drain

        return run_drain(sub, stream)
    if options.subCommand == "status":
        from eventpipe.status import run_status

        return run_status(sub, stream)
    if options.subCommand == "quarantine":
        from eventpipe.quarantine.commands import run_quarantine

        return run_quarantine(sub, stream)
    if options.subCommand == "simulate":
        return _simulate(sub, stream)
    if options.subCommand == "snowflake-sql":
        return _snowflake_sql(sub, stream)
    return 0


def _snowflake_sql(sub: SnowflakeOptions, stream: TextIO) -> int:
    """C{eventpipe snowflake-sql}: the set-up SQL for where the batches are."""
    names = SnowflakeNames(
        table=sub["table"] or "",
        stage=sub["stage"] or "",
        pipe=sub["pipe"] or "",
        file_format=sub["file-format"] or "",
        storage_integration=sub["storage-integration"] or "",
        view=sub["view"] or "",
        notification_integration=sub["notification-integration"] or "",
        database=sub["database"],
        schema=sub["schema"],
        warehouse=sub["warehouse"],
        admin_role=sub["admin-role"],
        role=sub["role"],
        reader_role=sub["reader-role"],
        role_arn=sub["role-arn"],
    )
    given = [name for name in ("s3-bucket", "azure-container", "gcs-bucket") if sub[name]]
    if len(given) > 1:
        sys.stderr.write(
            f"eventpipe: --{given[-1]}: one destination at a time: "
            f"--{given[0]} or --{given[-1]}, not both\n"
        )
        return 1
    azure = gcs = None
    if sub["azure-container"]:
        azure = _azure_target(sub)
        if azure is None:
            return 1
    if sub["gcs-bucket"]:
        gcs = GCSTarget(sub["gcs-bucket"], sub["gcs-pubsub-subscription"])
    prefix = sub["azure-prefix"] if azure else sub["gcs-prefix"] if gcs else sub["s3-prefix"]
    try:
        sql = snowflake_sql(
            sub["s3-bucket"],
            prefix,
            sub["format"],
            sub["compress"],
            names,
            event_tag=sub["event-tag"],
            azure=azure,
            gcs=gcs,
        )
    except ValueError as error:
        sys.stderr.write(f"eventpipe: {error}\n")
        return 1
    for option, needed in (
        ("--role-arn", not given or given[0] == "s3-bucket"),
        ("--azure-tenant-id", azure is not None),
        ("--gcs-pubsub-subscription", gcs is not None),
    ):
        if needed and not sub[option[2:]]:
            sys.stderr.write(
                f"eventpipe: warning: no {option}: the script says <SET ME: {option}> "
                "where it goes, which Snowflake refuses until it is set\n"
            )
    stream.write(sql)
    return 0


def _azure_target(sub: SnowflakeOptions) -> AzureTarget | None:
    """Where the Azure batches are, for the script; None (and a line) when it cannot say."""
    from eventpipe.destinations.azure import account_host

    connection = sub.environ.get(
        "AZURE_STORAGE_CONNECTION_STRING"
    ) or sub.azure_from_env_file().get("AZURE_STORAGE_CONNECTION_STRING", "")
    host = account_host(connection, sub["azure-account-url"], "")
    if host.startswith(".blob."):
        sys.stderr.write(
            "eventpipe: --azure-account-url (or AZURE_STORAGE_CONNECTION_STRING) is "
            "needed: the script names the storage account\n"
        )
        return None
    return AzureTarget(
        blob_host=host,
        container=sub["azure-container"],
        tenant_id=sub["azure-tenant-id"],
        queue_url=sub["azure-queue-url"] or "",
    )


def _simulate(sub: usage.Options, stream: TextIO) -> int:
    """Run the simulator under its own reactor; exits the process when done."""
    from twisted.internet import task

    from eventpipe.simulate import Progress, simulate

    async def go(reactor: Any) -> None:
        began = time.monotonic()
        try:
            progress: Progress = await simulate(
                reactor,
                sub["to"],
                sub["rate"],
                sub["count"],
                sub["duration"],
                connections=sub["connections"],
                reconnect_per_event=sub["reconnect-per-event"],
                malformed_every=sub["malformed-every"],
                seed=sub["seed"],
                out=stream,
            )
        except ConnectionError as error:
            sys.stderr.write(f"eventpipe: {error}\n")
            raise SystemExit(1) from None
        seconds = time.monotonic() - began
        stream.write(
            f"sent {progress.sent:,} events ({progress.malformed:,} malformed) over "
            f"{_count(progress.connections, 'connection')} in {seconds:.1f} s, "
            f"{progress.sent / seconds if seconds else 0:,.0f} events/s, "
            f"{progress.errors} errors\n"
        )
        for message in progress.messages:
            stream.write(f"  error: {message}\n")
        if progress.errors:
            raise SystemExit(1)

    task.react(lambda reactor: Deferred.fromCoroutine(go(reactor)))
    return 0  # not reached: react() exits


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}" + ("" if number == 1 else "s")


def main() -> None:
    try:
        try:
            code: Any = run(sys.argv[1:])
        except SystemExit as exit:
            # --help and --version end so; what they printed is flushed here.
            code = exit.code
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (eventpipe ... | head): not an error of ours.
        # What Python would still flush goes nowhere, quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 0
    raise SystemExit(code)
