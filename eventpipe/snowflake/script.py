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

from eventpipe.naming import normalize_prefix
from eventpipe.snowflake import aws, gcp
from eventpipe.snowflake import azure as azure_provider
from eventpipe.snowflake.parts import (
    header,
    part_2_objects,
    part_3_backfill,
    part_4_pipe,
    part_5_catch_up,
    part_6_monitoring,
    part_7_quarantine,
)
from eventpipe.snowflake.setup import AzureTarget, GCSTarget, Setup
from eventpipe.snowflake.sql import SnowflakeNames


def snowflake_sql(
    bucket: str | None,
    prefix: str,
    fmt: str,
    compress: str,
    names: SnowflakeNames = SnowflakeNames(),
    event_tag: str = "EVENT",
    azure: AzureTarget | None = None,
    gcs: GCSTarget | None = None,
) -> str:
    """
    The SQL that loads eventpipe's batches, one row per event, in numbered
    parts with the steps in AWS (or Azure, with C{azure}, or GCP, with
    C{gcs}) between them.

    @raise ValueError: a name is not a valid identifier, or the role ARN
        (or the Azure tenant or queue, or the Pub/Sub subscription) is not
        one Snowflake can use; the message names the option.
    """
    names = names.for_format(fmt)
    names.check()
    for target in (azure, gcs):
        if target is not None:
            target.check()
    if not bucket and azure is None and gcs is None:
        raise ValueError(
            "--s3-bucket (EVENTPIPE_S3_BUCKET), --azure-container or --gcs-bucket is needed: "
            "the script names where the batches are"
        )
    setup = Setup(
        bucket or "", normalize_prefix(prefix), fmt, compress, event_tag, names, azure, gcs
    )
    provider = (
        azure_provider.PROVIDER
        if azure is not None
        else gcp.PROVIDER
        if gcs is not None
        else aws.PROVIDER
    )
    first, access, notification = (
        provider.integration(setup),
        provider.access(setup),
        provider.notification(setup),
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
