"""
The C{eventpipe} command.  The daemon is C{twistd eventpipe}; this command
holds the tools around it and reads the same options and environment.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from twisted.python import usage

from eventpipe import __version__
from eventpipe.snowflake import SnowflakeNames, snowflake_sql
from eventpipe.tap import Options as ServiceOptions


class SnowflakeOptions(ServiceOptions):
    synopsis = "[service options] [--table NAME] [--stage NAME] [--pipe NAME] ..."
    longdesc = (
        "Print the Snowflake SQL (file format, stage, table, pipe, example query) "
        "that loads the batches eventpipe delivers with these options: bucket, "
        "prefix, format and compression are read as the service reads them."
    )
    optParameters = [
        ["table", None, "acm_events", "Target table."],
        ["stage", None, "acm_events_stage", "External stage on the bucket and prefix."],
        ["pipe", None, "acm_events_pipe", "Snowpipe name."],
        ["file-format", None, None, "File format name (default acm_events_xml or _json)."],
        [
            "storage-integration",
            None,
            "<your_storage_integration>",
            "Storage integration the stage uses (no keys in the SQL).",
        ],
    ]


class Options(usage.Options):
    synopsis = "<command> [options]"
    longdesc = "Tools for eventpipe; the service itself runs as `twistd eventpipe`."
    subCommands = [
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
    if options.subCommand == "snowflake-sql":
        names = SnowflakeNames(
            table=sub["table"],
            stage=sub["stage"],
            pipe=sub["pipe"],
            file_format=sub["file-format"] or "",
            storage_integration=sub["storage-integration"],
        )
        stream.write(
            snowflake_sql(sub["s3-bucket"], sub["s3-prefix"], sub["format"], sub["compress"], names)
        )
    return 0


def main() -> None:
    raise SystemExit(run(sys.argv[1:]))
