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
import time

import google_crc32c
from twisted.trial.unittest import SynchronousTestCase

from eventpipe.destinations import KeyConflict, UploadError, UploadRequest
from eventpipe.destinations.gcs import MULTIPART_LIMIT, GCSUploader
from tests.stores import FAST, StoreScenarios, written
from tests.stores import upload_request as request
from tests.support import (
    BUCKET,
    BlackHole,
    Twistd,
    eventpipe,
    gcs_objects,
    gcs_rig,
    numbers_in_objects,
)


class UploaderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.server, self.bucket = gcs_rig(self, self.mktemp())
        self.uploader = GCSUploader(
            None,  # type: ignore[arg-type]
            BUCKET,
            endpoint_url=self.server.endpoint,
        )

    def file(self, data: bytes) -> str:
        return written(self, data)

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
        A create of a key that holds an object is refused (412) in one
        request: what the emulator proves of the store.
        """
        self.uploader.deliver(request(self.file(b"first"), "k.xml", "one"))
        self.assertRaises(
            KeyConflict, self.uploader.deliver, request(self.file(b"second"), "k.xml", "two")
        )
        self.assertEqual(self.bucket.get_blob("k.xml").download_as_bytes(), b"first")
        self.assertFalse(self.uploader.overwrites("probe/key"))

    def test_what_the_emulator_cannot_prove(self) -> None:
        """
        The emulator ignores ifGenerationMatch=0 on a resumable upload (GCS
        refuses it, by its documentation): for a large batch, the tests
        prove the look before sending (below), and the rest rests on GCS.
        Should the emulator learn it, this says so and the tests can prove
        more.
        """
        self.bucket.blob("k.xml").upload_from_file(io.BytesIO(b"first"), size=5)
        large = os.urandom(MULTIPART_LIMIT + 1)
        blob = self.bucket.blob("k.xml", chunk_size=MULTIPART_LIMIT)
        blob.upload_from_file(io.BytesIO(large), size=len(large), if_generation_match=0)
        self.assertEqual(self.bucket.get_blob("k.xml").size, len(large))

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

    def test_key_file_from_the_env_file(self) -> None:
        """
        GOOGLE_APPLICATION_CREDENTIALS in --env-file reaches the client (the
        process's environment is the client's own); a key that cannot be
        read is one line to fix, not a wait.
        """
        from eventpipe.config.options import Options
        from eventpipe.destinations.select import destination_for

        env_file = self.file(b"GOOGLE_APPLICATION_CREDENTIALS=/nonexistent/key.json\n")
        options = Options(environ={})
        options.parseOptions([f"--env-file={env_file}", "--gcs-bucket=acm-events"])
        uploader = destination_for(options, None)
        self.assertIn("gcs=GOOGLE_APPLICATION_CREDENTIALS", options.summary())
        error = self.assertRaises(
            UploadError, uploader.deliver, request(self.file(b"x"), "k.xml", "s")
        )
        self.assertFalse(error.transient)
        self.assertIn("/nonexistent/key.json", str(error))
        self.assertIn("GOOGLE_APPLICATION_CREDENTIALS", error.hint)

    def test_kept_across_a_restart(self) -> None:
        """What the emulator keeps on its directory: objects and their metadata."""
        self.uploader.deliver(request(self.file(b"kept"), "kept.xml", "kept-digest"))
        self.server.stop()
        self.server.start()
        self.assertEqual(self.uploader.metadata("kept.xml")["source"], "kept-digest")
        self.uploader.deliver(request(self.file(b"kept"), "kept.xml", "kept-digest"))


class ProcessTests(StoreScenarios, SynchronousTestCase):
    unreachable = "cannot reach the GCS endpoint"

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

    def keys(self) -> list[str]:
        return list(gcs_objects(self.bucket))

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
