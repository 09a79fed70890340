"""
Rendering in a long-lived worker process, so that the render never takes
the interpreter lock from ingest: the reactor keeps reading sockets on one
core while the worker validates and writes batches on the other.

The service starts it with C{reactor.spawnProcess} and speaks to it in JSON
lines: a request on its standard input, the answer on its standard output.
The worker ignores SIGTERM, SIGINT and SIGHUP (a stop of the service, or
systemd signalling the whole group, must not kill a render the stop waits
for) and ends when its standard input closes: when the service stops it,
or dies in any way, kill -9 included.  If the worker dies, what it was
rendering fails (and is retried like any failed attempt) and the next
render starts a new one.

    python -m eventpipe.worker      # what the service runs
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ProcessDone
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from eventpipe.logs import Logger

log = Logger()

# What a worker may be asked to call.
ALLOWED = frozenset({"eventpipe.render:render_segment"})
# Results that come back as dataclasses, by name.
_RESULTS = {"RenderResult": "eventpipe.render:RenderResult"}


class WorkerDied(Exception):
    """The worker ended before it answered."""


def _resolve(name: str) -> Any:
    module, _, attribute = name.partition(":")
    value: Any = importlib.import_module(module)
    for part in attribute.split("."):
        value = getattr(value, part)
    return value


class _Conversation(ProcessProtocol):
    def __init__(self, work: ProcessWork) -> None:
        self.work = work
        self.buffer = b""
        self.errors = b""

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            if line:
                self.work._answered(json.loads(line))

    def errReceived(self, data: bytes) -> None:
        self.errors += data
        *lines, self.errors = self.errors.split(b"\n")
        for line in lines:
            log.warn("render worker: {line}", line=line.decode("utf-8", "replace"))

    def processEnded(self, reason: Failure) -> None:
        self.work._ended(self, reason)


class ProcessWork:
    """
    A L{eventpipe.threads.BlockingWork} whose work runs in a worker process.

    @param argv: the worker's command (this interpreter, C{-m eventpipe.worker}).
    """

    def __init__(
        self,
        reactor: IReactorProcess,
        clock: IReactorTime,
        name: str = "eventpipe-render",
        argv: list[str] | None = None,
    ) -> None:
        self._reactor = reactor
        self._clock = clock
        self.name = name
        self.argv = argv or [sys.executable, "-m", "eventpipe.worker"]
        self._conversation: _Conversation | None = None
        self._transport: Any = None
        self._waiting: dict[int, Deferred[Any]] = {}
        self._next = 0
        self._running = False
        self._ended_waiters: list[Deferred[None]] = []

    @property
    def pid(self) -> int | None:
        return getattr(self._transport, "pid", None)

    def start(self) -> None:
        self._running = True

    def _spawn(self) -> None:
        self._conversation = _Conversation(self)
        self._transport = self._reactor.spawnProcess(
            self._conversation,
            self.argv[0],
            self.argv,
            env=dict(os.environ),
            childFDs={0: "w", 1: "r", 2: "r"},
        )
        log.debug("render worker started, pid {pid}", pid=self.pid)

    def run(self, function: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """Call C{function(*args)} in the worker; fires with its result."""
        if not self._running:
            return fail(RuntimeError(f"{self.name}: stopped"))
        name = f"{function.__module__}:{function.__qualname__}"
        if name not in ALLOWED:
            return fail(ValueError(f"{name} may not run in the worker"))
        if self._transport is None:
            self._spawn()
        self._next += 1
        d: Deferred[Any] = Deferred()
        self._waiting[self._next] = d
        request = {"id": self._next, "call": name, "args": list(args)}
        self._transport.write(json.dumps(request).encode("utf-8") + b"\n")
        return d

    def _answered(self, answer: dict[str, Any]) -> None:
        d = self._waiting.pop(answer["id"], None)
        if d is None:
            return
        if answer["ok"]:
            value = answer["value"]
            if isinstance(value, dict) and value.get("type") in _RESULTS:
                value = _resolve(_RESULTS[value["type"]])(**value["fields"])
            d.callback(value)
        elif answer.get("errno") is not None:
            d.errback(OSError(answer["errno"], answer["error"]))
        else:
            d.errback(RuntimeError(answer["error"]))

    def _ended(self, conversation: _Conversation, reason: Failure) -> None:
        if conversation is self._conversation:
            self._conversation = None
            self._transport = None
        waiting, self._waiting = self._waiting, {}
        for d in waiting.values():
            d.errback(WorkerDied(f"the render worker ended: {reason.getErrorMessage()}"))
        if not reason.check(ProcessDone) and self._running:
            log.warn(
                "the render worker ended: {reason}; the next render starts a new one",
                reason=reason.getErrorMessage(),
            )
        ended, self._ended_waiters = self._ended_waiters, []
        for d in ended:
            d.callback(None)

    def stop(self, timeout: float = 5.0) -> Deferred[None]:
        """
        Close the worker's input: it ends once its render (if any) is done.
        Killed if it has not after C{timeout} seconds.
        """
        self._running = False
        if self._transport is None:
            return succeed(None)
        done: Deferred[None] = Deferred()
        self._ended_waiters.append(done)
        transport = self._transport
        transport.closeStdin()

        def kill(result: object, timeout: float) -> None:
            try:
                transport.signalProcess("KILL")
            except Exception:
                pass

        done.addTimeout(timeout, self._clock, onTimeoutCancel=kill)
        return done


# The worker's side.


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"type": type(value).__name__, "fields": dataclasses.asdict(value)}
    return value


def serve(requests: Any, answers: Any) -> None:
    """Answer requests, one JSON line each, until the input ends."""
    for line in requests:
        if not line.strip():
            continue
        request = json.loads(line)
        answer: dict[str, Any] = {"id": request["id"]}
        try:
            if request["call"] not in ALLOWED:
                raise ValueError(f"{request['call']} may not run here")
            answer["value"] = _encode(_resolve(request["call"])(*request["args"]))
            answer["ok"] = True
        except Exception as error:
            answer["ok"] = False
            answer["error"] = f"{type(error).__name__}: {error}"
            answer["errno"] = getattr(error, "errno", None)
        answers.write(json.dumps(answer).encode("utf-8") + b"\n")
        answers.flush()


def main() -> None:
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(number, signal.SIG_IGN)
    serve(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
