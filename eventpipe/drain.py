"""
C{eventpipe drain}: ship every segment of a spool directory -- the sealed
ones, and a current one left by a process that stopped or died -- to the
destination given, through the service's own pipeline (render, validate,
upload, retry), without taking events or serving anything.  For a host that
died: attach its spool disk to another host and drain it there.  The
segments keep their names, so their keys are the ones the dead host would
have used (a leftover current segment is sealed under the instance id the
spool was last held with), and Snowpipe still loads each batch once.

The spool's lock is held throughout: a spool that a running service holds
is refused.
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

from twisted.internet.defer import Deferred
from twisted.python import usage

from eventpipe.config.help import OwnOptionsFirst
from eventpipe.config.options import Options as ServiceOptions
from eventpipe.lock import last_instance
from eventpipe.naming import instance_of, split_segment_file
from eventpipe.spool.waiting import waiting_in


class DrainOptions(OwnOptionsFirst, ServiceOptions):
    synopsis = "[service options] [--timeout SECONDS]"
    longdesc = (
        "Ship every segment of --spool-dir (sealed, and a current one a stopped or "
        "dead process left) to the destination, through the service's own render "
        "and upload, with retries; then exit 0 when all is delivered, or 1 saying "
        "what is left.  Takes no events.  Keys stay the ones the spool's own host "
        "would have used: carry a dead host's spool disk to another host and drain "
        "it there.  A spool a running service holds is refused."
    )
    optParameters = [
        ["timeout", None, "300", "Seconds to keep trying before giving up (what is left stays)."],
    ]

    def postOptions(self) -> None:
        super().postOptions()
        try:
            self["timeout"] = float(self["timeout"])
        except ValueError:
            raise usage.UsageError(
                f"--timeout: invalid value {self['timeout']!r} (a number of seconds)"
            ) from None
        if not self["timeout"] > 0:
            raise usage.UsageError("--timeout: must be above 0")


def spool_instance(directory: str) -> str | None:
    """The instance id a spool was written under: as its lock says, or its segments' names."""
    recorded = last_instance(directory)
    if recorded:
        return recorded
    for folder in ("sealed", "failed"):
        try:
            names = sorted(os.listdir(os.path.join(directory, folder)))
        except OSError:
            continue
        for name in names:
            split = split_segment_file(name)
            if split is not None:
                return instance_of(split[0])
    return None


def run_drain(options: DrainOptions, out: TextIO) -> int:
    from twisted.internet import reactor, task

    from eventpipe.status import counted
    from eventpipe.tap import build

    directory = options["spool-dir"]
    if not _drainable(options, directory):
        return 1
    options["shutdown-timeout"] = options["timeout"]
    before = waiting_in(directory)
    service = build(options, reactor, serve=False)
    _log_to_stderr(options["log-level"])
    out.write(
        f"draining {directory} (instance {options['instance-id']}): "
        f"{counted(before.segments, 'segment')}, {counted(before.events, 'event')}, "
        f"to {service.uploader.description}\n"
    )
    out.flush()

    async def drain() -> None:
        # Start ships every segment; the stop waits for them up to --timeout.
        service.startService()
        await service.stopService()
        raise SystemExit(_said(service, directory, out))

    task.react(lambda _: Deferred.fromCoroutine(drain()), [])
    return 1  # not reached: react ends the process


def _drainable(options: DrainOptions, directory: str) -> bool:
    """
    Whether the spool can be drained with these options (a line says why
    not); the spool's own instance id is taken.
    """
    if not os.path.isdir(directory):
        sys.stderr.write(f"eventpipe: --spool-dir: no such directory: {directory!r}\n")
        return False
    owner = os.stat(directory).st_uid
    if owner != os.geteuid():
        sys.stderr.write(
            f"eventpipe: warning: {directory} belongs to uid {owner}, drain runs as uid "
            f"{os.geteuid()}: what it leaves in the spool would not be readable by that user\n"
        )
    instance = spool_instance(directory)
    if instance and instance != options["instance-id"]:
        # The spool's own id wins over any setting (an env file's
        # EVENTPIPE_INSTANCE_ID is this host's): its segments keep the keys
        # their own host gave them, and no id gets two writers.
        if options.sources.get("instance-id") == "--instance-id":
            sys.stderr.write(
                f"eventpipe: --instance-id: {directory} was written as instance {instance!r}, "
                f"not {options['instance-id']!r}: drain it as {instance!r} (leave "
                "--instance-id out)\n"
            )
            return False
        options["instance-id"] = instance
    return True


def _log_to_stderr(level: str) -> None:
    """The service's log, on stderr, from C{level} up."""
    from twisted.logger import (
        FilteringLogObserver,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    from eventpipe.logs import LEVELS

    globalLogBeginner.beginLoggingTo(
        [
            FilteringLogObserver(
                textFileLogObserver(sys.stderr), [LogLevelFilterPredicate(LEVELS[level])]
            )
        ],
        redirectStandardIO=False,
    )


def _said(service: Any, directory: str, out: TextIO) -> int:
    """What the drain did and left; the exit status (0: nothing is left)."""
    from eventpipe.status import counted

    left = waiting_in(directory)
    segments, events, aside = left.segments, left.events, len(left.set_aside)
    delivered = service.shipping.events_delivered
    quarantined = service.shipping.events_quarantined
    pieces = f", {counted(quarantined, 'piece')} quarantined" if quarantined else ""
    if not segments and not aside:
        out.write(f"drained: {delivered} events delivered{pieces}; nothing is left\n")
        return 0
    if segments:
        error = service.shipping.last_attempt_error or "not delivered within --timeout"
        out.write(
            f"not drained: {counted(segments, 'segment')} ({counted(events, 'event')}) "
            f"left in {directory} "
            f"({error}); run drain again\n"
        )
    if aside:
        out.write(
            f"{counted(aside, 'segment')} set aside in {os.path.join(directory, 'failed')} "
            "(they cannot be rendered; see the log of the service that set them aside)\n"
        )
    return 1
