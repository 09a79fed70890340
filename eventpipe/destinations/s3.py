"""
Delivery to S3 (or an S3-compatible store) with boto3, in a thread pool of
its own: txaws, the Twisted-native S3 client, has had no release since 2017
and does not import on Python 3.
"""

from __future__ import annotations

import base64
import os
import re
import sys
from typing import Any, BinaryIO

from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from eventpipe.destinations import (
    IObjectReader,
    IUploader,
    UploadError,
    UploadRequest,
)
from eventpipe.destinations.conditional import ConditionalStore

MULTIPART_THRESHOLD = 16 * 1024 * 1024
MULTIPART_PART_SIZE = 8 * 1024 * 1024
# Seconds to wait for a connection, and for each answer (or each send) on
# it: an endpoint behind a firewall that swallows packets is known for what
# it is within seconds, not minutes.  eventpipe retries on its own (with
# backoff), so botocore does not.
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 20

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


# Values never to be written into a message (the secret key and session
# token of the environment and of an env file), registered by the uploader.
_SECRETS: set[str] = set()
_SECRET_NAMES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
# What the variables an env file may give for AWS are to boto3: a keyword of
# its Session, or None for the endpoint, which goes to the client.
SESSION_KEYWORDS: dict[str, str | None] = {
    "AWS_ACCESS_KEY_ID": "aws_access_key_id",
    "AWS_SECRET_ACCESS_KEY": "aws_secret_access_key",
    "AWS_SESSION_TOKEN": "aws_session_token",
    "AWS_PROFILE": "profile_name",
    "AWS_ENDPOINT_URL": None,
}
_SIGNATURE = re.compile(r"(Signature=)[0-9a-fA-F]+")


def redacted(text: str) -> str:
    """C{text} with every known secret (and any request signature) masked."""
    for secret in _SECRETS:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _SIGNATURE.sub(r"\1[redacted]", text)


def classify(error: BaseException) -> UploadError:
    """
    Turn whatever boto3 raised into an L{UploadError}, whose message and
    hint never hold a secret (see L{redacted}): an S3-compatible store, or a
    library, may echo what it was given.
    """
    if isinstance(error, UploadError):
        return error
    classified = _classify(error)
    classified.args = tuple(redacted(str(a)) for a in classified.args)
    classified.hint = redacted(classified.hint)
    return classified


def _classify(error: BaseException) -> UploadError:
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
        ReadTimeoutError,
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
    if isinstance(error, (ConnectTimeoutError, ReadTimeoutError)):
        waited = CONNECT_TIMEOUT if isinstance(error, ConnectTimeoutError) else READ_TIMEOUT
        what = (
            "could not connect to" if isinstance(error, ConnectTimeoutError) else "no answer from"
        )
        return UploadError(
            f"{what} the S3 endpoint within {waited} s ({type(error).__name__})",
            transient=True,
            hint="a firewall or proxy that drops the traffic, or a wrong --s3-endpoint-url",
        )
    if isinstance(error, EndpointConnectionError):
        return UploadError(
            f"cannot connect to the S3 endpoint: {error}",
            transient=True,
            hint="check --s3-endpoint-url, DNS and the network path",
        )
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


@implementer(IUploader, IObjectReader)
class S3Uploader(ConditionalStore):
    """
    Delivers to S3 (or an S3-compatible store) with boto3, in a dedicated
    thread pool of C{concurrency} threads.

    Every object is written with C{If-None-Match: *} and an SHA-256
    checksum that S3 verifies; its metadata holds that checksum and the
    segment's identity, so that a conditional-write refusal can tell
    "already delivered" from "someone else's object"
    (L{eventpipe.destinations.delivered_before}).  A batch large enough for
    a multipart upload first looks whether its key is taken, so that no
    parts are sent for a key that is someone else's.
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
        clock: IReactorTime | None = None,
        environment: dict[str, str] | None = None,
    ) -> None:
        self._pool(reactor, clock, concurrency, "eventpipe-s3", pool)
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region = region
        self._concurrency = concurrency
        self._client = client
        # Credentials, profile and endpoint read from an env file (see
        # SESSION_KEYWORDS); never logged.
        self._environment = dict(environment or {})
        for name in _SECRET_NAMES:
            for value in (self._environment.get(name), os.environ.get(name)):
                if value and len(value) >= 8:
                    _SECRETS.add(value)
        if self.endpoint_url is None and self._environment.get("AWS_ENDPOINT_URL"):
            self.endpoint_url = self._environment["AWS_ENDPOINT_URL"]
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        self.description = f"s3://{bucket}{where}"

    @property
    def client(self) -> Any:
        if self._client is None:
            # botocore asks urllib3's pyOpenSSL shim only for the standard
            # library's SSLContext, which it takes directly when the shim is
            # missing: skip the shim, and ~19 MiB of pyOpenSSL and
            # cryptography with it.
            sys.modules.setdefault("urllib3.contrib.pyopenssl", None)  # type: ignore[arg-type]
            import boto3
            from botocore.config import Config

            session = {
                SESSION_KEYWORDS[key]: value
                for key, value in self._environment.items()
                if SESSION_KEYWORDS.get(key)
            }
            self._client = boto3.session.Session(**session).client(  # type: ignore[arg-type]
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=self.region,
                config=Config(
                    retries={"total_max_attempts": 1, "mode": "standard"},
                    connect_timeout=CONNECT_TIMEOUT,
                    read_timeout=READ_TIMEOUT,
                    max_pool_connections=max(self._concurrency, 2),
                ),
            )
        return self._client

    # What the tools read (blocking; see IObjectReader).

    def keys(self, prefix: str) -> list[str]:
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            return sorted(item["Key"] for page in pages for item in page.get("Contents", []))
        except Exception as error:
            raise classify(error) from error

    def open(self, key: str) -> BinaryIO:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"]  # type: ignore[no-any-return]
        except Exception as error:
            if _status(error) == 404:
                raise KeyError(key) from None
            raise classify(error) from error

    def metadata(self, key: str) -> dict[str, str]:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as error:
            if _status(error) == 404:
                return {}
            raise classify(error) from error
        return dict(head.get("Metadata", {}))

    @property
    def in_parts_above(self) -> int:
        return MULTIPART_THRESHOLD

    def classify(self, error: BaseException) -> UploadError:
        return classify(error)

    def taken(self, error: BaseException) -> bool:
        return _precondition_failed(error)

    def _extra(self, request: UploadRequest) -> dict[str, Any]:
        extra: dict[str, Any] = {
            "ContentType": request.content_type,
            "Metadata": request.object_metadata(),
        }
        if request.content_encoding:
            extra["ContentEncoding"] = request.content_encoding
        return extra

    def create(self, request: UploadRequest) -> None:
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

    def create_in_parts(self, request: UploadRequest) -> None:
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

    def look(self, key: str) -> dict[str, str] | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as error:
            if _status(error) == 404:
                return None
            raise
        return dict(head.get("Metadata", {}))

    def _check(self) -> str:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as error:
            detailed = explained(self.client, self.bucket, error)
            raise classify(detailed) from detailed
        return self.description

    def writes_over(self, key: str) -> bool:
        return overwrites(self.client, self.bucket, key)


# Codes that say the credentials themselves are refused (not a permission),
# and what each means.
CREDENTIAL_CODES = {
    "InvalidAccessKeyId": "the access key id is unknown",
    "SignatureDoesNotMatch": "the secret access key is wrong",
    "ExpiredToken": "the session token has expired",
    "InvalidToken": "the session token is invalid",
    "TokenRefreshRequired": "the session token has expired",
}


def error_code(error: BaseException) -> str:
    """The S3 error code of a botocore ClientError (empty for anything else)."""
    response: Any = getattr(error, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def explained(client: Any, bucket: str, error: BaseException) -> BaseException:
    """
    A HEAD answer has no body to say why it was refused: for a bare 403,
    ask again with a call whose answer does, and return that error when it
    says the credentials are wrong (a bogus key is not a missing grant).
    The one rule for the start-up probe and C{eventpipe check}.
    """
    if _status(error) != 403:
        return error
    try:
        client.list_objects_v2(Bucket=bucket, MaxKeys=1)
    except Exception as detailed:
        if error_code(detailed) in CREDENTIAL_CODES:
            return detailed
    return error


def overwrites(client: Any, bucket: str, key: str) -> bool:
    """
    Whether the store overwrites an object written with C{If-None-Match: *}
    (some S3-compatible stores ignore the header): write C{key} so twice,
    then delete it where the policy allows.
    """
    try:
        for _ in range(2):
            try:
                client.put_object(Bucket=bucket, Key=key, Body=b"probe\n", IfNoneMatch="*")
            except Exception as error:
                if _precondition_failed(error):
                    return False
                raise
        return True
    finally:
        try:
            client.delete_object(Bucket=bucket, Key=key)
        except Exception:
            # Without s3:DeleteObject the probe stays: one small object
            # per instance, under .eventpipe-check/, which no pipe loads.
            pass


def _status(error: BaseException) -> int | None:
    response: Any = getattr(error, "response", None)
    if not isinstance(response, dict):
        return None
    return response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def _precondition_failed(error: BaseException) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(error, ClientError):
        return False
    response: Any = error.response
    code = str(response.get("Error", {}).get("Code", ""))
    return code in ("PreconditionFailed", "412") or _status(error) == 412
