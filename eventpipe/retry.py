"""
Retrying with exponential backoff.

L{backoff_policy} is pure (no clock, no reactor); L{Retry} drives an
operation with an injected clock until it succeeds or is cancelled.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

T = TypeVar("T")


def backoff_policy(
    initial: float = 1.0,
    maximum: float = 300.0,
    factor: float = 2.0,
    jitter: Callable[[], float] = random.random,
) -> Callable[[int], float]:
    """
    A policy: attempt number (1 for the first failure) to delay in seconds.

    The delay grows from C{initial} by C{factor} per attempt up to
    C{maximum}; jitter takes up to a quarter off so that many instances (or
    many segments) failing together do not retry in lockstep.  The result
    never exceeds C{maximum} and is never below C{initial * 0.75}.
    """
    if initial <= 0 or maximum < initial or factor < 1:
        raise ValueError("need 0 < initial <= maximum and factor >= 1")

    def policy(attempt: int) -> float:
        exponent = max(attempt - 1, 0)
        # Avoid float overflow for very long outages.
        if exponent > 64:
            base = maximum
        else:
            base = min(initial * factor**exponent, maximum)
        return base * (1.0 - 0.25 * jitter())

    return policy


class Retry:
    """
    The retries of one operation: C{operation(attempt)} is called until it
    succeeds.  L{result} fires with the first success (cancelling it stops
    the retries, and cancels an attempt in progress); L{wake} cuts a wait
    short.

    @param delay_for: given the failure and the attempt number, how long to
        wait before the next attempt.
    @param on_failure: told of every failure with the delay chosen (for
        logging); it must not raise.
    """

    def __init__(
        self,
        clock: IReactorTime,
        operation: Callable[[int], Any],
        delay_for: Callable[[Failure, int], float],
        on_failure: Callable[[Failure, int, float], None] = lambda f, a, d: None,
    ) -> None:
        self._clock = clock
        self._operation = operation
        self._delay_for = delay_for
        self._on_failure = on_failure
        self._attempt = 0
        self._cancelled = False
        self._delayed: IDelayedCall | None = None
        self._current: Deferred[Any] | None = None
        self.result: Deferred[Any] = Deferred(self._cancel)
        self._try()

    def _try(self) -> None:
        self._delayed = None
        self._attempt += 1
        current = maybeDeferred(self._operation, self._attempt)
        self._current = current
        current.addCallbacks(self._succeeded, self._failed)

    def _succeeded(self, value: Any) -> None:
        self._current = None
        if not self._cancelled:
            self.result.callback(value)

    def _failed(self, failure: Failure) -> None:
        self._current = None
        if self._cancelled:
            return
        if failure.check(CancelledError):
            self._cancelled = True
            self.result.errback(failure)
            return
        try:
            delay = self._delay_for(failure, self._attempt)
        except Exception:
            self.result.errback()
            return
        self._on_failure(failure, self._attempt, delay)
        self._delayed = self._clock.callLater(delay, self._try)

    @property
    def waiting(self) -> bool:
        """Whether it waits for its next attempt now."""
        return self._delayed is not None and self._delayed.active()

    def wake(self) -> None:
        """
        If it waits for its next attempt, make that attempt now (something
        suggests the cause of the failure is gone).
        """
        if self._delayed is not None and self._delayed.active():
            self._delayed.cancel()
            self._try()

    def _cancel(self, result: Deferred[Any]) -> None:
        self._cancelled = True
        if self._delayed is not None and self._delayed.active():
            self._delayed.cancel()
        if self._current is not None:
            self._current.cancel()
