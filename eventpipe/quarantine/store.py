"""
The quarantine objects at the destination: listed by day, read line by
line as pieces, and the replays that hold their lines.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from eventpipe.config.options import Options as ServiceOptions
from eventpipe.destinations import (
    LINES,
    IObjectReader,
)
from eventpipe.naming import QUARANTINE, normalize_prefix, sealed_at

# A quarantine object's key, below the prefix: the day and the segment name.
_QUARANTINE_KEY = re.compile(r"(\d{4}/\d{2}/\d{2})/([^/]+)\.jsonl$")


_REPLAY_NUMBER = re.compile(r"-r(\d+)\.")


_CN = re.compile(r"<cn>([^<]{1,64})</cn>")


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
