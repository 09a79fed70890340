"""
Logging: eventpipe's loggers honour C{--log-level}, and a JSON Lines
observer for C{twistd --logger} that log shippers read as it is.

    twistd -n --logger=eventpipe.logs.json eventpipe ...

writes one flat JSON object per line to standard output::

    {"time": "2026-11-30T23:15:08.123Z", "level": "info",
     "logger": "eventpipe.shipping", "message": "delivered ...",
     "key": "...", "events": 120, "bytes": 190012, ...}
"""

from __future__ import annotations

import json as _json
import sys
import time
from typing import IO, Any

from twisted.logger import ILogObserver, LogLevel, formatEvent
from twisted.logger import Logger as _TwistedLogger
from zope.interface import implementer

LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
    "critical": LogLevel.critical,
}
_ORDER = {level: number for number, level in enumerate(LEVELS.values())}
_threshold = [_ORDER[LogLevel.info]]


def set_level(name: str) -> None:
    """Drop eventpipe's log lines below this level (debug, info, warn, error)."""
    _threshold[0] = _ORDER[LEVELS[name]]


class Logger(_TwistedLogger):
    """Twisted's Logger, quiet below C{--log-level}."""

    def emit(self, level: LogLevel, format: str | None = None, **kwargs: Any) -> None:
        if _ORDER.get(level, 0) < _threshold[0]:
            return
        super().emit(level, format, **kwargs)


# Keys of a Twisted log event that are its machinery, not its fields.
_INTERNAL = frozenset({"log_logger", "log_source", "log_io", "message", "format"})


def flatten(event: dict[str, Any]) -> dict[str, Any]:
    """One log event as a flat, JSON-ready record."""
    # Twisted stamps every event it emits; an event without a time says so.
    stamp = event.get("log_time")
    level = event.get("log_level", LogLevel.info)
    record: dict[str, Any] = {
        "time": None
        if stamp is None
        else time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp))
        + f".{int(stamp % 1 * 1000):03d}Z",
        "level": getattr(level, "name", str(level)),
        "logger": event.get("log_namespace", "-"),
        "message": formatEvent(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        record["error"] = failure.getErrorMessage()
        record["traceback"] = failure.getTraceback()
    for key, value in event.items():
        if key.startswith("log_") or key in _INTERNAL or key in record:
            continue
        if isinstance(value, (str, int, float, bool)) or value is None:
            record[key] = value
        else:
            record[key] = str(value)
    return record


# syslog priorities, which journald reads from a "<N>" in front of a line.
PRIORITIES = {
    LogLevel.debug: 7,
    LogLevel.info: 6,
    LogLevel.warn: 4,
    LogLevel.error: 3,
    LogLevel.critical: 2,
}


@implementer(ILogObserver)
class JsonLinesObserver:
    """
    Writes each log event as one flat JSON object per line; to the journal
    (C{priority}), each line starts with its syslog priority, C{<3>} for an
    error, which journald takes off and keeps as the entry's priority, so
    that C{journalctl -p err} shows the errors.
    """

    def __init__(self, stream: IO[str], priority: bool = False) -> None:
        self.stream = stream
        self.priority = priority

    def __call__(self, event: dict[str, Any]) -> None:
        line = _json.dumps(flatten(event), ensure_ascii=False)
        if self.priority:
            line = f"<{PRIORITIES.get(event.get('log_level', LogLevel.info), 6)}>{line}"
        self.stream.write(line + "\n")
        self.stream.flush()


def to_the_journal(stream: IO[str], environ: Any = None) -> bool:
    """
    Whether C{stream} is connected to systemd's journal: systemd says so in
    C{JOURNAL_STREAM} (the device and inode of the stream it gave).
    """
    import os

    found = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in found.split(":"))
        stat = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (stat.st_dev, stat.st_ino) == (device, inode)


def json() -> ILogObserver:
    """
    JSON Lines on standard output (C{twistd --logger=eventpipe.logs.json}),
    with each line's priority in front when standard output is the journal.
    """
    return JsonLinesObserver(sys.stdout, priority=to_the_journal(sys.stdout))
