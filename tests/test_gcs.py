"""
Google Cloud Storage against fake-gcs-server, the emulator Google's client
libraries are tested against, as a real server process: the uploader's
promises (a create only if no generation exists, identity in the custom
metadata, a checked CRC32C, a large batch that looks before it sends,
errors classified), and real twistd processes delivering exactly once
through an emulator outage, a kill -9, and twins sharing an instance id.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import signal
import socket
import time

import google_crc32c
from twisted.trial.unittest import SynchronousTestCase

from eventpipe.destinations import KeyConflict, UploadError, UploadRequest
from eventpipe.destinations.gcs import MULTIPART_LIMIT, GCSUploader
from tests.support import (
    BUCKET,
    BlackHole,
    Twistd,
    eventpipe,
    exactly_once_problems,
    gcs_objects,
    gcs_rig,
    make_stream,
    numbers_in_objects,
    send,
    spooled,
    wait_for,
)


def request(path: str, key: str, source: str) -> UploadRequest:
    with open(path, "rb") as stream:
        sha = hashlib.sha256(stream.read()).hexdigest()
    return UploadRequest(path, key, sha, "application/xml", metadata={"events": "3"}, source=source)


class UploaderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.server, self.bucket = gcs_rig(self, self.mktemp())
        self.uploader = GCSUploader(
            None,  # type: ignore[arg-type]
            BUCKET,
            endpoint_url=self.server.endpoint,
        )

    def file(self, data: bytes) -> str:
        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as stream:
            stream.write(data)
        return path

    def test_delivered_as_sent(self) -> None:
        """Byte for byte, with the identity, the checksum and the type; again is a no-op."""
        data = b'<?xml version="1.0" encoding="UTF-8"?>\n<EVENTS>\n<EVENT/>\n</EVENTS>\n'
        sent = request(self.file(data), "acm/2026/12/01/a.xml", "segment-digest")
        self.uploader.deliver(sent)
        generation = self.bucket.get_blob("acm/2026/12/01/a.xml").generation
        self.uploader.deliver(sent)
        blob = self.bucket.get_blob("acm/2026/12/01/a.xml")
        self.assertEqual(blob.generation, generation)
        self.assertEqual(blob.download_as_bytes(), data)
        self.assertEqual(blob.metadata["source"], "segment-digest")
        self.assertEqual(blob.metadata["sha256"], sent.sha256)
        self.assertEqual(blob.metadata["events"], "3")
        self.assertEqual(blob.content_type, "application/xml")
        self.assertEqual(base64.b64decode(blob.crc32c), google_crc32c.Checksum(data).digest())
        self.assertIn("acm/2026/12/01/a.xml", self.uploader.keys("acm/"))
        self.assertEqual(self.uploader.metadata("acm/2026/12/01/a.xml")["source"], "segment-digest")
        with self.uploader.open("acm/2026/12/01/a.xml") as stream:
            self.assertEqual(stream.read(), data)
        self.assertRaises(KeyError, self.uploader.open, "acm/none.xml")
        self.assertEqual(self.uploader.metadata("acm/none.xml"), {})

    def test_second_create_refused(self) -> None:
        """
        What the emulator proves of the store: a create of a key that holds
        an object is refused (412), whatever the client sends.
        """
        self.uploader.deliver(request(self.file(b"first"), "k.xml", "one"))
        self.assertRaises(
            KeyConflict, self.uploader.deliver, request(self.file(b"second"), "k.xml", "two")
        )
        self.assertEqual(self.bucket.get_blob("k.xml").download_as_bytes(), b"first")
        self.assertFalse(self.uploader.overwrites("probe/key"))

    def test_large_batch_looks_first(self) -> None:
        """
        Over the multipart limit: the key is looked at before a byte is
        sent, then the batch goes resumable with the same precondition.
        """
        data = os.urandom(MULTIPART_LIMIT + 1024 * 1024 + 17)
        sent = request(self.file(data), "big.xml", "big-digest")
        self.uploader.deliver(sent)
        self.uploader.deliver(sent)
        self.assertEqual(
            hashlib.sha256(self.bucket.get_blob("big.xml").download_as_bytes()).hexdigest(),
            sent.sha256,
        )
        sends: list[str] = []
        original = self.uploader.create_in_parts

        def counted(request: UploadRequest) -> None:
            sends.append(request.key)
            original(request)

        self.patch(self.uploader, "create_in_parts", counted)
        other = request(self.file(data), "big.xml", "another-segment")
        self.assertRaises(KeyConflict, self.uploader.deliver, other)
        self.assertEqual(sends, [])
        with self.uploader.open("big.xml") as stream:
            self.assertEqual(hashlib.sha256(stream.read()).hexdigest(), sent.sha256)

    def test_planted_object_left_alone(self) -> None:
        """Someone else's object on our key: a conflict, and the object is untouched."""
        planted = self.bucket.blob("acm/2026/12/01/b.xml")
        planted.metadata = {"owner": "someone"}
        planted.upload_from_file(io.BytesIO(b"not ours"), size=8)
        sent = request(self.file(b"<EVENTS/>\n"), "acm/2026/12/01/b.xml", "ours")
        error = self.assertRaises(KeyConflict, self.uploader.deliver, sent)
        self.assertFalse(error.transient)
        found = self.bucket.get_blob("acm/2026/12/01/b.xml")
        self.assertEqual(found.download_as_bytes(), b"not ours")
        self.assertEqual(found.metadata, {"owner": "someone"})

    def test_missing_bucket(self) -> None:
        """One line that says what to do, not retried as if it would pass."""
        missing = GCSUploader(
            None,  # type: ignore[arg-type]
            "no-such-bucket",
            endpoint_url=self.server.endpoint,
        )
        error = self.assertRaises(
            UploadError, missing.deliver, request(self.file(b"x"), "k.xml", "s")
        )
        self.assertFalse(error.transient)
        self.assertIn("404", str(error))
        self.assertNotIn("\n", str(error))
        self.assertIn("create the bucket", error.hint)

    def test_black_hole_endpoint(self) -> None:
        """An endpoint that takes connections and never answers: transient, within seconds."""
        hole = BlackHole()
        self.addCleanup(hole.close)
        silent = GCSUploader(
            None,  # type: ignore[arg-type]
            BUCKET,
            endpoint_url=f"http://127.0.0.1:{hole.port}",
        )
        began = time.monotonic()
        error = self.assertRaises(
            UploadError, silent.deliver, request(self.file(b"x"), "k.xml", "s")
        )
        self.assertTrue(error.transient)
        self.assertLess(time.monotonic() - began, 30)

    def test_kept_across_a_restart(self) -> None:
        """What the emulator keeps on its directory: objects and their metadata."""
        self.uploader.deliver(request(self.file(b"kept"), "kept.xml", "kept-digest"))
        self.server.stop()
        self.server.start()
        self.assertEqual(self.uploader.metadata("kept.xml")["source"], "kept-digest")
        self.uploader.deliver(request(self.file(b"kept"), "kept.xml", "kept-digest"))


FAST = [
    "--rotation-interval=0.5",
    "--check-interval=0.1",
    "--retry-initial-delay=0.2",
    "--retry-max-delay=1",
]


class ProcessTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.workdir = os.path.abspath(self.mktemp())
        self.server, self.bucket = gcs_rig(self, self.workdir)

    def service(self, name: str = "service", *args: str) -> Twistd:
        process = Twistd(
            os.path.join(self.workdir, name),
            [
                *FAST,
                f"--gcs-bucket={BUCKET}",
                "--gcs-prefix=acm",
                f"--gcs-endpoint-url={self.server.endpoint}",
                *args,
            ],
        )
        self.addCleanup(process.cleanup)
        return process

    def numbers(self) -> list[int]:
        return numbers_in_objects(gcs_objects(self.bucket))

    def test_delivered_exactly_once(self) -> None:
        process = self.service().start()
        send(process.port, make_stream(range(200)))
        wait_for(lambda: len(self.numbers()) >= 200, 60, "the objects")
        self.assertEqual(process.stop(), -signal.SIGTERM)
        self.assertEqual(exactly_once_problems(self.numbers(), range(200)), ([], [], []))
        keys = list(gcs_objects(self.bucket))
        self.assertTrue(all(k.startswith("acm/20") for k in keys), keys)
        self.assertIn("everything received was delivered", process.log())

    def test_emulator_stopped_and_started_while_sending(self) -> None:
        """
        The emulator stops with batches on their way and comes back 100
        events later, on the same directory; nothing is lost or doubled.
        """
        process = self.service().start()
        connection = socket.create_connection(("127.0.0.1", process.port))
        self.addCleanup(connection.close)
        for n in range(300):
            connection.sendall(make_stream([n]))
            if n == 100:
                self.server.stop()
            if n == 200:
                self.server.start()
            time.sleep(0.01)
        connection.close()
        wait_for(lambda: len(set(self.numbers())) >= 300, 90, "the objects after the outage")
        self.assertEqual(process.stop(), -signal.SIGTERM)
        self.assertEqual(exactly_once_problems(self.numbers(), range(300)), ([], [], []))
        self.assertIn("cannot reach the GCS endpoint", process.log())

    def test_kill_nine_and_restart(self) -> None:
        process = self.service().start()
        send(process.port, make_stream(range(150)))
        wait_for(
            lambda: len(spooled(process.spool) | set(self.numbers())) >= 150,
            30,
            "the events read",
        )
        process.kill()
        process.start()
        send(process.port, make_stream(range(150, 300)))
        wait_for(lambda: len(set(self.numbers())) >= 300, 60, "the objects after the restart")
        process.stop()
        self.assertEqual(exactly_once_problems(self.numbers(), range(300)), ([], [], []))

    def test_twins_share_an_instance_id(self) -> None:
        """Two processes with one id: the key a twin took is left alone, nothing is lost."""
        twins = [self.service(f"twin-{n}").start() for n in range(2)]
        connections = [socket.create_connection(("127.0.0.1", t.port)) for t in twins]
        self.addCleanup(lambda: [c.close() for c in connections])
        for n in range(60):
            connections[0].sendall(make_stream([n]))
            connections[1].sendall(make_stream([1000 + n]))
            time.sleep(1 / 12)
        for twin in twins:
            self.assertEqual(twin.stop(), -signal.SIGTERM)
        expected = [*range(60), *range(1000, 1060)]
        self.assertEqual(exactly_once_problems(self.numbers(), expected), ([], [], []))

    def test_check(self) -> None:
        common = [
            f"--gcs-endpoint-url={self.server.endpoint}",
            f"--spool-dir={self.workdir}/spool",
            "--listen=tcp:0",
        ]
        good = eventpipe("check", f"--gcs-bucket={BUCKET}", *common)
        self.assertEqual(good.returncode, 0, good.stdout + good.stderr)
        self.assertIn(f"bucket {BUCKET}: reachable", good.stdout)
        self.assertIn("can delete objects", good.stdout)
        self.assertIn("refuses a second create of an object", good.stdout)
        self.assertEqual(list(gcs_objects(self.bucket)), [])
        self.assertEqual(
            [b.name for b in self.bucket.client.list_blobs(BUCKET)], [], "the probe is removed"
        )
        missing = eventpipe("check", "--gcs-bucket=not-there", *common)
        self.assertEqual(missing.returncode, 1)
        self.assertIn("\u2717 bucket not-there: does not exist", missing.stdout)

    def test_one_destination(self) -> None:
        both = eventpipe("check", f"--gcs-bucket={BUCKET}", "--s3-bucket=acm-events")
        self.assertEqual(both.returncode, 1)
        self.assertEqual(both.stderr.count("\n"), 1, both.stderr)
        self.assertIn("one destination at a time", both.stderr)
        alone = eventpipe("check", "--gcs-prefix=acm")
        self.assertEqual(alone.returncode, 1)
        self.assertIn("given without --gcs-bucket", alone.stderr)
