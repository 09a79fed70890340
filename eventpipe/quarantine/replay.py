"""
Replay: the pieces that pass now go through the service's own framing,
validation and render into a new batch, C{<name>-rN}, written only if its
key is free; the lines earlier replays hold are never sent again.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections import Counter
from typing import Any, TextIO

from eventpipe.destinations import (
    EVENTS,
    INSTANCE,
    LINES,
    REPLAYED,
    SEGMENT,
    KeyConflict,
    UploadError,
    UploadRequest,
)
from eventpipe.metrics import quarantine_reason
from eventpipe.naming import RENUMBERS, extension
from eventpipe.quarantine.store import (
    _REPLAY_NUMBER,
    Quarantine,
    ranges,
)
from eventpipe.status import counted

# At most this many runs of lines in one replay's metadata (S3 keeps 2 KiB
# of it): more pieces go in the next replay.
MAX_RUNS = 100


def replay(quarantine: Quarantine, options: Any, out: TextIO) -> int:
    keys = options["keys"] or quarantine.objects(options["since"], options["until"])
    totals: Counter[str] = Counter()
    for key in keys:
        replayed = _replay_object(quarantine, key, options)
        if replayed is None:
            return 1
        outcome, targets = replayed
        totals.update(outcome)
        out.write(_said(key, outcome, targets))
    still = {k[6:]: v for k, v in totals.items() if k.startswith("still:")}
    out.write(
        f"{'would replay' if options['dry-run'] else 'replayed'} {totals['replayed']} pieces "
        f"({totals['events']} events) from {counted(len(keys), 'object')}; {totals['before']} replayed "
        f"before; {sum(still.values())} still fail\n"
    )
    return 0


def _replay_object(
    quarantine: Quarantine, key: str, options: Any
) -> tuple[Counter[str], list[str]] | None:
    """
    Replay one quarantine object, in as many replays as its runs of lines
    need; None (and a line on stderr) when it cannot be done.
    """
    outcome: Counter[str] = Counter()
    targets: list[str] = []
    conflicts = seen = 0
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
                return None
            continue
        if target:
            targets.append(target)
        if not first and one["before"] <= seen:
            # The replay just delivered is not read back: stop rather than repeat it.
            sys.stderr.write(f"eventpipe: {key}: {target} is not seen at the destination\n")
            return None
        seen = one["before"]
        if first:
            outcome, first = one, False
        else:
            # A continuation: what it found before is what the last one sent.
            for name in ("replayed", "events"):
                outcome[name] += one[name]
        if not one["more"] or options["dry-run"]:
            break
    outcome.pop("more", None)
    return outcome, targets


def _said(key: str, outcome: Counter[str], targets: list[str]) -> str:
    """The line that says what the replay of one object did."""
    still = {k[6:]: v for k, v in outcome.items() if k.startswith("still:")}
    return (
        f"{key}: {outcome['replayed']} replayed"
        + (f" as {', '.join(targets)}" if targets else "")
        + f", {outcome['before']} replayed before, {sum(still.values())} still fail"
        + (" (" + ", ".join(f"{r} {n}" for r, n in sorted(still.items())) + ")" if still else "")
        + "\n"
    )


def replay_one(
    quarantine: Quarantine, key: str, options: Any, floor: int = 0
) -> tuple[Counter[str], str | None]:
    """
    Replay one quarantine object's pieces that no earlier replay holds,
    under the next replay number (C{floor} at least).

    @raise KeyConflict: another replay took the next number meanwhile.
    """
    from eventpipe.spool.spool import Spool

    earlier = quarantine.replays_of(key)
    ext = extension(options["format"], options["compress"])
    with tempfile.TemporaryDirectory(prefix="eventpipe-replay-") as work:
        spool = Spool(os.path.join(work, "spool"), "replay", lambda: 0.0, fsync="never")
        outcome, lines = _collect(quarantine, key, options, set().union(*earlier.values()), spool)
        segment = spool.seal()
        spool.close()
        if segment is None or options["dry-run"]:
            return outcome, None
        number = max(max(earlier, default=0) + 1, floor)
        target = quarantine.replay_key(key, number, ext)
        _deliver(quarantine, key, options, segment.path, work, target, outcome, lines)
    return outcome, target


def _collect(
    quarantine: Quarantine, key: str, options: Any, covered: set[int], spool: Any
) -> tuple[Counter[str], list[int]]:
    """
    Append to C{spool} the events of the pieces that pass now and no
    earlier replay holds (at most L{MAX_RUNS} runs of lines: the rest is
    for the next replay, C{more}).

    @return: the counts, and the lines taken.
    """
    from eventpipe.render.batch import replayable

    outcome: Counter[str] = Counter()
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
    return outcome, lines


def _deliver(
    quarantine: Quarantine,
    key: str,
    options: Any,
    segment: str,
    work: str,
    target: str,
    outcome: Counter[str],
    lines: list[int],
) -> None:
    """Render the replay's segment and write it under C{target}, only if that key is free."""
    from eventpipe.render.batch import CONTENT_TYPES, render_segment

    fmt, compress = options["format"], options["compress"]
    batch = os.path.join(work, "batch" + extension(fmt, compress))
    result = render_segment(
        segment,
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
    quarantine.store.deliver(
        UploadRequest(
            path=batch,
            key=target,
            sha256=result.batch_sha256,
            content_type=CONTENT_TYPES[fmt],
            content_encoding="gzip" if compress == "gzip" else None,
            metadata={
                INSTANCE: options["instance-id"],
                SEGMENT: quarantine.day_and_name(key)[1],
                EVENTS: str(result.events),
                REPLAYED: key,
                LINES: ranges(lines),
            },
            source=result.source_sha256,
        )
    )
