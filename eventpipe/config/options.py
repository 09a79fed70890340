"""
The option parser of C{twistd eventpipe} (and of the commands that take the
service's options): each value from the command line, else the
environment, else an env file, else the table's default.  A bad value
stops start-up with one line naming the option and where it was set.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.python import usage

from eventpipe.config.convert import (
    _bucket,
    _endpoint_url,
    _expect,
    _prefix,
    bucket_advice,
    format_size,
    prefix_advice,
)
from eventpipe.config.endpoints import check_endpoint, parse_networks, tls_free
from eventpipe.config.envfile import _nearest, read_env_file
from eventpipe.config.help import option_lines, print_version
from eventpipe.config.table import (
    AWS_FROM_ENV_FILE,
    AZURE_FROM_ENV_FILE,
    DEFAULT_LISTEN,
    GCS_FROM_ENV_FILE,
    PARAMETERS,
    Parameter,
    known_variables,
)
from eventpipe.naming import instance_id_from_hostname


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

    def _from_env_file(self, names: tuple[str, ...]) -> dict[str, str]:
        """What the env file says of C{names}, where the process's environment does not."""
        return {
            key: value
            for key, value in self._file.items()
            if key in names and value and not self.environ.get(key)
        }

    def aws_from_env_file(self) -> dict[str, str]:
        """What the env file says for boto3 (credentials, profile, endpoint)."""
        return self._from_env_file(AWS_FROM_ENV_FILE)

    def azure_from_env_file(self) -> dict[str, str]:
        """The Azure connection string the env file gives."""
        return self._from_env_file(AZURE_FROM_ENV_FILE)

    def gcs_from_env_file(self) -> dict[str, str]:
        """The service-account key file the env file names for Google's client."""
        return self._from_env_file(GCS_FROM_ENV_FILE)

    @property
    def prefix(self) -> str:
        """The prefix of the destination in use (S3's, Azure's or GCS's)."""
        if self["azure-container"]:
            return str(self["azure-prefix"])
        if self["gcs-bucket"]:
            return str(self["gcs-prefix"])
        return str(self["s3-prefix"])

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
        if self.gcs_from_env_file():
            parts.append(f"gcs=GOOGLE_APPLICATION_CREDENTIALS (in {self._file_path})")
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
        Exactly one destination: S3, Azure, GCS, or the outbox; and no detail of
        a destination without it (an endpoint or a prefix with no bucket
        would otherwise deliver into the outbox without a word).
        """
        for detail, destination in (
            ("s3-endpoint-url", "s3-bucket"),
            ("s3-prefix", "s3-bucket"),
            ("azure-account-url", "azure-container"),
            ("azure-prefix", "azure-container"),
            ("gcs-endpoint-url", "gcs-bucket"),
            ("gcs-prefix", "gcs-bucket"),
        ):
            if detail in self.sources and not self[destination]:
                raise usage.UsageError(
                    f"{self.sources[detail]}: given without --{destination}: set "
                    f"--{destination} (EVENTPIPE_{destination.upper().replace('-', '_')}) too, "
                    "or leave it out to deliver into the outbox"
                )
        given = [name for name in ("s3-bucket", "azure-container", "gcs-bucket") if self[name]]
        if len(given) > 1:
            raise usage.UsageError(
                f"{self.sources.get(given[-1], '--' + given[-1])}: one destination at a time: "
                f"--{given[0]} or --{given[1]}, not both"
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
