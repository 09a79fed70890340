"""
Blocking work (boto3 calls, file copies, the render) in thread pools of
their own, started and stopped with the service.

Stopping a pool joins its threads; a call stuck in a dead network must not
hold the reactor, nor the process, past the shutdown timeout.  So the join
runs in a helper thread, the reactor waits for it at most a bounded time,
and the pool's threads are daemons: whatever they were doing for a segment
that was not delivered stays in the spool and is shipped again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from eventpipe.logs import Logger

T = TypeVar("T")

log = Logger()


class BlockingWork(Protocol):
    """Somewhere to run blocking calls: L{ThreadedWork}, or a test double."""

    def start(self) -> None: ...

    def run(self, function: Callable[..., Any], *args: Any) -> Deferred[Any]: ...

    def stop(self, timeout: float = 5.0) -> Deferred[None]: ...


class DaemonThreadPool(ThreadPool):
    """A thread pool whose threads never keep the process alive."""

    @staticmethod
    def threadFactory(*args: Any, **kwargs: Any) -> threading.Thread:  # type: ignore[override]
        return threading.Thread(*args, daemon=True, **kwargs)


class ThreadedWork:
    """
    A thread pool with the reactor that hears back from it.

    @param reactor: where results come back (C{callFromThread}).
    @param clock: bounds the wait at L{stop}.
    @param pool: a pool to use instead of a new L{DaemonThreadPool} (tests
        pass one that runs work synchronously).
    """

    def __init__(
        self,
        reactor: IReactorFromThreads,
        clock: IReactorTime,
        threads: int,
        name: str,
        pool: ThreadPool | None = None,
    ) -> None:
        self._reactor = reactor
        self._clock = clock
        self.name = name
        self.pool = pool if pool is not None else DaemonThreadPool(0, threads, name)

    def start(self) -> None:
        if not self.pool.started:
            self.pool.start()

    def run(self, function: Callable[..., T], *args: Any) -> Deferred[T]:
        """
        Run C{function(*args)} in the pool; fires with its result.  Fails at
        once when the pool is stopped (Twisted would drop the work silently).
        """
        if not self.pool.started:
            return fail(RuntimeError(f"{self.name}: the thread pool is stopped"))
        return deferToThreadPool(self._reactor, self.pool, function, *args)

    def stop(self, timeout: float = 5.0) -> Deferred[None]:
        """
        Let the pool's threads finish what they are doing and end.  Fires
        when they have, or after C{timeout} seconds (the threads left are
        daemons and end with the process).
        """
        if not self.pool.started:
            return succeed(None)
        done: Deferred[None] = Deferred()

        def joined() -> None:
            if not done.called:
                done.callback(None)

        def join() -> None:
            self.pool.stop()
            self._reactor.callFromThread(joined)

        threading.Thread(target=join, name=f"{self.name}-stop", daemon=True).start()

        def gave_up(result: object, timeout: float) -> None:
            log.warn(
                "{pool}: work still running after {timeout:g} s; not waiting for it",
                pool=self.name,
                timeout=timeout,
            )

        done.addTimeout(timeout, self._clock, onTimeoutCancel=gave_up)
        return done
