"""
The pipeline's settings, already validated: what every stage is given.
Each field's default is the option table's (L{eventpipe.config.table}).
"""

from __future__ import annotations

from dataclasses import dataclass

from eventpipe.config.endpoints import Network
from eventpipe.config.table import defaults

_DEFAULT = defaults()


@dataclass(frozen=True)
class Settings:
    """Everything the stages need to know."""

    instance_id: str
    rotation_interval: float = _DEFAULT["rotation_interval"]
    max_file_size: int = _DEFAULT["max_file_size"]
    check_interval: float = _DEFAULT["check_interval"]
    format: str = _DEFAULT["format"]
    compress: str = _DEFAULT["compress"]
    event_tag: str = _DEFAULT["event_tag"]
    max_event_size: int = _DEFAULT["max_event_size"]
    shutdown_timeout: float = _DEFAULT["shutdown_timeout"]
    max_spool_size: int = _DEFAULT["max_spool_size"]
    prefix: str = _DEFAULT["prefix"]
    retry_initial: float = _DEFAULT["retry_initial"]
    retry_max: float = _DEFAULT["retry_max"]
    upload_concurrency: int = _DEFAULT["upload_concurrency"]
    render_timeout: float = _DEFAULT["render_timeout"]
    upload_timeout: float = _DEFAULT["upload_timeout"]
    idle_timeout: float = _DEFAULT["idle_timeout"]
    max_connections: int = _DEFAULT["max_connections"]
    max_connections_per_host: int = _DEFAULT["max_connections_per_host"]
    repair_tag_names: bool = False
    allow: tuple[Network, ...] = ()
