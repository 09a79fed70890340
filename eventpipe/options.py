"""
The options of C{twistd eventpipe}: parameters, converters, environment
fallbacks.

Every option has an environment fallback.  The command line beats the
environment, which beats the default.  A bad value stops start-up with one
line naming the option.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from twisted.python import usage

from eventpipe.naming import (
    COMPRESSIONS,
    FORMATS,
    instance_id_from_hostname,
    normalize_prefix,
    valid_instance_id,
)
from eventpipe.spool import FSYNC_MODES

DEFAULT_LISTEN = "tcp:8080"
LOG_LEVELS = ("debug", "info", "warn", "error")

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """
    C{5242880}, C{5MiB}, C{5MB}, C{512KiB}, C{1.5GB}: MB is 10**6 bytes,
    MiB is 2**20.

    @raise ValueError: not a size.
    """
    match = _SIZE.match(text)
    if match is None or match.group(2).lower() not in _UNITS:
        raise ValueError(text)
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def format_size(size: int) -> str:
    for unit, factor in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


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


def _expects(text: str) -> Callable[[Callable[[str], Any]], Callable[[str], Any]]:
    """Say, on a converter, what a valid value looks like (for error lines)."""

    def mark(convert: Callable[[str], Any]) -> Callable[[str], Any]:
        convert.expected = text  # type: ignore[attr-defined]
        return convert

    return mark


@_expects("a number of seconds above 0")
def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(text)
    return value


@_expects("a number of seconds, 0 or more")
def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise ValueError(text)
    return value


@_expects("a size such as 5242880, 5MiB, 5MB or 512KiB")
def _positive_size(text: str) -> int:
    value = parse_size(text)
    if value <= 0:
        raise ValueError(text)
    return value


@_expects("a whole number above 0")
def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(text)
    return value


def _choice(choices: Sequence[str]) -> Callable[[str], str]:
    """A converter to one of C{choices}, whatever the case it is written in."""

    def convert(text: str) -> str:
        chosen = text.strip().lower()
        if chosen not in choices:
            raise ValueError(text)
        return chosen

    convert.choices = tuple(choices)  # type: ignore[attr-defined]
    convert.expected = "one of " + ", ".join(choices)  # type: ignore[attr-defined]
    return convert


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@_expects("3 to 63 lower-case letters, digits, dots and hyphens")
def _bucket(text: str) -> str:
    """An S3 bucket name, by S3's rules (a pasted URL or path is refused)."""
    name = text.strip()
    if (
        not _BUCKET.match(name)
        or ".." in name
        or ".-" in name
        or "-." in name
        or re.match(r"^\d+\.\d+\.\d+\.\d+$", name)
    ):
        raise ValueError(text)
    return name


_CONTAINER = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$")


@_expects("3 to 63 lower-case letters, digits and single hyphens, not starting with one")
def _container(text: str) -> str:
    """An Azure Blob container name, by Azure's rules."""
    name = text.strip()
    if not _CONTAINER.match(name):
        raise ValueError(text)
    return name


@_expects("https://ACCOUNT.blob.core.windows.net, or an emulator's http(s) URL")
def _account_url(text: str) -> str:
    if not re.match(r"^https?://[^\s/]+", text.strip()):
        raise ValueError(text)
    return text.strip().rstrip("/")


def bucket_advice(text: str) -> str:
    """What to write instead of a bucket name that is not one."""
    rest = re.sub(r"^(s3a?|https?)://", "", text.strip())
    bucket, _, prefix = rest.partition("/")
    if bucket.endswith(".amazonaws.com"):
        bucket = bucket.split(".s3")[0]
    if _BUCKET.match(bucket) and bucket != text.strip():
        return f"use --s3-bucket {bucket}" + (f" --s3-prefix {prefix}" if prefix else "")
    return "3 to 63 lower-case letters, digits, dots and hyphens"


@_expects("an XML element name")
def _event_tag(text: str) -> str:
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_.-]*$", text):
        raise ValueError(text)
    return text


@_expects("letters, digits, dots and hyphens, at most 63")
def _instance_id(text: str) -> str:
    if not valid_instance_id(text):
        raise ValueError(text)
    return text


@_expects("a key prefix such as acm/")
def _prefix(text: str) -> str:
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text.strip()):
        # A pasted URL (s3://bucket/acm/): the bucket is not part of a prefix.
        raise ValueError(text)
    return normalize_prefix(text)


def prefix_advice(text: str) -> str:
    """What to write instead of a prefix that is a URL."""
    rest = re.sub(r"^[A-Za-z][A-Za-z0-9+.-]*://", "", text.strip())
    _, _, prefix = rest.partition("/")
    return f"a path below the bucket, not a URL: use --s3-prefix {prefix or 'acm/'}"


@_expects("an http:// or https:// URL, such as http://127.0.0.1:9000")
def _endpoint_url(text: str) -> str:
    url = text.strip()
    if not re.match(r"^https?://[^\s/]+", url):
        raise ValueError(text)
    return url


@_expects("a value")
def _text(text: str) -> str:
    return text


@_expects("a Twisted server endpoint string such as tcp:9100")
def _endpoint(text: str) -> str:
    try:
        validate_endpoint(text)
    except Exception:
        raise ValueError(text) from None
    return text


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
        "Directory that receives batches when no S3 bucket or Azure container is "
        "set, laid out as the bucket would be (not together with either). "
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
# too (the process's environment beats the file): keyword of boto3's
# Session, or None for the endpoint, which goes to the client.
AWS_FROM_ENV_FILE: dict[str, str | None] = {
    "AWS_ACCESS_KEY_ID": "aws_access_key_id",
    "AWS_SECRET_ACCESS_KEY": "aws_secret_access_key",
    "AWS_SESSION_TOKEN": "aws_session_token",
    "AWS_PROFILE": "profile_name",
    "AWS_ENDPOINT_URL": None,
}
# The Azure credential read from an env file (passed to the SDK, never logged).
AZURE_FROM_ENV_FILE = ("AZURE_STORAGE_CONNECTION_STRING",)
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


def read_again(options: Options) -> Options:
    """
    The settings read again as at the start: the same command line, the
    environment, the env file as it is now.

    @raise usage.UsageError: they are not valid now (the running ones stay).
    """
    fresh = type(options)(environ=options.environ)
    fresh.argv = list(options.argv)
    usage.Options.parseOptions(fresh, fresh.argv)
    return fresh


def changes(running: Options, fresh: Options) -> dict[str, tuple[Any, Any]]:
    """The options whose values differ, with (running, fresh) values."""
    names = {p.name for p in running.parameters} | {
        "allow",
        "listen",
        "listen-udp",
        "repair-acm-tag-names",
        "allow-unconditional-writes",
    }
    return {n: (running[n], fresh[n]) for n in sorted(names) if running[n] != fresh[n]}


class OwnOptionsFirst(usage.Options):
    """
    The C{--help} of a tool that takes the service's options too: the
    tool's own options first (those its classes below the service's
    options define), then the service's, under a heading of their own.
    """

    def own_options(self) -> set[str]:
        names = {"help", "version"}
        for cls in type(self).__mro__:
            if cls is Options:
                break
            for table in ("optFlags", "optParameters"):
                for line in cls.__dict__.get(table, ()):
                    names.add(line[0])
        return names

    def getUsage(self, width: int | None = None) -> str:
        everything = self.longOpt
        own = self.own_options()
        try:
            self.longOpt = [o for o in everything if o.rstrip("=") in own]
            head = super().getUsage(width)
            self.longOpt = [o for o in everything if o.rstrip("=") not in own]
            self.longdesc = ""  # said once, above
            tail = super().getUsage(width)
        finally:
            self.longOpt = everything
            del self.longdesc
        return head + "\nService options (as for twistd eventpipe):" + tail.partition(":")[2]


def print_version() -> None:
    """C{--version} of every eventpipe command: eventpipe's, not Twisted's."""
    from eventpipe import __version__

    print(f"eventpipe {__version__}")
    raise SystemExit(0)


def known_variables() -> frozenset[str]:
    """Every variable an env file may set, or the environment may hold as eventpipe's."""
    return (
        OTHER_VARIABLES
        | NOT_SETTINGS
        | {name for parameter in PARAMETERS for name in parameter.environment}
    )


def _nearest(key: str, known: Iterable[str], cutoff: float = 0.75) -> str:
    """C{" (did you mean NAME?)"} for the known name nearest C{key}; empty when none is near."""
    import difflib

    near = difflib.get_close_matches(key, sorted(known), n=1, cutoff=cutoff)
    return f" (did you mean {near[0]}?)" if near else ""


def help_text(name: str, environment: Sequence[str], default: Any, text: str) -> str:
    parts = [text]
    if default not in (None, "") and "Default" not in text:
        shown = f"{default:g}" if isinstance(default, float) else default
        parts.append(f"Default: {shown}.")
    if environment:
        parts.append("Environment: " + ", ".join(environment) + ".")
    return " ".join(parts)


def read_env_file(path: str) -> dict[str, str]:
    """
    Settings kept in a file as systemd's C{EnvironmentFile=}, Docker's
    C{--env-file} and people read them: C{KEY=VALUE} lines, C{#} comments,
    blank lines, an optional C{export }, values optionally in matching
    quotes (taken as they are: no expansion).

    @raise usage.UsageError: the file cannot be read, or a line is not
        C{KEY=VALUE}.
    """
    try:
        with open(path, encoding="utf-8") as stream:
            lines = stream.read().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise usage.UsageError(f"--env-file: cannot read {path!r}: {reason}") from None
    values: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith("export "):
            text = text[len("export ") :].lstrip()
        key, equals, value = text.partition("=")
        key, value = key.strip(), value.strip()
        if not equals or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            raise usage.UsageError(f"--env-file: {path}, line {number}: expected KEY=VALUE")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def option_lines(parameters: Sequence[Parameter]) -> list[list[Any]]:
    """C{optParameters} for parameters: no default there (see postOptions), help with env."""
    return [
        [p.name, None, None, help_text(p.name, p.environment, p.default, p.help)]
        for p in parameters
    ]


class SettingsOptions(usage.Options):
    """
    Options that fall back on the environment, then on an env file, then
    on their default; where each value came from is kept in C{sources}.
    Subclasses list their parameters in C{parameters}.
    """

    parameters: Sequence[Parameter] = ()
    optParameters = [
        [
            "env-file",
            None,
            None,
            "Read settings from this file of KEY=VALUE lines (the variables named "
            "under each option); the environment beats it, the command line beats "
            "both. Environment: EVENTPIPE_ENV_FILE.",
        ],
    ]

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.environ = os.environ if environ is None else environ
        self.sources: dict[str, str] = {}
        self._file: dict[str, str] = {}
        self._file_path = ""

    def opt_version(self) -> None:
        """Print eventpipe's version and exit."""
        print_version()

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        # What was given, to read the settings again (SIGHUP).
        self.argv = list(sys.argv[1:] if options is None else options)
        try:
            super().parseOptions(options)
        except usage.UsageError as error:
            # twistd would print the whole --help first; one line is clearer.
            sys.stderr.write(f"eventpipe: {error}\n")
            raise SystemExit(1) from None

    def _unknown_settings(self) -> None:
        """
        Nothing written down is silently ignored: a key of the env file, or
        an C{EVENTPIPE_} variable of the environment, that is not a setting
        stops start-up, naming the nearest one.  A near miss of a short
        historical name in the environment (C{S3_BUCKT}) is warned about.

        @raise usage.UsageError: an unknown setting.
        """
        known = known_variables()
        for key in sorted(set(self._file) - known):
            raise usage.UsageError(
                f"{self._file_path}: {key} is not a setting of eventpipe{_nearest(key, known)}"
            )
        for key in sorted(self.environ):
            if key in known:
                continue
            if key.startswith("EVENTPIPE_"):
                raise usage.UsageError(
                    f"{key} (in the environment) is not a setting of eventpipe"
                    f"{_nearest(key, known)}"
                )
            near = _nearest(key, {k for k in known if not k.startswith("EVENTPIPE_")}, 0.85)
            if near:
                sys.stderr.write(
                    f"eventpipe: warning: {key} (in the environment) is not a setting of "
                    f"eventpipe{near}; it is ignored\n"
                )

    def aws_from_env_file(self) -> dict[str, str]:
        """
        What the env file says for boto3 (credentials, profile, endpoint),
        where the process's environment does not say it already.
        """
        return {
            key: value
            for key, value in self._file.items()
            if key in AWS_FROM_ENV_FILE and value and not self.environ.get(key)
        }

    def azure_from_env_file(self) -> dict[str, str]:
        """The Azure connection string the env file gives, if the environment does not."""
        return {
            key: value
            for key, value in self._file.items()
            if key in AZURE_FROM_ENV_FILE and value and not self.environ.get(key)
        }

    @property
    def prefix(self) -> str:
        """The prefix of the destination in use (S3's or Azure's)."""
        return str(self["azure-prefix"] if self["azure-container"] else self["s3-prefix"])

    def lookup(self, variable: str) -> tuple[str, str] | None:
        """A variable's value and where it was found, or None."""
        if self.environ.get(variable, "") != "":
            return self.environ[variable], variable
        if self._file.get(variable, "") != "":
            return self._file[variable], f"{variable} in {self._file_path}"
        return None

    def postOptions(self) -> None:
        path = self["env-file"] or self.environ.get("EVENTPIPE_ENV_FILE") or ""
        if path:
            self._file, self._file_path = read_env_file(path), path
        self._unknown_settings()
        for name, environment, default, convert, *_ in self.parameters:
            raw, source = self[name], f"--{name}"
            if raw is None:
                for variable in environment:
                    found = self.lookup(variable)
                    if found is not None:
                        raw, source = found
                        break
            if raw is None:
                self[name] = default
                continue
            try:
                self[name] = convert(raw)
            except ValueError:
                if convert is _bucket:
                    expected = bucket_advice(raw)
                elif convert is _prefix:
                    expected = prefix_advice(raw)
                elif convert is _endpoint_url and "://" not in raw:
                    expected = f"an http:// or https:// URL: http://{raw.strip()}"
                else:
                    expected = _expect(convert)
                raise usage.UsageError(f"{source}: invalid value {raw!r} ({expected})") from None
            self.sources[name] = source

    def flag(self, name: str, variable: str) -> bool:
        """A flag given on the command line, or set in the environment or env file."""
        if self[name]:
            self.sources[name] = f"--{name}"
            return True
        found = self.lookup(variable)
        if found is None:
            return False
        value = found[0].strip().lower()
        if value in ("0", "false", "no", "off"):
            return False
        if value in ("1", "true", "yes", "on"):
            self.sources[name] = found[1]
            return True
        raise usage.UsageError(f"{found[1]}: invalid value {found[0]!r} (1/true/yes or 0/false/no)")

    def listed(self, name: str, variable: str) -> str:
        """
        A repeatable option: given on the command line, or else a
        comma-separated variable.

        @return: where the values came from.
        """
        if self[name]:
            source = f"--{name}"
        else:
            found = self.lookup(variable)
            if found is None:
                return ""
            self[name] = [part.strip() for part in found[0].split(",") if part.strip()]
            source = found[1]
        self.sources[name] = source
        return source

    def summary(self) -> str:
        """
        The effective settings, for the start-up log line: every setting,
        and where each one that is not the default came from.
        """
        parts = []
        for name in sorted(self.sources):
            value = self[name]
            if isinstance(value, (list, tuple)):
                value = ",".join(_shown(v) for v in value) or "-"
            elif isinstance(value, int) and not isinstance(value, bool) and "size" in name:
                value = format_size(value)
            parts.append(f"{name}={value} ({self.sources[name]})")
        aws = sorted(self.aws_from_env_file())
        if aws:
            # The names only: never a credential's value.
            parts.append(f"aws={','.join(aws)} (in {self._file_path})")
        if self.azure_from_env_file():
            parts.append(f"azure=AZURE_STORAGE_CONNECTION_STRING (in {self._file_path})")
        return "; ".join(parts) or "all defaults"


class Options(SettingsOptions):
    """Options of C{twistd eventpipe} (and of C{eventpipe check})."""

    synopsis = "[options]"
    longdesc = (
        "Receive the event stream of an Avigilon ACM 'Events - Generic XML' "
        "collaboration over TCP, spool it to local disk, and ship it as batch "
        "files (one <EVENTS> root, or JSON Lines) to S3, Azure Blob Storage or a local outbox."
    )
    parameters = PARAMETERS
    optParameters = option_lines(PARAMETERS)
    optFlags = [
        [
            "repair-acm-tag-names",
            None,
            "Join element names that ACM's guide prints with a space "
            "(<plasectrxPanel date> becomes <plasectrxPaneldate>) in events that are "
            "not well-formed because of them; well-formed events are never touched. "
            "Environment: EVENTPIPE_REPAIR_ACM_TAG_NAMES=1.",
        ],
        [
            "allow-unconditional-writes",
            None,
            "Deliver to an S3-compatible store or Azure endpoint that ignores conditional "
            "writes (If-None-Match: *), which the start-up probe and 'eventpipe check' "
            "detect; without this flag the service refuses such a store. With it, a second "
            "writer under this instance id or a lost sequence file can overwrite a delivered "
            "batch. Environment: EVENTPIPE_ALLOW_UNCONDITIONAL_WRITES=1.",
        ],
    ]

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        super().__init__(environ)
        self["listen"] = []
        self["allow"] = []
        self["listen-udp"] = []

    def opt_allow(self, network: str) -> None:
        self["allow"].append(network)

    opt_allow.__doc__ = (
        "Take connections (and datagrams) only from this address or network "
        "(10.0.0.5, 10.0.0.0/24, 2001:db8::/32); repeat for several. Others are "
        "closed before any byte is read, and logged. Default: anyone. "
        "Environment: EVENTPIPE_ALLOW (comma-separated)."
    )

    def opt_listen_udp(self, where: str) -> None:
        self["listen-udp"].append(where)

    opt_listen_udp.__doc__ = (
        "Also take events over UDP on PORT or ADDRESS:PORT (ACM sends over UDP "
        "unless 'Require TCP' is ticked): one document or more per datagram. UDP "
        "has no delivery guarantee on the network. Repeat for several. "
        "Environment: EVENTPIPE_LISTEN_UDP (comma-separated)."
    )

    def opt_listen(self, description: str) -> None:
        self["listen"].append(description)

    opt_listen.__doc__ = (
        "Where to listen, as a Twisted server endpoint string (tcp:8080, "
        "tcp:8080:interface=127.0.0.1, ssl:8443:privateKey=key.pem). Repeat for "
        "several. Default: tcp:8080. Environment: EVENTPIPE_LISTEN "
        "(comma-separated), or EVENTPIPE_PORT=N for tcp:N."
    )

    def postOptions(self) -> None:
        super().postOptions()
        self._listen()
        tls_free(self["listen"] + ([self["metrics"]] if self["metrics"] else []))
        self._allow()
        self._listen_udp()
        self["repair-acm-tag-names"] = self.flag(
            "repair-acm-tag-names", "EVENTPIPE_REPAIR_ACM_TAG_NAMES"
        )
        self["allow-unconditional-writes"] = self.flag(
            "allow-unconditional-writes", "EVENTPIPE_ALLOW_UNCONDITIONAL_WRITES"
        )
        if self["instance-id"] is None:
            self["instance-id"] = instance_id_from_hostname(socket.gethostname())
        if self["outbox"] is None:
            self["outbox"] = os.path.join(self["spool-dir"], "outbox")
        if os.path.exists(self["outbox"]) and not os.path.isdir(self["outbox"]):
            where = self.sources.get("outbox", "--outbox")
            raise usage.UsageError(f"{where}: {self['outbox']!r} is a file, not a directory")
        self._one_destination()
        if self["check-interval"] > self["rotation-interval"]:
            sys.stderr.write(
                f"eventpipe: warning: --check-interval {self['check-interval']:g} is longer than "
                f"--rotation-interval {self['rotation-interval']:g}: segments are sealed at most "
                f"every {self['check-interval']:g} s\n"
            )
        if self["max-event-size"] > 64 * 2**20:
            raise usage.UsageError("--max-event-size: at most 64MiB")
        if self["max-event-size"] > self["max-spool-size"]:
            raise usage.UsageError("--max-event-size: must not exceed --max-spool-size")
        if self["retry-initial-delay"] > self["retry-max-delay"]:
            raise usage.UsageError("--retry-initial-delay: must not exceed --retry-max-delay")

    def _one_destination(self) -> None:
        """
        Exactly one destination: S3, Azure, or the outbox; and no detail of
        a destination without it (an endpoint or a prefix with no bucket
        would otherwise deliver into the outbox without a word).
        """
        for detail, destination in (
            ("s3-endpoint-url", "s3-bucket"),
            ("s3-prefix", "s3-bucket"),
            ("azure-account-url", "azure-container"),
            ("azure-prefix", "azure-container"),
        ):
            if detail in self.sources and not self[destination]:
                raise usage.UsageError(
                    f"{self.sources[detail]}: given without --{destination}: set "
                    f"--{destination} (EVENTPIPE_{destination.upper().replace('-', '_')}) too, "
                    "or leave it out to deliver into the outbox"
                )
        given = [name for name in ("s3-bucket", "azure-container") if self[name]]
        if len(given) > 1:
            raise usage.UsageError(
                f"{self.sources.get('azure-container', '--azure-container')}: one destination "
                "at a time: --s3-bucket or --azure-container, not both"
            )
        if given and "outbox" in self.sources:
            raise usage.UsageError(
                f"{self.sources['outbox']}: one destination at a time: --outbox, or "
                f"--{given[0]}, not both"
            )

    def settings_fields(self) -> dict[str, Any]:
        """The L{Settings} these options make: the table's fields, and the rest."""
        fields = {p.setting: self[p.name] for p in self.parameters if p.setting}
        fields["prefix"] = self.prefix
        fields["allow"] = self["allow"]
        fields["repair_tag_names"] = self["repair-acm-tag-names"]
        return fields

    def _allow(self) -> None:
        from eventpipe.admission import parse_networks

        source = self.listed("allow", "EVENTPIPE_ALLOW")
        networks = []
        for text in self["allow"]:
            try:
                networks.extend(parse_networks([text]))
            except ValueError:
                raise usage.UsageError(
                    f"{source}: invalid value {text!r} (an address or network, such as 10.0.0.0/24)"
                ) from None
        self["allow"] = tuple(networks)

    def _listen_udp(self) -> None:
        source = self.listed("listen-udp", "EVENTPIPE_LISTEN_UDP")
        places = []
        for text in self["listen-udp"]:
            interface, _, port = text.rpartition(":")
            interface = interface.strip("[]")
            if not port.isdigit() or not 0 <= int(port) < 65536:
                raise usage.UsageError(f"{source}: invalid value {text!r} (PORT or ADDRESS:PORT)")
            places.append((interface, int(port)))
        self["listen-udp"] = places

    def _listen(self) -> None:
        source = self.listed("listen", "EVENTPIPE_LISTEN")
        if not self["listen"]:
            found = self.lookup("EVENTPIPE_PORT")
            if found is not None:
                port, source = found[0].strip(), found[1]
                if not port.isdigit() or not 0 < int(port) < 65536:
                    raise usage.UsageError(f"{source}: invalid value {port!r} (a TCP port number)")
                self["listen"] = [f"tcp:{port}"]
                self.sources["listen"] = source
            else:
                self["listen"] = [DEFAULT_LISTEN]
        for description in self["listen"]:
            check_endpoint(description, source or "--listen")


def _shown(value: Any) -> str:
    """One value of a repeatable setting, as it would be written."""
    if isinstance(value, tuple) and len(value) == 2:  # a UDP (interface, port)
        interface, port = value
        return f"{interface}:{port}" if interface else str(port)
    return str(value)


def _expect(convert: Callable[[str], Any]) -> str:
    """What a valid value of an option looks like, for error messages."""
    return str(getattr(convert, "expected", "a value"))


def defaults() -> dict[str, Any]:
    """Each L{Settings} field's default, from the table."""
    return {p.setting: p.default for p in PARAMETERS if p.setting}


_TCP_KEYS = frozenset({"port", "interface", "backlog"})


def parse_tcp(description: str) -> tuple[int, str, int | None] | None:
    """
    A plain C{tcp:} description (C{tcp:8080}, C{tcp:port=8080:interface=::1},
    C{backlog=}), read without importing Twisted's endpoints module (which
    loads pyOpenSSL and cryptography: ~19 MiB a process that has no TLS
    listener does not need).

    @return: (port, interface, backlog or None), or None when the
        description is not plain TCP.
    @raise ValueError: it is TCP but does not parse.
    """
    kind, _, rest = description.partition(":")
    if kind not in ("tcp", "tcp6") or "\\" in rest:
        return None
    fields: dict[str, str] = {}
    for number, part in enumerate(rest.split(":") if rest else []):
        key, equals, value = part.partition("=")
        if not equals:
            if number:
                raise ValueError(f"unexpected {part!r}")
            key, value = "port", part
        if key not in _TCP_KEYS or key in fields:
            raise ValueError(f"unknown or repeated {key!r}")
        fields[key] = value
    port = fields.get("port", "")
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"port {port!r}")
    backlog = fields.get("backlog")
    if backlog is not None and not backlog.isdigit():
        raise ValueError(f"backlog {backlog!r}")
    interface = fields.get("interface", "::" if kind == "tcp6" else "")
    return int(port), interface, int(backlog) if backlog is not None else None


def tls_free(descriptions: Sequence[str]) -> bool:
    """
    When every listener is plain TCP, keep pyOpenSSL (and cryptography,
    ~19 MiB together) out of this process: Twisted's reactor and endpoints
    load it when it can be imported, and run without it when it cannot.
    Called before twistd imports the reactor; where pyOpenSSL is loaded
    already (or a listener uses TLS) nothing changes.

    @return: whether pyOpenSSL is kept out.
    """
    if any(parse_tcp(description) is None for description in descriptions):
        return False
    if "OpenSSL" in sys.modules and sys.modules["OpenSSL"] is not None:
        return False
    sys.modules["OpenSSL"] = None  # type: ignore[assignment]
    return True


def parse_endpoint(description: str) -> Any:
    """
    Parse a server endpoint string without listening: building an endpoint
    object only keeps the reactor it is given, so none is needed (key and
    certificate files of C{ssl:} and C{mtls:} are read, and checked).

    @raise Exception: it does not parse (whatever the parser raised).
    @return: the endpoint (not listening).
    """
    from twisted.internet.endpoints import serverFromString

    return serverFromString(None, description)  # type: ignore[arg-type]


def validate_endpoint(description: str) -> None:
    """
    Check a server endpoint string: plain TCP without the endpoints module,
    anything else with it.

    @raise Exception: it does not parse.
    """
    if parse_tcp(description) is None:
        parse_endpoint(description)


def check_endpoint(description: str, source: str = "--listen") -> None:
    """
    Parse a server endpoint string without listening.

    @raise usage.UsageError: it does not parse.
    """
    try:
        validate_endpoint(description)
    except Exception as error:
        raise usage.UsageError(
            f"{source}: invalid endpoint {description!r} ({error or type(error).__name__})"
        ) from None
