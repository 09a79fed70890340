"""
JSON Lines without a tree: the byte path of ACM's flat events gives what
the tree gives, byte for byte, or leaves the event to the tree.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree
from twisted.trial.unittest import SynchronousTestCase

from eventpipe.render.jsonlines import _json_line, flat_json_line, verbatim
from eventpipe.render.validate import _plain, make_parser
from tests.support import SAMPLE, make_event

_NAMES = ["a", "b", "plasectrxCardno", "cn", "\u00e9t\u00e9", "x.y-z_1"]
# Texts as senders write them, and everything the byte path must leave to
# the tree: references, quotes, backslashes, ">", tabs, newlines, CR.
_TEXT = st.lists(
    st.sampled_from(
        list("az 09=,:'\u00fc\u4e2d\U0001f600\"\\>\t\n\r") + ["&amp;", "&#233;", "&lt;"]
    ),
    max_size=8,
).map("".join)
_LAYOUT = st.sampled_from(["", "\n", " ", "\n  ", "\t", "\r\n"])


@st.composite
def _child(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(_NAMES))
    form = draw(st.sampled_from(["leaf", "leaf", "leaf", "empty", "attribute", "nested", "spaced"]))
    text = draw(_TEXT)
    if form == "empty":
        return f"<{name}/>"
    if form == "attribute":
        return f"<{name} k='{draw(st.sampled_from(['1', 'v w']))}'>{text}</{name}>"
    if form == "nested":
        return f"<{name}><b>{text}</b></{name}>"
    if form == "spaced":
        return f"<{name} >{text}</{name} >"
    return f"<{name}>{text}</{name}>"


@st.composite
def _event(draw: st.DrawFn) -> bytes:
    children = draw(st.lists(_child(), max_size=6))
    layouts = draw(st.lists(_LAYOUT, min_size=len(children) + 1, max_size=len(children) + 1))
    between = draw(st.sampled_from(["", "", "", "text", "x>y"]))
    body = "".join(layout + child for layout, child in zip(layouts, children))
    root = draw(st.sampled_from(["<EVENT>", "<EVENT>", "<EVENT kind='x'>"]))
    return f"{root}{body}{between}{layouts[-1]}</EVENT>".encode()


def _tree_line(event: bytes) -> bytes:
    return _json_line(etree.fromstring(event, make_parser()), b"xmlns" in event)


class FlatJsonLineTests(SynchronousTestCase):
    @settings(max_examples=2000)
    @given(_event())
    def test_same_bytes_as_the_tree(self, event: bytes) -> None:
        """
        Every plain, well-formed event the byte path takes comes out as the
        tree makes it; whatever it leaves (None) goes to the tree.
        """
        try:
            expected = _tree_line(event)
        except etree.XMLSyntaxError:
            return
        if not _plain(event):
            return
        for screened in [False, True] if verbatim(event) else [False]:
            found = flat_json_line(event, b"EVENT", screened)
            if found is not None:
                self.assertEqual(found, expected, event)

    def test_takes_acm_events(self) -> None:
        """ACM's events, the sample stream's and the tests', take the byte path."""
        with open(SAMPLE, "rb") as stream:
            sample = stream.read()
        events = [b"<EVENT>" + part.split(b"<EVENT>", 1)[1] for part in sample.split(b"<?xml ")[1:]]
        events = [part[: part.rindex(b"</EVENT>") + 8] for part in events]
        events += [make_event(n) for n in range(20)]
        taken = 0
        for event in events:
            found = flat_json_line(event, b"EVENT")
            if found is not None:
                taken += 1
                self.assertEqual(found, _tree_line(event))
                self.assertEqual(json.loads(found), json.loads(_tree_line(event)))
        self.assertGreater(taken, len(events) // 2)

    def test_leaves_to_the_tree(self) -> None:
        """Each shape the byte path cannot copy verbatim is left to the tree."""
        for event in [
            b"<EVENT><a>1</a><a>2</a></EVENT>",
            b"<EVENT><a k='v'>1</a></EVENT>",
            b"<EVENT kind='x'><a>1</a></EVENT>",
            b"<EVENT>text<a>1</a></EVENT>",
            b"<EVENT><a>1</a>tail</EVENT>",
            b"<EVENT><a>1</a>x>y<b>2</b></EVENT>",
            b"<EVENT><a><b>1</b></a></EVENT>",
            b"<EVENT><a/></EVENT>",
            b"<EVENT><a >1</a></EVENT>",
            b"<EVENT><a>&#233;</a></EVENT>",
            b"<EVENT><a>cr\r</a></EVENT>",
            b"<EVENT><a>1>0</a></EVENT>",
            b"<EVENT></EVENT>",
            b"<EVENT>\n</EVENT>",
        ]:
            self.assertIsNone(flat_json_line(event, b"EVENT"), event)
            self.assertIsNone(flat_json_line(event, b"OTHER"), event)

    def test_escapes_and_entities(self) -> None:
        """
        Texts with what JSON escapes, and the predefined entities, take the
        byte path, escaped and decoded as the tree's conversion does.
        """
        for event in [
            b"<EVENT><a>1&amp;2</a><b>&lt;B2&gt; &apos;x&apos; &quot;y&quot; &amp;lt;</b></EVENT>",
            b'<EVENT><a>say "x"</a><b>back\\slash \\"</b></EVENT>',
            b"<EVENT><a>tab\there</a>\n<b>two\nlines</b>\n</EVENT>",
            b"<EVENT>\n<a></a>\n<b>   </b>\n</EVENT>",
        ]:
            self.assertEqual(flat_json_line(event, b"EVENT"), _tree_line(event), event)


class LayoutsTests(SynchronousTestCase):
    def test_every_layout_renders_as_the_tree_would(self) -> None:
        """
        Documents in every layout a sender uses, kept as read (one record a
        write, or one for many): the JSON batch is the tree's conversion of
        each event, in order.
        """
        from eventpipe.records import encode_documents
        from eventpipe.render.batch import render_segment
        from tests.test_framing import DECL, SEPARATORS

        events = [make_event(n) for n in range(40)]
        expected = b"".join(_tree_line(event) for event in events)
        for separator in SEPARATORS:
            for after in (b"", b"\n", b"\r\n"):
                documents = [DECL + after + event + separator for event in events]
                for records in ([b"".join(documents)], documents):
                    path = self.mktemp()
                    with open(path, "wb") as stream:
                        stream.write(b"".join(encode_documents(r) for r in records))
                    render_segment(path, path + ".json", path + ".q", fmt="json")
                    with open(path + ".json", "rb") as stream:
                        self.assertEqual(stream.read(), expected, (separator, after))
