"""
The C{--help} and C{--version} of eventpipe's commands: help lines from
the option table, and the tools' own options listed before the service's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from twisted.python import usage

if TYPE_CHECKING:
    from eventpipe.config.table import Parameter


class OwnOptionsFirst(usage.Options):
    """
    The C{--help} of a tool that takes the service's options too: the
    tool's own options first (those its classes below the service's
    options define), then the service's, under a heading of their own.
    """

    def own_options(self) -> set[str]:
        names = {"help", "version"}
        for cls in type(self).__mro__:
            if "parameters" in cls.__dict__:  # the service's options: not the tool's
                break
            for table in ("optFlags", "optParameters"):
                for line in cls.__dict__.get(table, ()):
                    names.add(line[0])
        return names

    def getUsage(self, width: int | None = None) -> str:
        everything = self.longOpt
        own = self.own_options()
        try:
            self.longOpt = [o for o in everything if o.rstrip("=") in own]
            head = super().getUsage(width)
            self.longOpt = [o for o in everything if o.rstrip("=") not in own]
            self.longdesc = ""  # said once, above
            tail = super().getUsage(width)
        finally:
            self.longOpt = everything
            del self.longdesc
        return head + "\nService options (as for twistd eventpipe):" + tail.partition(":")[2]


def print_version() -> None:
    """C{--version} of every eventpipe command: eventpipe's, not Twisted's."""
    from eventpipe import __version__

    print(f"eventpipe {__version__}")
    raise SystemExit(0)


def help_text(name: str, environment: Sequence[str], default: Any, text: str) -> str:
    parts = [text]
    if default not in (None, "") and "Default" not in text:
        shown = f"{default:g}" if isinstance(default, float) else default
        parts.append(f"Default: {shown}.")
    if environment:
        parts.append("Environment: " + ", ".join(environment) + ".")
    return " ".join(parts)


def option_lines(parameters: Sequence[Parameter]) -> list[list[Any]]:
    """C{optParameters} for parameters: no default there (see postOptions), help with env."""
    return [
        [p.name, None, None, help_text(p.name, p.environment, p.default, p.help)]
        for p in parameters
    ]
