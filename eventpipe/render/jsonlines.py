"""
JSON Lines: an ACM event (a flat element of leaves, attributes
kept) as one JSON object, the shape Snowflake's C{TYPE = JSON} loads.
"""

from __future__ import annotations

import json
from typing import Any

from lxml import etree


def _json_line(element: Any, namespaced: bool) -> bytes:
    document = event_to_json(element, namespaced=namespaced)
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


# Layout between elements: what XML calls white space (but carriage
# returns, which keep an event off the byte path).
_SPACE = b" \t\n"
# What keeps an event off L{flat_json_line}: character references, carriage
# returns (the parser turns them into newlines), empty-element tags.
_NOT_VERBATIM = (b"&#", b"\r", b"/>")
# What JSON escapes in a text, as json.dumps writes it.
_ESCAPES = ((b"\\", b"\\\\"), (b'"', b'\\"'), (b"\n", b"\\n"), (b"\t", b"\\t"))
# The predefined entities, decoded once the structure is read (amp last).
_ENTITIES = (
    (b"&lt;", b"<"),
    (b"&gt;", b">"),
    (b"&apos;", b"'"),
    (b"&quot;", b'\\"'),
    (b"&amp;", b"&"),
)


def verbatim(events: bytes) -> bool:
    """
    Whether these events may take L{flat_json_line} as far as their bytes
    tell: no character reference, carriage return or empty-element tag.
    One look at a whole chunk spares L{flat_json_line} one per event.
    """
    return not any(mark in events for mark in _NOT_VERBATIM)


def flat_json_line(event: bytes, tag: bytes, screened: bool = False) -> bytes | None:
    """
    L{_json_line} of a plain event (one that L{eventpipe.render.validate}
    has found well-formed, of root C{tag}, with no comment, instruction,
    CDATA or colon in a tag) whose children are leaves without attributes,
    none repeated: what ACM sends, converted with a few operations on the
    bytes instead of a tree.  None for any other event, which takes the
    tree.

    The same bytes as the tree's conversion: C{{"EVENT":{"name":"text",...}}}
    and a newline, texts escaped as json.dumps escapes them and the
    predefined entities (C{&amp;} ...) decoded.

    @param screened: the caller found L{verbatim} true of these bytes.
    """
    if not screened and not verbatim(event):
        return None
    pieces = event.split(b"<")
    # "", the root's start tag and layout, then each leaf's start tag and
    # text, its end tag and layout, and the root's end tag.
    if len(pieces) < 5 or pieces[-1] != b"/" + tag + b">" or pieces[1].rstrip(_SPACE) != tag + b">":
        return None
    opens = pieces[2:-1:2]
    parts = b">".join(opens).split(b">")
    if len(parts) != 2 * len(opens):
        # A ">" in a text (a start tag cannot lack one).
        return None
    names = parts[::2]
    if len(set(names)) != len(names):
        return None
    # Every other piece is the end tag of the leaf before it, then layout
    # only: nothing nested, no text between the leaves; and the names have
    # no white space (the end tags' lost theirs): no attribute.
    if b"".join(pieces[3:-1:2]).translate(None, _SPACE) != b"/" + b">/".join(names) + b">":
        return None
    # Joined by a byte XML cannot hold, to escape the texts alone.
    leaves = b"\0".join(opens)
    for raw, escaped in _ESCAPES:
        if raw in leaves:
            leaves = leaves.replace(raw, escaped)
    leaves = leaves.replace(b">", b'":"')
    if b"&" in leaves:
        if leaves.count(b"&") != sum(leaves.count(entity) for entity, _ in _ENTITIES):
            return None
        for entity, character in _ENTITIES:
            leaves = leaves.replace(entity, character)
    return b'{"' + tag + b'":{"' + leaves.replace(b"\0", b'","') + b'"}}\n'


def _name(element: Any) -> str:
    qname = etree.QName(element)
    return f"{element.prefix}:{qname.localname}" if element.prefix else qname.localname


def _attribute_name(key: str, element: Any) -> str:
    if key.startswith("{"):
        uri, local = key[1:].split("}", 1)
        for prefix, value in element.nsmap.items():
            if value == uri and prefix:
                return f"@{prefix}:{local}"
        return f"@{{{uri}}}{local}"
    return "@" + key


def _value(element: Any, namespaced: bool) -> Any:
    """
    The JSON value of an element: its text when it has neither attributes
    nor child elements (C{""} when empty), otherwise an object.

    @param namespaced: whether the event declares any namespace; without
        one, names are taken as they are (the fast path for ACM events).
    """
    declared: dict[str | None, str] = {}
    if namespaced:
        parent = element.getparent()
        inherited = parent.nsmap if parent is not None else {}
        declared = {
            prefix: uri for prefix, uri in element.nsmap.items() if inherited.get(prefix) != uri
        }
    attributes = element.attrib
    if not len(element):
        if not attributes and not declared:
            return element.text or ""
        children = []
    else:
        children = [child for child in element if isinstance(child.tag, str)]
    text = element.text or ""
    for child in element:
        text += child.tail or ""
    if not children and not attributes and not declared:
        # Only comments or processing instructions inside: the text remains.
        return text
    value: dict[str, Any] = {}
    for prefix, uri in declared.items():
        value["@xmlns:" + prefix if prefix else "@xmlns"] = uri
    for key, attribute in attributes.items():
        value[_attribute_name(key, element) if namespaced else "@" + key] = attribute
    if children and not text.strip():
        text = ""
    if text:
        value["#text"] = text
    for child in children:
        name = _name(child) if namespaced else child.tag
        converted = _value(child, namespaced)
        if name in value:
            existing = value[name]
            # A converted child is a string or an object, never a list: a
            # list here can only come from an earlier repetition.
            if isinstance(existing, list):
                existing.append(converted)
            else:
                value[name] = [existing, converted]
        else:
            value[name] = converted
    return value


def event_to_json(root: Any, namespaced: bool | None = None) -> dict[str, Any]:
    """
    The lossless JSON form of one event: C{{"EVENT": {...}}}.

    - a child element becomes a key, in document order;
    - a repeated child becomes a list of its values;
    - an attribute becomes C{"@name"};
    - an element with neither attributes nor children becomes its text,
      exactly as sent (padding kept), C{""} when empty;
    - the text of an element that also has attributes or children becomes
      C{"#text"} (whitespace-only text between child elements is layout and
      is not kept);
    - names keep the prefix they were written with (C{"p:name"}); a
      namespace declaration becomes C{"@xmlns"} or C{"@xmlns:p"};
    - comments and processing instructions inside an event are not kept.

    @param namespaced: whether the event uses namespaces, when the caller
        knows (an event without the bytes C{xmlns} cannot); found out
        otherwise.
    """
    if namespaced is None:
        namespaced = bool(root.nsmap) or any(
            element.prefix or "{" in element.tag for element in root.iter(tag=etree.Element)
        )
    if not namespaced:
        flat = _flat_value(root)
        return {root.tag: _value(root, False) if flat is None else flat}
    return {_name(root): _value(root, True)}


def _flat_value(element: Any) -> dict[str, str] | None:
    """
    L{_value} of an element without namespaces whose children are all
    leaves (no attributes, children, comments or instructions), none
    repeated, with layout only between them -- what ACM sends -- in one
    loop; None for any other element.
    """
    if element.attrib or (element.text and not element.text.isspace()):
        return None
    value: dict[str, str] = {}
    for child in element:
        tag = child.tag
        if (
            tag.__class__ is not str
            or tag in value
            or len(child)
            or child.attrib
            or (child.tail and not child.tail.isspace())
        ):
            return None
        value[tag] = child.text or ""
    return value or None
