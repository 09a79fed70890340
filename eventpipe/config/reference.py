"""
The option reference of the manual and of the man page, made from the
option parser itself (the table's parameters, the flags and the
repeatable options), so that it says what C{--help} says.
"""

from __future__ import annotations

import re

from eventpipe.config.options import Options

# The repeatable options: their methods hold their help.
_REPEATABLE = ("listen", "listen-udp", "allow")


def _escaped(text: str) -> str:
    """Plain text as reStructuredText: no markup, no references."""
    text = re.sub(r"([*`|\\])", r"\\\1", text)
    return re.sub(r"(\w)_(?=\W|$)", r"\1\\_", text)


def entries() -> list[tuple[str, str]]:
    """Every option of C{twistd eventpipe}, in C{--help}'s order, with its help."""
    options = Options(environ={})
    found = [
        (f"--{name} (repeatable)", str(getattr(options, "opt_" + name.replace("-", "_")).__doc__))
        for name in _REPEATABLE
    ]
    found += [(f"--{line[0]}", str(line[3])) for line in options.optParameters]
    found += [(f"--{line[0]}", str(line[2])) for line in options.optFlags]
    return found


def option_reference() -> str:
    """The options as a reStructuredText definition list."""
    parts = []
    for name, text in entries():
        words = " ".join(text.split())
        parts.append(f"``{name}``\n    {_escaped(words)}\n")
    return "\n".join(parts)
