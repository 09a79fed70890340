"""The pipeline's settings, already validated (see L{eventpipe.options})."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Settings:
    """Everything the stages need to know."""

    instance_id: str
    rotation_interval: float = 60.0
    max_file_size: int = 5 * 1024 * 1024
    check_interval: float = 10.0
    format: str = "xml"
    compress: str = "none"
    event_tag: str = "EVENT"
    max_event_size: int = 1024 * 1024
    shutdown_timeout: float = 30.0
    max_spool_size: int = 1_000_000_000
    prefix: str = ""
    retry_initial: float = 1.0
    retry_max: float = 60.0
    upload_concurrency: int = 2
    render_timeout: float = 120.0
    upload_timeout: float = 300.0
    repair_tag_names: bool = False
    idle_timeout: float = 0.0
    max_connections: int = 1000
    allow: tuple[Network, ...] = ()
