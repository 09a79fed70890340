"""
The receiving ends: a TCP (or TLS) connection, and UDP datagrams.  Thin:
bytes go to the sender's own L{EventFramer}, whole events go to the
L{Ingest} they were built with.  Who may connect, and how many, is decided
in L{EventReceiverFactory.buildProtocol}: before a byte is read.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from eventpipe.framing import EventFramer, Rejected

log = Logger(namespace="eventpipe")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Source(TypingProtocol):
    """Where events came from: a connection, or one datagram."""

    peer: str
    rejected_bytes: int
    rejected_pieces: int


class Ingest(TypingProtocol):
    """What a receiver hands its events to (see L{eventpipe.service.Ingest})."""

    event_tag: str
    max_event_size: int
    idle_timeout: float
    max_rejected_per_connection: int

    def cut_off(self, receiver: EventReceiver) -> None: ...

    def admit(self, address: Any) -> str | None: ...

    def connection_made(self, receiver: EventReceiver) -> bool: ...

    def connection_lost(self, receiver: EventReceiver) -> None: ...

    def accept(self, source: Source, events: list[bytes], rejected: list[Rejected]) -> None: ...


class EventReceiver(Protocol, TimeoutMixin):
    """One connection: frames its bytes and hands whole events over."""

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest
        self.framer = EventFramer(ingest.event_tag, ingest.max_event_size)
        self.peer = "?"
        self.rejected_bytes = 0
        self.rejected_pieces = 0
        self.cut = False

    def connectionMade(self) -> None:
        self.peer = describe(self.transport.getPeer())  # type: ignore[union-attr]
        if not self.ingest.connection_made(self):
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        if self.ingest.idle_timeout:
            self.setTimeout(self.ingest.idle_timeout)

    def dataReceived(self, data: bytes) -> None:
        self.resetTimeout()
        events, rejected = self.framer.feed(data)
        if events or rejected:
            self.ingest.accept(self, events, rejected)
        if self.rejected_bytes + self.framer.discarding > self.ingest.max_rejected_per_connection:
            self.ingest.cut_off(self)

    def timeoutConnection(self) -> None:
        log.info(
            "closing {peer}: nothing received for {seconds:g} s (--idle-timeout)",
            peer=self.peer,
            seconds=self.ingest.idle_timeout,
        )
        self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.setTimeout(None)
        rejected = self.framer.close()
        if rejected:
            self.ingest.accept(self, [], rejected)
        self.ingest.connection_lost(self)


class EventReceiverFactory(Factory):
    """
    Builds one L{EventReceiver} per connection, all feeding one ingest.  A
    connection the ingest does not admit (allow-list, connection limit) gets
    no protocol: Twisted closes it before reading anything.
    """

    noisy = False

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest

    def buildProtocol(self, addr: IAddress | None) -> EventReceiver | None:  # type: ignore[override]
        if addr is not None and self.ingest.admit(addr) is not None:
            return None
        receiver = EventReceiver(self.ingest)
        receiver.factory = self
        return receiver


class _Datagram:
    """One datagram, as a source of events."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.rejected_bytes = 0
        self.rejected_pieces = 0


class DatagramReceiver(DatagramProtocol):
    """
    UDP: each datagram holds one document (or several) and is framed on its
    own, through the same framer, spool and quarantine as TCP.
    """

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        host, port = addr[0], addr[1]
        address = _Address(host, port)
        if self.ingest.admit(address) is not None:
            return
        framer = EventFramer(self.ingest.event_tag, self.ingest.max_event_size)
        events, rejected = framer.feed(datagram)
        rejected += framer.close()
        if events or rejected:
            self.ingest.accept(_Datagram(f"udp {host}:{port}"), events, rejected)


class _Address:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.type = "UDP"


def parse_networks(texts: Iterable[str]) -> list[Network]:
    """
    C{10.0.0.0/8}, C{192.0.2.7} (one host), C{2001:db8::/32}.

    @raise ValueError: not an address or network.
    """
    return [ipaddress.ip_network(text.strip(), strict=False) for text in texts if text.strip()]


def allowed(host: str, networks: Sequence[Network]) -> bool:
    """Whether C{host} is in one of C{networks} (everyone when none)."""
    if not networks:
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        candidates.append(address.ipv4_mapped)
    return any(candidate in network for candidate in candidates for network in networks)


def describe(address: IAddress) -> str:
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is not None and port is not None:
        return f"{host}:{port}"
    return str(address)
