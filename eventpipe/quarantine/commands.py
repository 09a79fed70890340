"""
The commands C{list} and C{show}, and the one that runs them all.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from typing import Any, TextIO

from eventpipe.destinations import (
    UploadError,
)
from eventpipe.metrics import quarantine_reason, reason_hint
from eventpipe.quarantine.options import (
    QuarantineOptions,
)
from eventpipe.quarantine.replay import replay
from eventpipe.quarantine.store import (
    _CN,
    Quarantine,
    printable,
    store_for,
)
from eventpipe.status import counted


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
