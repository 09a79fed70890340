"""
Where blocking work runs: thread pools of their own (boto3 calls, file
copies, seals), started and stopped with the service, and the render
worker process (L{ProcessWork}, see L{eventpipe.worker}).

Stopping a pool joins its threads; a call stuck in a dead network must not
hold the reactor, nor the process, past the shutdown timeout.  So the join
runs in a helper thread, the reactor waits for it at most a bounded time,
and the pool's threads are daemons: whatever they were doing for a segment
that was not delivered stays in the spool and is shipped again.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.error import ProcessDone
from twisted.internet.interfaces import IReactorFromThreads, IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from eventpipe.logs import Logger
from eventpipe.worker import ALLOWED, MACHINE, RESULTS, UNCLEAR, resolve

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
        # Calls abandoned (see L{run}) that have not ended yet.
        self.abandoned = 0

    def start(self) -> None:
        if not self.pool.started:
            self.pool.start()

    def run(self, function: Callable[..., T], *args: Any) -> Deferred[T]:
        """
        Run C{function(*args)} in the pool; fires with its result.  Fails at
        once when the pool is stopped (Twisted would drop the work silently).

        Cancelling the result abandons the call: it fails at once with
        C{CancelledError}, and the pool takes one more thread until the
        abandoned call ends (a thread cannot be stopped), so that the work
        behind it does not wait for a call stuck in a dead network.
        """
        if not self.pool.started:
            return fail(RuntimeError(f"{self.name}: the thread pool is stopped"))
        inner = deferToThreadPool(self._reactor, self.pool, function, *args)
        abandoned = []

        def abandon(outer: Deferred[T]) -> None:
            abandoned.append(True)
            self.abandoned += 1
            self.pool.adjustPoolsize(self.pool.min, self.pool.max + 1)
            log.warn(
                "{pool}: a call was abandoned (past its time limit, or the stop's window "
                "closed); {count} such calls still run",
                pool=self.name,
                count=self.abandoned,
            )

        outer: Deferred[T] = Deferred(abandon)

        def ended(result: Any) -> None:
            if abandoned:
                self.abandoned -= 1
                if self.pool.started:
                    self.pool.adjustPoolsize(self.pool.min, max(self.pool.max - 1, 1))
                return
            if isinstance(result, Failure):
                outer.errback(result)
            else:
                outer.callback(result)

        inner.addBoth(ended)
        return outer

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


# The render worker process.


class WorkerDied(Exception):
    """
    The worker ended before it answered.

    @ivar fault: whose fault (see L{eventpipe.worker.fault_of}):
        C{machine} when it was killed from outside (the OOM killer, an
        operator), could not start or ended by itself (an upgrade in place),
        or was killed for another request's sake, or when this request
        waited behind the one it was working on; C{unclear} when it crashed
        (a signal such as SIGSEGV) working on this request.
    """

    def __init__(self, message: str, fault: str = MACHINE) -> None:
        super().__init__(message)
        self.fault = fault


class WorkFailed(Exception):
    """The worker answered that the work failed (C{fault} as for L{WorkerDied})."""

    def __init__(self, message: str, fault: str = UNCLEAR) -> None:
        super().__init__(message)
        self.fault = fault


# Signals that come from outside the worker, never from what it renders.
_FROM_OUTSIDE = frozenset({signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP})


def death_fault(reason: Failure, killed: bool, first: bool) -> tuple[str, str]:
    """
    Whose fault a worker's death is for one of its requests, and why: the
    request it was working on (C{first}), or one waiting behind it.
    """
    number = getattr(reason.value, "signal", None)
    code = getattr(reason.value, "exitCode", None)
    if killed:
        return MACHINE, "killed for another render's sake"
    if not first:
        return MACHINE, "it was waiting behind another render"
    if number in _FROM_OUTSIDE:
        return MACHINE, f"killed from outside by signal {number} (the OOM killer?)"
    if number is not None:
        return UNCLEAR, f"it crashed (signal {number}) on this segment"
    return MACHINE, f"it exited with status {code} (could it start? upgraded in place?)"


class _Worker(ProcessProtocol):
    """One worker process, and the requests it has not answered yet."""

    def __init__(self, work: ProcessWork) -> None:
        self.work = work
        self.buffer = b""
        self.errors = b""
        self.waiting: dict[int, Deferred[Any]] = {}
        self.ended: list[Deferred[None]] = []
        self.alive = True
        # Killed because a request of its was abandoned.
        self.killed = False

    @property
    def pid(self) -> int | None:
        return getattr(self.transport, "pid", None)

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            if line:
                self._answered(json.loads(line))

    def errReceived(self, data: bytes) -> None:
        self.errors += data
        *lines, self.errors = self.errors.split(b"\n")
        for line in lines:
            log.warn("render worker: {line}", line=line.decode("utf-8", "replace"))

    def _answered(self, answer: dict[str, Any]) -> None:
        d = self.waiting.pop(answer["id"], None)
        if d is None:
            return
        if answer["ok"]:
            value = answer["value"]
            if isinstance(value, dict) and value.get("type") in RESULTS:
                value = resolve(RESULTS[value["type"]])(**value["fields"])
            d.callback(value)
        elif answer.get("errno") is not None:
            d.errback(OSError(answer["errno"], answer["error"]))
        else:
            d.errback(WorkFailed(answer["error"], answer.get("fault", UNCLEAR)))

    def processEnded(self, reason: Failure) -> None:
        self.alive = False
        self.work._ended(self)
        waiting, self.waiting = self.waiting, {}
        for number in sorted(waiting):
            fault, why = death_fault(reason, self.killed, number == min(waiting))
            waiting[number].errback(
                WorkerDied(f"the render worker ended: {reason.getErrorMessage()}; {why}", fault)
            )
        if not reason.check(ProcessDone) and self.work.running and not self.killed:
            log.warn(
                "a render worker ended: {reason}; the next render starts a new one",
                reason=reason.getErrorMessage(),
            )
        ended, self.ended = self.ended, []
        for d in ended:
            d.callback(None)


class ProcessWork:
    """
    A L{BlockingWork} whose work runs in worker processes (at most
    C{workers}, started when work comes; each render goes to the least busy).

    @param argv: a worker's command (this interpreter, C{-m eventpipe.worker}).
    """

    def __init__(
        self,
        reactor: IReactorProcess,
        clock: IReactorTime,
        name: str = "eventpipe-render",
        argv: list[str] | None = None,
        workers: int = 1,
    ) -> None:
        self._reactor = reactor
        self._clock = clock
        self.name = name
        self.argv = argv or [sys.executable, "-m", "eventpipe.worker"]
        self.workers = max(1, workers)
        self._workers: list[_Worker] = []
        self._next = 0
        self.running = False

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self._workers if w.pid is not None]

    @property
    def pid(self) -> int | None:
        """The first worker's process id (None when none runs)."""
        pids = self.pids
        return pids[0] if pids else None

    def start(self) -> None:
        self.running = True

    def _spawn(self) -> _Worker:
        worker = _Worker(self)
        self._reactor.spawnProcess(
            worker,
            self.argv[0],
            self.argv,
            env=dict(os.environ),
            childFDs={0: "w", 1: "r", 2: "r"},
        )
        self._workers.append(worker)
        log.debug("render worker started, pid {pid}", pid=worker.pid)
        return worker

    def _choose(self) -> _Worker:
        idle = [w for w in self._workers if not w.waiting]
        if idle:
            return idle[0]
        if len(self._workers) < self.workers:
            return self._spawn()
        return min(self._workers, key=lambda w: len(w.waiting))

    def run(self, function: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """Call C{function(*args)} in a worker; fires with its result."""
        if not self.running:
            return fail(RuntimeError(f"{self.name}: stopped"))
        name = f"{function.__module__}:{function.__qualname__}"
        if name not in ALLOWED:
            return fail(ValueError(f"{name} may not run in the worker"))
        worker = self._choose()
        self._next += 1
        number = self._next

        def abandon(d: Deferred[Any]) -> None:
            # The request ran past its time (or its shipment stopped): the
            # worker may be stuck in it, so it goes, and the next request
            # starts a new one.
            if worker.waiting.pop(number, None) is not None:
                self._kill(worker)

        d: Deferred[Any] = Deferred(abandon)
        worker.waiting[number] = d
        request = {"id": number, "call": name, "args": list(args)}
        assert worker.transport is not None
        worker.transport.write(json.dumps(request).encode("utf-8") + b"\n")
        return d

    def _ended(self, worker: _Worker) -> None:
        if worker in self._workers:
            self._workers.remove(worker)

    def _kill(self, worker: _Worker) -> None:
        """End a worker now; new work goes to another."""
        self._ended(worker)
        if worker.alive and worker.transport is not None:
            worker.killed = True
            log.warn(
                "killing render worker {pid}: its render was abandoned (past --render-timeout, "
                "or the stop's window closed)",
                pid=worker.pid,
            )
            try:
                worker.transport.signalProcess("KILL")
            except Exception:
                pass

    def stop(self, timeout: float = 5.0) -> Deferred[None]:
        """
        Close the workers' input: each ends once its render (if any) is
        done.  Those still running after C{timeout} seconds are killed.
        """
        self.running = False
        workers = [w for w in self._workers if w.alive]
        if not workers:
            return succeed(None)
        ending = []
        for worker in workers:
            d: Deferred[None] = Deferred()
            worker.ended.append(d)
            ending.append(d)
            assert worker.transport is not None
            worker.transport.closeStdin()
        done: Deferred[Any] = DeferredList(ending)

        def kill(result: object, timeout: float) -> None:
            for worker in workers:
                if worker.alive and worker.transport is not None:
                    try:
                        worker.transport.signalProcess("KILL")
                    except Exception:
                        pass

        done.addTimeout(timeout, self._clock, onTimeoutCancel=kill)
        done.addCallback(lambda _: None)
        return done
