"""
The files a render writes: the batch (gzip or not, hashed as it is
written) and the quarantine entries, one JSON line per piece set aside.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import time
from typing import Any, BinaryIO


class _HashingWriter(io.RawIOBase):
    """Counts and hashes what goes through to a file."""

    def __init__(self, target: BinaryIO) -> None:
        self._target = target
        self.size = 0
        self.sha256 = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._target.write(data)
        self.sha256.update(data)
        self.size += len(data)
        return len(data)


class _Output:
    """A batch or quarantine file, opened only when something is written."""

    def __init__(self, path: str, compress: str, header: bytes = b"") -> None:
        self.path = path
        self._compress = compress
        self._header = header
        self._file: BinaryIO | None = None
        self._hasher: _HashingWriter | None = None
        self._writer: gzip.GzipFile | io.BufferedWriter | None = None

    def write(self, data: bytes) -> None:
        writer = self._writer
        if writer is None:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            self._file = os.fdopen(fd, "wb", buffering=1 << 16)
            self._hasher = _HashingWriter(self._file)
            if self._compress == "gzip":
                # mtime=0 makes the same segment render to the same bytes.
                writer = gzip.GzipFile(
                    filename="", mode="wb", fileobj=self._hasher, mtime=0, compresslevel=6
                )
            else:
                writer = io.BufferedWriter(self._hasher, 1 << 16)
            writer.write(self._header)
            self._writer = writer
        writer.write(data)

    def finish(self, footer: bytes = b"") -> tuple[int, str]:
        if self._writer is None or self._hasher is None or self._file is None:
            return 0, ""
        self._writer.write(footer)
        if isinstance(self._writer, gzip.GzipFile):
            # Writes the gzip trailer; the file it writes into stays open.
            self._writer.close()
        else:
            self._writer.flush()
        # Not forced to disk: a rendered file lives no longer than the
        # process (start-up removes what it finds; the sealed segment is the
        # durable copy), and the outbox makes its own copy durable.
        self._file.flush()
        self._file.close()
        return self._hasher.size, self._hasher.sha256.hexdigest()

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def quarantine_entry(reason: str, data: bytes, context: dict[str, Any] | None = None) -> bytes:
    """
    One line of the quarantine object (JSON Lines): when the piece arrived
    (UTC), who sent it on which listener, why it was set aside, and its bytes
    -- as text when they are UTF-8, in base64 otherwise.
    """
    context = context or {}
    received = context.get("received")
    entry: dict[str, Any] = {
        "received": _iso(received) if isinstance(received, (int, float)) else None,
        "sender": context.get("sender"),
        "listener": context.get("listener"),
        "reason": reason,
        "size": len(data),
    }
    try:
        entry["text"] = data.decode("utf-8")
    except UnicodeDecodeError:
        entry["base64"] = base64.b64encode(data).decode("ascii")
    return json.dumps(entry, ensure_ascii=False).encode("utf-8") + b"\n"


def _iso(stamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + f".{int(stamp % 1 * 1000):03d}Z"
