"""
The receiving ends: a TCP (or TLS) connection, and UDP datagrams.  Thin:
bytes go to the sender's own L{EventFramer}, whole events go to the
L{EventSink} (the ingest) they were built with.  Who may connect, and how
many, is decided in L{EventReceiverFactory.buildProtocol}: before a byte is
read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime, ISSLTransport
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from eventpipe.admission import describe
from eventpipe.framing.common import Rejected
from eventpipe.framing.framer import EventFramer
from eventpipe.framing.reads import ReadSplitter
from eventpipe.logs import Logger

log = Logger()


class Source(TypingProtocol):
    """Where events came from: a connection, or one datagram."""

    peer: str
    listener: str
    rejected_bytes: int
    rejected_pieces: int


class EventSink(TypingProtocol):
    """What a receiver hands its events to (see L{eventpipe.ingest.Ingest})."""

    clock: IReactorTime
    event_tag: str
    max_event_size: int
    idle_timeout: float
    max_rejected_per_connection: int

    def refusal(self, address: Any) -> str | None: ...

    def connection_made(self, receiver: EventReceiver) -> bool: ...

    def connection_lost(self, receiver: EventReceiver) -> None: ...

    def store(self, source: Source, events: list[bytes], rejected: list[Rejected]) -> None: ...

    def store_documents(self, source: Source, documents: bytes, count: int) -> None: ...

    def cut_off(self, receiver: EventReceiver) -> None: ...


class EventReceiver(Protocol, TimeoutMixin):
    """One connection: frames its bytes and hands whole events over."""

    def __init__(self, sink: EventSink) -> None:
        self.sink = sink
        self.splitter = ReadSplitter(sink.event_tag, sink.max_event_size)
        self.peer = "?"
        self.listener = "?"
        self.rejected_bytes = 0
        self.rejected_pieces = 0
        self.cut = False
        # Bytes read from this connection so far.
        self.bytes_read = 0
        self.host: str | None = None

    def callLater(self, period: float, func: Callable[[], object]) -> IDelayedCall:  # type: ignore[override]
        """The idle timeout (L{TimeoutMixin}) runs on the injected clock."""
        return self.sink.clock.callLater(period, func)

    def connectionMade(self) -> None:
        address = self.transport.getPeer()  # type: ignore[union-attr]
        self.peer = describe(address)
        self.host = getattr(address, "host", None)
        self.listener = listener_of(self.transport)
        if not self.sink.connection_made(self):
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        if self.sink.idle_timeout:
            self.setTimeout(self.sink.idle_timeout)

    def dataReceived(self, data: bytes) -> None:
        self.resetTimeout()
        self.bytes_read += len(data)
        documents, count, events, rejected = self.splitter.feed(data)
        if documents:
            self.sink.store_documents(self, documents, count)
        if events or rejected:
            self.sink.store(self, events, rejected)
        if (
            self.rejected_bytes + self.splitter.framer.discarding
            > self.sink.max_rejected_per_connection
        ):
            self.sink.cut_off(self)

    def timeoutConnection(self) -> None:
        log.info(
            "closing {peer}: nothing received for {seconds:g} s (--idle-timeout)",
            peer=self.peer,
            seconds=self.sink.idle_timeout,
        )
        self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.setTimeout(None)
        events, rejected = self.splitter.close()
        if events or rejected:
            self.sink.store(self, events, rejected)
        self.sink.connection_lost(self)


class EventReceiverFactory(Factory):
    """
    Builds one L{EventReceiver} per connection, all feeding one sink.  A
    connection the sink refuses (allow-list, connection limit, stopping)
    gets no protocol: Twisted closes it before reading anything.
    """

    noisy = False

    def __init__(self, sink: EventSink) -> None:
        self.sink = sink

    def buildProtocol(self, addr: IAddress | None) -> EventReceiver | None:  # type: ignore[override]
        if addr is not None and self.sink.refusal(addr) is not None:
            return None
        receiver = EventReceiver(self.sink)
        receiver.factory = self
        return receiver


class _Datagram:
    """One datagram, as a source of events."""

    def __init__(self, peer: str, listener: str) -> None:
        self.peer = peer
        self.listener = listener
        self.rejected_bytes = 0
        self.rejected_pieces = 0


class _Address:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.type = "UDP"


class DatagramReceiver(DatagramProtocol):
    """
    UDP: each datagram holds one document (or several) and is framed on its
    own, through the same framer, spool and quarantine as TCP.
    """

    def __init__(self, sink: EventSink) -> None:
        self.sink = sink

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        host, port = addr[0], addr[1]
        if self.sink.refusal(_Address(host, port)) is not None:
            return
        framer = EventFramer(self.sink.event_tag, self.sink.max_event_size)
        events, rejected = framer.feed(datagram)
        rejected += framer.close()
        if events or rejected:
            self.sink.store(
                _Datagram(f"{host}:{port}", listener_of(self.transport)), events, rejected
            )


def listener_of(transport: Any) -> str:
    """Which listener a transport came through: C{tcp 0.0.0.0:8080}, C{tls ...}, C{udp ...}."""
    try:
        host = transport.getHost()
    except Exception:
        return "?"
    kind = "tls" if ISSLTransport.providedBy(transport) else str(getattr(host, "type", "?")).lower()
    return f"{kind} {describe(host)}"
