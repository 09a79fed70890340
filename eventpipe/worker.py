"""
The render worker: a long-lived process that renders segments, so that the
render never takes the interpreter lock from ingest -- the reactor keeps
reading sockets on one core while the worker validates and writes batches
on the other.  It imports no Twisted (it stays small).

The service starts it (see L{eventpipe.threads.ProcessWork}) and speaks to
it in JSON lines: a request on its standard input, the answer on its
standard output.  The worker ignores SIGTERM, SIGINT and SIGHUP (a stop of
the service, or systemd signalling the whole group, must not kill a render
the stop waits for) and ends when its standard input closes: when the
service stops it, or dies in any way, kill -9 included.

    python -m eventpipe.worker      # what the service runs
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import signal
import sys
from typing import Any

# What a worker may be asked to call.
ALLOWED = frozenset({"eventpipe.render.batch:render_segment"})
# Results that come back as dataclasses, by name.
RESULTS = {"RenderResult": "eventpipe.render.batch:RenderResult"}


def resolve(name: str) -> Any:
    """C{module:attribute} to the object it names."""
    module, _, attribute = name.partition(":")
    value: Any = importlib.import_module(module)
    for part in attribute.split("."):
        value = getattr(value, part)
    return value


# Whose fault a failed render is (see eventpipe.shipping.shipment): the segment's
# own (the render names it so), the machine's (a system error, memory, an
# import that fails after an upgrade in place), or not known from one
# failure (anything else: known once it repeats while other segments
# render).
SEGMENT, MACHINE, UNCLEAR = "segment", "machine", "unclear"


def fault_of(error: BaseException) -> str:
    if getattr(error, "segments_own", False):
        return SEGMENT
    if isinstance(error, (OSError, MemoryError, ImportError)):
        return MACHINE
    return UNCLEAR


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
            answer["value"] = _encode(resolve(request["call"])(*request["args"]))
            answer["ok"] = True
        except Exception as error:
            answer["ok"] = False
            answer["error"] = f"{type(error).__name__}: {error}"
            answer["errno"] = getattr(error, "errno", None)
            answer["fault"] = fault_of(error)
        answers.write(json.dumps(answer).encode("utf-8") + b"\n")
        answers.flush()


def main() -> None:
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(number, signal.SIG_IGN)
    # Ingest first: the render takes the CPU the reactor leaves.
    try:
        os.nice(5)
    except OSError:
        pass
    serve(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
