"""
Where eventpipe listens and whom it lets in: server endpoint strings
(plain TCP read without Twisted's endpoints module) and the allow-list's
networks.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from twisted.python import usage

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


def parse_networks(texts: Iterable[str]) -> list[Network]:
    """
    C{10.0.0.0/8}, C{192.0.2.7} (one host), C{2001:db8::/32}.

    @raise ValueError: not an address or network.
    """
    return [ipaddress.ip_network(text.strip(), strict=False) for text in texts if text.strip()]


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
