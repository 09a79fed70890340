"""
Who may connect: the allow-list, the connection limit, and no new
connections while stopping.  Decided before a byte is read; refusals are
counted and logged at most once a second per reason.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from twisted.internet.interfaces import IAddress, IReactorTime

from eventpipe.config.endpoints import Network
from eventpipe.logs import Logger
from eventpipe.metrics import Metrics

log = Logger()

NOT_ALLOWED = "not_allowed"
MAX_CONNECTIONS = "max_connections"
PER_HOST = "max_connections_per_host"
SHUTTING_DOWN = "shutting_down"
NOT_EVENTS = "not_events"


class Admission:
    """
    @param allow: networks that may send (everyone when empty).
    @param max_connections: connections open at once.
    @param max_per_host: connections open at once from one address.
    """

    def __init__(
        self,
        clock: IReactorTime,
        metrics: Metrics,
        allow: Sequence[Network] = (),
        max_connections: int = 1000,
        max_per_host: int = 100,
    ) -> None:
        self._clock = clock
        self._metrics = metrics
        self.allow = tuple(allow)
        self.max_connections = max_connections
        self.max_per_host = max_per_host
        self.open = True
        self._last_logged: dict[str, tuple[float, int]] = {}

    def close(self) -> None:
        """Refuse every new connection from now on (stopping)."""
        self.open = False

    def refusal(self, address: Any, connections: int, from_host: int = 0) -> str | None:
        """
        Whether a connection (or a datagram) from C{address} is refused,
        with C{connections} open now, C{from_host} of them from its address.

        @return: None to take it, or the reason (logged and counted).
        """
        reason = None
        host = getattr(address, "host", None)
        if host is not None and not allowed(host, self.allow):
            reason = NOT_ALLOWED
        elif getattr(address, "type", "TCP") != "UDP":
            if not self.open:
                reason = SHUTTING_DOWN
            elif connections >= self.max_connections:
                reason = MAX_CONNECTIONS
            elif from_host >= self.max_per_host:
                reason = PER_HOST
        if reason is not None:
            self.refused(reason, describe(address))
        return reason

    def refused(self, reason: str, peer: str) -> None:
        """Count a refusal; log it, at most once a second per reason."""
        self._metrics.connections_refused.labels(reason).inc()
        now = self._clock.seconds()
        last, suppressed = self._last_logged.get(reason, (float("-inf"), 0))
        if now - last < 1.0:
            self._last_logged[reason] = (last, suppressed + 1)
            return
        self._last_logged[reason] = (now, 0)
        log.warn(
            "refused {peer}: {why}{more}",
            peer=peer,
            why={
                NOT_ALLOWED: "not in --allow",
                MAX_CONNECTIONS: f"{self.max_connections} connections open (--max-connections)",
                PER_HOST: f"{self.max_per_host} connections open from that address "
                "(--max-connections-per-host)",
                SHUTTING_DOWN: "shutting down",
            }[reason],
            more=f" ({suppressed} more refused in the last second)" if suppressed else "",
        )


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
