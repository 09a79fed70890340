"""
C{eventpipe check}: verify, before starting the service, what it will need.
Each check is one line: ✓ (passes), ✗ (fails: exit status 1) or ! (a
warning that the service does not mind); blocking calls are fine here (no
reactor).
"""

from __future__ import annotations

import errno
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from eventpipe.config.endpoints import parse_endpoint
from eventpipe.naming import normalize_prefix
from eventpipe.spool.layout import disk_reserve

# (True: passes, False: fails, None: a warning; the line).
Check = tuple[bool | None, str]


def check_listen(description: str) -> Check:
    """The endpoint parses and, for TCP, its port can be bound now."""
    endpoint = parse_endpoint(description)
    port = getattr(endpoint, "_port", None)
    if port is None:
        return True, f"listen {description}: parses"
    interface = getattr(endpoint, "_interface", "") or ""
    return _bindable(f"listen {description}", socket.SOCK_STREAM, interface, port)


def check_udp(interface: str, port: int) -> Check:
    """The UDP port can be bound now."""
    where = f"{interface}:{port}" if interface else str(port)
    return _bindable(f"listen-udp {where}", socket.SOCK_DGRAM, interface, port)


def _bindable(label: str, kind: int, interface: str, port: int) -> Check:
    """Whether a port of this kind can be bound now, said as a check line."""
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    with socket.socket(family, kind) as probe:
        if kind == socket.SOCK_STREAM:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((interface, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return False, f"{label}: port {port} is in use"
            if error.errno == errno.EACCES:
                return False, f"{label}: port {port} needs privileges"
            return False, f"{label}: {error.strerror}"
    return True, f"{label}: port {port} is free"


def _free(path: str) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def check_directory(label: str, path: str, need: int = 0) -> Check:
    """
    The directory can be written (or, when it does not exist yet, created:
    its nearest existing parent can be written), and has C{need} bytes
    free.  A check creates nothing.
    """
    if not os.path.exists(path):
        parent = os.path.dirname(os.path.abspath(path))
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
            return False, f"{label} {path}: cannot be created ({parent} is not writable)"
        free = _free(parent)
        if free < need:
            return False, f"{label} {path}: only {free:,} bytes free, {need:,} needed"
        return True, f"{label} {path}: does not exist yet, can be created; {free:,} bytes free"
    try:
        probe = os.path.join(path, f".eventpipe-check-{os.getpid()}")
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"probe\n")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
        free = _free(path)
    except OSError as error:
        return False, f"{label} {path}: not writable ({error.strerror or error})"
    if free < need:
        return False, f"{label} {path}: only {free:,} bytes free, {need:,} needed"
    return True, f"{label} {path}: writable, {free:,} bytes free"


def _missing(error: Exception, action: str) -> str:
    from eventpipe.destinations.s3 import CREDENTIAL_CODES, classify, error_code

    classified = classify(error)
    code = error_code(error)
    if code in CREDENTIAL_CODES:
        return f"the credentials are refused: {CREDENTIAL_CODES[code]} ({code})"
    if code in ("AccessDenied", "403"):
        return f"access denied: the IAM policy lacks {action}"
    hint = f" ({classified.hint})" if classified.hint else ""
    return f"{classified}{hint}"


def _s3_bucket(client: Any, bucket: str) -> tuple[Check, bool]:
    """
    Whether the bucket is there and this identity may reach it, and whether
    the checks go on (not when it is missing, or nothing answers: each call
    would wait as long again).
    """
    try:
        client.head_bucket(Bucket=bucket)
    except Exception as error:
        response = getattr(error, "response", {}) or {}
        code = str(response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket"):
            return (False, f"bucket {bucket}: does not exist"), False
        if not response:
            # No answer at all: a timeout, a refused connection.
            return (False, f"bucket {bucket}: {_missing(error, 's3:ListBucket')}"), False
        if code == "403":
            from eventpipe.destinations.s3 import explained

            error = explained(client, bucket, error)  # type: ignore[assignment]
        return (False, f"bucket {bucket}: {_missing(error, 's3:ListBucket')}"), True
    return (True, f"bucket {bucket}: reachable"), True


def check_s3(
    client: Any, bucket: str, prefix: str, instance: str, allow_unconditional: bool = False
) -> Iterator[Check]:
    """
    The bucket exists, and a probe object can be written (only if absent),
    written again not at all (the store honours the condition that "never
    overwritten" rests on), read and deleted; each line as soon as it is
    decided.  An endpoint that does not answer ends the checks at once
    (each call would wait as long again).
    """
    where = f"s3://{bucket}/{normalize_prefix(prefix)}"
    found, going_on = _s3_bucket(client, bucket)
    yield found
    if not going_on:
        return
    key = f"{normalize_prefix(prefix)}.eventpipe-check/{instance}-{uuid.uuid4().hex}"
    from eventpipe.destinations.s3 import _precondition_failed, error_code

    def write() -> Any:
        return client.put_object(Bucket=bucket, Key=key, Body=b"probe\n", IfNoneMatch="*")

    steps: list[tuple[str, str, Callable[[], Any]]] = [
        ("write", "s3:PutObject", write),
        ("read", "s3:GetObject", lambda: client.head_object(Bucket=bucket, Key=key)),
        ("delete", "s3:DeleteObject", lambda: client.delete_object(Bucket=bucket, Key=key)),
    ]
    for verb, action, call in steps:
        try:
            call()
        except Exception as error:
            if verb == "delete" and error_code(error) in ("AccessDenied", "403"):
                # The service never deletes: its policy need not allow it.
                yield (
                    None,
                    (
                        f"{where}: cannot delete the probe object (the policy lacks "
                        f"{action}, which the service does not need); it stays at "
                        f"s3://{bucket}/{key}"
                    ),
                )
                return
            yield False, f"{where}: cannot {verb} a probe object: {_missing(error, action)}"
            return
        yield True, f"{where}: can {verb} objects ({action})"
        if verb == "write":
            try:
                write()
            except Exception as error:
                if not _precondition_failed(error):
                    yield (
                        False,
                        f"{where}: cannot write a probe object again: {_missing(error, action)}",
                    )
                    return
                yield True, f"{where}: refuses to overwrite an object written only if absent"
            else:
                yield _unconditional(where, allow_unconditional)


def _unconditional(where: str, allowed: bool) -> Check:
    if allowed:
        return True, (
            f"{where}: overwrote an object written only if absent: it ignores conditional "
            "writes (allowed by --allow-unconditional-writes: a twin or a lost sequence file "
            "may overwrite a delivered batch)"
        )
    return False, (
        f"{where}: overwrote an object written only if absent: it ignores conditional "
        "writes, and the service refuses such a store (use one that honours If-None-Match, "
        "or pass --allow-unconditional-writes)"
    )


def check_azure(
    uploader: Any, prefix: str, instance: str, allow_unconditional: bool = False
) -> Iterator[Check]:
    """
    The container exists, and a probe blob can be written, read and deleted;
    a refusal names the role that is missing.  An endpoint that does not
    answer ends the checks at once.
    """
    from eventpipe.destinations.azure import ROLE, classify

    where = f"{uploader.description}/{normalize_prefix(prefix)}"

    def why(error: Exception) -> str:
        classified = classify(error)
        status = getattr(error, "status_code", None)
        if status == 403:
            return f"access denied: the identity lacks the {ROLE} role on the container"
        hint = f" ({classified.hint})" if classified.hint else ""
        return f"{classified}{hint}"

    try:
        uploader.client.get_container_properties()
    except Exception as error:
        if getattr(error, "error_code", None) == "ContainerNotFound":
            yield False, f"container {uploader.container}: does not exist"
        else:
            yield False, f"container {uploader.container}: {why(error)}"
        return
    yield True, f"container {uploader.container}: reachable"
    blob = uploader.client.get_blob_client(
        f"{normalize_prefix(prefix)}.eventpipe-check/{instance}-{uuid.uuid4().hex}"
    )
    from azure.core.exceptions import ResourceExistsError

    def write() -> Any:
        return blob.upload_blob(b"probe\n", overwrite=False)

    steps: list[tuple[str, Callable[[], Any]]] = [
        ("write", write),
        ("read", lambda: blob.download_blob().readall()),
        ("delete", blob.delete_blob),
    ]
    for verb, call in steps:
        try:
            call()
        except Exception as error:
            yield False, f"{where}: cannot {verb} a probe blob: {why(error)}"
            return
        yield True, f"{where}: can {verb} blobs"
        if verb == "write":
            try:
                write()
            except ResourceExistsError:
                yield True, f"{where}: refuses to overwrite a blob written only if absent"
            except Exception as error:
                yield False, f"{where}: cannot write a probe blob again: {why(error)}"
                return
            else:
                yield _unconditional(where, allow_unconditional)


def run_checks(options: Any, out: TextIO, s3_client: Any = None) -> int:
    """
    Run every check the options call for, printing each line as soon as it
    is decided; 0 when all pass.
    """
    failed = False
    for ok, line in _checks(options, s3_client):
        mark = "\u2713" if ok else ("!" if ok is None else "\u2717")
        out.write(f"{mark} {line}\n")
        out.flush()
        failed = failed or ok is False
    return 1 if failed else 0


def check_shared_ports(descriptions: list[tuple[str, str]]) -> Iterator[Check]:
    """Two TCP endpoints (listeners, --metrics) on one port: twistd cannot bind both."""
    seen: dict[int, str] = {}
    for label, description in descriptions:
        port = getattr(parse_endpoint(description), "_port", None)
        if not port:
            continue
        if port in seen:
            yield False, f"{label} {description}: port {port} is also {seen[port]}"
        else:
            seen[port] = f"{label} {description}"


def check_spool_free(directory: str) -> Check | None:
    """A spool a running process holds: a service could not start on it."""
    from eventpipe.lock import holder

    try:
        found = holder(directory)
    except OSError:
        return None
    if found is None:
        return None
    who = f"process {found['pid']}" if found.get("pid") else "another process"
    return False, (
        f"spool {directory}: in use by {who} (a running eventpipe): a second service "
        "cannot start on it"
    )


def _checks(options: Any, s3_client: Any) -> Iterator[Check]:
    for description in options["listen"]:
        yield check_listen(description)
    for interface, port in options["listen-udp"]:
        yield check_udp(interface, port)
    if options["metrics"]:
        yield check_listen(options["metrics"])
    endpoints = [("listen", d) for d in options["listen"]]
    if options["metrics"]:
        endpoints.append(("metrics", options["metrics"]))
    yield from check_shared_ports(endpoints)
    held = check_spool_free(options["spool-dir"])
    if held is not None:
        yield held
    reserve = disk_reserve(options["upload-concurrency"], options["max-file-size"])
    yield check_directory("spool", options["spool-dir"], reserve)
    yield from _destination_checks(options, s3_client)


def _destination_checks(options: Any, s3_client: Any) -> Iterator[Check]:
    """What C{eventpipe check} says of the one destination the options name."""
    if options["s3-bucket"]:
        if s3_client is None:
            from eventpipe.destinations.s3 import S3Uploader

            s3_client = S3Uploader(
                None,  # type: ignore[arg-type]
                options["s3-bucket"],
                endpoint_url=options["s3-endpoint-url"],
                region=options["s3-region"],
                environment=options.aws_from_env_file(),
            ).client
        yield from check_s3(
            s3_client,
            options["s3-bucket"],
            options["s3-prefix"],
            options["instance-id"],
            options["allow-unconditional-writes"],
        )
    elif options["azure-container"]:
        from eventpipe.destinations.select import destination_for

        uploader = destination_for(options, None)
        try:
            assert uploader.client is not None
        except Exception as error:
            yield False, f"container {options['azure-container']}: {error}"
            return
        yield from check_azure(
            uploader,
            options["azure-prefix"],
            options["instance-id"],
            options["allow-unconditional-writes"],
        )
    elif options["gcs-bucket"]:
        from eventpipe.destinations.gcs import check_bucket
        from eventpipe.destinations.select import destination_for

        yield from check_bucket(
            destination_for(options, None),
            options["gcs-prefix"],
            options["instance-id"],
            options["allow-unconditional-writes"],
        )
    else:
        yield check_directory("outbox", options["outbox"])
