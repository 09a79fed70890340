"""
The converters of the option table: each turns the text of an option or a
variable into its value, or raises C{ValueError}; its C{expected} says what
a valid value looks like, for the one-line error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from eventpipe.config.endpoints import validate_endpoint
from eventpipe.naming import (
    normalize_prefix,
    valid_instance_id,
)

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """
    C{5242880}, C{5MiB}, C{5MB}, C{512KiB}, C{1.5GB}: MB is 10**6 bytes,
    MiB is 2**20.

    @raise ValueError: not a size.
    """
    match = _SIZE.match(text)
    if match is None or match.group(2).lower() not in _UNITS:
        raise ValueError(text)
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def format_size(size: int) -> str:
    for unit, factor in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def _expects(text: str) -> Callable[[Callable[[str], Any]], Callable[[str], Any]]:
    """Say, on a converter, what a valid value looks like (for error lines)."""

    def mark(convert: Callable[[str], Any]) -> Callable[[str], Any]:
        convert.expected = text  # type: ignore[attr-defined]
        return convert

    return mark


@_expects("a number of seconds above 0")
def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(text)
    return value


@_expects("a number of seconds, 0 or more")
def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise ValueError(text)
    return value


@_expects("a size such as 5242880, 5MiB, 5MB or 512KiB")
def _positive_size(text: str) -> int:
    value = parse_size(text)
    if value <= 0:
        raise ValueError(text)
    return value


@_expects("a whole number above 0")
def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(text)
    return value


def _choice(choices: Sequence[str]) -> Callable[[str], str]:
    """A converter to one of C{choices}, whatever the case it is written in."""

    def convert(text: str) -> str:
        chosen = text.strip().lower()
        if chosen not in choices:
            raise ValueError(text)
        return chosen

    convert.choices = tuple(choices)  # type: ignore[attr-defined]
    convert.expected = "one of " + ", ".join(choices)  # type: ignore[attr-defined]
    return convert


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@_expects("3 to 63 lower-case letters, digits, dots and hyphens")
def _bucket(text: str) -> str:
    """An S3 bucket name, by S3's rules (a pasted URL or path is refused)."""
    name = text.strip()
    if (
        not _BUCKET.match(name)
        or ".." in name
        or ".-" in name
        or "-." in name
        or re.match(r"^\d+\.\d+\.\d+\.\d+$", name)
    ):
        raise ValueError(text)
    return name


_CONTAINER = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$")


@_expects("3 to 63 lower-case letters, digits and single hyphens, not starting with one")
def _container(text: str) -> str:
    """An Azure Blob container name, by Azure's rules."""
    name = text.strip()
    if not _CONTAINER.match(name):
        raise ValueError(text)
    return name


_GCS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,61}[a-z0-9]$")


@_expects("3 to 63 lower-case letters, digits, hyphens, underscores and dots")
def _gcs_bucket(text: str) -> str:
    """A Cloud Storage bucket name, by Google's rules (a gs:// URL is refused)."""
    name = text.strip()
    if not _GCS_BUCKET.match(name) or ".." in name or name.startswith("goog"):
        raise ValueError(text)
    return name


@_expects("https://ACCOUNT.blob.core.windows.net, or an emulator's http(s) URL")
def _account_url(text: str) -> str:
    if not re.match(r"^https?://[^\s/]+", text.strip()):
        raise ValueError(text)
    return text.strip().rstrip("/")


def bucket_advice(text: str) -> str:
    """What to write instead of a bucket name that is not one."""
    rest = re.sub(r"^(s3a?|https?)://", "", text.strip())
    bucket, _, prefix = rest.partition("/")
    if bucket.endswith(".amazonaws.com"):
        bucket = bucket.split(".s3")[0]
    if _BUCKET.match(bucket) and bucket != text.strip():
        return f"use --s3-bucket {bucket}" + (f" --s3-prefix {prefix}" if prefix else "")
    return "3 to 63 lower-case letters, digits, dots and hyphens"


@_expects("an XML element name")
def _event_tag(text: str) -> str:
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_.-]*$", text):
        raise ValueError(text)
    return text


@_expects("letters, digits, dots and hyphens, at most 63")
def _instance_id(text: str) -> str:
    if not valid_instance_id(text):
        raise ValueError(text)
    return text


@_expects("a key prefix such as acm/")
def _prefix(text: str) -> str:
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text.strip()):
        # A pasted URL (s3://bucket/acm/): the bucket is not part of a prefix.
        raise ValueError(text)
    return normalize_prefix(text)


def prefix_advice(text: str) -> str:
    """What to write instead of a prefix that is a URL."""
    rest = re.sub(r"^[A-Za-z][A-Za-z0-9+.-]*://", "", text.strip())
    _, _, prefix = rest.partition("/")
    return f"a path below the bucket, not a URL: use --s3-prefix {prefix or 'acm/'}"


@_expects("an http:// or https:// URL, such as http://127.0.0.1:9000")
def _endpoint_url(text: str) -> str:
    url = text.strip()
    if not re.match(r"^https?://[^\s/]+", url):
        raise ValueError(text)
    return url


@_expects("a value")
def _text(text: str) -> str:
    return text


@_expects("a Twisted server endpoint string such as tcp:9100")
def _endpoint(text: str) -> str:
    try:
        validate_endpoint(text)
    except Exception:
        raise ValueError(text) from None
    return text


def _expect(convert: Callable[[str], Any]) -> str:
    """What a valid value of an option looks like, for error messages."""
    return str(getattr(convert, "expected", "a value"))
