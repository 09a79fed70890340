"""
The receiving end of an ACM connection.  Thin: bytes go to the connection's
own L{EventFramer}, whole events go to the L{IIngest} it was built with.
"""

from __future__ import annotations

from typing import Protocol as TypingProtocol

from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from eventpipe.framing import EventFramer, Rejected


class Ingest(TypingProtocol):
    """What a receiver hands its events to (see L{eventpipe.service.Ingest})."""

    event_tag: str
    max_event_size: int

    def connection_made(self, receiver: EventReceiver) -> bool: ...

    def connection_lost(self, receiver: EventReceiver) -> None: ...

    def accept(
        self, receiver: EventReceiver, events: list[bytes], rejected: list[Rejected]
    ) -> None: ...


class EventReceiver(Protocol):
    """One connection: frames its bytes and hands whole events over."""

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest
        self.framer = EventFramer(ingest.event_tag, ingest.max_event_size)
        self.peer = "?"

    def connectionMade(self) -> None:
        self.peer = describe(self.transport.getPeer())  # type: ignore[union-attr]
        if not self.ingest.connection_made(self):
            self.transport.abortConnection()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        events, rejected = self.framer.feed(data)
        if events or rejected:
            self.ingest.accept(self, events, rejected)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        rejected = self.framer.close()
        if rejected:
            self.ingest.accept(self, [], rejected)
        self.ingest.connection_lost(self)


class EventReceiverFactory(Factory):
    """Builds one L{EventReceiver} per connection, all feeding one ingest."""

    noisy = False

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest

    def buildProtocol(self, addr: IAddress | None) -> EventReceiver:
        receiver = EventReceiver(self.ingest)
        receiver.factory = self
        return receiver


def describe(address: IAddress) -> str:
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is not None and port is not None:
        return f"{host}:{port}"
    return str(address)
