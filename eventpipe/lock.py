"""
Who holds a spool directory.  The service and C{eventpipe drain} hold
C{<spool>/lock} (an exclusive C{flock}) for as long as they run, so that two
of them never write one spool; C{eventpipe status} asks whether someone
does.  The lock file also says which process took it last and under which
instance id: a spool carried to another host is drained under the keys its
own host would have used.

The kernel drops the lock when the process ends, however it ends (a kill
-9 included): a stale file never blocks anyone.  Plain files, no reactor.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from dataclasses import dataclass
from typing import Any

LOCK = "lock"


class SpoolBusy(Exception):
    """Another process holds the spool."""

    def __init__(self, directory: str, holder: dict[str, Any]) -> None:
        pid = holder.get("pid")
        who = f"process {pid}" if pid else "another process"
        super().__init__(f"{directory} is in use by {who} (a running eventpipe)")
        self.holder = holder


@dataclass
class SpoolLock:
    """A held lock; L{release} (or the end of the process) lets it go."""

    directory: str
    fd: int | None
    # Where the holder serves its /status (None: it serves none).
    status_url: str | None = None

    def record(self, instance_id: str) -> None:
        """
        Write who holds it now (call again after a fork: the pid changed),
        under which instance id, and where its /status answers.
        """
        if self.fd is None:
            return
        found: dict[str, Any] = {"pid": os.getpid(), "instance": instance_id}
        if self.status_url:
            found["status"] = self.status_url
        text = json.dumps(found).encode() + b"\n"
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, text, 0)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def acquire(directory: str, instance_id: str) -> SpoolLock:
    """
    Take the spool's lock, or fail at once.

    @raise SpoolBusy: a running process holds it.
    @raise OSError: the lock file cannot be opened.
    """
    path = os.path.join(directory, LOCK)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        holder = _read(fd)
        os.close(fd)
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise SpoolBusy(directory, holder) from None
        raise
    lock = SpoolLock(directory, fd)
    lock.record(instance_id)
    return lock


def holder(directory: str) -> dict[str, Any] | None:
    """
    Who holds the spool now (what it recorded: C{pid}, C{instance}), or
    None when nobody does.  Takes nothing: a look only.
    """
    path = os.path.join(directory, LOCK)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return _read(fd)
            raise
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def last_instance(directory: str) -> str | None:
    """The instance id the spool was last held under, if it says."""
    try:
        fd = os.open(os.path.join(directory, LOCK), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        instance = _read(fd).get("instance")
    finally:
        os.close(fd)
    return instance if isinstance(instance, str) and instance else None


def _read(fd: int) -> dict[str, Any]:
    try:
        found = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}
