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
import signal
import socket
import time

from twisted.trial.unittest import SynchronousTestCase

from eventpipe.destinations import KeyConflict, UploadError, UploadRequest
from eventpipe.destinations.azure import BLOCK_THRESHOLD, AzureBlobUploader
from tests.support import (
    CONTAINER,
    BlackHole,
    Twistd,
    azurite_rig,
    blobs,
    eventpipe,
    exactly_once_problems,
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
        self.server, self.container = azurite_rig(self, self.mktemp())
        self.uploader = AzureBlobUploader(
            None,  # type: ignore[arg-type]
            CONTAINER,
            environment={"AZURE_STORAGE_CONNECTION_STRING": self.server.connection_string},
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


FAST = [
    "--rotation-interval=0.5",
    "--check-interval=0.1",
    "--retry-initial-delay=0.2",
    "--retry-max-delay=1",
]


class ProcessTests(SynchronousTestCase):
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

    def test_delivered_exactly_once(self) -> None:
        process = self.service().start()
        send(process.port, make_stream(range(200)))
        wait_for(lambda: len(self.numbers()) >= 200, 60, "the blobs")
        self.assertEqual(process.stop(), -signal.SIGTERM)
        self.assertEqual(exactly_once_problems(self.numbers(), range(200)), ([], [], []))
        keys = list(blobs(self.container))
        self.assertTrue(all(k.startswith("acm/20") for k in keys), keys)
        self.assertIn("everything received was delivered", process.log())

    def test_emulator_killed_and_restarted_while_sending(self) -> None:
        """
        Azurite stops with batches on their way (a SIGTERM: its store, unlike
        Azure's, is not durable across a kill -9) and comes back 100 events
        later; nothing is lost or doubled.
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
        wait_for(lambda: len(set(self.numbers())) >= 300, 90, "the blobs after the outage")
        self.assertEqual(process.stop(), -signal.SIGTERM)
        self.assertEqual(exactly_once_problems(self.numbers(), range(300)), ([], [], []))
        self.assertIn("cannot reach the Azure endpoint", process.log())

    def test_kill_nine_and_restart(self) -> None:
        process = self.service().start()
        send(process.port, make_stream(range(150)))
        # Killed once the 150 events are read (what the kernel holds at a
        # kill -9 is outside the promise): in the spool, or delivered.
        wait_for(
            lambda: len(spooled(process.spool) | set(self.numbers())) >= 150,
            30,
            "the events read",
        )
        process.kill()
        process.start()
        send(process.port, make_stream(range(150, 300)))
        wait_for(lambda: len(set(self.numbers())) >= 300, 60, "the blobs after the restart")
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
