"""
Env files (C{KEY=VALUE} lines, as systemd's C{EnvironmentFile=} and
Docker's C{--env-file} read them), and the nearest known name for a typo.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from twisted.python import usage


def _nearest(key: str, known: Iterable[str], cutoff: float = 0.75) -> str:
    """C{" (did you mean NAME?)"} for the known name nearest C{key}; empty when none is near."""
    import difflib

    near = difflib.get_close_matches(key, sorted(known), n=1, cutoff=cutoff)
    return f" (did you mean {near[0]}?)" if near else ""


def read_env_file(path: str) -> dict[str, str]:
    """
    Settings kept in a file as systemd's C{EnvironmentFile=}, Docker's
    C{--env-file} and people read them: C{KEY=VALUE} lines, C{#} comments,
    blank lines, an optional C{export }, values optionally in matching
    quotes (taken as they are: no expansion).

    @raise usage.UsageError: the file cannot be read, or a line is not
        C{KEY=VALUE}.
    """
    try:
        with open(path, encoding="utf-8") as stream:
            lines = stream.read().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise usage.UsageError(f"--env-file: cannot read {path!r}: {reason}") from None
    values: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith("export "):
            text = text[len("export ") :].lstrip()
        key, equals, value = text.partition("=")
        key, value = key.strip(), value.strip()
        if not equals or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            raise usage.UsageError(f"--env-file: {path}, line {number}: expected KEY=VALUE")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values
