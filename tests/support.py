"""
Helpers shared by the tests: ACM-like events, free ports, real twistd
processes, a real S3-compatible server process, and reading what was
delivered.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable

from lxml import etree

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


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(
    predicate: Callable[[], object], timeout: float, what: str, step: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


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
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


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


def delivered_numbers(outbox: str) -> list[int]:
    """Every event number in the batches of an outbox, with repeats."""
    numbers: list[int] = []
    for path in batch_files(outbox):
        data = read_object(path)
        if ".json" in path:
            numbers.extend(numbers_in_json_batch(data))
        else:
            numbers.extend(numbers_in_xml_batch(data))
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


def quarantine_files(outbox: str) -> list[str]:
    return sorted(
        path
        for path in glob.glob(os.path.join(outbox, "quarantine", "**", "*"), recursive=True)
        if os.path.isfile(path)
    )
