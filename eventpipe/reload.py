"""
SIGHUP: the settings read again, and what of them can change while the
service runs applied to it, connections kept open (as log shippers do).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from twisted.application.service import Service

from eventpipe.admission import Admission
from eventpipe.config.settings import Settings
from eventpipe.config.table import PARAMETERS, RELOADABLE
from eventpipe.ingest.ingest import Ingest
from eventpipe.retry import backoff_policy
from eventpipe.rotation import Rotation
from eventpipe.shipping.chain import Shipping


def reloadable(changed: dict[str, tuple[Any, Any]]) -> tuple[list[str], list[str]]:
    """The changed options that apply live, and those that need a restart."""
    return (
        [name for name in changed if name in RELOADABLE],
        [name for name in changed if name not in RELOADABLE],
    )


def live_settings(running: Settings, fresh: Any) -> Settings:
    """The running settings with the reloadable fields of C{fresh} (an L{Options})."""
    new = Settings(**fresh.settings_fields())
    # The Settings fields of the reloadable options (the table says which).
    fields = {"allow"} | {
        p.setting for p in PARAMETERS if p.name in RELOADABLE and p.setting is not None
    }
    return replace(running, **{f: getattr(new, f) for f in fields})


def apply_live(
    settings: Settings,
    shipping: Shipping,
    rotation: Rotation,
    admission: Admission,
    ingest: Ingest,
) -> None:
    """Give the running stages C{settings}."""
    shipping.settings = rotation.settings = settings
    admission.allow = settings.allow
    admission.max_connections = settings.max_connections
    admission.max_per_host = settings.max_connections_per_host
    ingest.idle_timeout = settings.idle_timeout
    ingest.max_spool_size = settings.max_spool_size
    shipping.retry_policy(backoff_policy(settings.retry_initial, settings.retry_max))
    rotation.every(settings.check_interval)
    ingest.update_backpressure()


class ReloadOnHangup(Service):
    """
    SIGHUP reads the settings again and applies what can change while the
    service runs (as log shippers do on SIGHUP); connections stay open.
    Logs are reopened on SIGUSR1, which twistd handles.
    """

    def __init__(self, reactor: Any, reload: Callable[[], None]) -> None:
        self.reactor = reactor
        self.reload = reload

    def startService(self) -> None:
        super().startService()
        signal.signal(signal.SIGHUP, self._hangup)

    def _hangup(self, number: int, frame: Any) -> None:
        if self.running:
            self.reactor.callFromThread(self.reload)

    def stopService(self) -> None:
        self.running = False
        # A SIGHUP during the stop changes nothing.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
