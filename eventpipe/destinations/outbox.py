"""
The outbox: batches delivered into a local directory, laid out as the bucket
would be (the key is the path below it).
"""

from __future__ import annotations

import os
import shutil

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from zope.interface import implementer

from eventpipe.destinations import IUploader, KeyConflict, UploadError, UploadRequest, file_sha256
from eventpipe.spool import private_makedirs
from eventpipe.threads import ThreadedWork


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

    def start(self) -> None:
        self.work.start()

    def stop(self) -> Deferred[None]:
        return self.work.stop()

    def upload(self, request: UploadRequest) -> Deferred[None]:
        return self.work.run(self._upload, request)

    def _upload(self, request: UploadRequest) -> None:
        target = os.path.join(self.directory, *request.key.split("/"))
        parent = os.path.dirname(target)
        private_makedirs(parent)
        temporary = os.path.join(parent, f".{os.path.basename(target)}.part")
        with open(request.path, "rb") as source:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
                sink.flush()
                os.fsync(sink.fileno())
        try:
            os.link(temporary, target)
        except FileExistsError:
            if file_sha256(target) != request.sha256:
                raise KeyConflict(request.key) from None
        finally:
            os.unlink(temporary)

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
        return self.description
