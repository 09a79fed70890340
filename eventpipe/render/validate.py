"""
Validation and repair: every event is parsed with lxml (entities, DTDs
and the network off); a chunk of plain events by one parse that builds no
tree, each event alone only when that fails.
"""

from __future__ import annotations

import re

from lxml import etree

from eventpipe.render.jsonlines import _json_line, flat_json_line, verbatim


def make_parser() -> etree.XMLParser:
    """
    An lxml parser that never resolves entities, never loads a DTD and
    never touches the network.
    """
    return etree.XMLParser(
        resolve_entities=False,
        load_dtd=False,
        dtd_validation=False,
        no_network=True,
        huge_tree=False,
        remove_comments=False,
        collect_ids=False,
    )


# ACM's administrator guide prints three element names with a space in them
# (<plasectrxPanel date>, <plasectrxPanel dateUTC>, <plasectrxPanel name>).
# That is not XML; with repair on, such names are joined.
_SPACED_NAME = re.compile(rb"<(/?)(plasectrx[A-Za-z]+) ([A-Za-z]+)(\s*/?>)")


def repair_tag_names(data: bytes) -> tuple[bytes, int]:
    """
    Join ACM element names printed with a space: C{<plasectrxPanel date>}
    becomes C{<plasectrxPaneldate>}.

    @return: the repaired bytes and how many tags were changed.
    """
    return _SPACED_NAME.subn(rb"<\1\2\3\4", data)


# Events are validated in chunks: one parse of the chunk wrapped in a root.
# Every framed event starts with its root's start tag and ends with the end
# tag that closes it, so the wrapped chunk is well-formed, with one child per
# event, exactly when every event is; if not, each event of the chunk is
# parsed alone to find the bad ones.
CHUNK_EVENTS = 256


CHUNK_BYTES = 1 << 20


class _Nothing:
    """A parser target that builds nothing: the parse only checks."""

    def close(self) -> None:
        return None


# What keeps events off the parse that builds nothing: instructions and
# declarations (?), comments, CDATA and DOCTYPEs (!) and carriage returns --
# and a colon in a tag (see _plain).  (A byte order mark can stand only
# inside an event here, where it is a character like any other.)
_NOT_PLAIN = (b"?", b"!", b"\r")


def _plain(events: bytes) -> bool:
    """
    Whether events may be checked by a parse that builds nothing: none of
    L{_NOT_PLAIN}, and every colon in text (ACM writes "26 bit raw: 0x..."),
    none in a tag, since such a parse does not check namespace prefixes.
    With no comment, CDATA or instruction about, each C{<} opens a tag, and
    the first C{>} after it closes the tag when no quote comes between.
    """
    if any(mark in events for mark in _NOT_PLAIN):
        return False
    colon = events.find(b":")
    while colon >= 0:
        opened = events.rfind(b"<", 0, colon)
        closed = events.find(b">", opened, colon)
        if closed < 0 or b'"' in events[opened:closed] or b"'" in events[opened:closed]:
            return False
        colon = events.find(b":", colon + 1)
    return True


class _WellFormed:
    """
    Whether a run of events, each a root element, is well-formed: one parse
    of the run inside a root, fed to a parser that builds nothing and calls
    back nothing (fed, and the parser kept, it runs faster than a fresh
    parse of a copy).
    """

    def __init__(self) -> None:
        self._parser: etree.XMLParser | None = None

    def __call__(self, events: bytes) -> bool:
        parser = self._parser
        if parser is None:
            parser = self._parser = etree.XMLParser(
                target=_Nothing(),  # type: ignore[arg-type]
                resolve_entities=False,
                load_dtd=False,
                no_network=True,
                huge_tree=False,
            )
        try:
            parser.feed(b"<EVENTS>")
            parser.feed(events)
            parser.feed(b"</EVENTS>")
            parser.close()
        except etree.XMLSyntaxError:
            # A parser that failed starts afresh.
            self._parser = None
            return False
        return True


def _plainly_valid(chunk: bytes, well_formed: _WellFormed) -> bool:
    """
    Whether a chunk of plain events (joined) is well-formed, one event a
    root with the right tag (the framer made each start with it): one parse
    that builds nothing and calls back nothing.
    """
    # Each event, as framed, starts with the root's start tag and ends with
    # the end tag that closes it: in a well-formed chunk, each is one root.
    return _plain(chunk) and well_formed(chunk)


def _render_events(
    events: list[bytes],
    parser: etree.XMLParser,
    well_formed: _WellFormed,
    fmt: str,
    event_tag: str,
) -> list[tuple[str | None, bytes]]:
    """Validate (and convert) a chunk of events, in order."""
    chunk = b"".join(events)
    if _plainly_valid(chunk, well_formed):
        if fmt == "xml":
            return [(None, data + b"\n") for data in events]
        return [(None, line) for line in json_lines(events, event_tag, parser, chunk)]
    try:
        root = etree.fromstring(b"<EVENTS>" + b"".join(events) + b"</EVENTS>", parser)
    except etree.XMLSyntaxError:
        root = None
    if (
        root is not None
        and len(root) == len(events)
        and all(child.tag == event_tag for child in root)
    ):
        if fmt == "xml":
            return [(None, data + b"\n") for data in events]
        return [(None, _json_line(child, b"xmlns" in data)) for child, data in zip(root, events)]
    return [_render_event(data, parser, fmt, event_tag) for data in events]


def json_lines(
    events: list[bytes], event_tag: str, parser: etree.XMLParser, chunk: bytes | None = None
) -> list[bytes]:
    """
    The JSON lines of plain events already found well-formed (C{chunk}:
    them joined, when the caller has it): ACM's without a tree
    (L{flat_json_line}), any other shape with one.
    """
    tag = event_tag.encode("utf-8")
    screened = verbatim(b"".join(events) if chunk is None else chunk)
    return [
        flat_json_line(data, tag, screened)
        or _json_line(etree.fromstring(data, parser), b"xmlns" in data)
        for data in events
    ]


def _repaired(
    data: bytes, parser: etree.XMLParser, fmt: str, event_tag: str
) -> tuple[bytes, bytes] | None:
    """
    An event that fails as it came, with ACM's spaced names joined: (the
    repaired event, what to write) when that makes it pass, else None.
    """
    fixed, changes = repair_tag_names(data)
    if not changes:
        return None
    reason, rendered = _render_event(fixed, parser, fmt, event_tag)
    return (fixed, rendered) if reason is None else None


def _render_event(
    data: bytes, parser: etree.XMLParser, fmt: str, event_tag: str
) -> tuple[str | None, bytes]:
    """
    Validate one event.

    @return: (None, the bytes to write) for a good event, or (the reason it
        is not, b"").
    """
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as error:
        return f"not well-formed XML: {error.msg}", b""
    if getattr(root.getroottree().docinfo, "doctype", ""):
        return "a DOCTYPE is not allowed in an event", b""
    if root.tag != event_tag:
        return f"root element is {root.tag!r}, not {event_tag!r}", b""
    if data.startswith(b"<?xml"):
        try:
            data = _to_utf8(data, root.getroottree().docinfo.encoding or "utf-8")
        except (LookupError, UnicodeError) as error:
            return f"cannot transcode to UTF-8: {error}", b""
    if fmt == "xml":
        return None, data + b"\n"
    return None, _json_line(root, b"xmlns" in data)


def _to_utf8(data: bytes, encoding: str) -> bytes:
    """
    An event that came with its own declaration (an encoding other than
    UTF-8, see L{eventpipe.framing}): the event alone, as UTF-8, its text
    unchanged character for character.
    """
    end = data.index(b"?>") + 2
    return data[end:].lstrip(b" \t\r\n").decode(encoding).encode("utf-8")
