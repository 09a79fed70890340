"""
The options of C{eventpipe quarantine} and of its three commands.
"""

from __future__ import annotations

import re
import time

from twisted.python import usage

from eventpipe.config.help import OwnOptionsFirst
from eventpipe.config.options import Options as ServiceOptions


def _since(text: str, now: float) -> float:
    """C{7d}, C{24h}, C{30m} before C{now}, or an ISO date or time in UTC."""
    match = re.fullmatch(r"(\d+)([dhm])", text.strip())
    if match:
        seconds = int(match.group(1)) * {"d": 86400, "h": 3600, "m": 60}[match.group(2)]
        return now - seconds
    import calendar

    for form in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"):
        try:
            return float(calendar.timegm(time.strptime(text.strip().rstrip("Z"), form)))
        except ValueError:
            continue
    raise ValueError(text)


class _Window(OwnOptionsFirst, ServiceOptions):
    optParameters = [
        ["since", None, None, "Only objects from then on: 7d, 24h, 30m, or a UTC date/time."],
        ["until", None, None, "Only objects before then (same forms)."],
    ]

    def postOptions(self) -> None:
        super().postOptions()
        now = time.time()
        for name in ("since", "until"):
            if self[name] is not None:
                try:
                    self[name] = _since(self[name], now)
                except ValueError:
                    raise usage.UsageError(
                        f"--{name}: invalid value {self[name]!r} "
                        "(7d, 24h, 30m, 2026-11-24 or 2026-11-24T10:00)"
                    ) from None


class ListOptions(_Window):
    synopsis = "[service options] [--since WHEN] [--until WHEN]"
    longdesc = (
        "Every quarantined piece at the destination: when it arrived, who sent it, why "
        "it was set aside, its size, its event id (cn) where one can be read, whether a "
        "replay delivered it, and where it is (KEY:LINE, for show); then the count by reason."
    )


class ShowOptions(OwnOptionsFirst, ServiceOptions):
    synopsis = "[service options] KEY[:LINE]"
    longdesc = (
        "Print a quarantined piece as it arrived (KEY:LINE as list prints it), or every "
        "piece of an object with a header line each.  On a terminal, control characters "
        "are shown escaped."
    )

    def parseArgs(self, where: str) -> None:  # type: ignore[override]
        self["where"] = where


class ReplayOptions(_Window):
    synopsis = "[service options] [--repair-acm-tag-names] [--dry-run] [KEY ...]"
    longdesc = (
        "Send the quarantined pieces that pass now (after an upgrade, or with "
        "--repair-acm-tag-names) through the service's validation into new batches, "
        "exactly once: a replay run again delivers nothing twice.  Pieces that still "
        "fail stay, counted by reason.  Without KEYs, every quarantine object (within "
        "--since/--until)."
    )
    optFlags = [["dry-run", None, "Say what would be replayed; deliver nothing."]]

    def parseArgs(self, *keys: str) -> None:  # type: ignore[override]
        self["keys"] = list(keys)


class QuarantineOptions(usage.Options):
    synopsis = "list | show | replay [options]"

    def getSynopsis(self) -> str:
        """Under a chosen subcommand, just C{eventpipe quarantine} (it adds its own)."""
        if getattr(self, "subCommand", None) and self.parent is not None:
            return " ".join((self.parent.getSynopsis(), str(self.parent.subCommand)))
        return str(super().getSynopsis())

    def opt_version(self) -> None:
        """Print eventpipe's version and exit."""
        from eventpipe.config.help import print_version

        print_version()

    longdesc = "The quarantine at the destination: list it, show a piece, replay what passes now."
    subCommands = [
        ["list", None, ListOptions, "List the quarantined pieces, counted by reason."],
        ["show", None, ShowOptions, "Print a piece as it arrived."],
        ["replay", None, ReplayOptions, "Deliver, exactly once, the pieces that pass now."],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("name one of list, show, replay")
