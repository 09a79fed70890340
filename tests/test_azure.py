"""
Azure Blob Storage against Azurite, Microsoft's emulator, as a real server
process: the uploader's promises (conditional create, identity in the
metadata, a checked MD5, staged blocks committed once, errors classified),
and real twistd processes delivering exactly once through an emulator
outage, a kill -9, and twins sharing an instance id.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time

from twisted.trial.unittest import SynchronousTestCase

from eventpipe.destinations import KeyConflict, UploadError
from eventpipe.destinations.azure import BLOCK_THRESHOLD, AzureBlobUploader
from tests.stores import FAST, StoreScenarios, written
from tests.stores import upload_request as request
from tests.support import (
    CONTAINER,
    BlackHole,
    Twistd,
    azurite_rig,
    blobs,
    eventpipe,
    numbers_in_objects,
)


class UploaderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.server, self.container = azurite_rig(self, self.mktemp())
        self.uploader = AzureBlobUploader(
            None,  # type: ignore[arg-type]
            CONTAINER,
            environment={"AZURE_STORAGE_CONNECTION_STRING": self.server.connection_string},
        )

    def file(self, data: bytes) -> str:
        return written(self, data)

    def test_delivered_as_sent(self) -> None:
        """Byte for byte, with the identity, the checksum and the type; again is a no-op."""
        data = b'<?xml version="1.0" encoding="UTF-8"?>\n<EVENTS>\n<EVENT/>\n</EVENTS>\n'
        sent = request(self.file(data), "acm/2026/12/01/a.xml", "segment-digest")
        self.uploader.deliver(sent)
        self.uploader.deliver(sent)
        blob = self.container.get_blob_client("acm/2026/12/01/a.xml")
        self.assertEqual(blob.download_blob().readall(), data)
        properties = blob.get_blob_properties()
        self.assertEqual(properties.metadata["source"], "segment-digest")
        self.assertEqual(properties.metadata["sha256"], sent.sha256)
        self.assertEqual(properties.metadata["events"], "3")
        self.assertEqual(bytes(properties.content_settings.content_md5), hashlib.md5(data).digest())
        self.assertEqual(properties.content_settings.content_type, "application/xml")
        self.assertIn("acm/2026/12/01/a.xml", self.uploader.keys("acm/"))
        self.assertEqual(self.uploader.metadata("acm/2026/12/01/a.xml")["source"], "segment-digest")

    def test_large_batch_in_blocks(self) -> None:
        """Over the threshold: staged blocks, committed once, only if the key is free."""
        data = os.urandom(BLOCK_THRESHOLD + 1024 * 1024 + 17)
        sent = request(self.file(data), "big.xml", "big-digest")
        self.uploader.deliver(sent)
        self.uploader.deliver(sent)
        blob = self.container.get_blob_client("big.xml")
        self.assertEqual(hashlib.sha256(blob.download_blob().readall()).digest().hex(), sent.sha256)
        committed, _ = blob.get_block_list()
        self.assertEqual(len(committed), 3)
        other = request(self.file(data), "big.xml", "another-segment")
        self.assertRaises(KeyConflict, self.uploader.deliver, other)
        with self.uploader.open("big.xml") as stream:
            self.assertEqual(hashlib.sha256(stream.read()).hexdigest(), sent.sha256)

    def test_planted_blob_left_alone(self) -> None:
        """Someone else's blob on our key: a conflict, and the blob is untouched."""
        planted = self.container.get_blob_client("acm/2026/12/01/b.xml")
        planted.upload_blob(b"not ours", metadata={"owner": "someone"})
        sent = request(self.file(b"<EVENTS/>\n"), "acm/2026/12/01/b.xml", "ours")
        error = self.assertRaises(KeyConflict, self.uploader.deliver, sent)
        self.assertFalse(error.transient)
        self.assertEqual(planted.download_blob().readall(), b"not ours")
        self.assertEqual(planted.get_blob_properties().metadata, {"owner": "someone"})

    def test_missing_container(self) -> None:
        missing = AzureBlobUploader(
            None,  # type: ignore[arg-type]
            "no-such-container",
            environment={"AZURE_STORAGE_CONNECTION_STRING": self.server.connection_string},
        )
        error = self.assertRaises(
            UploadError, missing.deliver, request(self.file(b"x"), "k.xml", "s")
        )
        self.assertFalse(error.transient)
        self.assertIn("ContainerNotFound", str(error))
        self.assertIn("create the container", error.hint)

    def test_black_hole_endpoint(self) -> None:
        """An endpoint that takes connections and never answers: transient, within seconds."""
        hole = BlackHole()
        self.addCleanup(hole.close)
        connection = self.server.connection_string.replace(
            f"127.0.0.1:{self.server.port}", f"127.0.0.1:{hole.port}"
        )
        silent = AzureBlobUploader(
            None,  # type: ignore[arg-type]
            CONTAINER,
            environment={"AZURE_STORAGE_CONNECTION_STRING": connection},
        )
        began = time.monotonic()
        error = self.assertRaises(
            UploadError, silent.deliver, request(self.file(b"x"), "k.xml", "s")
        )
        self.assertTrue(error.transient)
        self.assertLess(time.monotonic() - began, 30)

    def test_block_ids_are_valid_base64(self) -> None:
        data = os.urandom(BLOCK_THRESHOLD + 1)
        self.uploader.deliver(request(self.file(data), "ids.xml", "ids"))
        committed, _ = self.container.get_blob_client("ids.xml").get_block_list()
        lengths = {len(base64.b64decode(block.id)) for block in committed}
        self.assertEqual(len(lengths), 1)


class ProcessTests(StoreScenarios, SynchronousTestCase):
    unreachable = "cannot reach the Azure endpoint"

    def setUp(self) -> None:
        self.workdir = os.path.abspath(self.mktemp())
        self.server, self.container = azurite_rig(self, self.workdir)

    def service(self, name: str = "service", *args: str) -> Twistd:
        process = Twistd(
            os.path.join(self.workdir, name),
            [*FAST, f"--azure-container={CONTAINER}", "--azure-prefix=acm", *args],
            self.server.environment,
        )
        self.addCleanup(process.cleanup)
        return process

    def numbers(self) -> list[int]:
        return numbers_in_objects(blobs(self.container))

    def keys(self) -> list[str]:
        return list(blobs(self.container))

    def test_check(self) -> None:
        env = self.server.environment
        good = eventpipe(
            "check",
            f"--azure-container={CONTAINER}",
            f"--spool-dir={self.workdir}/spool",
            "--listen=tcp:0",
            env=env,
        )
        self.assertEqual(good.returncode, 0, good.stdout + good.stderr)
        self.assertIn(f"container {CONTAINER}: reachable", good.stdout)
        self.assertIn("can delete blobs", good.stdout)
        self.assertIn("refuses to overwrite a blob written only if absent", good.stdout)
        self.assertEqual([b for b in blobs(self.container)], [])
        missing = eventpipe(
            "check",
            "--azure-container=not-there",
            f"--spool-dir={self.workdir}/spool",
            "--listen=tcp:0",
            env=env,
        )
        self.assertEqual(missing.returncode, 1)
        self.assertIn("\u2717 container not-there: does not exist", missing.stdout)

    def test_one_destination(self) -> None:
        both = eventpipe("check", f"--azure-container={CONTAINER}", "--s3-bucket=acm-events")
        self.assertEqual(both.returncode, 1)
        self.assertEqual(both.stderr.count("\n"), 1, both.stderr)
        self.assertIn("one destination at a time", both.stderr)
