"""
Object keys.  A key is decided once, when a segment is sealed, from the UTC
time of sealing, the instance id and the instance's sequence number:

    {prefix}{YYYY}/{MM}/{DD}/{YYYYMMDD_HHMMSS}_{instance-id}_{sequence}{ext}

Quarantine objects use the same name under C{{prefix}quarantine/}.
"""

from __future__ import annotations

import calendar
import re
import time

_INSTANCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$")
_SEGMENT_NAME = re.compile(r"^(\d{8})_(\d{6})_([A-Za-z0-9][A-Za-z0-9.-]*)_(\d+)$")
# A sealed segment's file: its name and the extension of its batch, fixed
# when it was sealed (no extension: sealed by a release that did not record
# it; it takes the settings of the start that ships it).
_SEGMENT_FILE = re.compile(
    r"^(\d{8}_\d{6}_[A-Za-z0-9][A-Za-z0-9.-]*?_\d+)((?:\.xml|\.json)(?:\.gz)?)?$"
)
FORMATS = ("xml", "json")
COMPRESSIONS = ("none", "gzip")
QUARANTINE = "quarantine/"
# Taken keys in a row that one delivery (or replay) steps over, each to
# the next sequence number, before it gives up and waits, like any
# failed attempt.
RENUMBERS = 16


def valid_instance_id(instance_id: str) -> bool:
    """
    An instance id goes into every key: letters, digits, dots and hyphens,
    starting with a letter or digit, at most 63 characters.
    """
    return _INSTANCE_ID.match(instance_id) is not None


def instance_id_from_hostname(hostname: str) -> str:
    """
    The default instance id: the host name with anything a key should not
    hold replaced by a hyphen.
    """
    cleaned = re.sub(r"[^A-Za-z0-9.-]", "-", hostname).strip(".-")[:63]
    return cleaned or "eventpipe"


def segment_name(sealed_at: float, instance_id: str, sequence: int) -> str:
    """
    The name of a sealed segment; the object key is derived from it.

    @param sealed_at: POSIX time of sealing.
    """
    stamp = time.strftime("%Y%m%d_%H%M%S", time.gmtime(sealed_at))
    return f"{stamp}_{instance_id}_{sequence:06d}"


def sealed_at(name: str) -> float:
    """The POSIX time (to the second) a segment was sealed, from its name."""
    match = _SEGMENT_NAME.match(name)
    if match is None:
        raise ValueError(f"not a segment name: {name!r}")
    return float(calendar.timegm(time.strptime(match.group(1) + match.group(2), "%Y%m%d%H%M%S")))


def is_segment_name(name: str) -> bool:
    return _SEGMENT_NAME.match(name) is not None


def sequence_of(name: str) -> int:
    """The sequence number in a segment name."""
    match = _SEGMENT_NAME.match(name)
    if match is None:
        raise ValueError(f"not a segment name: {name!r}")
    return int(match.group(4))


def normalize_prefix(prefix: str) -> str:
    """C{acm}, C{acm/} and C{/acm/} all mean C{acm/}; empty stays empty."""
    prefix = prefix.strip("/")
    return prefix + "/" if prefix else ""


def object_key(name: str, extension: str, prefix: str = "") -> str:
    """
    The key of the batch made from the segment C{name}, e.g.
    C{acm/2025/07/29/20250729_161500_gw1_000042.xml}.
    """
    match = _SEGMENT_NAME.match(name)
    if match is None:
        raise ValueError(f"not a segment name: {name!r}")
    day = match.group(1)
    return f"{normalize_prefix(prefix)}{day[:4]}/{day[4:6]}/{day[6:]}/{name}{extension}"


def instance_of(name: str) -> str:
    """The instance id in a segment name."""
    match = _SEGMENT_NAME.match(name)
    if match is None:
        raise ValueError(f"not a segment name: {name!r}")
    return match.group(3)


def quarantine_key(name: str, prefix: str = "") -> str:
    """The key of the quarantine object made from the segment C{name}."""
    return object_key(name, ".jsonl", normalize_prefix(prefix) + QUARANTINE)


def extension(fmt: str, compress: str) -> str:
    """The key's extension: C{.xml}, C{.json}, C{.xml.gz}, C{.json.gz}."""
    if fmt not in FORMATS or compress not in COMPRESSIONS:
        raise ValueError(f"no such format or compression: {fmt!r}, {compress!r}")
    return "." + fmt + (".gz" if compress == "gzip" else "")


def format_of(extension: str) -> tuple[str, str]:
    """The format and compression an extension stands for (inverse of L{extension})."""
    fmt, _, rest = extension.lstrip(".").partition(".")
    compress = {"": "none", "gz": "gzip"}.get(rest)
    if fmt not in FORMATS or compress is None:
        raise ValueError(f"not a batch extension: {extension!r}")
    return fmt, compress


def split_segment_file(filename: str) -> tuple[str, str] | None:
    """
    C{20250729_161500_gw1_000042.json.gz} -> C{("20250729_161500_gw1_000042",
    ".json.gz")}; the extension is empty for a file without one.  None for a
    file that is not a sealed segment.
    """
    match = _SEGMENT_FILE.match(filename)
    if match is None or not is_segment_name(match.group(1)):
        return None
    return match.group(1), match.group(2) or ""
