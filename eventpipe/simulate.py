"""
An ACM "Events - Generic XML" simulator, for demos and load tests.

L{AcmEvents} makes the events (pure: numbers and a seeded random source in,
bytes out); L{simulate} sends them over Twisted client endpoints at a rate.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO
from xml.sax.saxutils import escape

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from zope.interface import implementer

DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'

_EVENT_TYPES = [
    ("Valid Credential", "Local Grant", "0", "", ""),
    ("Invalid Credential", "Invalid Card Format", "0", "FF0000", "FFFFFF"),
    ("Door Forced Open", "Door Forced Open", "1", "FF0000", "FFFFFF"),
    ("Door Held Open", "Door Held Open", "1", "FFA500", "000000"),
    ("Access Denied", "Denied: Expired Credential", "0", "FFFF00", "000000"),
]
_FIRST = [
    "J\u00fcrgen",
    "Ana",
    "Zo\u00eb",
    "Bj\u00f6rn",
    "S\u00f8ren",
    "Fran\u00e7ois",
    "Li",
    "Nguyen",
]
_LAST = [
    "Nguyen",
    "M\u00fcller",
    "O'Brien",
    "Garc\u00eda",
    "Smith & Sons",
    "\u00c5str\u00f6m",
    "Kim",
]
_DOORS = ["Stair 4 L2", "Lobby <Main>", "Loading Dock", "Server Room", "Roof Hatch"]


# What a malformed document is, in turn: names with a space, a wrong end
# tag, an event cut short, bytes outside any event.
MALFORMATIONS = ("spaced_name", "wrong_end_tag", "truncated", "outside")


class AcmEvents:
    """
    Realistic Generic XML events: the 42 fields ACM documents, in its order,
    numeric fields padded with spaces, non-ASCII names, escaped C{&} and
    C{<}.  The same seed gives the same events.
    """

    def __init__(self, seed: int = 0, start: float = 1754296600.0) -> None:
        self._random = random.Random(seed)
        self._start = start
        # Event numbers of one seed never meet another's (cn, Seqno).
        self._base = seed * 1_000_000_000

    def event(self, number: int) -> bytes:
        r = self._random
        moment_number = number
        number += self._base
        kind, name, alarm, background, foreground = r.choice(_EVENT_TYPES)
        moment = time.gmtime(self._start + moment_number)
        utc = time.strftime("%Y%m%d%H%M%SZ", moment)
        local = (
            time.strftime("%Y%m%d%H%M%S", time.gmtime(self._start + moment_number - 5 * 3600))
            + "-0500"
        )
        card = r.randrange(1, 99_999_999)
        panel = r.randrange(1, 64)
        point = r.randrange(1, 999)
        fields = [
            ("plasectrxGatewayDN", "cn=544de4aa06914073,ou=gateways,dc=plasec"),
            ("cn", f"e{number:015x}"),
            ("plasectrxRecdate", local),
            ("plasectrxPaneldate", local),
            ("plasectrxRecdateUTC", utc),
            ("plasectrxPaneldateUTC", utc),
            ("plasectrxLastacc", utc),
            ("plasectrxEvtypename", kind),
            ("plasectrxBackgroundColor", background),
            ("plasectrxForegroundColor", foreground),
            ("plasectrxAckBackgroundColor", ""),
            ("plasectrxAckForegroundColor", ""),
            ("plasectrxEventname", name),
            ("plasectrxPanelname", f"Panel {panel} Bldg A"),
            ("plasectrxSourcename", r.choice(_DOORS)),
            ("plasectrxSourcelocation", "Building A"),
            ("plasectrxSourcealtname", ""),
            ("plasectrxPointaddress", f"{point:>10}"),
            ("plasectrxPointDN", f"cn={point},ou=points,dc=plasec"),
            ("plasectrxEvtypeaddress", f"{r.randrange(1, 99):>3}"),
            (
                "plasectrxSourceDN",
                f"cn=100,cn=0,cn={panel},ou=panels,cn=544de4aa06914073,ou=gateways,dc=plasec",
            ),
            ("plasectrxSourcetype", "40"),
            ("plasectrxOperatorname", ""),
            ("plasectrxPri", str(r.choice([10, 50, 90]))),
            ("plasectrxMsg", ""),
            ("plasectrxIdentityDN", f"cn={r.getrandbits(40):010x},ou=identities,dc=plasec"),
            ("plasectrxCardno", f"{card:>16}"),
            ("plasectrxEmbossedno", str(card)),
            ("plasectrxLname", r.choice(_LAST)),
            ("plasectrxFname", r.choice(_FIRST)),
            ("plasectrxMi", ""),
            ("plasectrxIssuelevel", f"{-1:>8}"),
            ("plasectrxFacilityCode", str(r.randrange(1, 255))),
            ("plasectrxExpiredat", "19700101000000Z"),
            ("plasectrxActivdat", "19700101000000Z"),
            ("plasectrxIssuedat", "19700101000000Z"),
            ("plasectrxHasCamera", "0"),
            ("plasectrxHasNotes", "0"),
            ("plasectrxHasSoftTriggerSet", "0"),
            ("plasectrxShowVideo", "0"),
            ("plasectrxSeqno", str(number)),
            ("plasectrxIsAlarm", alarm),
        ]
        body = "\n".join(f"<{tag}>{escape(value)}</{tag}>" for tag, value in fields)
        return f"<EVENT>\n{body}\n</EVENT>".encode()

    def document(self, number: int, malformed: bool = False, kind: str = "") -> bytes:
        """
        One document as ACM puts it on the wire: declaration, event, newline.
        A malformed one is one of what ACM and its network really produce
        (L{MALFORMATIONS}, in turn unless C{kind} says which): the receiver
        must quarantine just that piece.
        """
        event = self.event(number)
        if not malformed:
            return DECLARATION + event + b"\n"
        kind = kind or MALFORMATIONS[number % len(MALFORMATIONS)]
        if kind == "spaced_name":
            # As ACM's guide prints the names (--repair-acm-tag-names joins them).
            event = event.replace(b"<plasectrxPaneldate>", b"<plasectrxPanel date>", 1)
            event = event.replace(b"</plasectrxPaneldate>", b"</plasectrxPanel date>", 1)
        elif kind == "wrong_end_tag":
            event = event.replace(b"</plasectrxPri>", b"</plasectrxPRI>", 1)
        elif kind == "truncated":
            # Cut short by a dropped connection or a restart of the sender.
            return DECLARATION + event[: len(event) // 2] + b"\n"
        elif kind == "outside":
            # Bytes outside any event (a keep-alive, a banner); the event after them is good.
            return b"ACM keep-alive\n" + DECLARATION + event + b"\n"
        else:
            raise ValueError(f"unknown malformation {kind!r}")
        return DECLARATION + event + b"\n"


@dataclass
class Progress:
    sent: int = 0
    malformed: int = 0
    errors: int = 0
    connections: int = 0
    began: float = 0.0
    messages: list[str] = field(default_factory=list)

    def rate(self, now: float) -> float | None:
        """Events per second so far; None in the first second (too early to say)."""
        elapsed = now - self.began
        return self.sent / elapsed if elapsed >= 1.0 else None


@implementer(IPushProducer)
class _Sender(Protocol):
    """
    One connection.  It registers itself as the transport's producer, so a
    receiver that stops reading (back-pressure) pauses this sender instead
    of filling memory.
    """

    def __init__(self, lost: Callable[[_Sender], None]) -> None:
        self._lost = lost
        self.paused = False

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.paused = True

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._lost(self)


class _SenderFactory(Factory):
    def __init__(self, lost: Callable[[_Sender], None]) -> None:
        self._lost = lost

    def buildProtocol(self, addr: Any) -> _Sender:
        return _Sender(self._lost)


def simulate(
    reactor: Any,
    endpoint: str,
    rate: float,
    count: int | None,
    duration: float | None,
    connections: int = 1,
    reconnect_per_event: bool = False,
    malformed_every: int = 0,
    seed: int = 0,
    out: TextIO | None = None,
) -> Deferred[Progress]:
    """
    Send events at C{rate} per second until C{count} are sent or
    C{duration} seconds have passed.

    @return: a Deferred that fires with the final L{Progress}.
    """
    run = _Run(reactor, endpoint, rate, count, duration, reconnect_per_event, malformed_every, seed)
    run.out = out if out is not None and out.isatty() else None
    if reconnect_per_event:
        run.start()
    else:
        attempts = [
            run.connect().addCallbacks(run.open_senders.append, run.failed)
            for _ in range(connections)
        ]
        DeferredList(attempts).addCallback(run.connected)
    return run.done


class _Run:
    """One run of the simulator: its senders, its pace, its progress."""

    def __init__(
        self,
        reactor: Any,
        endpoint: str,
        rate: float,
        count: int | None,
        duration: float | None,
        reconnect_per_event: bool,
        malformed_every: int,
        seed: int,
    ) -> None:
        self.reactor, self.endpoint, self.rate = reactor, endpoint, rate
        self.clock: IReactorTime = reactor
        self.duration = duration
        self.reconnect_per_event = reconnect_per_event
        self.malformed_every = malformed_every
        # Dated from the run's own time, not a fixed day.
        self.events = AcmEvents(seed, start=self.clock.seconds())
        self.progress = Progress(began=self.clock.seconds())
        self.done: Deferred[Progress] = Deferred()
        self.open_senders: list[_Sender] = []
        self.closing: list[Deferred[None]] = []
        self.next_sender = 0
        # Where the progress line goes (a terminal), and when it was last written.
        self.out: TextIO | None = None
        self.last_line = 0.0
        self.factory = _SenderFactory(self._lost)
        # With a duration: exactly duration x rate events (unless the
        # receiver holds the sender back for longer).
        self.target = count
        if duration is not None:
            self.target = min(round(duration * rate), count if count is not None else 1 << 62)
        self.loop = LoopingCall(self.tick)
        self.loop.clock = self.clock

    def _lost(self, sender: _Sender) -> None:
        if sender in self.open_senders:
            self.open_senders.remove(sender)

    def document(self) -> bytes:
        progress = self.progress
        number = progress.sent
        bad = self.malformed_every > 0 and (number + 1) % self.malformed_every == 0
        # Each kind of malformation in turn.
        kind = MALFORMATIONS[progress.malformed % len(MALFORMATIONS)] if bad else ""
        progress.malformed += bad
        progress.sent += 1
        return self.events.document(number, bad, kind)

    def failed(self, failure: Failure) -> None:
        self.progress.errors += 1
        message = failure.getErrorMessage()
        if message not in self.progress.messages:
            self.progress.messages.append(message)

    def connect(self) -> Deferred[Any]:
        d = clientFromString(self.reactor, self.endpoint).connect(self.factory)

        def connected(sender: _Sender) -> _Sender:
            self.progress.connections += 1
            return sender

        return d.addCallback(connected)

    def connected(self, _: object) -> None:
        """The long-lived connections are made (or not): start, or fail."""
        if not self.open_senders:
            problem = "; ".join(self.progress.messages)
            self.done.errback(
                Failure(ConnectionError(f"cannot connect to {self.endpoint}: {problem}"))
            )
            return
        self.start()

    def one_shot(self, data: bytes) -> None:
        def send(sender: _Sender) -> None:
            sender.transport.write(data)  # type: ignore[union-attr]
            sender.transport.loseConnection()  # type: ignore[union-attr]

        d = self.connect().addCallbacks(send, self.failed)
        self.closing.append(d)
        d.addBoth(lambda _: self.closing.remove(d))

    def finished(self) -> bool:
        if self.target is not None and self.progress.sent >= self.target:
            return True
        elapsed = self.clock.seconds() - self.progress.began
        return self.duration is not None and elapsed >= self.duration

    def tick(self) -> None:
        now = self.clock.seconds()
        progress = self.progress
        due = int((now - progress.began) * self.rate) + 1 - progress.sent
        if self.target is not None:
            due = min(due, self.target - progress.sent)
        for _ in range(max(due, 0)):
            if self.reconnect_per_event:
                self.one_shot(self.document())
                continue
            ready = [sender for sender in self.open_senders if not sender.paused]
            if not ready:
                # Every receiver pushes back: send the rest later.
                break
            sender = ready[self.next_sender % len(ready)]
            self.next_sender += 1
            sender.transport.write(self.document())  # type: ignore[union-attr]
        if self.out is not None and now - self.last_line >= 0.5:
            self.last_line = now
            current = progress.rate(now)
            shown = "-" if current is None else f"{current:,.0f}/s"
            self.out.write(f"\rsent {progress.sent:,}  rate {shown}  errors {progress.errors}   ")
            self.out.flush()
        if self.finished():
            self.loop.stop()

    def start(self, _: object = None) -> None:
        self.progress.began = self.clock.seconds()
        self.loop.start(0.01).addCallbacks(self.stop, self.done.errback)

    def stop(self, _: object) -> None:
        for sender in list(self.open_senders):
            sender.transport.loseConnection()  # type: ignore[union-attr]
        self._wait_closed()

    def _wait_closed(self) -> None:
        if self.open_senders or self.closing:
            self.clock.callLater(0.05, self._wait_closed)
            return
        if self.out is not None:
            self.out.write("\n")
        self.done.callback(self.progress)
