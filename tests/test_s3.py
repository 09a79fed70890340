"""
S3 delivery.  Unit tests run the uploader on a synchronous thread pool with
a recording client; the rest talk to moto's S3 server running as a separate
process on loopback, through real twistd processes where a user would.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from eventpipe.destinations import IUploader, KeyConflict, UploadError, UploadRequest
from eventpipe.destinations import s3 as s3_module
from eventpipe.destinations.s3 import S3Uploader, classify
from eventpipe.fs import file_sha256
from tests.support import (
    BUCKET,
    CREDENTIALS,
    Cable,
    MotoServer,
    Twistd,
    exactly_once_problems,
    free_port,
    make_stream,
    numbers_in_objects,
    s3_objects,
    s3_rig,
    s3_service,
    send,
    wait_for,
)

FAST = ["--rotation-interval=1", "--check-interval=0.2", "--retry-max-delay=1"]


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject",
    )


class SynchronousPool:
    """Runs 'threaded' work at once, in the calling thread."""

    started = True

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.started = False

    def callInThreadWithCallback(
        self, onResult: Callable[[bool, Any], None], f: Callable[..., Any], *a: Any, **kw: Any
    ) -> None:
        try:
            result = f(*a, **kw)
        except BaseException:
            from twisted.python.failure import Failure

            onResult(False, Failure())
        else:
            onResult(True, result)


class ImmediateReactor:
    def callFromThread(self, f: Callable[..., Any], *a: Any, **kw: Any) -> None:
        f(*a, **kw)


class RecordingClient:
    """Stands in for boto3's S3 client: records calls, fails on request."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.objects: dict[str, dict[str, Any]] = {}
        self.errors: list[Exception] = []
        self.list_errors: list[Exception] = []

    def put_object(self, **kwargs: Any) -> dict[str, Any]:
        kwargs["Body"] = kwargs["Body"].read()
        self.calls.append(("put_object", kwargs))
        if self.errors:
            raise self.errors.pop(0)
        if kwargs.get("IfNoneMatch") == "*" and kwargs["Key"] in self.objects:
            raise client_error("PreconditionFailed", 412)
        self.objects[kwargs["Key"]] = kwargs
        return {}

    def head_object(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("head_object", kwargs))
        if kwargs["Key"] not in self.objects:
            # What boto3 raises for a HEAD of a missing key.
            raise client_error("404", 404)
        return {"Metadata": self.objects[kwargs["Key"]]["Metadata"]}

    def head_bucket(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("head_bucket", kwargs))
        if self.errors:
            raise self.errors.pop(0)
        return {}

    def list_objects_v2(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("list_objects_v2", kwargs))
        if self.list_errors:
            raise self.list_errors.pop(0)
        return {}


class ClassificationTests(SynchronousTestCase):
    def test_transient(self) -> None:
        for error in [
            client_error("SlowDown", 503),
            client_error("InternalError", 500),
            client_error("RequestTimeout", 400),
            EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
            ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
            RuntimeError("anything unexpected"),
        ]:
            self.assertTrue(classify(error).transient, error)

    def test_needs_a_person(self) -> None:
        for error, words in [
            (client_error("AccessDenied", 403), "s3:PutObject"),
            (client_error("NoSuchBucket", 404), "create the bucket"),
            (client_error("InvalidAccessKeyId", 403), "credentials"),
            (client_error("403", 403), "s3:PutObject"),
            (NoCredentialsError(), "credentials"),
        ]:
            classified = classify(error)
            self.assertFalse(classified.transient, error)
            self.assertIn(words, classified.hint)

    def test_no_secret_in_messages(self) -> None:
        """
        A store (or a library) that echoes the secret key, the session token
        or a request signature in its error: the message and the hint hold
        none of them.
        """
        secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
        token = "FwoGZXIvYXdzEXAMPLESESSIONTOKEN0123456789"
        S3Uploader(
            ImmediateReactor(),  # type: ignore[arg-type]
            BUCKET,
            environment={"AWS_SECRET_ACCESS_KEY": secret, "AWS_SESSION_TOKEN": token},
        )
        echoed = ClientError(
            {
                "Error": {
                    "Code": "SignatureDoesNotMatch",
                    "Message": f"computed with {secret} and {token}; "
                    "Authorization: AWS4-HMAC-SHA256 Signature=0123456789abcdef",
                },
                "ResponseMetadata": {"HTTPStatusCode": 403},
            },
            "PutObject",
        )
        for error in (echoed, RuntimeError(f"proxy said: key={secret}")):
            classified = classify(error)
            text = str(classified) + classified.hint
            for value in (secret, token, "0123456789abcdef"):
                self.assertNotIn(value, text)
            self.assertIn("[redacted]", text)


class EnvFileTests(SynchronousTestCase):
    def test_every_aws_variable_of_an_env_file_reaches_boto3(self) -> None:
        """What an env file may say for AWS is what the S3 destination hands boto3."""
        from eventpipe.config.table import AWS_FROM_ENV_FILE
        from eventpipe.destinations.s3 import SESSION_KEYWORDS

        self.assertEqual(set(AWS_FROM_ENV_FILE), set(SESSION_KEYWORDS))


class UploaderUnitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.client = RecordingClient()
        self.uploader = S3Uploader(
            ImmediateReactor(),  # type: ignore[arg-type]
            BUCKET,
            client=self.client,
            pool=SynchronousPool(),  # type: ignore[arg-type]
        )
        self.path = self.mktemp()
        with open(self.path, "wb") as stream:
            stream.write(b"<EVENTS/>")
        self.request = UploadRequest(
            path=self.path,
            key="acm/2025/07/29/x.xml",
            sha256=file_sha256(self.path),
            content_type="application/xml",
            metadata={"events": "1", "instance": "gw1"},
            source="segment-digest",
        )

    def test_interface(self) -> None:
        verifyObject(IUploader, self.uploader)

    def test_put(self) -> None:
        """A conditional write, with a checksum S3 verifies, type and metadata."""
        self.successResultOf(self.uploader.upload(self.request))
        [(name, call)] = self.client.calls
        self.assertEqual(name, "put_object")
        self.assertEqual(call["IfNoneMatch"], "*")
        self.assertEqual(call["ChecksumAlgorithm"], "SHA256")
        self.assertEqual(
            call["ChecksumSHA256"], base64.b64encode(hashlib.sha256(b"<EVENTS/>").digest()).decode()
        )
        self.assertEqual(call["ContentType"], "application/xml")
        self.assertEqual(call["Metadata"]["events"], "1")
        self.assertEqual(call["Metadata"]["instance"], "gw1")
        self.assertEqual(call["Metadata"]["sha256"], self.request.sha256)
        self.assertEqual(call["Metadata"]["source"], "segment-digest")
        self.assertNotIn("ContentEncoding", call)

    def test_same_content_already_there(self) -> None:
        """A refused conditional write over our own content counts as delivered."""
        self.successResultOf(self.uploader.upload(self.request))
        self.successResultOf(self.uploader.upload(self.request))
        self.assertEqual(
            [c[0] for c in self.client.calls], ["put_object", "put_object", "head_object"]
        )

    def test_other_content_already_there(self) -> None:
        """
        Another segment's object under the key -- a twin with the same
        instance id and segment name, even with the same bytes -- or an
        object of an earlier release with other bytes: a conflict (the
        segment will take a new key).
        """
        for metadata in (
            {"sha256": "someone else"},
            {"sha256": "x", "source": "another segment", "instance": "gw1", "segment": "s1"},
            {"sha256": self.request.sha256, "source": "another segment"},
        ):
            self.client.objects[self.request.key] = {"Metadata": metadata}
            failure = self.failureResultOf(self.uploader.upload(self.request), KeyConflict)
            self.assertFalse(failure.value.transient)

    def test_same_segment_rendered_otherwise(self) -> None:
        """
        Written for this very segment, with other bytes (an earlier life
        rendered it otherwise): delivered before, not a conflict.
        """
        self.client.objects[self.request.key] = {
            "Metadata": {"sha256": "older bytes", "source": "segment-digest"}
        }
        self.successResultOf(self.uploader.upload(self.request))

    def test_taken_then_gone(self) -> None:
        """
        The conditional write is refused (the key is taken), but the look
        that follows finds nothing (a 404: removed meanwhile): a transient
        failure, tried again -- neither delivered nor a conflict.
        """
        self.client.errors = [client_error("PreconditionFailed", 412)]
        failure = self.failureResultOf(self.uploader.upload(self.request), UploadError)
        self.assertNotIsInstance(failure.value, KeyConflict)
        self.assertTrue(failure.value.transient)
        self.assertIn("was taken, then gone", str(failure.value))
        self.assertEqual([c[0] for c in self.client.calls], ["put_object", "head_object"])
        self.successResultOf(self.uploader.upload(self.request))

    def test_errors_classified(self) -> None:
        self.client.errors = [client_error("AccessDenied", 403)]
        failure = self.failureResultOf(self.uploader.upload(self.request), UploadError)
        self.assertFalse(failure.value.transient)
        self.client.errors = [client_error("SlowDown", 503)]
        failure = self.failureResultOf(self.uploader.upload(self.request), UploadError)
        self.assertTrue(failure.value.transient)

    def test_check_names_refused_credentials(self) -> None:
        """
        A bogus key: HEAD says only 403; the start-up probe asks again, as
        eventpipe check does, and says the credentials are refused rather
        than advising a grant (one classification for both).
        """
        self.client.errors = [client_error("403", 403)]
        self.client.list_errors = [client_error("InvalidAccessKeyId", 403)]
        failure = self.failureResultOf(self.uploader.check(), UploadError)
        self.assertIn("InvalidAccessKeyId", str(failure.value))
        self.assertIn("credentials", failure.value.hint)
        self.assertNotIn("PutObject", failure.value.hint)
        # A real missing grant stays one.
        self.client.errors = [client_error("403", 403)]
        self.client.list_errors = [client_error("AccessDenied", 403)]
        failure = self.failureResultOf(self.uploader.check(), UploadError)
        self.assertIn("s3:PutObject", failure.value.hint)

    def test_check(self) -> None:
        self.assertEqual(self.successResultOf(self.uploader.check()), f"s3://{BUCKET}")
        self.client.errors = [client_error("404", 404)]
        failure = self.failureResultOf(self.uploader.check(), UploadError)
        self.assertIn("create the bucket", failure.value.hint)


class S3ServerTestCase(SynchronousTestCase):
    """Starts a moto S3 server process for each test."""

    def setUp(self) -> None:
        self.workdir = os.path.abspath(self.mktemp())
        os.makedirs(self.workdir)
        self.server = MotoServer(self.workdir).start()
        self.addCleanup(self.server.stop)
        self.s3 = self.server.client()

    def twistd(self, *args: str, endpoint: str | None = None) -> Twistd:
        workdir = os.path.join(self.workdir, f"instance-{time.monotonic_ns()}")
        os.makedirs(workdir)
        process = Twistd(
            workdir,
            [
                f"--s3-bucket={BUCKET}",
                f"--s3-endpoint-url={endpoint or self.server.endpoint}",
                "--s3-region=us-east-1",
                *args,
            ],
            CREDENTIALS,
        )
        self.addCleanup(process.cleanup)
        return process

    def assertExactlyOnce(self, numbers: list[int], expected: list[int]) -> None:
        problems = exactly_once_problems(numbers, expected)
        self.assertEqual(problems, ([], [], []), "missing, duplicated, unexpected")


class UploaderAgainstServerTests(S3ServerTestCase):
    def uploader(self) -> S3Uploader:
        from twisted.internet import reactor

        # The blocking methods are called directly, in this thread.
        return S3Uploader(reactor, BUCKET, client=self.server.client())  # type: ignore[arg-type]

    def request(self, data: bytes, key: str = "acm/k.xml") -> UploadRequest:
        path = os.path.join(self.workdir, f"file-{time.monotonic_ns()}")
        with open(path, "wb") as stream:
            stream.write(data)
        return UploadRequest(
            path, key, file_sha256(path), "application/xml", metadata={"events": "1"}
        )

    def test_conditional_writes(self) -> None:
        self.s3.create_bucket(Bucket=BUCKET)
        uploader = self.uploader()
        uploader.deliver(self.request(b"<EVENTS/>"))
        uploader.deliver(self.request(b"<EVENTS/>"))
        self.assertRaises(KeyConflict, uploader.deliver, self.request(b"<EVENTS>x</EVENTS>"))
        head = self.s3.head_object(Bucket=BUCKET, Key="acm/k.xml")
        self.assertEqual(head["ContentType"], "application/xml")
        self.assertEqual(head["Metadata"]["events"], "1")
        self.assertEqual(
            self.s3.get_object(Bucket=BUCKET, Key="acm/k.xml")["Body"].read(), b"<EVENTS/>"
        )

    def test_multipart(self) -> None:
        """A large batch streams from disk in parts, conditionally too."""
        self.s3.create_bucket(Bucket=BUCKET)
        self.patch(s3_module, "MULTIPART_THRESHOLD", 1 << 20)
        self.patch(s3_module, "MULTIPART_PART_SIZE", 5 << 20)
        data = os.urandom(12 << 20)
        uploader = self.uploader()
        uploader.deliver(self.request(data, "big.xml"))
        uploader.deliver(self.request(data, "big.xml"))
        self.assertRaises(KeyConflict, uploader.deliver, self.request(data[:-1], "big.xml"))
        self.assertEqual(self.s3.get_object(Bucket=BUCKET, Key="big.xml")["Body"].read(), data)

    def test_multipart_looks_before_sending_parts(self) -> None:
        """
        A large batch whose key holds another writer's object sends no
        part: the conflict is found before, not at the completion.
        """
        self.s3.create_bucket(Bucket=BUCKET)
        self.patch(s3_module, "MULTIPART_THRESHOLD", 1 << 20)
        self.s3.put_object(
            Bucket=BUCKET, Key="big.xml", Body=b"theirs", Metadata={"source": "the twin's"}
        )
        uploader = self.uploader()
        calls: list[str] = []
        client = uploader.client

        class Recording:
            def __getattr__(self, name: str) -> Any:
                calls.append(name)
                return getattr(client, name)

        uploader._client = Recording()
        request = self.request(os.urandom(3 << 20), "big.xml")
        request = UploadRequest(**dict(vars(request), source="this segment"))
        self.assertRaises(KeyConflict, uploader.deliver, request)
        self.assertEqual(calls, ["head_object"])
        self.assertEqual(self.s3.get_object(Bucket=BUCKET, Key="big.xml")["Body"].read(), b"theirs")

    def test_missing_bucket(self) -> None:
        uploader = self.uploader()
        error = self.assertRaises(UploadError, uploader._check)
        self.assertIn("create the bucket", error.hint)
        error = self.assertRaises(UploadError, uploader.deliver, self.request(b"x"))
        self.assertFalse(error.transient)


class UnconditionalStoreTests(SynchronousTestCase):
    def test_service_refuses_a_store_that_overwrites(self) -> None:
        """
        A store that ignores If-None-Match (moto behind a relay that drops
        the header): the service writes no batch to it and stops by itself,
        saying why in one line, and the spool keeps the events; with
        --allow-unconditional-writes it delivers them.
        """
        workdir = os.path.abspath(self.mktemp())
        server, client, cable = s3_rig(self, workdir)
        cable.strip = b"If-None-Match: *\r\n"
        endpoint = f"http://127.0.0.1:{cable.port}"
        process = s3_service(workdir, endpoint, *FAST)
        self.addCleanup(process.cleanup)
        process.start()
        send(process.port, make_stream(range(20)))
        assert process.process is not None
        began = time.monotonic()
        process.process.wait(60)
        self.assertLess(time.monotonic() - began, 10, "it stops at once")
        log = process.log()
        self.assertIn("refusing s3://", log)
        self.assertIn("ignores conditional writes", log)
        self.assertEqual(s3_objects(client, BUCKET), {})
        allowed = s3_service(workdir, endpoint, *FAST, "--allow-unconditional-writes")
        self.addCleanup(allowed.cleanup)
        allowed.start()
        wait_for(
            lambda: len(numbers_in_objects(s3_objects(client, BUCKET))) >= 20, 30, "the events"
        )
        self.assertEqual(sorted(numbers_in_objects(s3_objects(client, BUCKET))), list(range(20)))
        wait_for(
            lambda: "it ignores conditional writes: --allow-unconditional-writes" in allowed.log(),
            30,
            "the start-up probe's line",
        )
        allowed.stop()


class EndToEndS3Tests(S3ServerTestCase):
    def test_events_land_once(self) -> None:
        """
        twistd receives events over TCP; every event is in the bucket once,
        in well-formed objects under the prefix and key scheme, with type
        and metadata.
        """
        self.s3.create_bucket(Bucket=BUCKET)
        process = self.twistd(*FAST, "--s3-prefix=acm").start()
        for start in range(0, 1000, 250):
            send(process.port, make_stream(range(start, start + 250)), 997)
        wait_for(
            lambda: len(numbers_in_objects(s3_objects(self.s3, BUCKET))) >= 1000,
            30,
            "1000 events in S3",
        )
        objects = s3_objects(self.s3, BUCKET)
        self.assertExactlyOnce(numbers_in_objects(objects), list(range(1000)))
        for key in objects:
            self.assertRegex(key, r"^acm/\d{4}/\d\d/\d\d/\d{8}_\d{6}_test_\d{6}\.xml$")
            head = self.s3.head_object(Bucket=BUCKET, Key=key)
            self.assertEqual(head["ContentType"], "application/xml")
            self.assertEqual(head["Metadata"]["instance"], "test")
            self.assertEqual(len(head["Metadata"]["source"]), 64)
            self.assertGreater(int(head["Metadata"]["events"]), 0)
        process.stop()

    def test_credentials_from_the_env_file(self) -> None:
        """
        AWS credentials, region and endpoint written in the env file (as
        contrib/eventpipe.env.example lists them) are used, with nothing
        of them in the process's environment; the start-up line names them,
        without their values.
        """
        self.s3.create_bucket(Bucket=BUCKET)
        workdir = os.path.join(self.workdir, "from-the-file")
        os.makedirs(workdir)
        path = os.path.join(workdir, "eventpipe.env")
        with open(path, "w") as stream:
            stream.write(
                f"S3_BUCKET={BUCKET}\n"
                "AWS_ACCESS_KEY_ID=from-the-file\n"
                "AWS_SECRET_ACCESS_KEY=never-logged-s3cr3t\n"
                "AWS_REGION=us-east-1\n"
                f"AWS_ENDPOINT_URL={self.server.endpoint}\n"
            )
        process = Twistd(workdir, [f"--env-file={path}", *FAST])
        process.env = {k: v for k, v in process.env.items() if not k.startswith("AWS_")}
        self.addCleanup(process.cleanup)
        process.start()
        send(process.port, make_stream(range(20)))
        wait_for(lambda: len(numbers_in_objects(s3_objects(self.s3, BUCKET))) >= 20, 30, "events")
        self.assertExactlyOnce(numbers_in_objects(s3_objects(self.s3, BUCKET)), list(range(20)))
        log = process.log()
        self.assertIn("aws=AWS_ACCESS_KEY_ID,AWS_ENDPOINT_URL,AWS_SECRET_ACCESS_KEY (in", log)
        self.assertNotIn("never-logged-s3cr3t", log)
        process.stop()

    def test_gzip_json(self) -> None:
        self.s3.create_bucket(Bucket=BUCKET)
        process = self.twistd(*FAST, "--format=json", "--compress=gzip").start()
        send(process.port, make_stream(range(100)))
        wait_for(lambda: len(numbers_in_objects(s3_objects(self.s3, BUCKET))) >= 100, 30, "events")
        objects = s3_objects(self.s3, BUCKET)
        self.assertExactlyOnce(numbers_in_objects(objects), list(range(100)))
        for key in objects:
            self.assertTrue(key.endswith(".json.gz"))
            head = self.s3.head_object(Bucket=BUCKET, Key=key)
            self.assertEqual(head["ContentEncoding"], "gzip")
            self.assertEqual(head["ContentType"], "application/x-ndjson")
        process.stop()

    def test_outage(self) -> None:
        """
        The S3 server is stopped while events keep arriving and started
        again on the same port: everything is delivered, nothing twice, and
        the reactor (which reads the sender) never stalls: it answers
        /healthz promptly all along.
        """
        self.s3.create_bucket(Bucket=BUCKET)
        metrics = free_port()
        process = self.twistd(*FAST, f"--metrics=tcp:{metrics}:interface=127.0.0.1").start()
        seen: dict[str, bytes] = {}
        slowest = [0.0]
        sent: list[int] = []

        def sender() -> None:
            import socket

            with socket.create_connection(("127.0.0.1", process.port)) as connection:
                for n in range(600):
                    connection.sendall(make_stream([n]))
                    sent.append(n)
                    time.sleep(0.01)

        def prober() -> None:
            import urllib.request

            while thread.is_alive():
                began = time.monotonic()
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/healthz", timeout=10):
                    pass
                slowest[0] = max(slowest[0], time.monotonic() - began)
                time.sleep(0.05)

        thread = threading.Thread(target=sender)
        thread.start()
        probe = threading.Thread(target=prober)
        probe.start()
        wait_for(
            lambda: seen.update(s3_objects(self.s3, BUCKET)) or len(seen) >= 1, 20, "a first object"
        )
        self.server.stop()
        # The outage is seen: a delivery fails while the server is down.
        wait_for(
            lambda: re.search(r"delivering .* failed \(attempt \d+\)", process.log()),
            30,
            "a delivery to fail during the outage",
        )
        self.server.start()
        self.s3.create_bucket(Bucket=BUCKET)
        thread.join(60)
        self.assertEqual(len(sent), 600)
        wait_for(
            lambda: (
                seen.update(s3_objects(self.s3, BUCKET)) or len(numbers_in_objects(seen)) >= 600
            ),
            40,
            "all events after the outage",
        )
        self.assertExactlyOnce(numbers_in_objects(seen), list(range(600)))
        probe.join(10)
        print(f"\n    slowest /healthz during the outage: {slowest[0] * 1000:.1f} ms")
        self.assertLess(slowest[0], 1.0, "the reactor stalled")
        self.assertRegex(process.log(), r"delivering .* failed \(attempt \d+\)")
        process.stop()

    def test_ambiguous_failure_and_restart(self) -> None:
        """
        The object reaches S3 but the answer is lost, and the service is
        killed before it can delete its segment: after a restart the bucket
        holds each event once and the spool is empty.
        """
        self.s3.create_bucket(Bucket=BUCKET)
        cable = Cable(self.server.port).plug()
        self.addCleanup(cable.unplug)
        cable.swallow = 10_000
        endpoint = f"http://127.0.0.1:{cable.port}"
        process = self.twistd(
            "--rotation-interval=1",
            "--check-interval=0.2",
            "--retry-initial-delay=300",
            "--retry-max-delay=300",
            endpoint=endpoint,
        ).start()
        send(process.port, make_stream(range(200)))
        wait_for(lambda: s3_objects(self.s3, BUCKET), 30, "the object on the server")
        wait_for(lambda: "failed (attempt 1)" in process.log(), 30, "the failure the client saw")
        process.kill()
        self.assertEqual(len(os.listdir(os.path.join(process.spool, "sealed"))), 1)
        cable.swallow = 0
        process.start()
        wait_for(
            lambda: not os.listdir(os.path.join(process.spool, "sealed")), 30, "the spool to empty"
        )
        self.assertExactlyOnce(numbers_in_objects(s3_objects(self.s3, BUCKET)), list(range(200)))
        self.assertEqual(len(s3_objects(self.s3, BUCKET)), 1)
        process.stop()

    def test_swallowed_answer_without_restart(self) -> None:
        """
        Lost answers: the start-up probe's (said in one line; botocore does
        not retry, eventpipe does), then an upload's: the retry finds its
        own object and moves on.
        """
        self.s3.create_bucket(Bucket=BUCKET)
        cable = Cable(self.server.port).plug()
        self.addCleanup(cable.unplug)
        cable.swallow = 1
        process = self.twistd(*FAST, endpoint=f"http://127.0.0.1:{cable.port}").start()
        wait_for(lambda: "is not usable yet" in process.log(), 20, "the start-up probe")
        cable.swallow = 1
        send(process.port, make_stream(range(50)))
        wait_for(lambda: not cable.swallow, 20, "the lost answer")
        wait_for(lambda: len(numbers_in_objects(s3_objects(self.s3, BUCKET))) >= 50, 30, "events")
        wait_for(lambda: not os.listdir(os.path.join(process.spool, "sealed")), 30, "empty spool")
        self.assertExactlyOnce(numbers_in_objects(s3_objects(self.s3, BUCKET)), list(range(50)))
        process.stop()

    def test_missing_bucket(self) -> None:
        """
        The service starts without its bucket, says so in one line, keeps
        the data, and delivers once the bucket exists.
        """
        process = self.twistd(*FAST).start()
        wait_for(lambda: "is not usable yet" in process.log(), 20, "the start-up report")
        send(process.port, make_stream(range(30)))
        wait_for(lambda: "failed (attempt 1)" in process.log(), 20, "a failed delivery")
        self.assertEqual(len(os.listdir(os.path.join(process.spool, "sealed"))), 1)
        self.s3.create_bucket(Bucket=BUCKET)
        wait_for(lambda: len(numbers_in_objects(s3_objects(self.s3, BUCKET))) >= 30, 30, "events")
        self.assertExactlyOnce(numbers_in_objects(s3_objects(self.s3, BUCKET)), list(range(30)))
        self.assertNotIn("testing", process.log(), "a credential in the log")
        process.stop()

    def test_many_seals_in_one_second(self) -> None:
        """
        One instance sealing several segments within one second: each gets
        its own sequence number, so no key collides; every event is there
        once.
        """
        self.s3.create_bucket(Bucket=BUCKET)
        process = self.twistd(*FAST, "--max-file-size=16KiB").start()
        send(process.port, make_stream(range(200)))
        wait_for(lambda: len(numbers_in_objects(s3_objects(self.s3, BUCKET))) >= 200, 30, "events")
        objects = s3_objects(self.s3, BUCKET)
        self.assertExactlyOnce(numbers_in_objects(objects), list(range(200)))
        stamps = [re.sub(r"^.*/(\d{8}_\d{6})_.*$", r"\1", key) for key in objects]
        self.assertLess(len(set(stamps)), len(stamps), "no two seals in one second")
        process.stop()

    def test_key_taken_by_another_writer(self) -> None:
        """
        The keys this instance is about to use already hold objects of
        another writer (its sequence file was lost, or another host uses its
        id): those stay untouched, and the segment ships under the next free
        sequence number.
        """
        self.s3.create_bucket(Bucket=BUCKET)
        now = time.time()
        foreign = {}
        for second in range(-2, 30):
            stamp = time.strftime("%Y%m%d_%H%M%S", time.gmtime(now + second))
            key = f"{stamp[:4]}/{stamp[4:6]}/{stamp[6:8]}/{stamp}_test_000000.xml"
            body = f"<EVENTS><!-- {second} --></EVENTS>".encode()
            self.s3.put_object(
                Bucket=BUCKET,
                Key=key,
                Body=body,
                Metadata={"instance": "test", "segment": "an older life", "sha256": "x"},
            )
            foreign[key] = body
        process = self.twistd("--rotation-interval=3600").start()
        send(process.port, make_stream(range(50)))
        from tests.test_integration import spooled_events

        wait_for(lambda: spooled_events(process.spool) == 50, 20, "events in the spool")
        process.stop()
        objects = s3_objects(self.s3, BUCKET)
        for key, body in foreign.items():
            self.assertEqual(objects.pop(key), body)
        self.assertExactlyOnce(numbers_in_objects(objects), list(range(50)))
        [key] = objects
        self.assertTrue(key.endswith("_test_000001.xml"), key)
        self.assertIn("ships as", process.log())

    def test_two_instances_same_second(self) -> None:
        """
        Two instances with their own ids ship to one prefix at the same
        moments: no key collides, every event is there once.
        """
        self.s3.create_bucket(Bucket=BUCKET)
        first = self.twistd(*FAST, "--s3-prefix=acm/")
        second = self.twistd(*FAST, "--s3-prefix=acm/")
        second.args = [a for a in second.args] + ["--instance-id=other"]
        first.start()
        second.start()
        for i in range(5):
            send(first.port, make_stream(range(i * 100, i * 100 + 100)))
            send(second.port, make_stream(range(1000 + i * 100, 1000 + i * 100 + 100)))
            time.sleep(0.3)
        expected = [*range(500), *range(1000, 1500)]
        wait_for(
            lambda: len(numbers_in_objects(s3_objects(self.s3, BUCKET))) >= len(expected),
            30,
            "events",
        )
        objects = s3_objects(self.s3, BUCKET)
        self.assertExactlyOnce(numbers_in_objects(objects), expected)
        instances = {re.sub(r"^.*_\d{6}_(.*)_\d{6}\.xml$", r"\1", key) for key in objects}
        self.assertEqual(instances, {"test", "other"})
        first.stop()
        second.stop()
