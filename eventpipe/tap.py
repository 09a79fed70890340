"""
C{twistd eventpipe}: read the options, wire the stages.  Nothing else
happens here: the options live in L{eventpipe.config.options}, the order of start
and stop in L{eventpipe.service.EventpipeService}.
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

from twisted.application.service import IService

from eventpipe.config.options import Options
from eventpipe.logs import Logger

log = Logger()

__all__ = ["Options", "makeService"]


def makeService(options: Options, reactor: Any = None) -> IService:
    """Build the service that twistd runs."""
    return build(options, reactor)


def build(options: Options, reactor: Any = None, serve: bool = True) -> Any:
    """
    The service, wired.  With C{serve} false it takes no events and serves
    nothing: it ships what the spool holds (C{eventpipe drain}).  Either way
    it holds the spool's lock, or start-up stops with one line.
    """
    if reactor is None:
        from twisted.internet import reactor

    from eventpipe.config.settings import Settings
    from eventpipe.destinations import IUploader
    from eventpipe.destinations.select import destination_for
    from eventpipe.logs import set_level
    from eventpipe.service import EventpipeService
    from eventpipe.threads import ProcessWork, ThreadedWork

    set_level(options["log-level"])
    # Everything eventpipe writes is private, twistd's log file included
    # (it is opened after this; twistd --umask still has the last word).
    os.umask(0o077)
    settings = Settings(**options.settings_fields())
    lock, spool = _locked_spool(options, reactor, serve)
    uploader: IUploader = destination_for(options, reactor)
    # As many render workers as segments render at once, and cores allow.
    render = ProcessWork(
        reactor, reactor, workers=min(options["upload-concurrency"], os.cpu_count() or 1)
    )
    sealer = ThreadedWork(reactor, reactor, 1, "eventpipe-seal")
    service = EventpipeService(
        settings,
        spool,
        uploader,
        reactor,
        render,
        sealer=sealer,
        announcement=options.summary(),
        lock=lock,
    )
    if serve:
        _serve(options, reactor, service)
    return service


def _locked_spool(options: Options, reactor: Any, serve: bool) -> tuple[Any, Any]:
    """
    The spool's lock, then the spool: a spool another process holds is not
    touched at all (not even its format file, which an older release may
    still read).  Start-up stops with one line when either cannot be had.
    """
    from eventpipe.fs import private_makedirs
    from eventpipe.lock import SpoolBusy, acquire
    from eventpipe.naming import extension
    from eventpipe.spool.layout import SpoolFormatError
    from eventpipe.spool.spool import Spool

    directory = options["spool-dir"]

    def refuse(error: Exception) -> NoReturn:
        reason = getattr(error, "strerror", None) or str(error)
        sys.stderr.write(f"eventpipe: --spool-dir: cannot use {directory!r}: {reason}\n")
        raise SystemExit(1) from None

    try:
        private_makedirs(directory)
        lock = acquire(directory, options["instance-id"])
    except (OSError, SpoolBusy) as error:
        refuse(error)
    if serve and options["metrics"]:
        from eventpipe.status import status_url

        # eventpipe status finds the running service's figures there.
        lock.status_url = status_url(options["metrics"])
    try:
        spool = Spool(
            directory,
            options["instance-id"],
            reactor.seconds,
            options["fsync"],
            extension=extension(options["format"], options["compress"]),
            notice=log.warn,
        )
    except (OSError, SpoolFormatError) as error:
        lock.release()
        refuse(error)
    return lock, spool


def _serve(options: Options, reactor: Any, service: Any) -> None:
    """The listeners (TCP, TLS, UDP), the metrics endpoint, and SIGHUP's reload."""
    from eventpipe.listeners import LISTEN_BACKLOG, DatagramService, Listener, listening_service
    from eventpipe.protocol import EventReceiverFactory
    from eventpipe.reload import ReloadOnHangup

    factory = EventReceiverFactory(service.ingest)
    for description in options["listen"]:
        inner = listening_service(description, factory, reactor, LISTEN_BACKLOG)
        service.add_listener(Listener(description, inner))
        service.listening_on.append(description)
    for interface, port in options["listen-udp"]:
        service.add_listener(DatagramService(reactor, service.ingest, interface, port))
        service.listening_on.append(f"udp {interface}:{port}" if interface else f"udp {port}")
    if options["metrics"]:
        from eventpipe.health import health_site

        site = health_site(service.status, service.metrics, service.rates)
        metrics = listening_service(options["metrics"], site, reactor)
        service.add_support(Listener(options["metrics"], metrics, option="--metrics"))

    def on_hangup() -> None:
        try:
            reload(options, service)
        except Exception:
            log.failure("SIGHUP: reading the settings again failed; the running ones stay")

    service.add_support(ReloadOnHangup(reactor, on_hangup))


def reload(options: Options, service: Any) -> None:
    """SIGHUP: read the settings again, apply what can change live, say what."""
    from twisted.python import usage

    from eventpipe.config.options import changes, read_again

    try:
        fresh = read_again(options)
    except (usage.UsageError, SystemExit) as error:
        log.error(
            "SIGHUP: the settings were not read again ({error}); the running ones stay",
            error=str(error),
        )
        return
    changed = changes(options, fresh)
    applied, restart = service.reload(fresh, changed)
    for name in applied:
        options[name] = fresh[name]

    def said(names: list[str]) -> str:
        return ", ".join(
            f"--{n} {_shown(changed[n][1])} (was {_shown(changed[n][0])})" for n in names
        )

    if not changed:
        log.info("SIGHUP: settings read again: nothing changed")
        return
    log.info(
        "SIGHUP: settings read again: {applied}{restart}",
        applied=f"applied {said(applied)}" if applied else "applied nothing",
        restart=f"; needs a restart to take effect: {said(restart)}" if restart else "",
    )


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "(none)"
    return "(none)" if value is None else str(value)
