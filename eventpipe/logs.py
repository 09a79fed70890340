"""
Log observers for C{twistd --logger}.

    twistd -n --logger=eventpipe.logs.json eventpipe ...

writes one JSON object per line to standard output, with every field of
eventpipe's structured log lines (C{key}, C{events}, C{bytes}, C{seconds},
C{attempt}, ...) as a key of its own.
"""

from __future__ import annotations

import sys

from twisted.logger import ILogObserver, jsonFileLogObserver


def json() -> ILogObserver:
    """JSON lines on standard output."""
    return jsonFileLogObserver(sys.stdout)
