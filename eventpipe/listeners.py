"""
The services that take events in: TCP (and TLS) listeners, and UDP ports.
A port that cannot be bound stops start-up with one line.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from typing import Any, NoReturn

from twisted.application.service import Service
from twisted.internet.error import CannotListenError

from eventpipe.ingest.ingest import Ingest
from eventpipe.protocol import DatagramReceiver

LISTEN_BACKLOG = 1024


def listening_service(
    description: str, factory: Any, reactor: Any, backlog: int | None = None
) -> Service:
    """
    A service that listens on a server endpoint string.  Plain TCP goes
    straight to the reactor, without Twisted's endpoints module (it would
    load pyOpenSSL and cryptography in a process that has no TLS listener);
    anything else (ssl:, mtls:, unix:, systemd:, ...) through strports.

    @param backlog: for TCP when the description sets none.
    """
    from twisted.application.internet import TCPServer

    from eventpipe.config.endpoints import parse_tcp

    tcp = parse_tcp(description)
    if tcp is not None:
        port, interface, given = tcp
        chosen = given if given is not None else backlog if backlog is not None else 50
        return TCPServer(  # type: ignore[no-any-return]
            port, factory, backlog=chosen, interface=interface, reactor=reactor
        )
    from twisted.application import strports

    if backlog is not None:
        description = with_backlog(description, backlog)
    return strports.service(description, factory, reactor)  # type: ignore[no-any-return]


def with_backlog(description: str, backlog: int = LISTEN_BACKLOG) -> str:
    """
    ACM may open a connection per event: give plain TCP listeners a large
    backlog unless the description sets one.
    """
    if re.match(r"^(tcp6?|ssl|mtls):", description) and "backlog=" not in description:
        return f"{description}:backlog={backlog}"
    return description


class Listener(Service):
    """
    A listening endpoint service that, when it cannot listen, stops start-up
    with one line instead of a traceback.
    """

    def __init__(self, description: str, inner: Service, option: str = "--listen") -> None:
        self.description = description
        self.inner = inner
        self.option = option

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        try:
            self.inner.privilegedStartService()
        except CannotListenError as error:
            cannot_listen(f"{self.option} {self.description}", error)

    def startService(self) -> None:
        super().startService()
        self.inner.startService()

    def stopService(self) -> Any:
        super().stopService()
        return self.inner.stopService()


def cannot_listen(what: str, error: CannotListenError) -> NoReturn:
    """Stop start-up with one line saying which port, and why."""
    reason = getattr(error.socketError, "strerror", None) or str(error.socketError)
    sys.stderr.write(f"eventpipe: {what}: cannot listen: {reason}\n")
    raise SystemExit(1) from None


class DatagramService(Service):
    """
    A UDP port feeding the ingest; reading stops while ingest is paused.
    The port is bound before privileges are dropped (a port below 1024),
    and one that cannot be bound stops start-up with one line.
    """

    def __init__(self, reactor: Any, ingest: Ingest, interface: str, port: int) -> None:
        self.reactor = reactor
        self.ingest = ingest
        self.interface = interface
        self.port_number = port
        self.port: Any = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        try:
            self.port = self.reactor.listenUDP(
                self.port_number,
                DatagramReceiver(self.ingest),
                interface=self.interface,
                maxPacketSize=65535,
            )
        except CannotListenError as error:
            where = f"{self.interface}:{self.port_number}" if self.interface else self.port_number
            cannot_listen(f"--listen-udp {where}", error)
        # Nothing is read before the service starts.
        self.port.stopReading()

    def startService(self) -> None:
        super().startService()
        if self.port is None:
            self.privilegedStartService()
        self.ingest.datagram_ports.append(self.port)
        if not self.ingest.paused_for:
            self.port.startReading()

    def stopService(self) -> Any:
        super().stopService()
        if self.port is None:
            return None
        self.ingest.datagram_ports.remove(self.port)
        port, self.port = self.port, None
        return port.stopListening()


def loopback_only(where: str) -> bool:
    """Whether a listener's description binds only a loopback address."""
    match = re.search(r"interface=([^:]+|\[[^\]]+\])", where) or re.match(r"^udp (\S+):\d+$", where)
    if match is None:
        return False
    host = match.group(1).strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
