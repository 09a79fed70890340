"""
Destinations.  Everything the pipeline knows of a destination is
L{IUploader}: deliver this file under this key, idempotently.

Two implementations: L{LocalDirectoryUploader} (the outbox, laid out as the
bucket would be) and L{S3Uploader} (boto3 in a dedicated thread pool).  Both
write conditionally: an object that already exists under the key with the
same content counts as delivered; with different content the upload fails
with L{KeyConflict} and the data stays in the spool.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from zope.interface import Attribute, Interface, implementer

from eventpipe.spool import private_makedirs

T = TypeVar("T")

MULTIPART_THRESHOLD = 16 * 1024 * 1024
MULTIPART_PART_SIZE = 8 * 1024 * 1024


@dataclass(frozen=True)
class UploadRequest:
    """What to deliver, and how to describe it."""

    path: str
    key: str
    sha256: str
    content_type: str
    content_encoding: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


class UploadError(Exception):
    """
    A failed delivery, classified.

    @ivar transient: True when waiting is the fix (throttling, 5xx,
        timeouts, connection errors); False when someone has to change
        something (permissions, a missing bucket, a key conflict).  Either
        way the data stays in the spool and delivery is retried.
    @ivar hint: what to do about it, for the log.
    """

    def __init__(self, message: str, transient: bool, hint: str = "") -> None:
        super().__init__(message)
        self.transient = transient
        self.hint = hint


class KeyConflict(UploadError):
    """An object exists under the key with other content."""

    def __init__(self, key: str) -> None:
        super().__init__(
            f"an object with different content already exists at {key}",
            transient=False,
            hint="another writer uses this prefix and instance id: "
            "give every instance its own --instance-id",
        )


class IUploader(Interface):
    """A destination for batch files."""

    description = Attribute("Where objects go, for the log (no secrets).")

    def start() -> None:
        """Start whatever the uploader needs (threads, clients)."""

    def stop() -> None:
        """Stop it; an upload in progress may finish in the background."""

    def upload(request: UploadRequest) -> Deferred[None]:
        """
        Deliver C{request.path} under C{request.key}, idempotently.  Fails
        with L{UploadError} (or any exception, taken as transient).
        """

    def check() -> Deferred[str]:
        """
        Probe the destination.  Fires with a short description when it is
        reachable, fails with L{UploadError} saying what is wrong otherwise.
        """


class DaemonThreadPool(ThreadPool):
    """
    A thread pool whose threads never hold the process up: stopping it does
    not wait for work in progress (an upload to a dead server must not
    block shutdown past its timeout; what it was uploading stays in the
    spool and is shipped again).
    """

    @staticmethod
    def threadFactory(*args: Any, **kwargs: Any) -> threading.Thread:  # type: ignore[override]
        return threading.Thread(*args, daemon=True, **kwargs)

    def stop(self) -> None:
        self.joined = True
        self.started = False
        self._team.quit()


class _ThreadedUploader:
    """Runs the blocking work of an uploader in its own thread pool."""

    def __init__(
        self,
        reactor: IReactorFromThreads,
        threads: int,
        name: str,
        pool: ThreadPool | None = None,
    ) -> None:
        self._reactor = reactor
        self._pool = pool if pool is not None else DaemonThreadPool(0, threads, name)

    def start(self) -> None:
        if not self._pool.started:
            self._pool.start()

    def stop(self) -> None:
        if self._pool.started:
            self._pool.stop()

    def _in_thread(self, function: Callable[..., T], *args: Any) -> Deferred[T]:
        return deferToThreadPool(self._reactor, self._pool, function, *args)


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@implementer(IUploader)
class LocalDirectoryUploader(_ThreadedUploader):
    """
    Delivers into a directory, the key being the path below it.  A file
    appears whole or not at all (written aside, then linked into place; the
    link fails if the name exists, which makes the write conditional).
    """

    def __init__(self, reactor: IReactorFromThreads, directory: str, threads: int = 2) -> None:
        super().__init__(reactor, threads, "eventpipe-outbox")
        self.directory = os.path.abspath(directory)
        self.description = f"outbox {self.directory}"

    def upload(self, request: UploadRequest) -> Deferred[None]:
        return self._in_thread(self._upload, request)

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
        return self._in_thread(self._check)

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


# S3.

_CONFIGURATION_CODES = {
    "AccessDenied": "grant s3:PutObject (and s3:GetObject) on the bucket and prefix",
    "AllAccessDisabled": "the bucket's access is disabled",
    "InvalidAccessKeyId": "the access key is unknown: check the credentials",
    "SignatureDoesNotMatch": "the secret key is wrong: check the credentials",
    "ExpiredToken": "the session token has expired: refresh the credentials",
    "InvalidToken": "the session token is invalid: refresh the credentials",
    "NoSuchBucket": "create the bucket, or fix --s3-bucket",
    "InvalidBucketName": "fix --s3-bucket",
    "PermanentRedirect": "the bucket is in another region: set --s3-region",
    "AuthorizationHeaderMalformed": "the region is wrong: set --s3-region",
    "403": "grant s3:PutObject (and s3:GetObject) on the bucket and prefix",
    "404": "create the bucket, or fix --s3-bucket",
}


def classify(error: BaseException) -> UploadError:
    """Turn whatever boto3 raised into an L{UploadError}."""
    if isinstance(error, UploadError):
        return error
    from botocore.exceptions import (
        ClientError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
    )

    if isinstance(error, (NoCredentialsError, PartialCredentialsError)):
        return UploadError(
            f"no usable AWS credentials: {error}",
            transient=False,
            hint="provide credentials through boto3's standard chain "
            "(environment, profile, SSO, instance or container role)",
        )
    if isinstance(error, NoRegionError):
        return UploadError(str(error), transient=False, hint="set --s3-region")
    if isinstance(error, ClientError):
        response: Any = error.response
        code = str(response.get("Error", {}).get("Code", ""))
        status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        message = f"S3 said {code or status}: {response.get('Error', {}).get('Message', '')}"
        hint = _CONFIGURATION_CODES.get(code)
        if hint is not None:
            return UploadError(message.strip(), transient=False, hint=hint)
        return UploadError(message.strip(), transient=True)
    return UploadError(f"{type(error).__name__}: {error}", transient=True)


@implementer(IUploader)
class S3Uploader(_ThreadedUploader):
    """
    Delivers to S3 (or an S3-compatible store) with boto3, in a dedicated
    thread pool of C{concurrency} threads.

    Every object is written with C{If-None-Match: *} and an SHA-256
    checksum that S3 verifies; the same SHA-256 goes into the object's
    metadata so that a conditional-write refusal can tell "already
    delivered" from "someone else's object".
    """

    def __init__(
        self,
        reactor: IReactorFromThreads,
        bucket: str,
        endpoint_url: str | None = None,
        region: str | None = None,
        concurrency: int = 2,
        client: Any = None,
        pool: ThreadPool | None = None,
    ) -> None:
        super().__init__(reactor, concurrency, "eventpipe-s3", pool)
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region = region
        self._concurrency = concurrency
        self._client = client
        where = f" at {endpoint_url}" if endpoint_url else ""
        self.description = f"s3://{bucket}{where}"

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.session.Session().client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=self.region,
                config=Config(
                    retries={"max_attempts": 2, "mode": "standard"},
                    connect_timeout=10,
                    read_timeout=60,
                    max_pool_connections=max(self._concurrency, 2),
                ),
            )
        return self._client

    def upload(self, request: UploadRequest) -> Deferred[None]:
        return self._in_thread(self._upload_classified, request)

    def _upload_classified(self, request: UploadRequest) -> None:
        try:
            self._upload(request)
        except Exception as error:
            raise classify(error) from error

    def _extra(self, request: UploadRequest) -> dict[str, Any]:
        extra: dict[str, Any] = {
            "ContentType": request.content_type,
            "Metadata": dict(request.metadata, sha256=request.sha256),
        }
        if request.content_encoding:
            extra["ContentEncoding"] = request.content_encoding
        return extra

    def _upload(self, request: UploadRequest) -> None:
        size = os.path.getsize(request.path)
        try:
            if size <= MULTIPART_THRESHOLD:
                checksum = base64.b64encode(bytes.fromhex(request.sha256)).decode("ascii")
                with open(request.path, "rb") as body:
                    self.client.put_object(
                        Bucket=self.bucket,
                        Key=request.key,
                        Body=body,
                        IfNoneMatch="*",
                        ChecksumAlgorithm="SHA256",
                        ChecksumSHA256=checksum,
                        **self._extra(request),
                    )
            else:
                self._multipart(request)
        except Exception as error:
            if not _precondition_failed(error):
                raise
            self._confirm_existing(request)

    def _multipart(self, request: UploadRequest) -> None:
        client = self.client
        created = client.create_multipart_upload(
            Bucket=self.bucket,
            Key=request.key,
            ChecksumAlgorithm="SHA256",
            **self._extra(request),
        )
        upload_id = created["UploadId"]
        try:
            parts = []
            with open(request.path, "rb") as stream:
                number = 1
                while True:
                    chunk = stream.read(MULTIPART_PART_SIZE)
                    if not chunk:
                        break
                    answer = client.upload_part(
                        Bucket=self.bucket,
                        Key=request.key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                        ChecksumAlgorithm="SHA256",
                    )
                    parts.append(
                        {
                            "PartNumber": number,
                            "ETag": answer["ETag"],
                            "ChecksumSHA256": answer.get("ChecksumSHA256"),
                        }
                    )
                    number += 1
                    del chunk
            parts = [{k: v for k, v in part.items() if v is not None} for part in parts]
            client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=request.key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                IfNoneMatch="*",
            )
        except BaseException:
            try:
                client.abort_multipart_upload(
                    Bucket=self.bucket, Key=request.key, UploadId=upload_id
                )
            except Exception:
                pass
            raise

    def _confirm_existing(self, request: UploadRequest) -> None:
        """
        The key is taken.  If it holds our content, the earlier attempt (or
        the earlier life of this process) delivered it.
        """
        head = self.client.head_object(Bucket=self.bucket, Key=request.key)
        if head.get("Metadata", {}).get("sha256") != request.sha256:
            raise KeyConflict(request.key)

    def check(self) -> Deferred[str]:
        return self._in_thread(self._check)

    def _check(self) -> str:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as error:
            raise classify(error) from error
        return self.description


def _precondition_failed(error: BaseException) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(error, ClientError):
        return False
    response: Any = error.response
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ("PreconditionFailed", "412") or status == 412
