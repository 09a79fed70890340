"""
eventpipe's benchmark: one run on loopback, everything measured side by side
so that ratios hold on a shared, noisy machine.

    tox -e bench                      # or: python -m tests.benchmarks
    python -m tests.benchmarks --events 100000 --runs 3

Method: the receiver under test (the raw receiver and eventpipe alike) runs
pinned to CPU 0, the senders (this process) to CPU 1; every throughput
measure runs --runs times and the median is reported, in events/s and MB/s.
Events vary (names, numbers, times), so that gzip figures are honest.

1. raw limit: a minimal receiver that only writes the bytes to a file;
2. ingest: a real ``twistd -n eventpipe`` until every event is spooled
   (``eventpipe_events_received_total``); and for every layout a sender
   may use between documents (nothing, a newline, CRLF, spaces), one
   write per event, beside the raw receiver fed the same way (the
   "÷ raw/ev" column);
3. end to end, XML, JSON Lines and gzip, into the outbox and into a real S3
   server (moto): the total (first send to last delivery) and the steady
   rate (20 % to 80 % delivered); and moto's own PUT rate alone;
4. the reactor's stalls during sustained ingest with 5 MiB seals: the
   lateness of a 1 ms timer (``eventpipe_reactor_lag_seconds``);
5. memory: peak RSS of eventpipe in each run, and with 1,000 connections
   each holding half an event;
6. rendering a large segment;
7. what --fsync always costs one append (the reactor waits for it).

Prints one table, ratios first, and writes the same as JSON.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from tests.support import (
    BUCKET,
    CREDENTIALS,
    DECLARATION,
    MotoServer,
    Twistd,
    delivered_numbers,
    numbers_in_objects,
    peak_rss_mib,
    s3_objects,
)

CONNECTIONS = 4

_FIELDS = [
    ("plasectrxGatewayDN", "cn=544de4aa06914073,ou=gateways,dc=plasec"),
    ("plasectrxRecdateUTC", "20250804083640Z"),
    ("plasectrxPaneldateUTC", "20250804083640Z"),
    ("plasectrxEvtypename", "Valid Credential"),
    ("plasectrxEventname", "Local Grant"),
    ("plasectrxPanelname", "Panel 34 Bldg A"),
    ("plasectrxSourcename", "Stair 4 L2"),
    ("plasectrxSourcelocation", "Building A"),
    ("plasectrxPointaddress", "       651"),
    ("plasectrxPointDN", "cn=651,ou=points,dc=plasec"),
    ("plasectrxEvtypeaddress", " 12"),
    ("plasectrxSourceDN", "cn=100,cn=0,cn=34,ou=panels,cn=544de4aa06914073,ou=gateways,dc=plasec"),
    ("plasectrxPri", "50"),
    ("plasectrxIdentityDN", "cn=c47283a38e,ou=identities,dc=plasec"),
    ("plasectrxCardno", "         8339220"),
    ("plasectrxLname", "Nguyen"),
    ("plasectrxFname", "J\u00fcrgen"),
    ("plasectrxIssuelevel", "      -1"),
    ("plasectrxFacilityCode", "92"),
    ("plasectrxIsAlarm", "0"),
]


_NAMES = ["Nguyen", "Garc\u00eda", "M\u00fcller", "Okafor", "Smith", "Kowalski", "Tanaka", "Dubois"]
_FIRST = ["J\u00fcrgen", "Ana", "Wei", "Chidi", "Emma", "Piotr", "Yuki", "L\u00e9a"]
_EVENTS = [
    "Local Grant",
    "Door Forced Open",
    "Invalid Credential",
    "Door Held Open",
    "Valid Credential",
]
_PLACES = ["Stair 4 L2", "Lobby East", "Server Room", "Loading Dock", "Roof Access", "Garage B1"]


def bench_event(number: int) -> bytes:
    """
    An ACM-shaped event of about 1.2 KB; names, numbers and times vary from
    event to event (deterministically), so that compression is not flattered.
    """
    h = (number * 2654435761) & 0xFFFFFFFF
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(1754296600 + number // 7))
    fields = dict(_FIELDS)
    fields.update(
        {
            "plasectrxRecdateUTC": stamp + "Z",
            "plasectrxPaneldateUTC": stamp + "Z",
            "plasectrxEventname": _EVENTS[h % len(_EVENTS)],
            "plasectrxEvtypename": _EVENTS[(h >> 3) % len(_EVENTS)],
            "plasectrxSourcename": _PLACES[(h >> 5) % len(_PLACES)],
            "plasectrxPanelname": f"Panel {h % 97} Bldg {chr(65 + h % 7)}",
            "plasectrxCardno": f"{h % 99999999:>16d}",
            "plasectrxLname": _NAMES[(h >> 7) % len(_NAMES)],
            "plasectrxFname": _FIRST[(h >> 11) % len(_FIRST)],
            "plasectrxIdentityDN": f"cn={h:08x}{number:04x},ou=identities,dc=plasec",
            "plasectrxFacilityCode": str(h % 250),
            "plasectrxIsAlarm": "1" if h % 11 == 0 else "0",
        }
    )
    lines = ["<EVENT>", f"<cn>n{number:012d}</cn>"]
    lines += [f"<{name}>{value}</{name}>" for name, value in fields.items()]
    lines.append("</EVENT>")
    return "\n".join(lines).encode("utf-8")


# What senders write between documents (see the layout runs).
LAYOUTS = {"lf": b"\n", "none": b"", "crlf": b"\r\n", "spaces": b"  "}


def documents_for(numbers: range, separator: bytes = b"\n") -> list[bytes]:
    return [DECLARATION + bench_event(n) + separator for n in numbers]


def stream_for(numbers: range, separator: bytes = b"\n") -> bytes:
    return b"".join(documents_for(numbers, separator))


# A connection's bytes: one stream sent at once (large writes), or a list
# of writes (one per event, as ACM-style senders write).
Stream = bytes | list[bytes]


def send_all(port: int, streams: list[Stream]) -> None:
    def one(data: Stream) -> None:
        with socket.create_connection(("127.0.0.1", port)) as connection:
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if isinstance(data, bytes):
                connection.sendall(data)
            else:
                for write in data:
                    connection.sendall(write)

    threads = [threading.Thread(target=one, args=(data,)) for data in streams]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


RECEIVER_CPU, SENDER_CPU = 0, 1


def pin(pid: int, cpu: int) -> None:
    """Pin a process (its threads to come) to one CPU, where there are two."""
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(pid, {cpu})


# 1. The raw limit.

RAW_RECEIVER = r"""
import os, selectors, socket, sys
port, path, expected = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
listener = socket.socket(); listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", port)); listener.listen(64); listener.setblocking(False)
selector = selectors.DefaultSelector(); selector.register(listener, selectors.EVENT_READ)
total = 0
while total < expected:
    for key, _ in selector.select():
        if key.fileobj is listener:
            connection, _ = listener.accept(); connection.setblocking(False)
            selector.register(connection, selectors.EVENT_READ)
            continue
        data = key.fileobj.recv(65536)
        if not data:
            selector.unregister(key.fileobj); key.fileobj.close(); continue
        os.write(out, data); total += len(data)
"""


def stream_bytes(streams: list[Stream]) -> int:
    return sum(len(s) if isinstance(s, bytes) else sum(map(len, s)) for s in streams)


def raw_limit(workdir: str, streams: list[Stream]) -> dict[str, float]:
    port = free_port()
    total = stream_bytes(streams)
    receiver = subprocess.Popen(
        [
            sys.executable,
            "-c",
            RAW_RECEIVER,
            str(port),
            os.path.join(workdir, "raw.out"),
            str(total),
        ]
    )
    pin(receiver.pid, RECEIVER_CPU)
    wait_port(port)
    # Only what the bytes cost: the start of the interpreter is left out,
    # as eventpipe's start is.
    started = tree_cpu_seconds(receiver.pid)
    began = time.perf_counter()
    send_all(port, streams)
    _, status, usage = os.wait4(receiver.pid, 0)
    receiver.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - began
    os.unlink(os.path.join(workdir, "raw.out"))
    return {
        "seconds": seconds,
        "cpu_seconds": usage.ru_utime + usage.ru_stime - started,
        "start_cpu_seconds": started,
    }


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user and system) of a process, its live children and those it reaped."""
    ticks = os.sysconf("SC_CLK_TCK")

    def own(process: int, reaped: bool) -> float:
        try:
            with open(f"/proc/{process}/stat") as stream:
                fields = stream.read().rpartition(")")[2].split()
        except OSError:
            return 0.0
        # utime, stime, cutime, cstime: fields 14 to 17 of stat(5).
        counted = fields[11:15] if reaped else fields[11:13]
        return sum(int(f) for f in counted) / ticks

    try:
        with open(f"/proc/{pid}/task/{pid}/children") as stream:
            children = [int(c) for c in stream.read().split()]
    except OSError:
        children = []
    return own(pid, True) + sum(own(child, False) for child in children)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {port}")


# A running eventpipe, and what its /metrics say.


class Service:
    """A pinned twistd eventpipe with --metrics on a free port."""

    def __init__(self, workdir: str, args: list[str], env: dict[str, str] | None = None) -> None:
        self.metrics_port = free_port()
        self.process = Twistd(
            workdir, [f"--metrics=tcp:{self.metrics_port}:interface=127.0.0.1", *args], env
        )

    def __enter__(self) -> Service:
        self.process.start()
        assert self.process.process is not None
        self.pid = self.process.process.pid
        pin(self.pid, RECEIVER_CPU)
        wait_port(self.metrics_port)
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.cleanup()

    def scrape(self) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10
        ) as r:
            return str(r.read().decode())

    def value(self, name: str, text: str | None = None) -> float:
        match = re.search(rf"^{re.escape(name)} (\S+)$", text or self.scrape(), re.M)
        return float(match.group(1)) if match else 0.0

    def rss(self) -> float:
        return peak_rss_mib(self.pid)

    def free_workers(self) -> None:
        """
        The render worker inherits the receiver's CPU when it starts: let it
        run on any (in a deployment nothing is pinned; the design puts the
        render on the other core).
        """
        for child in self.children():
            try:
                os.sched_setaffinity(child, set(range(os.cpu_count() or 1)))
            except OSError:
                pass

    def children(self) -> list[int]:
        try:
            with open(f"/proc/{self.pid}/task/{self.pid}/children") as stream:
                return [int(c) for c in stream.read().split()]
        except OSError:
            return []

    def worker_rss(self) -> float:
        """Peak RSS of the render worker (0 before the first render)."""
        try:
            with open(f"/proc/{self.pid}/task/{self.pid}/children") as stream:
                children = [int(c) for c in stream.read().split()]
        except OSError:
            return 0.0
        return max((peak_rss_mib(child) for child in children), default=0.0)


def run_until(
    service: Service, streams: list[Stream], metric: str, events: int
) -> tuple[float, list[tuple[float, float]]]:
    """
    Send the streams and poll C{metric} until it reaches C{events}.

    @return: the seconds from the first send, and (seconds, value) samples.
    """
    began = time.perf_counter()
    sender = threading.Thread(target=send_all, args=(service.process.port, streams))
    sender.start()
    samples: list[tuple[float, float]] = []
    deadline = began + 600
    while True:
        service.free_workers()
        value = service.value(metric)
        now = time.perf_counter() - began
        samples.append((now, value))
        if value >= events or time.perf_counter() > deadline:
            break
        time.sleep(0.02)
    sender.join()
    return samples[-1][0], samples


def steady(samples: list[tuple[float, float]], events: int) -> float:
    """Events per second between 20 % and 80 % delivered."""
    low = next(t for t, v in samples if v >= 0.2 * events)
    high = next(t for t, v in samples if v >= 0.8 * events)
    return 0.6 * events / max(high - low, 1e-6)


# 2. Ingest.


def ingest(workdir: str, streams: list[Stream], events: int, args: list[str]) -> dict[str, float]:
    with Service(workdir, ["--rotation-interval=3600", "--check-interval=1", *args]) as service:
        started = tree_cpu_seconds(service.pid)
        seconds, _ = run_until(service, streams, "eventpipe_events_received_total", events)
        return {
            "seconds": seconds,
            "peak_rss_mib": service.rss(),
            "cpu_seconds": tree_cpu_seconds(service.pid) - started,
            "start_cpu_seconds": started,
        }


# 3. End to end.


def end_to_end(
    workdir: str,
    streams: list[bytes],
    events: int,
    args: list[str],
    server: MotoServer | None = None,
) -> dict[str, Any]:
    env = None
    destination: list[str] = []
    prefix = f"run-{time.monotonic_ns()}/"
    if server is not None:
        client = server.client()
        client.create_bucket(Bucket=BUCKET)
        destination = [
            f"--s3-bucket={BUCKET}",
            f"--s3-endpoint-url={server.endpoint}",
            f"--s3-prefix={prefix}",
        ]
        env = CREDENTIALS
    with Service(
        workdir,
        ["--rotation-interval=1", "--check-interval=0.2", *destination, *args],
        env,
    ) as service:
        started = tree_cpu_seconds(service.pid)
        seconds, samples = run_until(service, streams, "eventpipe_events_delivered_total", events)
        # The whole process tree from the first byte to the last delivery:
        # twistd, and the render workers (the sealer and upload threads are
        # twistd's); its start (the interpreter, the imports) is left out.
        cpu = tree_cpu_seconds(service.pid) - started
        rss = service.rss()
        worker = service.worker_rss()
        outbox = os.path.join(service.process.spool, "outbox")
    if server is not None:
        numbers = numbers_in_objects(s3_objects(server.client(), BUCKET, prefix))
    else:
        numbers = delivered_numbers(outbox)
    counts = collections.Counter(numbers)
    return {
        "seconds": seconds,
        "steady_events_per_s": steady(samples, events),
        "cpu_seconds": cpu,
        "start_cpu_seconds": started,
        "peak_rss_mib": rss,
        "worker_peak_rss_mib": worker,
        "lost": events - len(counts),
        "duplicated": sum(c - 1 for c in counts.values()),
    }


def moto_put_rate(server: MotoServer, objects: int = 20, size: int = 5 * 2**20) -> dict[str, float]:
    """moto's own PUT rate for 5 MiB objects, two at a time, as eventpipe uploads."""
    client = server.client()
    client.create_bucket(Bucket=BUCKET)
    body = os.urandom(size)
    began = time.perf_counter()

    def put(n: int) -> None:
        client.put_object(Bucket=BUCKET, Key=f"put-rate/{n}", Body=body)

    threads = [
        threading.Thread(target=lambda k=k: [put(2 * i + k) for i in range(objects // 2)])
        for k in (0, 1)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    return {"objects_per_s": objects / seconds, "mb_per_s": objects * size / seconds / 1e6}


# 4. Stalls.


def stalls(workdir: str, streams: list[bytes], events: int) -> dict[str, float]:
    """Lateness of a 1 ms timer during sustained ingest with 5 MiB seals."""
    env = {"EVENTPIPE_LAG_INTERVAL": "0.001"}
    with Service(
        workdir, ["--rotation-interval=3600", "--max-file-size=5MiB", "--max-spool-size=8GB"], env
    ) as service:
        run_until(service, streams, "eventpipe_events_received_total", events)
        text = service.scrape()
        seals = sum(
            float(v)
            for v in re.findall(r"^eventpipe_segments_sealed_total\{[^}]*\} (\S+)$", text, re.M)
        )
    buckets = [
        (float(le), float(count))
        for le, count in re.findall(
            r'^eventpipe_reactor_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$', text, re.M
        )
        if le != "+Inf"
    ]
    total = float(re.search(r"^eventpipe_reactor_lag_seconds_count (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
    p99 = next((le for le, count in buckets if count >= 0.99 * total), float("inf"))
    worst = next((le for le, count in buckets if count >= total), float("inf"))
    return {"samples": total, "seals": seals, "p99_at_most_s": p99, "max_at_most_s": worst}


# 5. Memory with many connections holding half an event.


def partial_connections(workdir: str, count: int = 1000) -> dict[str, float]:
    half = (DECLARATION + bench_event(0))[:600]
    # All from loopback: one host, as many connections as the whole.
    with Service(workdir, ["--max-connections=2000", "--max-connections-per-host=2000"]) as service:
        sockets = []
        try:
            for _ in range(count):
                connection = socket.create_connection(("127.0.0.1", service.process.port))
                connection.sendall(half)
                sockets.append(connection)
            deadline = time.monotonic() + 30
            while (
                service.value("eventpipe_connections_open") < count and time.monotonic() < deadline
            ):
                time.sleep(0.1)
            return {
                "connections": service.value("eventpipe_connections_open"),
                "peak_rss_mib": service.rss(),
            }
        finally:
            for connection in sockets:
                connection.close()


# 5. Rendering a large segment.

RENDER = r"""
import sys, time
from eventpipe.render.batch import render_segment
path = sys.argv[1]
def hwm():
    # VmHWM, not ru_maxrss: the latter carries the parent's peak over fork.
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmHWM:"))
before = hwm()
began = time.perf_counter()
result = render_segment(path, path + ".xml", path + ".q")
seconds = time.perf_counter() - began
peak = hwm()
began = time.perf_counter()
render_segment(path, path + ".json", path + ".q", fmt="json")
json_seconds = time.perf_counter() - began
# The render's own limits, on the same bytes in the same process: SHA-256
# of the segment alone, and a parse that builds no tree (lxml with a target
# that keeps nothing) of the events as the render finds them.
import hashlib
from lxml import etree
from eventpipe.framing.reads import uniform_events
from eventpipe.records import KIND_DOCUMENTS, read_records
began = time.perf_counter()
digest = hashlib.sha256()
with open(path, "rb") as stream:
    for block in iter(lambda: stream.read(1 << 16), b""):
        digest.update(block)
sha_seconds = time.perf_counter() - began
class Nothing:
    # No start, end or data: lxml then calls no Python per element.
    def close(self): return None
with open(path, "rb") as stream:
    chunks = [
        uniform_events(record.data)[0]
        for record in read_records(stream)
        if record.kind == KIND_DOCUMENTS
    ]
began = time.perf_counter()
for chunk in chunks:
    parser = etree.XMLParser(target=Nothing(), resolve_entities=False, no_network=True)
    parser.feed(b"<EVENTS>")
    parser.feed(chunk)
    parser.feed(b"</EVENTS>")
    parser.close()
parse_seconds = time.perf_counter() - began
print(result.events, seconds, before / 1024, peak / 1024, sha_seconds, parse_seconds, json_seconds)
"""


def render_large(workdir: str, size: int, runs: int) -> dict[str, Any]:
    """
    Render a segment as ingest writes it (the whole documents of each read
    of about 64 KiB, one record each) and seals it (flushed to disk), in a
    process of its own, C{runs} times: the median.
    """
    from eventpipe.records import encode_documents

    directory = os.path.join(workdir, "render")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "segment")
    written = number = 0
    with open(path, "wb") as stream:
        while written < size:
            written += stream.write(encode_documents(stream_for(range(number, number + 50))))
            number += 50
        stream.flush()
        os.fsync(stream.fileno())
    measures = []
    for _ in range(runs):
        answer = subprocess.run(
            [sys.executable, "-c", RENDER, path], capture_output=True, text=True, check=True
        ).stdout.split()
        for output in (path + ".xml", path + ".json", path + ".q"):
            if os.path.exists(output):
                os.unlink(output)
        events, seconds, _, peak, sha, parse, json_seconds = map(float, answer)
        measures.append(
            {
                "segment_bytes": written,
                "events": events,
                "seconds": seconds,
                "peak_rss_mib": peak,
                "sha256_seconds": sha,
                "parse_seconds": parse,
                "json_seconds": json_seconds,
            }
        )
    shutil.rmtree(directory, ignore_errors=True)
    return median(measures)


# The run.


def fsync_appends(workdir: str, appends: int = 300) -> dict[str, Any]:
    """
    What --fsync always costs the reactor: the time of one append (one read
    of one 1.2 KB event) with each mode, median and 99th percentile, in ms.
    """
    from eventpipe.spool.spool import Spool

    event = [bench_event(0)]
    found: dict[str, Any] = {}
    for mode in ("seal", "always"):
        directory = os.path.join(workdir, f"fsync-{mode}")
        spool = Spool(directory, "bench", time.time, mode)
        times = []
        for _ in range(appends):
            began = time.perf_counter()
            spool.append(event)
            times.append(time.perf_counter() - began)
        spool.close()
        shutil.rmtree(directory, ignore_errors=True)
        times.sort()
        found[mode] = {
            "median_ms": times[len(times) // 2] * 1000,
            "p99_ms": times[int(len(times) * 0.99)] * 1000,
        }
    return found


def median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median time, with the spread of the others."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    middle = dict(ordered[len(ordered) // 2])
    middle["runs_seconds"] = [round(r["seconds"], 3) for r in runs]
    if all("cpu_seconds" in r for r in runs):
        middle["runs_cpu_seconds"] = [round(r["cpu_seconds"], 3) for r in runs]
    return middle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000, help="events per throughput run")
    parser.add_argument("--runs", type=int, default=3, help="runs of each measure (median)")
    parser.add_argument(
        "--render-size",
        default="100MiB",
        help="segment size for the render run (a 5 MiB segment is rendered too)",
    )
    parser.add_argument(
        "--json", default="bench-results/latest.json", help="where to write results"
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        help="skip a section (raw, ingest, layouts, e2e, s3, moto, stall, partial, fsync, render)",
    )
    parser.add_argument(
        "--compare",
        metavar="REV",
        help="benchmark the commit REV first, in a checkout and an environment of its own "
        "(its own eventpipe, its own benchmark), then this tree, and print the two side by side",
    )
    options = parser.parse_args(argv)
    if options.compare:
        given = list(sys.argv[1:] if argv is None else argv)
        rest = []
        while given:
            arg = given.pop(0)
            if arg == "--compare":
                given.pop(0)
            elif not arg.startswith("--compare="):
                rest.append(arg)
        return compare(options.compare, rest, options.json)
    from eventpipe.config.convert import parse_size

    pin(0, SENDER_CPU)
    render_size = parse_size(options.render_size)
    events = options.events
    streams = [stream_for(range(i, events, CONNECTIONS)) for i in range(CONNECTIONS)]
    total_bytes = sum(map(len, streams))
    workdir = tempfile.mkdtemp(prefix="eventpipe-bench-")
    results: dict[str, Any] = {
        "cores": os.cpu_count(),
        "events": events,
        "connections": CONNECTIONS,
        "event_bytes": round(total_bytes / events),
        "stream_mb": total_bytes / 1e6,
        "runs": options.runs,
        "gzip_ratio": len(stream_for(range(2000))) / len(gzip.compress(stream_for(range(2000)))),
    }
    began = time.monotonic()

    def step(name: str) -> bool:
        print(f"... {name}", file=sys.stderr, flush=True)
        return name not in options.skip

    def rate(result: dict[str, Any]) -> dict[str, Any]:
        result["events_per_s"] = events / result["seconds"]
        result["mb_per_s"] = total_bytes / result["seconds"] / 1e6
        return result

    def measured(name: str, run: Callable[[str], dict[str, Any]]) -> None:
        runs = []
        for n in range(options.runs):
            directory = os.path.join(workdir, f"{name}-{n}")
            runs.append(run(directory))
            # As the raw receiver does with its file: what a run wrote must
            # not be written back to disk while the next one runs.
            shutil.rmtree(directory, ignore_errors=True)
            os.sync()
        results[name] = rate(median(runs))

    try:
        server = MotoServer(os.path.join(workdir, "moto")).start()
        pin(server.process.pid, SENDER_CPU)  # type: ignore[union-attr]
        try:
            if step("raw"):
                measured("raw", lambda d: raw_limit(os.makedirs(d) or d, streams))
            ingest_args = ["--max-file-size=1GiB", "--max-spool-size=8GB"]
            if step("ingest"):
                measured("ingest", lambda d: ingest(d, streams, events, ingest_args))
            if step("layouts"):
                # Every layout between documents, one write per event (and
                # back to back in large writes): the raw receiver fed the
                # same way is the reference of the per-event runs.
                for layout, separator in LAYOUTS.items():
                    writes: list[Stream] = [
                        documents_for(range(i, events, CONNECTIONS), separator)
                        for i in range(CONNECTIONS)
                    ]
                    if layout == "none":
                        measured(
                            "raw_per_event", lambda d, w=writes: raw_limit(os.makedirs(d) or d, w)
                        )
                        bulk: list[Stream] = [b"".join(w) for w in writes]  # type: ignore[arg-type]
                        measured(
                            "ingest_none_bulk", lambda d, b=bulk: ingest(d, b, events, ingest_args)
                        )
                    measured(
                        f"ingest_{layout}_per_event",
                        lambda d, w=writes: ingest(d, w, events, ingest_args),
                    )
            if step("e2e"):
                for name, args in [
                    ("e2e_xml", []),
                    ("e2e_json", ["--format=json"]),
                    ("e2e_gzip", ["--compress=gzip"]),
                ]:
                    measured(name, lambda d, a=args: end_to_end(d, streams, events, a))
            if step("s3"):
                for name, args in [
                    ("s3_xml", []),
                    ("s3_json", ["--format=json"]),
                    ("s3_gzip", ["--compress=gzip"]),
                ]:
                    measured(name, lambda d, a=args: end_to_end(d, streams, events, a, server))
            if step("moto"):
                results["moto_put"] = moto_put_rate(server)
            if step("stall"):
                results["stall"] = stalls(os.path.join(workdir, "stall"), streams, events)
            if step("partial"):
                results["partial"] = partial_connections(os.path.join(workdir, "partial"))
            if step("fsync"):
                results["fsync"] = fsync_appends(workdir)
            if step("render"):
                results["render"] = [
                    render_large(workdir, size, options.runs)
                    for size in sorted({5 << 20, render_size})
                ]
        finally:
            server.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["run_seconds"] = time.monotonic() - began
    report(results)
    if options.json:
        os.makedirs(os.path.dirname(options.json) or ".", exist_ok=True)
        with open(options.json, "w") as stream:
            json.dump(results, stream, indent=2)
        print(f"\nwritten to {options.json}")
    return 0


def compare(revision: str, args: list[str], ours_json: str) -> int:
    """
    Benchmark C{revision} (checked out and installed in a directory of its
    own) with C{args}, then this tree with the same, and print both side by side.
    """
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    work = tempfile.mkdtemp(prefix="eventpipe-compare-")
    source, venv = os.path.join(work, "src"), os.path.join(work, "venv")
    theirs_json = os.path.join(work, "theirs.json")
    try:
        subprocess.run(["git", "clone", "--quiet", root, source], check=True)
        subprocess.run(["git", "-C", source, "checkout", "--quiet", revision], check=True)
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        python = os.path.join(venv, "bin", "python")
        subprocess.run([python, "-m", "pip", "install", "--quiet", f"{source}[test]"], check=True)
        print(f"=== {revision} ===", flush=True)
        subprocess.run(
            [python, "-m", "tests.benchmarks", *args, "--json", theirs_json], cwd=source, check=True
        )
        print("\n=== this tree ===", flush=True)
        main([*args, "--json", ours_json])
        with open(theirs_json) as stream:
            theirs = json.load(stream)
        with open(ours_json) as stream:
            ours = json.load(stream)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"\n{revision} against this tree, events/s (read each ratio beside the raw row's: "
        "that one is the machine's own swing between the two runs):"
    )
    print(f"  {'run':<30} {revision[:12]:>12} {'this tree':>12} {'this ÷ that':>12}")
    for name, mine in ours.items():
        if not isinstance(mine, dict) or "events_per_s" not in mine or name not in theirs:
            continue
        for measure, label in (("events_per_s", name), ("steady_events_per_s", name + " steady")):
            if measure in mine and measure in theirs[name]:
                other, this = theirs[name][measure], mine[measure]
                print(f"  {label:<30} {other:>12,.0f} {this:>12,.0f} {this / other:>12.2f}")
    for other, mine in zip(theirs.get("render", []), ours.get("render", [])):
        rates = [r["events"] / r["seconds"] for r in (other, mine)]
        label = f"render_{mine['segment_bytes'] / 2**20:.0f}MiB"
        print(f"  {label:<30} {rates[0]:>12,.0f} {rates[1]:>12,.0f} {rates[1] / rates[0]:>12.2f}")
        if "json_seconds" in mine:
            print(
                f"  {label + ' json':<30} {'-':>12} {mine['events'] / mine['json_seconds']:>12,.0f}"
            )
    return 0


def report(results: dict[str, Any]) -> None:
    raw = results.get("raw", {}).get("events_per_s")

    def ratio(name: str) -> str:
        value = results.get(name, {}).get("events_per_s")
        return f"{value / raw:.2f}" if value and raw else "-"

    print()
    print(
        f"eventpipe benchmark: {results['events']:,} events of ~{results['event_bytes']} bytes "
        f"({results['stream_mb']:.0f} MB, gzip {results['gzip_ratio']:.1f}x) over "
        f"{results['connections']} connections, {results['cores']} cores, receiver pinned to "
        f"CPU {RECEIVER_CPU} and senders to CPU {SENDER_CPU}, median of {results['runs']} runs, "
        f"{results['run_seconds']:.0f} s"
    )
    print()
    print(
        f"  {'run':<30} {'events/s':>10} {'runs, k/s':>15} {'MB/s':>8} {'÷ raw':>6} {'÷ raw/ev':>9} {'steady/s':>10} "
        f"{'CPU s':>6} {'CPU ÷ raw':>9} {'peak RSS':>9} {'worker':>7}  check"
    )
    raw_cpu = results.get("raw", {}).get("cpu_seconds")
    per_event = results.get("raw_per_event", {}).get("events_per_s")
    for name in [
        "raw",
        "ingest",
        "ingest_none_bulk",
        "raw_per_event",
        *(f"ingest_{layout}_per_event" for layout in LAYOUTS),
        "e2e_xml",
        "e2e_json",
        "e2e_gzip",
        "s3_xml",
        "s3_json",
        "s3_gzip",
    ]:
        if name not in results:
            continue
        r = results[name]
        rss = f"{r['peak_rss_mib']:.0f} MiB" if "peak_rss_mib" in r else "-"
        steady_rate = f"{r['steady_events_per_s']:,.0f}" if "steady_events_per_s" in r else "-"
        check = f"lost {r['lost']}, dup {r['duplicated']}" if "lost" in r else ""
        worker = f"{r['worker_peak_rss_mib']:.0f} MiB" if r.get("worker_peak_rss_mib") else "-"
        alike = "-"
        if name.endswith("_per_event") and per_event:
            alike = f"{r['events_per_s'] / per_event:.2f}"
        cpu = f"{r['cpu_seconds']:.2f}" if "cpu_seconds" in r else "-"
        reference = raw_cpu
        if name.endswith("_per_event"):
            reference = results.get("raw_per_event", {}).get("cpu_seconds", raw_cpu)
        cpu_ratio = (
            f"{r['cpu_seconds'] / reference:.1f}x" if "cpu_seconds" in r and reference else "-"
        )
        rates = sorted(results["events"] / t / 1000 for t in r.get("runs_seconds", [r["seconds"]]))
        spread = f"{rates[0]:.0f}–{rates[-1]:.0f}"
        print(
            f"  {name:<30} {r['events_per_s']:>10,.0f} {spread:>15} {r['mb_per_s']:>8.1f} {ratio(name):>6} "
            f"{alike:>9} "
            f"{steady_rate:>10} {cpu:>6} {cpu_ratio:>9} {rss:>9} {worker:>7}  {check}"
        )
    if "moto_put" in results:
        m = results["moto_put"]
        print(f"\n  moto alone: {m['objects_per_s']:.1f} PUTs/s of 5 MiB, {m['mb_per_s']:.0f} MB/s")
    if "stall" in results:
        st = results["stall"]
        print(
            f"  reactor stalls, 1 ms timer, {st['samples']:,.0f} samples, {st['seals']:.0f} seals of 5 MiB: "
            f"p99 <= {st['p99_at_most_s'] * 1000:g} ms, max <= {st['max_at_most_s'] * 1000:g} ms"
        )
    if "partial" in results:
        pc = results["partial"]
        print(
            f"  {pc['connections']:,.0f} connections each holding half an event: peak RSS {pc['peak_rss_mib']:.0f} MiB"
        )
    if "fsync" in results:
        f = results["fsync"]
        print(
            "  one append (a read of one event) with --fsync seal: "
            f"median {f['seal']['median_ms']:.3f} ms, p99 {f['seal']['p99_ms']:.3f} ms; "
            f"with --fsync always: median {f['always']['median_ms']:.3f} ms, "
            f"p99 {f['always']['p99_ms']:.3f} ms"
        )
    for r in results.get("render", []):
        limit = r["sha256_seconds"] + r["parse_seconds"]
        print(
            f"  render of a {r['segment_bytes'] / 2**20:.0f} MiB segment ({r['events']:,.0f} events), one worker: "
            f"{r['seconds']:.2f} s, {r['events'] / r['seconds']:,.0f} events/s, peak RSS {r['peak_rss_mib']:.0f} MiB; "
            f"alone on the same bytes: SHA-256 {r['sha256_seconds']:.2f} s, a parse that builds no tree "
            f"{r['parse_seconds']:.2f} s: the render takes {r['seconds'] / limit:.1f}x their sum"
        )
        if "json_seconds" in r:
            print(
                f"    the same as JSON Lines: {r['json_seconds']:.2f} s, "
                f"{r['events'] / r['json_seconds']:,.0f} events/s, {r['seconds'] / r['json_seconds']:.2f} of XML's rate"
            )


if __name__ == "__main__":
    raise SystemExit(main())
