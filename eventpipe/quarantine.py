"""
C{eventpipe quarantine list | show | replay}: the quarantine objects at the
destination (outbox, S3 or Azure Blob Storage), read with the options the
service reads.

Replay sends the pieces that pass now (after an upgrade, or with
C{--repair-acm-tag-names}) through the service's own framing, validation
and render into new batches, exactly once.  A replayed batch's key comes
from the quarantine object it came from::

    quarantine/2026/11/24/20261124_101500_gw1_000042.jsonl
      -> 2026/11/24/20261124_101500_gw1_000042-r1.xml

and its metadata names that object and the lines it holds.  A replay first
reads which lines earlier replays hold and sends only the others, as the
next C{-rN}: a second replay, or one interrupted and run again, delivers no
piece twice.  The write is the service's conditional one; a key taken by a
replay running at the same time makes this one read again and take the next
number.  Pieces that still fail stay where they are, counted by reason.

Blocking calls, no reactor: these are commands.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, TextIO

from twisted.python import usage

from eventpipe.config.help import OwnOptionsFirst
from eventpipe.config.options import Options as ServiceOptions
from eventpipe.destinations import (
    EVENTS,
    INSTANCE,
    LINES,
    REPLAYED,
    SEGMENT,
    IObjectReader,
    KeyConflict,
    UploadError,
    UploadRequest,
)
from eventpipe.metrics import quarantine_reason, reason_hint
from eventpipe.naming import QUARANTINE, RENUMBERS, extension, normalize_prefix, sealed_at
from eventpipe.status import counted

# A quarantine object's key, below the prefix: the day and the segment name.
_QUARANTINE_KEY = re.compile(r"(\d{4}/\d{2}/\d{2})/([^/]+)\.jsonl$")
_REPLAY_NUMBER = re.compile(r"-r(\d+)\.")
_CN = re.compile(r"<cn>([^<]{1,64})</cn>")
# At most this many runs of lines in one replay's metadata (S3 keeps 2 KiB
# of it): more pieces go in the next replay.
MAX_RUNS = 100


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


@dataclass(frozen=True)
class Piece:
    line: int  # 0-based
    entry: dict[str, Any]

    @property
    def data(self) -> bytes:
        if "base64" in self.entry:
            return base64.b64decode(self.entry["base64"])
        return str(self.entry.get("text", "")).encode("utf-8")


def ranges(lines: list[int]) -> str:
    """[0, 1, 2, 5] -> C{0-2,5}."""
    parts: list[list[int]] = []
    for line in sorted(set(lines)):
        if parts and parts[-1][1] == line - 1:
            parts[-1][1] = line
        else:
            parts.append([line, line])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in parts)


def unranges(text: str) -> set[int]:
    found: set[int] = set()
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        found.update(range(int(first), int(last or first) + 1))
    return found


def store_for(options: ServiceOptions) -> Any:
    """The destination the options name, as an L{IObjectReader}."""
    from twisted.internet import reactor

    from eventpipe.destinations.select import destination_for

    return destination_for(options, reactor, concurrency=1)


class Quarantine:
    """The quarantine objects under a prefix at one destination."""

    def __init__(self, store: IObjectReader, prefix: str) -> None:
        self.store = store
        self.prefix = normalize_prefix(prefix)

    def objects(self, since: float | None = None, until: float | None = None) -> list[str]:
        found = []
        for key in self.store.keys(self.prefix + QUARANTINE):
            match = _QUARANTINE_KEY.search(key)
            if match is None:
                continue
            try:
                stamp = sealed_at(match.group(2))
            except ValueError:
                continue
            if (since is None or stamp >= since) and (until is None or stamp < until):
                found.append(key)
        return found

    def pieces(self, key: str) -> Iterator[Piece]:
        stream: BinaryIO = self.store.open(key)
        try:
            for number, line in enumerate(_lines(stream)):
                try:
                    entry = json.loads(line)
                except ValueError:
                    entry = {"reason": "(an unreadable quarantine line)", "text": ""}
                yield Piece(number, entry if isinstance(entry, dict) else {})
        finally:
            stream.close()

    def replays_of(self, key: str) -> dict[int, set[int]]:
        """The replays of a quarantine object made so far: number -> the lines each holds."""
        day, name = self.day_and_name(key)
        found = {}
        for replay in self.store.keys(f"{self.prefix}{day}/{name}-r"):
            number = _REPLAY_NUMBER.search(replay[len(self.prefix + day) + 1 :])
            if number is None:
                continue
            found[int(number.group(1))] = unranges(self.store.metadata(replay).get(LINES, ""))
        return found

    def replay_key(self, key: str, number: int, ext: str) -> str:
        day, name = self.day_and_name(key)
        return f"{self.prefix}{day}/{name}-r{number}{ext}"

    def day_and_name(self, key: str) -> tuple[str, str]:
        match = _QUARANTINE_KEY.search(key)
        if match is None:
            raise ValueError(f"not a quarantine object: {key!r}")
        return match.group(1), match.group(2)


def _lines(stream: BinaryIO) -> Iterator[bytes]:
    """The lines of a stream, read a block at a time."""
    rest = b""
    while True:
        block = stream.read(1 << 16)
        if not block:
            break
        rest += block
        *whole, rest = rest.split(b"\n")
        yield from (line for line in whole if line.strip())
    if rest.strip():
        yield rest


def printable(text: str) -> str:
    """Attacker-controlled text, safe on a terminal: control characters escaped."""
    return "".join(
        c
        if c.isprintable() or c == " "
        else f"\\x{ord(c):02x}"
        if ord(c) < 256
        else f"\\u{ord(c):04x}"
        for c in text
    )


def run_quarantine(options: QuarantineOptions, out: TextIO) -> int:
    sub = options.subOptions
    quarantine = Quarantine(store_for(sub), sub.prefix)
    try:
        if options.subCommand == "list":
            return list_pieces(quarantine, sub, out)
        if options.subCommand == "show":
            return show(quarantine, sub["where"], out)
        return replay(quarantine, sub, out)
    except UploadError as error:
        sys.stderr.write(f"eventpipe: {quarantine.store.description}: {error}\n")
        return 1


def list_pieces(quarantine: Quarantine, options: Any, out: TextIO) -> int:
    reasons: Counter[str] = Counter()
    hints: set[str] = set()
    done: list[tuple[str, int]] = []
    objects = quarantine.objects(options["since"], options["until"])
    for key in objects:
        replayed = set().union(*quarantine.replays_of(key).values())
        for piece in quarantine.pieces(key):
            entry = piece.entry
            reason = str(entry.get("reason", ""))
            reasons[quarantine_reason(reason)] += 1
            if reason_hint(reason):
                hints.add(reason_hint(reason))
            if piece.line in replayed:
                done.append((key, piece.line))
            cn = _CN.search(str(entry.get("text", "")))
            out.write(
                "  ".join(
                    [
                        str(entry.get("received") or "-"),
                        printable(str(entry.get("sender") or "-")),
                        f"{quarantine_reason(reason):<13}",
                        f"{entry.get('size', 0):>7} B",
                        f"cn={printable(cn.group(1))}" if cn else "cn=-",
                        "replayed" if piece.line in replayed else "-",
                        f"{key}:{piece.line + 1}",
                        printable(reason[:100]),
                    ]
                )
                + "\n"
            )
    total = sum(reasons.values())
    by_reason = ", ".join(f"{reason} {count}" for reason, count in reasons.most_common())
    again = f"; {counted(len(done), 'piece')} replayed" if done else ""
    out.write(
        f"{counted(total, 'piece')} in {counted(len(objects), 'object')} at "
        f"{quarantine.store.description}" + (f": {by_reason}" if by_reason else "") + again + "\n"
    )
    for hint in sorted(hints):
        out.write(f"hint: {hint}\n")
    return 0


def show(quarantine: Quarantine, where: str, out: TextIO) -> int:
    key, _, line = where.rpartition(":") if re.search(r":\d+$", where) else (where, "", "")
    wanted = int(line) - 1 if line else None
    terminal = out.isatty()
    shown = 0
    try:
        for piece in quarantine.pieces(key):
            if wanted is not None and piece.line != wanted:
                continue
            data = piece.data
            if wanted is None:
                entry = piece.entry
                out.write(
                    f"== {key}:{piece.line + 1}  {entry.get('received') or '-'}  "
                    f"{printable(str(entry.get('sender') or '-'))}  "
                    f"{printable(str(entry.get('reason', '')))}\n"
                )
            if terminal or not hasattr(out, "buffer"):
                text = data.decode("utf-8", "replace")
                out.write(text if not terminal else "\n".join(map(printable, text.split("\n"))))
                if terminal and wanted is not None and not text.endswith("\n"):
                    # A person's prompt starts on a line of its own; a pipe
                    # gets the bytes as they arrived.
                    out.write("\n")
            else:
                out.flush()
                out.buffer.write(data)
                out.buffer.flush()
            if wanted is None:
                out.write("\n")
            shown += 1
    except KeyError:
        sys.stderr.write(f"eventpipe: no quarantine object {key!r}\n")
        return 1
    if not shown:
        sys.stderr.write(f"eventpipe: {key} has no line {line}\n")
        return 1
    return 0


def replay(quarantine: Quarantine, options: Any, out: TextIO) -> int:
    keys = options["keys"] or quarantine.objects(options["since"], options["until"])
    totals: Counter[str] = Counter()
    for key in keys:
        outcome: Counter[str] = Counter()
        targets: list[str] = []
        conflicts = 0
        seen = 0
        first = True
        # The lowest replay number not yet found taken: a number whose key
        # is claimed but holds nothing listed (a replay killed between its
        # claim and its link) is stepped over, not tried again.
        floor = 0
        while True:
            try:
                one, target = replay_one(quarantine, key, options, floor)
            except KeyConflict as conflict:
                # Another replay took the number: read again, take the next.
                taken = _REPLAY_NUMBER.search(conflict.key.rpartition("/")[2])
                if taken is not None:
                    floor = int(taken.group(1)) + 1
                conflicts += 1
                if conflicts >= RENUMBERS:
                    sys.stderr.write(f"eventpipe: {key}: every replay number was taken\n")
                    return 1
                continue
            if target:
                targets.append(target)
            if not first and one["before"] <= seen:
                # The replay just delivered is not read back: stop rather than repeat it.
                sys.stderr.write(f"eventpipe: {key}: {target} is not seen at the destination\n")
                return 1
            seen = one["before"]
            if first:
                outcome = one
                first = False
            else:
                # A continuation: what it found before is what the last one sent.
                for name in ("replayed", "events"):
                    outcome[name] += one[name]
            if not one["more"] or options["dry-run"]:
                break
        outcome.pop("more", None)
        totals.update(outcome)
        still = {k[6:]: v for k, v in outcome.items() if k.startswith("still:")}
        out.write(
            f"{key}: {outcome['replayed']} replayed"
            + (f" as {', '.join(targets)}" if targets else "")
            + f", {outcome['before']} replayed before, {sum(still.values())} still fail"
            + (
                " (" + ", ".join(f"{r} {n}" for r, n in sorted(still.items())) + ")"
                if still
                else ""
            )
            + "\n"
        )
    still = {k[6:]: v for k, v in totals.items() if k.startswith("still:")}
    out.write(
        f"{'would replay' if options['dry-run'] else 'replayed'} {totals['replayed']} pieces "
        f"({totals['events']} events) from {counted(len(keys), 'object')}; {totals['before']} replayed "
        f"before; {sum(still.values())} still fail\n"
    )
    return 0


def replay_one(
    quarantine: Quarantine, key: str, options: Any, floor: int = 0
) -> tuple[Counter[str], str | None]:
    """
    Replay one quarantine object's pieces that no earlier replay holds,
    under the next replay number (C{floor} at least).

    @raise KeyConflict: another replay took the next number meanwhile.
    """
    from eventpipe.render.batch import CONTENT_TYPES, render_segment, replayable
    from eventpipe.spool.spool import Spool

    outcome: Counter[str] = Counter()
    earlier = quarantine.replays_of(key)
    covered = set().union(*earlier.values())
    ext = extension(options["format"], options["compress"])
    fmt, compress = options["format"], options["compress"]
    with tempfile.TemporaryDirectory(prefix="eventpipe-replay-") as work:
        spool = Spool(os.path.join(work, "spool"), "replay", lambda: 0.0, fsync="never")
        lines: list[int] = []
        runs = 0
        for piece in quarantine.pieces(key):
            if piece.line in covered:
                outcome["before"] += 1
                continue
            if outcome["more"]:
                continue
            events, reason, _ = replayable(
                piece.data,
                options["event-tag"],
                options["max-event-size"],
                options["repair-acm-tag-names"],
            )
            if reason is not None:
                outcome[f"still:{quarantine_reason(reason)}"] += 1
                continue
            if not lines or lines[-1] != piece.line - 1:
                runs += 1
                if runs > MAX_RUNS:
                    outcome["more"] = 1
                    continue
            spool.append(events)
            lines.append(piece.line)
            outcome["events"] += len(events)
        outcome["replayed"] = len(lines)
        segment = spool.seal()
        spool.close()
        if segment is None or options["dry-run"]:
            return outcome, None
        batch = os.path.join(work, "batch" + ext)
        result = render_segment(
            segment.path,
            batch,
            os.path.join(work, "left.jsonl"),
            fmt,
            compress,
            options["event-tag"],
            max_event_size=options["max-event-size"],
        )
        if result.events != outcome["events"] or result.quarantined:
            raise UploadError(
                f"{key}: the replay rendered {result.events} events of {outcome['events']}",
                transient=False,
            )
        number = max(max(earlier, default=0) + 1, floor)
        target = quarantine.replay_key(key, number, ext)
        day_name = quarantine.day_and_name(key)[1]
        quarantine.store.deliver(
            UploadRequest(
                path=batch,
                key=target,
                sha256=result.batch_sha256,
                content_type=CONTENT_TYPES[fmt],
                content_encoding="gzip" if compress == "gzip" else None,
                metadata={
                    INSTANCE: options["instance-id"],
                    SEGMENT: day_name,
                    EVENTS: str(result.events),
                    REPLAYED: key,
                    LINES: ranges(lines),
                },
                source=result.source_sha256,
            )
        )
    return outcome, target
