"""
eventpipe's benchmark: one run on loopback, everything measured side by side
so that ratios hold on a shared, noisy machine.

    tox -e bench                      # or: python -m tests.benchmarks
    python -m tests.benchmarks --events 100000 --render-size 256MB

1. raw limit: a minimal receiver that only writes the bytes to a file;
2. ingest: a real ``twistd -n eventpipe`` until the last event is spooled;
3. end to end into a real S3 server (moto), XML, JSON Lines and gzip;
4. latency at a steady 1,000 events/s with --rotation-interval 5
   --check-interval 1, from an event's send to its object being listed;
5. memory: peak RSS of eventpipe in 2 and 3, and while rendering a 1 GB
   segment;
6. ingest under each --fsync mode;
7. ingest while uploads are slow (each answer of the S3 server delayed 2 s).

Prints one table, ratios first, and writes the same as JSON.
"""

from __future__ import annotations

import argparse
import collections
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
from collections.abc import Callable
from typing import Any

from tests.support import (
    BUCKET,
    CREDENTIALS,
    DECLARATION,
    Cable,
    MotoServer,
    Twistd,
    numbers_in_objects,
    peak_rss_mib,
    s3_objects,
    s3_service,
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


def bench_event(number: int) -> bytes:
    """An ACM-shaped event of about 1.2 KB (with its declaration)."""
    lines = ["<EVENT>", f"<cn>n{number:012d}</cn>"]
    lines += [f"<{name}>{value}</{name}>" for name, value in _FIELDS]
    lines.append("</EVENT>")
    return "\n".join(lines).encode("utf-8")


def stream_for(numbers: range) -> bytes:
    return b"".join(DECLARATION + bench_event(n) + b"\n" for n in numbers)


def spooled_bytes(events: int) -> int:
    """What the spool holds once every event is in: 19 bytes of framing each."""
    return sum(len(bench_event(n)) + 19 for n in range(events))


def send_all(port: int, streams: list[bytes]) -> None:
    def one(data: bytes) -> None:
        with socket.create_connection(("127.0.0.1", port)) as connection:
            connection.sendall(data)

    threads = [threading.Thread(target=one, args=(data,)) for data in streams]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


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


def raw_limit(workdir: str, streams: list[bytes]) -> dict[str, float]:
    port = free_port()
    total = sum(map(len, streams))
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
    wait_port(port)
    began = time.perf_counter()
    send_all(port, streams)
    receiver.wait(120)
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "bytes": total}


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


# 2, 6, 7. Ingest.


def spool_progress(process: Twistd) -> int:
    """Bytes that reached the spool: sealed (from the log) plus current."""
    sealed = sum(
        int(m) for m in re.findall(r"sealed \S+ \(\w+\): \d+ events, (\d+) bytes", process.log())
    )
    try:
        current = os.path.getsize(os.path.join(process.spool, "current"))
    except FileNotFoundError:
        current = 0
    return sealed + current


def ingest(
    workdir: str,
    streams: list[bytes],
    events: int,
    args: list[str],
    env: dict[str, str] | None = None,
) -> dict[str, float]:
    process = Twistd(workdir, ["--rotation-interval=3600", "--check-interval=1", *args], env)
    expected = spooled_bytes(events)
    return timed_run(process, streams, lambda: spool_progress(process) >= expected)


def timed_run(
    process: Twistd, streams: list[bytes], finished: Callable[[], bool]
) -> dict[str, float]:
    """Start the service, send the streams, and time it until C{finished()}."""
    process.start()
    try:
        began = time.perf_counter()
        sender = threading.Thread(target=send_all, args=(process.port, streams))
        sender.start()
        while not finished():
            time.sleep(0.005)
        seconds = time.perf_counter() - began
        sender.join()
        assert process.process is not None
        rss = peak_rss_mib(process.process.pid)
    finally:
        process.cleanup()
    return {"seconds": seconds, "peak_rss_mib": rss}


# 3. End to end.


def delivered_events(process: Twistd) -> int:
    return sum(int(m) for m in re.findall(r"delivered \S+: (\d+) events", process.log()))


def end_to_end(
    workdir: str, server: MotoServer, streams: list[bytes], events: int, args: list[str]
) -> dict[str, Any]:
    client = server.client()
    client.create_bucket(Bucket=BUCKET)
    prefix = f"run-{time.monotonic_ns()}/"
    process = s3_service(
        workdir,
        server.endpoint,
        f"--s3-prefix={prefix}",
        "--rotation-interval=1",
        "--check-interval=0.2",
        *args,
    )
    result: dict[str, Any] = timed_run(
        process, streams, lambda: delivered_events(process) >= events
    )
    counts = collections.Counter(numbers_in_objects(s3_objects(client, BUCKET, prefix)))
    return {
        **result,
        "lost": events - len(counts),
        "duplicated": sum(c - 1 for c in counts.values()),
    }


# 4. Latency.


def latency(workdir: str, server: MotoServer, seconds: float, rate: int = 1000) -> dict[str, float]:
    client = server.client()
    client.create_bucket(Bucket=BUCKET)
    prefix = f"latency-{time.monotonic_ns()}/"
    process = s3_service(
        workdir,
        server.endpoint,
        f"--s3-prefix={prefix}",
        "--rotation-interval=5",
        "--check-interval=1",
    )
    process.start()
    sent_at: dict[int, float] = {}
    seen_at: dict[str, float] = {}
    total = int(seconds * rate)
    done = threading.Event()

    def sender() -> None:
        with socket.create_connection(("127.0.0.1", process.port)) as connection:
            began = time.monotonic()
            for n in range(0, total, 10):
                target = began + n / rate
                delay = target - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                now = time.monotonic()
                connection.sendall(stream_for(range(n, min(n + 10, total))))
                for k in range(n, min(n + 10, total)):
                    sent_at[k] = now
        done.set()

    def watcher() -> None:
        while True:
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=BUCKET, Prefix=prefix
            ):
                for item in page.get("Contents", []):
                    seen_at.setdefault(item["Key"], time.monotonic())
            if done.is_set() and len(sent_at) == total and watcher_count() >= total:
                return
            time.sleep(0.05)

    def watcher_count() -> int:
        return delivered_events(process)

    try:
        threads = [threading.Thread(target=sender), threading.Thread(target=watcher)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(seconds + 60)
    finally:
        process.cleanup()
    delays = []
    for key, data in s3_objects(client, BUCKET, prefix).items():
        for number in numbers_in_objects({key: data}):
            delays.append(seen_at[key] - sent_at[number])
    delays.sort()
    return {
        "events": len(delays),
        "p50": delays[len(delays) // 2],
        "p99": delays[int(len(delays) * 0.99)],
        "max": delays[-1],
    }


# 5. Rendering a large segment.

RENDER = r"""
import sys, time
from eventpipe.render import render_segment
from eventpipe.spool import Spool
from tests.benchmarks.__main__ import bench_event
directory, size = sys.argv[1], int(sys.argv[2])
spool = Spool(directory, "bench", time.time, "never")
batch = [bench_event(n) for n in range(2000)]
while spool.current_size < size:
    spool.append(batch)
segment = spool.seal()
def hwm():
    # VmHWM, not ru_maxrss: the latter carries the parent's peak over fork.
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmHWM:"))
before = hwm()
began = time.perf_counter()
result = render_segment(segment.path, segment.path + ".xml", segment.path + ".q")
seconds = time.perf_counter() - began
peak = hwm()
print(segment.size, result.events, seconds, before / 1024, peak / 1024)
"""


def render_large(workdir: str, size: int) -> dict[str, float]:
    directory = os.path.join(workdir, "render")
    answer = subprocess.run(
        [sys.executable, "-c", RENDER, directory, str(size)],
        env=dict(os.environ, PYTHONPATH=os.getcwd()),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    shutil.rmtree(directory, ignore_errors=True)
    segment, events, seconds, _, peak = map(float, answer)
    return {"segment_bytes": segment, "events": events, "seconds": seconds, "peak_rss_mib": peak}


# The run.


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000, help="events per throughput run")
    parser.add_argument("--render-size", default="1GB", help="segment size for the render run")
    parser.add_argument("--latency-seconds", type=float, default=15.0)
    parser.add_argument(
        "--json", default="bench-results/latest.json", help="where to write results"
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        help="skip a section (raw, ingest, e2e, latency, render, fsync, slow)",
    )
    options = parser.parse_args(argv)
    from eventpipe.options import parse_size

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
    }
    began = time.monotonic()

    def step(name: str) -> bool:
        print(f"... {name}", file=sys.stderr, flush=True)
        return name not in options.skip

    def rate(result: dict[str, float]) -> dict[str, float]:
        result["events_per_s"] = events / result["seconds"]
        result["mb_per_s"] = total_bytes / result["seconds"] / 1e6
        return result

    try:
        server = MotoServer(os.path.join(workdir, "moto")).start()
        try:
            if step("raw"):
                results["raw"] = rate(raw_limit(workdir, streams))
            if step("ingest"):
                results["ingest"] = rate(
                    ingest(
                        os.path.join(workdir, "ingest"),
                        streams,
                        events,
                        ["--max-file-size=1GiB", "--max-spool-size=8GB"],
                    )
                )
            if step("e2e"):
                for name, args in [
                    ("e2e_xml", []),
                    ("e2e_json", ["--format=json"]),
                    ("e2e_gzip", ["--compress=gzip"]),
                ]:
                    results[name] = rate(
                        end_to_end(os.path.join(workdir, name), server, streams, events, args)
                    )
            if step("latency"):
                results["latency"] = latency(
                    os.path.join(workdir, "latency"), server, options.latency_seconds
                )
            if step("render"):
                results["render"] = render_large(workdir, render_size)
            if step("fsync"):
                for mode in ("never", "seal", "always"):
                    results[f"fsync_{mode}"] = rate(
                        ingest(
                            os.path.join(workdir, f"fsync-{mode}"),
                            streams,
                            events,
                            ["--max-file-size=5MiB", f"--fsync={mode}"],
                        )
                    )
            if step("slow"):
                results["slow_normal"] = rate(
                    ingest_with_uploads(
                        os.path.join(workdir, "slow-normal"), server, streams, events, delay=0.0
                    )
                )
                results["slow_2s"] = rate(
                    ingest_with_uploads(
                        os.path.join(workdir, "slow-2s"), server, streams, events, delay=2.0
                    )
                )
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


def ingest_with_uploads(
    workdir: str, server: MotoServer, streams: list[bytes], events: int, delay: float
) -> dict[str, float]:
    """Ingest while segments are sealed and uploaded, through a link that holds each answer."""
    client = server.client()
    client.create_bucket(Bucket=BUCKET)
    cable = Cable(server.port).plug()
    cable.delay = delay
    try:
        return ingest(
            workdir,
            streams,
            events,
            [
                f"--s3-bucket={BUCKET}",
                f"--s3-endpoint-url=http://127.0.0.1:{cable.port}",
                f"--s3-prefix=slow-{time.monotonic_ns()}/",
                "--max-file-size=5MiB",
            ],
            CREDENTIALS,
        )
    finally:
        cable.unplug()


def report(results: dict[str, Any]) -> None:
    raw = results.get("raw", {}).get("events_per_s")
    rows = []

    def ratio(name: str) -> str:
        value = results.get(name, {}).get("events_per_s")
        return f"{value / raw:.2f}" if value and raw else "-"

    print()
    print(
        f"eventpipe benchmark: {results['events']:,} events of ~{results['event_bytes']} bytes "
        f"({results['stream_mb']:.0f} MB) over {results['connections']} connections, "
        f"{results['cores']} cores, {results['run_seconds']:.0f} s"
    )
    print()
    print("ratios to the raw limit (same run)")
    for name, label in [
        ("ingest", "ingest (twistd, to the spool)"),
        ("e2e_xml", "end to end, XML, into S3"),
        ("e2e_json", "end to end, JSON Lines, into S3"),
        ("e2e_gzip", "end to end, XML gzip, into S3"),
        ("fsync_never", "ingest, --fsync never"),
        ("fsync_seal", "ingest, --fsync seal"),
        ("fsync_always", "ingest, --fsync always"),
    ]:
        if name in results:
            rows.append((label, ratio(name)))
            print(f"  {label:<36} {ratio(name):>6}")
    if "slow_normal" in results and "slow_2s" in results:
        relative = results["slow_2s"]["events_per_s"] / results["slow_normal"]["events_per_s"]
        print(f"  {'ingest, uploads held 2 s / normal':<36} {relative:>6.2f}")
    print()
    print(f"  {'run':<36} {'events/s':>10} {'MB/s':>8} {'peak RSS':>9}  check")
    for name in [
        "raw",
        "ingest",
        "e2e_xml",
        "e2e_json",
        "e2e_gzip",
        "fsync_never",
        "fsync_seal",
        "fsync_always",
        "slow_normal",
        "slow_2s",
    ]:
        if name not in results:
            continue
        r = results[name]
        rss = f"{r['peak_rss_mib']:.0f} MiB" if "peak_rss_mib" in r else "-"
        check = f"lost {r['lost']}, dup {r['duplicated']}" if "lost" in r else ""
        print(f"  {name:<36} {r['events_per_s']:>10,.0f} {r['mb_per_s']:>8.1f} {rss:>9}  {check}")
    if "latency" in results:
        lat = results["latency"]
        print()
        print(
            f"  latency at 1,000 events/s (rotation 5 s, check 1 s), {lat['events']:,} events: "
            f"p50 {lat['p50']:.2f} s, p99 {lat['p99']:.2f} s, max {lat['max']:.2f} s"
        )
    if "render" in results:
        r = results["render"]
        print(
            f"  render of a {r['segment_bytes'] / 1e9:.2f} GB segment ({r['events']:,.0f} events): "
            f"{r['seconds']:.1f} s, {r['events'] / r['seconds']:,.0f} events/s, peak RSS {r['peak_rss_mib']:.0f} MiB"
        )


if __name__ == "__main__":
    raise SystemExit(main())
