"""
C{eventpipe status}: one screen of what the service is doing.  With the
service running and C{--metrics} set, the figures are its own C{/status};
otherwise they are read off the spool directory, and the screen says so.
The exit status is for scripts and monitoring agents, as Nagios-style
checks read it: 0 healthy, 1 degraded, 2 down.

Blocking calls are fine here (no reactor).
"""

from __future__ import annotations

import json
import os
import ssl
import time
import urllib.request
from typing import Any, TextIO

from eventpipe.config.endpoints import parse_endpoint
from eventpipe.config.help import OwnOptionsFirst
from eventpipe.config.options import Options as ServiceOptions
from eventpipe.lock import holder
from eventpipe.spool.waiting import waiting_in

HEALTHY, DEGRADED, DOWN, UNKNOWN = 0, 1, 2, 3
HEALTH_NAMES = {HEALTHY: "healthy", DEGRADED: "degraded", DOWN: "down", UNKNOWN: "unknown"}
FETCH_TIMEOUT = 3.0


class StatusOptions(OwnOptionsFirst, ServiceOptions):
    synopsis = "[service options] [--json]"
    longdesc = (
        "One screen: running or not, connections, events received, delivered and "
        "quarantined since start, the spool against its limit, delivery state and "
        "last error, segments set aside.  Reads the service's /status (from "
        "--metrics) while it runs, or else the spool directory, and says which.  "
        "Exit status: 0 healthy, 1 degraded, 2 down, 3 unknown (running, "
        "but serving no /status: start it with --metrics)."
    )
    optFlags = [["json", None, "Print the same as one JSON object."]]


def status_url(metrics: str) -> str:
    """Where the service's C{/status} answers, from its C{--metrics} endpoint."""
    endpoint = parse_endpoint(metrics)
    port = getattr(endpoint, "_port", None)
    interface = getattr(endpoint, "_interface", "") or ""
    if interface in ("", "0.0.0.0"):
        interface = "127.0.0.1"
    elif interface == "::":
        interface = "::1"
    host = f"[{interface}]" if ":" in interface else interface
    scheme = "https" if metrics.split(":", 1)[0] == "ssl" else "http"
    return f"{scheme}://{host}:{port}/status"


def fetch(url: str, timeout: float = FETCH_TIMEOUT) -> dict[str, Any]:
    # The service's own certificate, on this host: not checked.
    context = ssl._create_unverified_context() if url.startswith("https") else None
    with urllib.request.urlopen(url, timeout=timeout, context=context) as answer:
        found = json.loads(answer.read())
    if not isinstance(found, dict):
        raise ValueError("not a status object")
    return found


def from_spool(directory: str, now: float) -> dict[str, Any]:
    """What the spool directory says by itself (the service's figures unknown)."""
    found = waiting_in(directory)
    return {
        "waiting_bytes": found.bytes,
        "segments_waiting": found.segments,
        "events_waiting": found.events,
        "oldest_event_age_seconds": round(now - found.oldest, 3) if found.oldest else 0.0,
        "segments_set_aside": list(found.set_aside),
    }


def gather(options: StatusOptions, now: float) -> dict[str, Any]:
    """Everything the screen shows, as one object, with C{health}."""
    directory = options["spool-dir"]
    report: dict[str, Any] = {"spool_dir": directory}
    try:
        holding = holder(directory)
    except OSError as error:
        holding = None
        report["spool_error"] = f"cannot read {directory}: {error.strerror}"
    report["pid"] = holding.get("pid") if holding else None
    live = None
    # Where the running service serves its figures: as given, or as it
    # recorded in the spool's lock.
    url = status_url(options["metrics"]) if options["metrics"] else None
    if url is None and holding:
        recorded = holding.get("status")
        url = recorded if isinstance(recorded, str) and recorded else None
    if url is not None:
        report["source"] = url
        try:
            live = fetch(url)
        except Exception as error:
            reason = getattr(error, "reason", None) or error
            report["source_error"] = f"{url} does not answer: {reason}"
    report["running"] = live is not None or holding is not None
    report["status"] = live
    if live is None:
        report["source"] = "the spool directory"
        if os.path.isdir(directory):
            report["spool"] = from_spool(directory, now)
        else:
            report.setdefault("spool_error", f"{directory} does not exist")
    health, why = _health(report)
    report["health"] = HEALTH_NAMES[health]
    report["health_because"] = why
    return report


def _health(report: dict[str, Any]) -> tuple[int, str | None]:
    live = report["status"]
    if not report["running"]:
        return DOWN, "not running" + (
            f" ({report['source_error']})" if "source_error" in report else ""
        )
    if live is None:
        if "source_error" in report:
            return DEGRADED, report["source_error"]
        # Running, but its figures are served nowhere: whether it delivers
        # cannot be known from the spool (it may be in an outage).
        return UNKNOWN, (
            "running, but whether it delivers cannot be known: it serves no /status "
            "(start it with --metrics)"
        )
    if live.get("health") == "healthy":
        return HEALTHY, None
    return DEGRADED, live.get("health_because") or "degraded"


def counted(count: int, thing: str) -> str:
    """C{1 segment}, C{3 segments}, C{no segments}."""
    if count == 0:
        return f"no {thing}s"
    return f"{count} {thing}" + ("" if count == 1 else "s")


def _size(count: float, like: float = 0) -> str:
    """
    Bytes for a person, in the unit family of C{like} (a limit the user set:
    C{1GB} is shown as 1.0 GB, C{1GiB} as 1.0 GiB); binary by default.
    """
    decimal = bool(like) and like % 1000 == 0 and like % 1024 != 0
    step, units = (1000, ("B", "KB", "MB", "GB")) if decimal else (1024, ("B", "KiB", "MiB", "GiB"))
    for unit in units:
        if count < step or unit == units[-1]:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= step
    return f"{count} B"


def _waiting(
    sealed: int,
    current: int,
    events: int,
    exact: bool,
    oldest: float,
    thing: str = "sealed segment",
) -> str:
    """What waits: sealed segments and the current one, their events, the oldest's age."""
    if not sealed and not events:
        return "nothing waits"
    what = counted(sealed, thing) if sealed else ""
    if current:
        what = f"{what} and the current one" if what else "the current segment"
    at_least = "" if exact else "at least "
    return f"{what} ({at_least}{counted(events, 'event')}) waiting; oldest event {_age(oldest)} old"


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def _row(label: str, text: str) -> str:
    return f"  {label:<12} {text}"


def screen(report: dict[str, Any]) -> str:
    """The report as lines for a person."""
    lines = [
        f"eventpipe: {report['health']}"
        + (f": {report['health_because']}" if report["health_because"] else "")
    ]
    pid = f" (pid {report['pid']})" if report.get("pid") else ""
    if report["status"] is not None:
        aside = _live_rows(report, pid, lines)
    else:
        aside = _spool_rows(report, pid, lines)
    if aside:
        lines.append(
            _row(
                "set aside",
                f"{counted(len(aside), 'segment')} in {os.path.join(report['spool_dir'], 'failed')}: "
                + ", ".join(aside),
            )
        )
    else:
        lines.append(_row("set aside", "none"))
    return "\n".join(lines) + "\n"


def _live_rows(report: dict[str, Any], pid: str, lines: list[str]) -> list[str]:
    """The rows of a running service's own figures; the segments set aside."""
    live = report["status"]
    lines.append(
        _row(
            "service",
            f"running{pid}, up {_age(live.get('uptime_seconds', 0))}, version {live.get('version')}",
        )
    )
    lines.append(_row("figures", f"from {report['source']}"))
    lines.append(
        _row(
            "listening",
            f"{'yes' if live.get('listening') else 'no'}, "
            f"{counted(live.get('connections_open', 0), 'connection')} open",
        )
    )
    since = live.get("since_start", {})
    lines.append(
        _row(
            "since start",
            f"{counted(since.get('events_received', 0), 'event')} received, "
            f"{since.get('events_delivered', 0)} delivered, "
            f"{counted(since.get('pieces_quarantined', 0), 'piece')} quarantined",
        )
    )
    spool = live.get("spool", {})
    limit = spool.get("limit_bytes", 0)
    waiting = _waiting(
        spool.get("segments_waiting", 0),
        spool.get("current_segment_events", 0),
        spool.get("events_waiting", 0),
        spool.get("events_waiting_exact", True),
        spool.get("oldest_event_age_seconds", 0),
    )
    lines.append(
        _row(
            "spool",
            f"{_size(spool.get('waiting_bytes', 0), limit)} of {_size(limit, limit)}; {waiting}",
        )
    )
    paused = spool.get("reading_paused_because") or []
    lines.append(_row("reading", "paused: " + ", ".join(paused) if paused else "not paused"))
    delivery = live.get("delivery", {})
    last = delivery.get("last_delivery") or "none since start"
    error = f": {delivery['last_error']}" if delivery.get("last_error") else ""
    lines.append(
        _row(
            "delivery",
            f"{delivery.get('state')} to {delivery.get('destination')}{error}; last delivery {last}",
        )
    )
    return list(spool.get("segments_set_aside") or [])


def _spool_rows(report: dict[str, Any], pid: str, lines: list[str]) -> list[str]:
    """The rows read off the spool directory (no service answered); the segments set aside."""
    lines.append(_row("service", f"running{pid}" if report["running"] else "not running"))
    why = f" ({report['source_error']})" if "source_error" in report else ""
    lines.append(_row("figures", f"from the spool directory {report['spool_dir']}{why}"))
    if "spool_error" in report:
        lines.append(_row("spool", report["spool_error"]))
        return []
    spool = report["spool"]
    waiting = _waiting(
        spool["segments_waiting"],
        0,
        spool["events_waiting"],
        True,
        spool["oldest_event_age_seconds"],
        "segment",
    )
    lines.append(_row("spool", f"{_size(spool['waiting_bytes'])}; {waiting}"))
    return list(spool["segments_set_aside"])


def run_status(options: StatusOptions, out: TextIO) -> int:
    report = gather(options, time.time())
    if options["json"]:
        out.write(json.dumps(report, indent=2) + "\n")
    else:
        out.write(screen(report))
    return {name: code for code, name in HEALTH_NAMES.items()}[report["health"]]
