"""
Filesystem primitives that the spool and the destinations share: private
directories, moves that never replace a file, flushing files and
directories, a file's identity, and the one digest helper.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import stat
from collections.abc import Callable
from typing import BinaryIO

# Every file and directory eventpipe makes is its user's alone.
FILE_MODE = 0o600
DIR_MODE = 0o700


def private_makedirs(path: str) -> None:
    """Like os.makedirs, but every directory it creates is 0700."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent and parent != path:
        private_makedirs(parent)
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        pass


_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def _renameat2() -> Callable[..., int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None
    function.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


_RENAMEAT2 = _renameat2()


def rename_noreplace(source: str, target: str) -> OSError | None:
    """
    Rename C{source} to C{target}, atomically, unless C{target} exists.

    Linux's C{renameat2(RENAME_NOREPLACE)} where the system and filesystem
    have it; otherwise (NFS, CIFS, some FUSE mounts) a hard link, which
    fails on an existing name, then an unlink.  A crash between those two
    leaves the data under both names: L{Spool.recover} finds the pair by
    identity (device and inode) and keeps one.

    @return: None; or, when the link was made but the old name could not be
        removed (EIO, EACCES), why: the move is done (C{target} holds the
        data), and C{source} is a second name the caller must remove.
    @raise FileExistsError: C{target} exists; nothing was changed.
    """
    if _RENAMEAT2 is not None:
        if (
            _RENAMEAT2(
                _AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE
            )
            == 0
        ):
            return None
        number = ctypes.get_errno()
        if number not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(number, os.strerror(number), source, None, target)
    os.link(source, target)
    try:
        os.unlink(source)
    except FileNotFoundError:
        return None
    except OSError as error:
        return error
    return None


def identity(path: str) -> tuple[int, int] | None:
    """A regular file's identity (device, inode), or None for anything else."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(found.st_mode):
        return None
    return found.st_dev, found.st_ino


# What copy_file_range(2) answers where it cannot copy these two files (an
# old kernel, another filesystem, a filesystem that does not implement it):
# the bytes then go through this process.
_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM}


def copy_file(source: BinaryIO, sink: BinaryIO) -> None:
    """
    Copy what C{source} holds from where it stands to C{sink}, in the
    kernel where it can (copy_file_range(2): no pass through this process,
    a shared extent on a filesystem that clones), through a buffer where it
    cannot.
    """
    sink.flush()
    copied = 0
    try:
        while os.copy_file_range(source.fileno(), sink.fileno(), 1 << 30):
            copied += 1
    except OSError as error:
        if error.errno not in _NO_KERNEL_COPY or copied:
            raise
        buffer = bytearray(1 << 20)
        view = memoryview(buffer)
        while count := source.readinto(view):  # type: ignore[attr-defined]
            sink.write(view[:count])


def fsync_file(fd: int) -> None:
    """Flush an open file's data to the disk."""
    os.fsync(fd)


def fsync_directory(path: str) -> None:
    """Flush a directory (the names in it) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def digest_of(stream: BinaryIO, algorithm: str = "sha256") -> hashlib._Hash:
    """
    The digest of what C{stream} holds from where it stands, read into one
    reused buffer (a fresh MiB per read costs a process megabytes of peak).
    """
    digest = hashlib.new(algorithm, usedforsecurity=algorithm == "sha256")
    buffer = bytearray(1 << 16)
    view = memoryview(buffer)
    while True:
        count = stream.readinto(view)  # type: ignore[attr-defined]
        if not count:
            break
        digest.update(view[:count])
    return digest


def file_digest(path: str, algorithm: str = "sha256") -> hashlib._Hash:
    """The digest of a whole file (see L{digest_of})."""
    with open(path, "rb") as stream:
        return digest_of(stream, algorithm)


def file_sha256(path: str) -> str:
    """A whole file's SHA-256, in hex."""
    return file_digest(path).hexdigest()
