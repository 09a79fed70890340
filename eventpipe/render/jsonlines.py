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
