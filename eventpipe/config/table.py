"""
The table of settings: every option of C{twistd eventpipe} once, with the
variables that set it, its default, its converter and its help.  The
option parser, the settings' defaults, C{--help} and the manual's option
reference are all read from it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from eventpipe.config.convert import (
    _account_url,
    _bucket,
    _choice,
    _container,
    _endpoint,
    _endpoint_url,
    _event_tag,
    _gcs_bucket,
    _instance_id,
    _non_negative_float,
    _positive_float,
    _positive_int,
    _positive_size,
    _prefix,
    _text,
)
from eventpipe.naming import COMPRESSIONS, FORMATS
from eventpipe.spool.layout import FSYNC_MODES

DEFAULT_LISTEN = "tcp:8080"


LOG_LEVELS = ("debug", "info", "warn", "error")


class Parameter(NamedTuple):
    """
    One option, the single source of everything about it: its name, the
    environment variables that set it (first found wins), its default in its
    real type, the converter that validates it (its C{expected} says what a
    valid value looks like), its help, and the L{Settings} field it fills.
    """

    name: str
    environment: Sequence[str]
    default: Any
    convert: Callable[[str], Any]
    help: str
    setting: str | None = None


PARAMETERS: list[Parameter] = [
    Parameter(
        "spool-dir",
        ("EVENTPIPE_SPOOL_DIR",),
        "./eventpipe-spool",
        _text,
        "Directory for events not yet delivered (current and sealed segments).",
    ),
    Parameter(
        "rotation-interval",
        ("EVENTPIPE_ROTATION_INTERVAL", "ROTATION_INTERVAL"),
        60.0,
        _positive_float,
        "Seal the current segment when its first event is this many seconds old.",
        setting="rotation_interval",
    ),
    Parameter(
        "max-file-size",
        ("EVENTPIPE_MAX_FILE_SIZE", "MAX_FILE_SIZE"),
        5 * 2**20,
        _positive_size,
        "Seal the current segment when it reaches this size: bytes, or a number with "
        "KB/MB/GB (powers of 1000) or KiB/MiB/GiB (powers of 1024). Default 5MiB.",
        setting="max_file_size",
    ),
    Parameter(
        "check-interval",
        ("EVENTPIPE_CHECK_INTERVAL", "CHECK_INTERVAL"),
        10.0,
        _positive_float,
        "Seconds between checks of the rotation conditions.",
        setting="check_interval",
    ),
    Parameter(
        "format",
        ("EVENTPIPE_FORMAT", "OUTPUT_FORMAT"),
        "xml",
        _choice(FORMATS),
        "Batch format: xml (one <EVENTS> root) or json (JSON Lines, one event a line).",
        setting="format",
    ),
    Parameter(
        "compress",
        ("EVENTPIPE_COMPRESS",),
        "none",
        _choice(COMPRESSIONS),
        "Compress batches: none or gzip (adds .gz to the key).",
        setting="compress",
    ),
    Parameter(
        "outbox",
        ("EVENTPIPE_OUTBOX",),
        None,
        _text,
        "Directory that receives batches when no S3 bucket, Azure container or GCS bucket "
        "is set, laid out as the bucket would be (not together with any of them). "
        "Default: <spool-dir>/outbox.",
    ),
    Parameter(
        "instance-id",
        ("EVENTPIPE_INSTANCE_ID",),
        None,
        _instance_id,
        "Goes into every object key; letters, digits, dots and hyphens. Default: this host's name.",
        setting="instance_id",
    ),
    Parameter(
        "event-tag",
        ("EVENTPIPE_EVENT_TAG",),
        "EVENT",
        _event_tag,
        "Root element name of one event.",
        setting="event_tag",
    ),
    Parameter(
        "max-event-size",
        ("EVENTPIPE_MAX_EVENT_SIZE",),
        2**20,
        _positive_size,
        "Largest event accepted; a larger one is quarantined (its first bytes) "
        "and the stream resynchronised. Default 1MiB.",
        setting="max_event_size",
    ),
    Parameter(
        "shutdown-timeout",
        ("EVENTPIPE_SHUTDOWN_TIMEOUT",),
        30.0,
        _non_negative_float,
        "On SIGTERM, seconds to keep shipping before stopping; what is left stays "
        "in the spool for the next start.",
        setting="shutdown_timeout",
    ),
    Parameter(
        "max-spool-size",
        ("EVENTPIPE_MAX_SPOOL_SIZE",),
        10**9,
        _positive_size,
        "When this many bytes wait in the spool, stop reading from connections "
        "(TCP back-pressure) until it drains below 90%. Default 1GB.",
        setting="max_spool_size",
    ),
    Parameter(
        "fsync",
        ("EVENTPIPE_FSYNC",),
        "seal",
        _choice(FSYNC_MODES),
        "never, seal (fsync each segment when it is sealed) or always (also after every write).",
    ),
    Parameter(
        "retry-max-delay",
        ("EVENTPIPE_RETRY_MAX_DELAY",),
        60.0,
        _positive_float,
        "Longest wait between two delivery attempts (backoff starts at "
        "--retry-initial-delay and doubles).",
        setting="retry_max",
    ),
    Parameter(
        "retry-initial-delay",
        ("EVENTPIPE_RETRY_INITIAL_DELAY",),
        1.0,
        _positive_float,
        "First wait after a failed delivery.",
        setting="retry_initial",
    ),
    Parameter(
        "s3-bucket",
        ("EVENTPIPE_S3_BUCKET", "S3_BUCKET", "BUCKET_NAME"),
        None,
        _bucket,
        "Deliver to this S3 bucket instead of the outbox.",
    ),
    Parameter(
        "s3-prefix",
        ("EVENTPIPE_S3_PREFIX", "S3_PREFIX"),
        "",
        _prefix,
        "Prefix of every key (acm and acm/ mean the same).",
        setting="prefix",
    ),
    Parameter(
        "s3-endpoint-url",
        ("EVENTPIPE_S3_ENDPOINT_URL",),
        None,
        _endpoint_url,
        "S3 endpoint (MinIO, other S3-compatible stores). Default: boto3's own "
        "resolution, which reads AWS_ENDPOINT_URL.",
    ),
    Parameter(
        "s3-region",
        ("EVENTPIPE_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
        None,
        _text,
        "S3 region. Default: boto3's own resolution.",
    ),
    Parameter(
        "azure-container",
        ("EVENTPIPE_AZURE_CONTAINER", "AZURE_STORAGE_CONTAINER"),
        None,
        _container,
        "Deliver to this Azure Blob Storage container instead of the outbox. "
        "Credentials: AZURE_STORAGE_CONNECTION_STRING, or else DefaultAzureCredential "
        "(managed identity, workload identity, environment, Azure CLI) for "
        "--azure-account-url.",
    ),
    Parameter(
        "azure-prefix",
        ("EVENTPIPE_AZURE_PREFIX",),
        "",
        _prefix,
        "Prefix of every blob name in the container (acm and acm/ mean the same).",
    ),
    Parameter(
        "azure-account-url",
        ("EVENTPIPE_AZURE_ACCOUNT_URL", "AZURE_STORAGE_ACCOUNT_URL"),
        None,
        _account_url,
        "The storage account's blob endpoint, https://ACCOUNT.blob.core.windows.net "
        "(or an emulator's). Default: the one in AZURE_STORAGE_CONNECTION_STRING.",
    ),
    Parameter(
        "gcs-bucket",
        ("EVENTPIPE_GCS_BUCKET", "GCS_BUCKET"),
        None,
        _gcs_bucket,
        "Deliver to this Google Cloud Storage bucket instead of the outbox. "
        "Credentials: Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, "
        "workload identity, the VM's service account); anonymous only against "
        "--gcs-endpoint-url.",
    ),
    Parameter(
        "gcs-prefix",
        ("EVENTPIPE_GCS_PREFIX",),
        "",
        _prefix,
        "Prefix of every object name in the bucket (acm and acm/ mean the same).",
    ),
    Parameter(
        "gcs-endpoint-url",
        ("EVENTPIPE_GCS_ENDPOINT_URL",),
        None,
        _endpoint_url,
        "A Cloud Storage emulator's URL (fake-gcs-server); requests to it are anonymous. "
        "Default: STORAGE_EMULATOR_HOST when set, else Google's endpoint.",
    ),
    Parameter(
        "max-connections",
        ("EVENTPIPE_MAX_CONNECTIONS",),
        1000,
        _positive_int,
        "Connections open at once; more are refused (closed at once, logged).",
        setting="max_connections",
    ),
    Parameter(
        "max-connections-per-host",
        ("EVENTPIPE_MAX_CONNECTIONS_PER_HOST",),
        100,
        _positive_int,
        "Connections open at once from one address: one host cannot take every "
        "--max-connections slot and lock ACM out; more are refused (closed at once, logged).",
        setting="max_connections_per_host",
    ),
    Parameter(
        "idle-timeout",
        ("EVENTPIPE_IDLE_TIMEOUT",),
        0.0,
        _non_negative_float,
        "Close a connection that sent nothing for this many seconds; 0 (the "
        "default) never does, as ACM may keep a quiet connection for hours.",
        setting="idle_timeout",
    ),
    Parameter(
        "metrics",
        ("EVENTPIPE_METRICS",),
        None,
        _endpoint,
        "Serve /metrics (Prometheus), /healthz, /readyz, /status (JSON) and the status "
        "page at / on this endpoint, e.g. tcp:9100:interface=127.0.0.1. Default: off.",
    ),
    Parameter(
        "upload-concurrency",
        ("EVENTPIPE_UPLOAD_CONCURRENCY",),
        2,
        _positive_int,
        "Uploads in flight at once (threads in the upload pool).",
        setting="upload_concurrency",
    ),
    Parameter(
        "render-timeout",
        ("EVENTPIPE_RENDER_TIMEOUT",),
        120.0,
        _positive_float,
        "Seconds a segment's render may take (5 MiB takes well under one); a "
        "render past it is abandoned and its worker process replaced. A segment "
        "whose render fails 3 times in a row is moved to <spool-dir>/failed.",
        setting="render_timeout",
    ),
    Parameter(
        "upload-timeout",
        ("EVENTPIPE_UPLOAD_TIMEOUT",),
        300.0,
        _positive_float,
        "Seconds one delivery attempt may take; an attempt past it is abandoned "
        "(its thread replaced) and retried with backoff.",
        setting="upload_timeout",
    ),
    Parameter(
        "log-level",
        ("EVENTPIPE_LOG_LEVEL",),
        "info",
        _choice(LOG_LEVELS),
        "Least important log lines written: debug (also one line per connection), "
        "info, warn or error.",
    ),
]


# What boto3 reads from the environment and eventpipe takes from an env file
# too (the process's environment beats the file; the S3 destination says
# what each one is to boto3).
AWS_FROM_ENV_FILE = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
)


# The Azure credential read from an env file (passed to the SDK, never logged).
AZURE_FROM_ENV_FILE = ("AZURE_STORAGE_CONNECTION_STRING",)

# Google's service-account key file, named in an env file (its path is
# given to the client; the key is never read by eventpipe nor logged).
GCS_FROM_ENV_FILE = ("GOOGLE_APPLICATION_CREDENTIALS",)


# Variables read besides those of the parameters.
OTHER_VARIABLES = frozenset(
    {
        "EVENTPIPE_ENV_FILE",
        "EVENTPIPE_LISTEN",
        "EVENTPIPE_PORT",
        "EVENTPIPE_ALLOW",
        "EVENTPIPE_LISTEN_UDP",
        "EVENTPIPE_REPAIR_ACM_TAG_NAMES",
        "EVENTPIPE_ALLOW_UNCONDITIONAL_WRITES",
        *AWS_FROM_ENV_FILE,
        *AZURE_FROM_ENV_FILE,
        *GCS_FROM_ENV_FILE,
    }
)


# EVENTPIPE_ variables that are no settings: the reactor-lag probe's interval
# (for the benchmark), and the tests' golden files.
NOT_SETTINGS = frozenset({"EVENTPIPE_LAG_INTERVAL", "EVENTPIPE_REGENERATE_GOLDEN"})


# What a SIGHUP applies to the running service, by option; every other
# change needs a restart.
RELOADABLE = frozenset(
    {
        "allow",
        "log-level",
        "max-connections",
        "max-connections-per-host",
        "idle-timeout",
        "rotation-interval",
        "check-interval",
        "retry-initial-delay",
        "retry-max-delay",
        "render-timeout",
        "upload-timeout",
        "shutdown-timeout",
        "max-spool-size",
    }
)


def known_variables() -> frozenset[str]:
    """Every variable an env file may set, or the environment may hold as eventpipe's."""
    return (
        OTHER_VARIABLES
        | NOT_SETTINGS
        | {name for parameter in PARAMETERS for name in parameter.environment}
    )


def defaults() -> dict[str, Any]:
    """Each L{Settings} field's default, from the table."""
    return {p.setting: p.default for p in PARAMETERS if p.setting}
