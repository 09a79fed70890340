"""
What the service samples on its clock: events received and delivered per
second for the status page's chart, and the reactor's lateness.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from eventpipe.logs import Logger
from eventpipe.metrics import Metrics

log = Logger(namespace="eventpipe.service")

# The counts kept for the status page's chart: one sample every RATE_INTERVAL
# seconds, for the last RATE_SAMPLES of them (five minutes).
RATE_INTERVAL = 2.0
RATE_SAMPLES = 151
# Seconds between two looks at the reactor's lateness (the benchmark sets a
# shorter one through EVENTPIPE_LAG_INTERVAL, to catch short stalls).
LAG_INTERVAL = float(os.environ.get("EVENTPIPE_LAG_INTERVAL", "") or 0.1)


class Rates:
    """Events received and delivered, sampled every L{RATE_INTERVAL} seconds."""

    def __init__(
        self, clock: IReactorTime, received: Callable[[], int], delivered: Callable[[], int]
    ) -> None:
        self.clock = clock
        self._received = received
        self._delivered = delivered
        self._samples: deque[tuple[float, int, int]] = deque(maxlen=RATE_SAMPLES)
        self._loop = LoopingCall(self._sample)
        self._loop.clock = clock

    def start(self) -> None:
        self._loop.start(RATE_INTERVAL, now=True).addErrback(
            lambda failure: log.failure("the rate samples stopped", failure)
        )

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def _sample(self) -> None:
        self._samples.append((self.clock.seconds(), self._received(), self._delivered()))

    def rates(self) -> dict[str, Any]:
        """Events received and delivered per second, one figure per sample, oldest first."""
        samples = list(self._samples)
        received, delivered = [], []
        for (then, got, sent), (now, got_now, sent_now) in zip(samples, samples[1:]):
            seconds = max(now - then, 1e-3)
            received.append(round((got_now - got) / seconds, 3))
            delivered.append(round((sent_now - sent) / seconds, 3))
        return {
            "interval_seconds": RATE_INTERVAL,
            "slots": RATE_SAMPLES - 1,
            "received_per_second": received,
            "delivered_per_second": delivered,
        }


class Lag:
    """The reactor's lateness, every L{LAG_INTERVAL} seconds, into a histogram."""

    def __init__(self, clock: IReactorTime, metrics: Metrics) -> None:
        self.clock = clock
        self.metrics = metrics
        self._due = 0.0
        self._loop = LoopingCall(self._measure)
        self._loop.clock = clock

    def start(self) -> None:
        self._due = self.clock.seconds() + LAG_INTERVAL
        self._loop.start(LAG_INTERVAL, now=False).addErrback(
            lambda failure: log.failure("the reactor lag measure stopped", failure)
        )

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def _measure(self) -> None:
        now = self.clock.seconds()
        self.metrics.reactor_lag.observe(max(0.0, now - self._due))
        self._due = now + LAG_INTERVAL
