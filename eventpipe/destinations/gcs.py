"""
Google Cloud Storage, with Google's client (google-cloud-storage) in a
thread pool of its own, behind the same L{IUploader} as S3 and Azure:
shipping, retries, conflicts and the stop do not know which one they talk
to.

What it shares with S3 and Azure: the key, fixed when the segment is
sealed; a write that only creates (C{ifGenerationMatch=0}); the segment's
identity in the custom metadata and the one rule, L{delivered_before}, for
an object already on the key; a large batch that first looks whether its
key is taken.  What differs: a batch up to 8 MiB goes in one multipart
request, a larger one in a resumable upload of 8 MiB chunks, committed (with
the same precondition) by its last chunk; every upload carries a CRC32C
that the service checks; the client's own retries are off (eventpipe's
backoff decides) and every request has 5 s to connect and 20 s to answer.
Credentials are Application Default Credentials (a service-account key in
C{GOOGLE_APPLICATION_CREDENTIALS}, workload identity on GKE, the metadata
server on a VM); only an explicit emulator endpoint (C{--gcs-endpoint-url},
or the client's own C{STORAGE_EMULATOR_HOST}) goes anonymous.  Nothing
secret is logged.
"""

from __future__ import annotations

import io
import os
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from eventpipe.destinations import IObjectReader, IUploader, UploadError, UploadRequest
from eventpipe.destinations.conditional import ConditionalStore
from eventpipe.naming import normalize_prefix

# google-cloud-storage sends a file of a known size up to this in one
# multipart request; larger ones go resumable, in chunks of this size.
MULTIPART_LIMIT = 8 * 1024 * 1024
CHUNK_SIZE = 8 * 1024 * 1024
# As for S3 and Azure: a black hole is known within seconds.
TIMEOUT = (5, 20)
ROLE = "roles/storage.objectCreator plus storage.objects.get"
_ROLE_HINT = f"give the service account {ROLE} on the bucket"


def classify(error: BaseException) -> UploadError:
    """Turn whatever the client raised into an L{UploadError}."""
    if isinstance(error, UploadError):
        return error
    from google.api_core import exceptions
    from google.auth import exceptions as auth
    from requests import exceptions as http

    if isinstance(error, auth.DefaultCredentialsError):
        return UploadError(
            f"no usable Google Cloud credentials: {error}",
            transient=False,
            hint="set GOOGLE_APPLICATION_CREDENTIALS to a service-account key, or run "
            "with a workload identity or a VM's service account",
        )
    if isinstance(error, (http.ReadTimeout, http.ConnectTimeout)):
        return UploadError(
            f"no answer from the GCS endpoint within {TIMEOUT[1]} s ({type(error).__name__})",
            transient=True,
            hint="a firewall or proxy that drops the traffic",
        )
    if isinstance(error, (http.ConnectionError, auth.TransportError)):
        return UploadError(
            f"cannot reach the GCS endpoint: {error}",
            transient=True,
            hint="check --gcs-endpoint-url, DNS and the network path",
        )
    if isinstance(error, exceptions.GoogleAPICallError):
        code = int(error.code or 0)
        message = f"GCS said {code}: {_detail(error)}"
        if code in (401, 403):
            return UploadError(message, transient=False, hint=_ROLE_HINT)
        if code == 404:
            return UploadError(
                message, transient=False, hint="create the bucket, or fix --gcs-bucket"
            )
        if code == 400:
            return UploadError(message, transient=False, hint="fix --gcs-bucket or --gcs-prefix")
        # 429, 5xx and the rest: waiting is the fix.
        return UploadError(message, transient=True)
    return UploadError(f"{type(error).__name__}: {error}", transient=True)


def _detail(error: Any) -> str:
    """The service's own words for an error, on one line (not the request's URL)."""
    for found in getattr(error, "errors", None) or []:
        if isinstance(found, dict) and found.get("message"):
            return " ".join(str(found["message"]).split())
    text = str(getattr(error, "message", "") or error)
    # An upload's error quotes the answer's JSON after the request's URL.
    said = re.search(r'"message":\s*"([^"]*)"', text)
    return " ".join((said.group(1) if said else text.split(": {", 1)[0]).split())


def emulator_endpoint(endpoint: str | None) -> str | None:
    """The emulator's endpoint: the option's, or the client's own variable."""
    if endpoint:
        return endpoint
    host = os.environ.get("STORAGE_EMULATOR_HOST", "")
    if host and "://" not in host:
        host = "http://" + host
    return host or None


@implementer(IUploader, IObjectReader)
class GCSUploader(ConditionalStore):
    """
    Delivers to a Google Cloud Storage bucket (or fake-gcs-server), in a
    dedicated pool of C{concurrency} threads.

    @param endpoint_url: an emulator's URL; requests to it are anonymous.
    @param environment: C{GOOGLE_APPLICATION_CREDENTIALS} read from an env
        file.
    """

    def __init__(
        self,
        reactor: IReactorFromThreads,
        bucket: str,
        endpoint_url: str | None = None,
        concurrency: int = 2,
        client: Any = None,
        pool: ThreadPool | None = None,
        clock: IReactorTime | None = None,
        environment: dict[str, str] | None = None,
    ) -> None:
        self._pool(reactor, clock, concurrency, "eventpipe-gcs", pool)
        # GOOGLE_APPLICATION_CREDENTIALS from an env file (the process's own
        # environment is read by the client itself).
        self._key_file = (environment or {}).get("GOOGLE_APPLICATION_CREDENTIALS", "")
        self.bucket_name = bucket
        self.endpoint_url = emulator_endpoint(endpoint_url)
        self._client = client
        self._bucket: Any = None
        where = self.endpoint_url.split("://", 1)[-1] + "/" if self.endpoint_url else ""
        self.description = f"gs://{where}{bucket}"

    @property
    def client(self) -> Any:
        """The storage client, made on first use."""
        if self._client is None:
            from google.cloud import storage

            if self.endpoint_url:
                from google.auth.credentials import AnonymousCredentials

                self._client = storage.Client(
                    project="eventpipe",
                    credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                    client_options={"api_endpoint": self.endpoint_url},
                )
            elif self._key_file:
                try:
                    self._client = storage.Client.from_service_account_json(self._key_file)
                except (OSError, ValueError) as error:
                    raise UploadError(
                        f"cannot use the service-account key {self._key_file}: {error}",
                        transient=False,
                        hint="GOOGLE_APPLICATION_CREDENTIALS (in the env file) must name a "
                        "readable service-account key file",
                    ) from None
            else:
                self._client = storage.Client()
        return self._client

    @property
    def bucket(self) -> Any:
        if self._bucket is None:
            self._bucket = self.client.bucket(self.bucket_name)
        return self._bucket

    @property
    def in_parts_above(self) -> int:
        return MULTIPART_LIMIT

    def classify(self, error: BaseException) -> UploadError:
        return classify(error)

    def taken(self, error: BaseException) -> bool:
        return int(getattr(error, "code", 0) or 0) == 412

    def _blob(self, request: UploadRequest, chunked: bool) -> Any:
        blob = self.bucket.blob(request.key, chunk_size=CHUNK_SIZE if chunked else None)
        blob.metadata = request.object_metadata()
        blob.content_encoding = request.content_encoding
        return blob

    def _upload(self, request: UploadRequest, chunked: bool) -> None:
        blob = self._blob(request, chunked)
        with open(request.path, "rb") as stream:
            blob.upload_from_file(
                stream,
                size=os.fstat(stream.fileno()).st_size,
                content_type=request.content_type,
                if_generation_match=0,
                checksum="crc32c",
                timeout=TIMEOUT,
                retry=None,
            )

    def create(self, request: UploadRequest) -> None:
        # One multipart request, only if no generation exists.
        self._upload(request, chunked=False)

    def create_in_parts(self, request: UploadRequest) -> None:
        # A resumable upload: the object exists only once the last chunk is in.
        self._upload(request, chunked=True)

    def look(self, key: str) -> dict[str, str] | None:
        blob = self.bucket.get_blob(key, timeout=TIMEOUT, retry=None)
        if blob is None:
            return None
        return dict(blob.metadata or {})

    def _check(self) -> str:
        # A look needs storage.objects.get only (no bucket permission); a
        # missing bucket shows in the probe's write, which follows.
        try:
            self.look(self.probe_key or ".eventpipe-check/look")
        except Exception as error:
            raise classify(error) from error
        return self.description

    def writes_over(self, key: str) -> bool:
        return overwrites(self.bucket, key)

    # What the tools read (blocking; see IObjectReader).

    def keys(self, prefix: str) -> list[str]:
        try:
            listed = self.client.list_blobs(
                self.bucket_name, prefix=prefix, timeout=TIMEOUT, retry=None
            )
            return sorted(blob.name for blob in listed)
        except Exception as error:
            raise classify(error) from error

    def open(self, key: str) -> BinaryIO:
        try:
            blob = self.bucket.get_blob(key, timeout=TIMEOUT, retry=None)
        except Exception as error:
            raise classify(error) from error
        if blob is None:
            raise KeyError(key)
        return blob.open("rb", chunk_size=CHUNK_SIZE, timeout=TIMEOUT, retry=None)  # type: ignore[no-any-return]

    def metadata(self, key: str) -> dict[str, str]:
        try:
            blob = self.bucket.get_blob(key, timeout=TIMEOUT, retry=None)
        except Exception as error:
            raise classify(error) from error
        return dict(blob.metadata or {}) if blob is not None else {}


def overwrites(bucket: Any, key: str) -> bool:
    """
    Whether the store overwrites an object written with
    C{ifGenerationMatch=0}: write C{key} so twice, then delete it (where
    the role allows).
    """
    blob = bucket.blob(key)
    try:
        for _ in range(2):
            try:
                blob.upload_from_file(
                    io.BytesIO(b"probe\n"),
                    size=6,
                    if_generation_match=0,
                    timeout=TIMEOUT,
                    retry=None,
                )
            except Exception as error:
                if int(getattr(error, "code", 0) or 0) == 412:
                    return False
                raise
        return True
    finally:
        try:
            blob.delete(timeout=TIMEOUT, retry=None)
        except Exception:
            pass


# What eventpipe check says of the bucket (see L{eventpipe.check}).


def check_bucket(
    uploader: GCSUploader, prefix: str, instance: str, allow_unconditional: bool = False
) -> Iterator[tuple[bool, str]]:
    """
    The bucket exists, and a probe object can be created (the second create
    of it is refused: the preconditions work), read and deleted; a refusal
    names the role that is missing.  An endpoint that does not answer ends
    the checks at once.
    """
    try:
        found = uploader.client.lookup_bucket(uploader.bucket_name, timeout=TIMEOUT, retry=None)
    except Exception as error:
        if getattr(error, "code", None) != 403:
            yield False, f"bucket {uploader.bucket_name}: {_why(error)}"
            return
        # Without storage.buckets.get (objectCreator has none), the probe's
        # create tells whether the bucket is there.
        found = True
    if found is None:
        yield False, f"bucket {uploader.bucket_name}: does not exist"
        return
    yield True, f"bucket {uploader.bucket_name}: reachable"
    where = f"{uploader.description}/{normalize_prefix(prefix)}"
    blob = uploader.bucket.blob(
        f"{normalize_prefix(prefix)}.eventpipe-check/{instance}-{uuid.uuid4().hex}"
    )

    def create() -> Any:
        return blob.upload_from_file(
            io.BytesIO(b"probe\n"), size=6, if_generation_match=0, timeout=TIMEOUT, retry=None
        )

    steps: list[tuple[str, Callable[[], Any]]] = [
        ("create", create),
        ("read", lambda: blob.download_as_bytes(timeout=TIMEOUT, retry=None)),
        ("delete", lambda: blob.delete(timeout=TIMEOUT, retry=None)),
    ]
    for verb, call in steps:
        try:
            call()
        except Exception as error:
            yield False, f"{where}: cannot {verb} a probe object: {_why(error)}"
            return
        yield True, f"{where}: can {verb} objects"
        if verb == "create":
            yield _second_create(create, where, allow_unconditional)


def _second_create(
    create: Callable[[], Any], where: str, allow_unconditional: bool
) -> tuple[bool, str]:
    """The second create of the probe: refused (412) where the preconditions work."""
    try:
        create()
    except Exception as error:
        if getattr(error, "code", None) != 412:
            return False, f"{where}: cannot create a probe object twice: {_why(error)}"
        return True, f"{where}: refuses a second create of an object (ifGenerationMatch=0)"
    return (
        allow_unconditional,
        f"{where}: created an object twice that was written only if absent: it ignores "
        "preconditions, and the service refuses such a store (or pass "
        "--allow-unconditional-writes)",
    )


def _why(error: Exception) -> str:
    if getattr(error, "code", None) in (401, 403):
        return f"access denied: the service account lacks {ROLE} on the bucket"
    classified = classify(error)
    hint = f" ({classified.hint})" if classified.hint else ""
    return f"{classified}{hint}"
