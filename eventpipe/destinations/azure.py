"""
Azure Blob Storage, with Microsoft's SDK (azure-storage-blob) in a thread
pool of its own, behind the same L{IUploader} as S3: shipping, retries,
conflicts and the stop do not know which one they talk to.

What it shares with S3: the key, fixed when the segment is sealed; a write
that only creates (C{If-None-Match: *}); the segment's identity in the
metadata and the one rule, L{delivered_before}, for a blob already on the
key; a large batch sent in parts and committed once, after a look whether
the key is taken.  What differs: the parts are staged blocks committed with
one C{Put Block List}; every request carries a C{Content-MD5} the service
checks (S3 checks a SHA-256); and credentials come from a connection string
(C{AZURE_STORAGE_CONNECTION_STRING}) or, with an account URL, from
C{DefaultAzureCredential} (managed identity, workload identity, environment,
Azure CLI).  Nothing secret is logged.
"""

from __future__ import annotations

import base64
import io
import os
import uuid
from collections.abc import Iterator
from typing import Any, BinaryIO

from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from eventpipe import fs
from eventpipe.destinations import (
    IObjectReader,
    IUploader,
    UploadError,
    UploadRequest,
)
from eventpipe.destinations.conditional import ConditionalStore

BLOCK_THRESHOLD = 8 * 1024 * 1024
BLOCK_SIZE = 4 * 1024 * 1024
# As for S3: a black hole is known within seconds; eventpipe retries itself.
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 20
ROLE = "Storage Blob Data Contributor"

_CONFIGURATION_CODES = {
    "AuthorizationFailure": f"give the identity the {ROLE} role on the container",
    "AuthorizationPermissionMismatch": f"give the identity the {ROLE} role on the container",
    "AuthenticationFailed": "the credentials are wrong: check AZURE_STORAGE_CONNECTION_STRING "
    "or the identity DefaultAzureCredential finds",
    "InsufficientAccountPermissions": f"give the identity the {ROLE} role on the container",
    "ContainerNotFound": "create the container, or fix --azure-container",
    "AccountIsDisabled": "the storage account is disabled",
    "InvalidResourceName": "fix --azure-container",
}


def classify(error: BaseException) -> UploadError:
    """Turn whatever the SDK raised into an L{UploadError}."""
    if isinstance(error, UploadError):
        return error
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

    if isinstance(error, ServiceRequestError):
        return UploadError(
            f"cannot reach the Azure endpoint: {error}",
            transient=True,
            hint="check --azure-account-url, DNS and the network path",
        )
    if isinstance(error, ServiceResponseError):
        return UploadError(
            f"no answer from the Azure endpoint within {READ_TIMEOUT} s ({type(error).__name__})",
            transient=True,
            hint="a firewall or proxy that drops the traffic",
        )
    if isinstance(error, HttpResponseError):
        code = str(getattr(error, "error_code", "") or "")
        status = getattr(error, "status_code", None) or 0
        message = f"Azure said {code or status}: {str(error.reason or '').strip()}".strip()
        hint = _CONFIGURATION_CODES.get(code)
        if hint is None and (status == 403 or isinstance(error, ClientAuthenticationError)):
            hint = f"give the identity the {ROLE} role on the container"
        if hint is None and status == 404:
            hint = "create the container, or fix --azure-container"
        if hint is not None:
            return UploadError(message, transient=False, hint=hint)
        # 500, 503 ServerBusy, 429 and the rest: waiting is the fix.
        return UploadError(message, transient=True)
    if type(error).__name__ == "CredentialUnavailableError":
        return UploadError(
            f"no usable Azure credentials: {error}",
            transient=False,
            hint="set AZURE_STORAGE_CONNECTION_STRING, or give the host an identity "
            "(managed identity, workload identity, environment, Azure CLI)",
        )
    return UploadError(f"{type(error).__name__}: {error}", transient=True)


def _status(error: BaseException) -> int | None:
    return getattr(error, "status_code", None)


class _Chunks(io.RawIOBase):
    """A downloaded blob as a stream, a chunk at a time."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._rest = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._rest:
            try:
                self._rest = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._rest))
        buffer[:size] = self._rest[:size]
        self._rest = self._rest[size:]
        return size


@implementer(IUploader, IObjectReader)
class AzureBlobUploader(ConditionalStore):
    """
    Delivers to a container of Azure Blob Storage (or Azurite), in a
    dedicated pool of C{concurrency} threads.

    @param account_url: C{https://ACCOUNT.blob.core.windows.net} (or an
        emulator's URL); with it, credentials come from
        C{DefaultAzureCredential} unless a connection string is given.
    @param environment: C{AZURE_STORAGE_CONNECTION_STRING} read from an env
        file (the process's own environment is read too).
    """

    def __init__(
        self,
        reactor: IReactorFromThreads,
        container: str,
        account_url: str | None = None,
        concurrency: int = 2,
        client: Any = None,
        pool: ThreadPool | None = None,
        clock: IReactorTime | None = None,
        environment: dict[str, str] | None = None,
    ) -> None:
        self._pool(reactor, clock, concurrency, "eventpipe-azure", pool)
        self.container = container
        self.account_url = account_url
        self._client = client
        self._environment = dict(environment or {})
        where = account_host(self._connection_string(), account_url)
        self.description = f"azure://{where}/{container}"

    def _connection_string(self) -> str:
        return os.environ.get("AZURE_STORAGE_CONNECTION_STRING") or self._environment.get(
            "AZURE_STORAGE_CONNECTION_STRING", ""
        )

    @property
    def client(self) -> Any:
        """The container's client, made on first use."""
        if self._client is None:
            from azure.storage.blob import BlobServiceClient

            options: dict[str, Any] = {
                "connection_timeout": CONNECT_TIMEOUT,
                "read_timeout": READ_TIMEOUT,
                "retry_total": 0,
            }
            connection = self._connection_string()
            if connection and not self.account_url:
                service = BlobServiceClient.from_connection_string(connection, **options)
            elif connection:
                service = BlobServiceClient.from_connection_string(
                    connection, account_url=self.account_url, **options
                )
            else:
                from azure.identity import DefaultAzureCredential

                if not self.account_url:
                    raise UploadError(
                        "no Azure account: neither AZURE_STORAGE_CONNECTION_STRING nor "
                        "--azure-account-url is set",
                        transient=False,
                        hint="set one of them",
                    )
                service = BlobServiceClient(
                    self.account_url, credential=DefaultAzureCredential(), **options
                )
            self._client = service.get_container_client(self.container)
        return self._client

    @property
    def in_parts_above(self) -> int:
        return BLOCK_THRESHOLD

    def classify(self, error: BaseException) -> UploadError:
        return classify(error)

    def taken(self, error: BaseException) -> bool:
        from azure.core.exceptions import ResourceExistsError

        return isinstance(error, ResourceExistsError) or _status(error) == 412

    def _settings(self, request: UploadRequest) -> Any:
        """Its content type and encoding, and a Content-MD5 the service checks."""
        from azure.storage.blob import ContentSettings

        return ContentSettings(
            content_type=request.content_type,
            content_encoding=request.content_encoding,
            content_md5=bytearray(fs.file_digest(request.path, "md5").digest()),
        )

    def create(self, request: UploadRequest) -> None:
        # Put Blob with If-None-Match: *.
        with open(request.path, "rb") as stream:
            data = stream.read()
        self.client.get_blob_client(request.key).upload_blob(
            data,
            length=len(data),
            overwrite=False,
            metadata=request.object_metadata(),
            content_settings=self._settings(request),
            validate_content=True,
            max_concurrency=1,
        )

    def create_in_parts(self, request: UploadRequest) -> None:
        from azure.core import MatchConditions
        from azure.storage.blob import BlobBlock

        blob = self.client.get_blob_client(request.key)
        blocks = []
        with open(request.path, "rb") as stream:
            number = 0
            while True:
                chunk = stream.read(BLOCK_SIZE)
                if not chunk:
                    break
                # Block ids of one blob must have one length.
                block_id = base64.b64encode(f"{number:08d}-{uuid.uuid4().hex}".encode()).decode()
                blob.stage_block(block_id, chunk, validate_content=True)
                blocks.append(BlobBlock(block_id=block_id))
                number += 1
                del chunk
        blob.commit_block_list(
            blocks,
            metadata=request.object_metadata(),
            content_settings=self._settings(request),
            match_condition=MatchConditions.IfMissing,
        )

    def look(self, key: str) -> dict[str, str] | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            properties = self.client.get_blob_client(key).get_blob_properties()
        except ResourceNotFoundError:
            return None
        return dict(properties.metadata or {})

    def _check(self) -> str:
        try:
            self.client.get_container_properties()
        except Exception as error:
            raise classify(error) from error
        return self.description

    def writes_over(self, key: str) -> bool:
        return overwrites(self.client, key)

    # What the tools read (blocking; see IObjectReader).

    def keys(self, prefix: str) -> list[str]:
        try:
            return sorted(b.name for b in self.client.list_blobs(name_starts_with=prefix))
        except Exception as error:
            raise classify(error) from error

    def open(self, key: str) -> BinaryIO:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            download = self.client.get_blob_client(key).download_blob()
        except ResourceNotFoundError:
            raise KeyError(key) from None
        except Exception as error:
            raise classify(error) from error
        return io.BufferedReader(_Chunks(download.chunks()))  # type: ignore[return-value]

    def metadata(self, key: str) -> dict[str, str]:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return dict(self.client.get_blob_client(key).get_blob_properties().metadata or {})
        except ResourceNotFoundError:
            return {}
        except Exception as error:
            raise classify(error) from error


def account_host(connection: str, account_url: str | None, unknown: str = "?") -> str:
    """
    The account's blob host (or an emulator's host and path), from the URL or
    the connection string, never its key; C{unknown}'s host when neither
    names an account.
    """
    if account_url:
        return account_url.split("://", 1)[-1].rstrip("/")
    parts = dict(part.split("=", 1) for part in connection.split(";") if "=" in part)
    if "BlobEndpoint" in parts:
        return parts["BlobEndpoint"].split("://", 1)[-1].rstrip("/")
    name = parts.get("AccountName", unknown)
    suffix = parts.get("EndpointSuffix", "core.windows.net")
    return f"{name}.blob.{suffix}"


def overwrites(container: Any, key: str) -> bool:
    """
    Whether the store overwrites a blob written with C{If-None-Match: *}:
    write C{key} so twice, then delete it.
    """
    from azure.core.exceptions import ResourceExistsError

    blob = container.get_blob_client(key)
    try:
        for _ in range(2):
            try:
                blob.upload_blob(b"probe\n", overwrite=False)
            except ResourceExistsError:
                return False
            except Exception as error:
                if _status(error) == 412:
                    return False
                raise
        return True
    finally:
        try:
            blob.delete_blob()
        except Exception:
            pass
