"""
The outbox: batches delivered into a local directory, laid out as the bucket
would be (the key is the path below it).

What S3 keeps in an object's metadata, the outbox keeps in a claim beside
the tree: C{.metadata/<key>.json}, written before the batch is linked into
place, so that a file under a key is known for this segment's delivery or
someone else's by the same rule as on S3
(L{eventpipe.destinations.delivered_before}).
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Callable
from typing import BinaryIO

from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from zope.interface import implementer

from eventpipe.destinations import (
    IObjectReader,
    IUploader,
    KeyConflict,
    PooledUploader,
    UploadError,
    UploadRequest,
    delivered_before,
)
from eventpipe.fs import copy_file, file_sha256, fsync_directory, private_makedirs

_TEMPORARY = ".part"
# Where the claims are, below the outbox.
METADATA = ".metadata"


@implementer(IUploader, IObjectReader)
class LocalDirectoryUploader(PooledUploader):
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
        self._pool(reactor, clock, threads, "eventpipe-outbox")
        self.directory = os.path.abspath(directory)
        self.description = f"outbox {self.directory}"
        # Marks the temporaries of this process (a pid repeats: in a
        # container every life is pid 1).
        self._life = uuid.uuid4().hex[:12]

    # What the tools read (blocking; see IObjectReader).

    def keys(self, prefix: str) -> list[str]:
        base, _, start = prefix.rpartition("/")
        top = os.path.join(self.directory, *base.split("/")) if base else self.directory
        found = []
        for parent, folders, names in os.walk(top):
            folders[:] = sorted(f for f in folders if not f.startswith("."))
            for name in names:
                if name.startswith("."):
                    continue
                key = os.path.relpath(os.path.join(parent, name), self.directory)
                key = key.replace(os.sep, "/")
                if key.startswith(prefix):
                    found.append(key)
        return sorted(found)

    def open(self, key: str) -> BinaryIO:
        try:
            return open(os.path.join(self.directory, *key.split("/")), "rb")
        except FileNotFoundError:
            raise KeyError(key) from None

    def metadata(self, key: str) -> dict[str, str]:
        claim = os.path.join(self.directory, METADATA, *key.split("/")) + ".json"
        try:
            with open(claim, "rb") as stream:
                found = json.loads(stream.read())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}

    def deliver(self, request: UploadRequest) -> None:
        """
        Write aside under a name of its own and flush; claim the key (see
        L{_claim}); link the batch into place (which fails if the name
        exists), flush the directory, drop the aside name.  A delivered file
        is never opened for writing: a process killed between two steps
        leaves at most a stale temporary, removed at the next start, or a
        claim of its own, which the next attempt finds.
        """
        target = os.path.join(self.directory, *request.key.split("/"))
        claim = os.path.join(self.directory, METADATA, *request.key.split("/")) + ".json"
        parent = os.path.dirname(target)
        private_makedirs(parent)
        with open(request.path, "rb") as source:
            temporary = self._write_aside(target, lambda sink: copy_file(source, sink))
        try:
            fresh = self._claim(claim, request, replace=not os.path.exists(target))
            try:
                os.link(temporary, target)
            except FileExistsError:
                # Under a claim of this segment's (by its source digest,
                # whatever the bytes of the render that linked it): its
                # delivery.  Under a claim made just now: a file that an
                # earlier release (which made no claims) left there, this
                # delivery only if it holds these very bytes.
                if fresh and file_sha256(target) != request.sha256:
                    os.unlink(claim)
                    raise KeyConflict(request.key) from None
                return
            fsync_directory(parent)
        finally:
            _unlink(temporary)

    def _claim(self, claim: str, request: UploadRequest, replace: bool) -> bool:
        """
        Make the claim of C{request}'s key (its metadata, as S3 would keep
        it), or find that an earlier attempt for this segment made it (by
        the segment's source digest: another render of it -- a new release,
        another --event-tag -- claims the same).  A claim of this segment's
        with no file under the key yet (the attempt that made it was
        killed) is made anew with C{request}'s metadata when C{replace}.

        @return: whether the claim was made now.
        @raise KeyConflict: someone else's claim is there.
        """
        metadata = request.object_metadata()
        parent = os.path.dirname(claim)
        private_makedirs(parent)
        text = json.dumps(metadata, sort_keys=True).encode("utf-8") + b"\n"
        temporary = self._write_aside(claim, lambda sink: sink.write(text))
        try:
            os.link(temporary, claim)
        except FileExistsError:
            try:
                with open(claim, "rb") as stream:
                    found = json.loads(stream.read())
            except (OSError, ValueError):
                found = {}
            if not isinstance(found, dict) or not delivered_before(request, found):
                raise KeyConflict(request.key) from None
            if replace and found != metadata:
                # Ours, and nothing is delivered under it: say what is.
                os.replace(temporary, claim)
                fsync_directory(parent)
            return False
        else:
            fsync_directory(parent)
        finally:
            _unlink(temporary)
        return True

    def _write_aside(self, target: str, write: Callable[[BinaryIO], object]) -> str:
        """Write a flushed temporary beside C{target}; return its path."""
        fd, temporary = tempfile.mkstemp(
            prefix=f".{os.path.basename(target)}.{self._life}.",
            suffix=_TEMPORARY,
            dir=os.path.dirname(target),
        )
        try:
            with os.fdopen(fd, "wb") as sink:
                write(sink)
                sink.flush()
                os.fsync(sink.fileno())
        except BaseException:
            _unlink(temporary)
            raise
        return temporary

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
                    _unlink(os.path.join(parent, name))


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
