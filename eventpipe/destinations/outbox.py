"""
The outbox: batches delivered into a local directory, laid out as the bucket
would be (the key is the path below it).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from zope.interface import implementer

from eventpipe.destinations import IUploader, KeyConflict, UploadError, UploadRequest, file_sha256
from eventpipe.spool import fsync_directory, private_makedirs
from eventpipe.threads import ThreadedWork

_TEMPORARY = ".part"


@implementer(IUploader)
class LocalDirectoryUploader:
    """
    Delivers into a directory, the key being the path below it.  A file
    appears whole or not at all (written aside, then linked into place; the
    link fails if the name exists, which makes the write conditional).
    """

    def __init__(
        self,
        reactor: IReactorFromThreads,
        directory: str,
        threads: int = 2,
        clock: IReactorTime | None = None,
    ) -> None:
        self.work = ThreadedWork(reactor, clock or reactor, threads, "eventpipe-outbox")  # type: ignore[arg-type]
        self.directory = os.path.abspath(directory)
        self.description = f"outbox {self.directory}"
        # Marks the temporaries of this process (a pid repeats: in a
        # container every life is pid 1).
        self._life = uuid.uuid4().hex[:12]

    def start(self) -> None:
        self.work.start()

    def stop(self) -> Deferred[None]:
        return self.work.stop()

    def upload(self, request: UploadRequest) -> Deferred[None]:
        return self.work.run(self._upload, request)

    def _upload(self, request: UploadRequest) -> None:
        """
        Write aside under a name of its own, flush, link into place (which
        fails if the name exists), flush the directory, drop the aside name.
        A delivered file is never opened for writing: a process killed
        between two steps leaves at most a stale temporary, removed at the
        next start.
        """
        target = os.path.join(self.directory, *request.key.split("/"))
        parent = os.path.dirname(target)
        private_makedirs(parent)
        fd, temporary = tempfile.mkstemp(
            prefix=f".{os.path.basename(target)}.{self._life}.", suffix=_TEMPORARY, dir=parent
        )
        try:
            with open(request.path, "rb") as source, os.fdopen(fd, "wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
                sink.flush()
                os.fsync(sink.fileno())
            try:
                os.link(temporary, target)
            except FileExistsError:
                if file_sha256(target) != request.sha256:
                    raise KeyConflict(request.key) from None
                return
            fsync_directory(parent)
        finally:
            try:
                os.unlink(temporary)
            except FileNotFoundError:
                pass

    def check(self) -> Deferred[str]:
        return self.work.run(self._check)

    def _check(self) -> str:
        try:
            private_makedirs(self.directory)
        except OSError as error:
            raise UploadError(
                f"cannot create the outbox {self.directory}: {error.strerror}",
                transient=False,
                hint="choose a writable --outbox",
            ) from error
        if not os.access(self.directory, os.W_OK):
            raise UploadError(
                f"the outbox {self.directory} is not writable",
                transient=False,
                hint="choose a writable --outbox",
            )
        self._remove_stale_temporaries()
        return self.description

    def _remove_stale_temporaries(self) -> None:
        """Temporaries left by a process that died in the middle of a write."""
        mine = f".{self._life}."
        for parent, _, names in os.walk(self.directory):
            for name in names:
                if name.startswith(".") and name.endswith(_TEMPORARY) and mine not in name:
                    try:
                        os.unlink(os.path.join(parent, name))
                    except FileNotFoundError:
                        pass
