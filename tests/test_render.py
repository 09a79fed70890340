"""Rendering sealed segments into batch and quarantine files."""

from __future__ import annotations

import gzip
import json
import os

from lxml import etree
from twisted.trial.unittest import SynchronousTestCase

from eventpipe.framing.common import Rejected
from eventpipe.render.batch import render_segment
from eventpipe.render.jsonlines import event_to_json
from eventpipe.render.validate import _render_event, make_parser
from eventpipe.spool.spool import Spool
from tests.support import make_event, numbers_in_xml_batch, quarantine_entries


class RenderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.spool = Spool(self.mktemp(), "gw1", lambda: 1753805700.0)

    def segment(self, events: list[bytes], rejected: list[Rejected] = ()) -> str:  # type: ignore[assignment]
        self.spool.append(events, rejected)
        segment = self.spool.seal()
        assert segment is not None
        return segment.path

    def render(self, path: str, **kwargs: str) -> tuple[object, bytes, bytes]:
        batch = path + ".batch"
        quarantine = path + ".quarantine"
        result = render_segment(path, batch, quarantine, **kwargs)
        read = lambda p: open(p, "rb").read() if os.path.exists(p) else b""  # noqa: E731
        return result, read(batch), read(quarantine)

    def test_xml_batch(self) -> None:
        """
        One declaration, one <EVENTS> root, the events byte for byte; it
        parses and holds every event.
        """
        events = [make_event(n) for n in range(5)]
        result, batch, quarantine = self.render(self.segment(events))
        self.assertTrue(batch.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<EVENTS>\n'))
        self.assertEqual(batch.count(b"<?xml"), 1)
        self.assertTrue(batch.endswith(b"</EVENTS>\n"))
        self.assertEqual(numbers_in_xml_batch(batch), list(range(5)))
        for event in events:
            self.assertIn(event, batch)
        self.assertEqual((result.events, result.quarantined, quarantine), (5, 0, b""))
        self.assertEqual(result.batch_bytes, len(batch))

    def test_bad_events_quarantined(self) -> None:
        """
        A malformed event, an undefined entity, a wrong root, bytes the
        framer set aside and a torn record go to quarantine, raw and with a
        reason; their neighbours are in the batch.
        """
        bad = [
            b"<EVENT><a></EVENT>",
            b"<EVENT>&undefined;</EVENT>",
            b"<EVENT>\x01</EVENT>",
            b"<EVENT>\xff\xfe</EVENT>",
        ]
        events = [make_event(0), *bad, make_event(1)]
        path = self.segment(events, [Rejected("bytes outside any <EVENT> document", b"junk")])
        with open(path, "ab") as stream:
            stream.write(b"E0000ffff")  # torn
        result, batch, quarantine = self.render(path)
        self.assertEqual(numbers_in_xml_batch(batch), [0, 1])
        self.assertEqual(result.quarantined, 6)
        entries = quarantine_entries(quarantine)
        self.assertEqual(len(entries), 6)
        pieces = [e["bytes"] for e in entries]
        for piece in bad:
            self.assertIn(piece, pieces)
        reasons = [str(e["reason"]) for e in entries]
        self.assertTrue(any(r.startswith("not well-formed XML") for r in reasons))
        self.assertIn(
            {"reason": "bytes outside any <EVENT> document", "size": 4, "text": "junk"},
            [{k: e[k] for k in ("reason", "size", "text") if k in e} for e in entries],
        )
        self.assertTrue(any(r.startswith("torn record") for r in reasons))
        # Not UTF-8: in base64, byte for byte.
        [binary] = [e for e in entries if e["bytes"] == b"<EVENT>\xff\xfe</EVENT>"]
        self.assertIn("base64", binary)

    def test_only_bad(self) -> None:
        """No batch file when no event is good."""
        result, batch, quarantine = self.render(self.segment([b"<EVENT>"]))
        self.assertEqual((result.events, batch), (0, b""))
        self.assertNotEqual(quarantine, b"")

    def test_deterministic_gzip(self) -> None:
        """
        A segment renders to the same bytes every time (a re-upload after a
        crash carries the same checksum), gzip included.
        """
        path = self.segment([make_event(n) for n in range(50)])
        first = self.render(path, compress="gzip")
        second = self.render(path, compress="gzip")
        self.assertEqual(first[1], second[1])
        self.assertEqual(first[0].batch_sha256, second[0].batch_sha256)  # type: ignore[attr-defined]
        self.assertEqual(numbers_in_xml_batch(gzip.decompress(first[1])), list(range(50)))

    def test_json_lines(self) -> None:
        path = self.segment([make_event(7), b'<EVENT kind="x"><a>  1</a><a>2</a><b/></EVENT>'])
        result, batch, _ = self.render(path, fmt="json")
        lines = [json.loads(line) for line in batch.decode().splitlines()]
        self.assertEqual(len(lines), 2)
        self.assertEqual(lines[0]["EVENT"]["cn"], "n000000000007")
        self.assertEqual(lines[0]["EVENT"]["plasectrxCardno"], "         8339220")
        self.assertEqual(lines[0]["EVENT"]["plasectrxFname"], "J\u00fcrgen")
        self.assertEqual(lines[0]["EVENT"]["plasectrxSourcename"], "Stair 4 L2 & Lobby")
        self.assertEqual(lines[1], {"EVENT": {"@kind": "x", "a": ["  1", "2"], "b": ""}})

    def test_no_doctype(self) -> None:
        """
        An event with a DOCTYPE is refused (ACM never sends one), and the
        parser reads no file for an external entity.
        """
        secret = os.path.abspath(self.mktemp())
        with open(secret, "w") as stream:
            stream.write("the secret")
        for wire in (
            b'<!DOCTYPE EVENT [<!ENTITY x SYSTEM "file://%s">]><EVENT>&x;</EVENT>'
            % secret.encode(),
            b'<!DOCTYPE EVENT [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><EVENT>&b;</EVENT>',
        ):
            reason, rendered = _render_event(wire, make_parser(), "xml", "EVENT")
            self.assertIn("DOCTYPE", reason or "")
            self.assertEqual(rendered, b"")
            root = etree.fromstring(wire, make_parser())
            self.assertNotIn("the secret", etree.tostring(root).decode())
            self.assertNotIn("aaaaaaaaaa", etree.tostring(root).decode())

    def test_json_mapping(self) -> None:
        root = etree.fromstring(
            b'<EVENT xmlns:p="urn:p"><p:a p:b="1">t<c/>u</p:a><d>x<!-- c --></d></EVENT>',
            make_parser(),
        )
        self.assertEqual(
            event_to_json(root),
            {
                "EVENT": {
                    "@xmlns:p": "urn:p",
                    "p:a": {"@p:b": "1", "#text": "tu", "c": ""},
                    "d": {"#text": "x"} if False else "x",
                }
            },
        )

    def test_flat_events_take_one_loop(self) -> None:
        """
        An event of plain leaves (ACM's) is converted in one loop, to what
        the general conversion makes of it; any other shape is left to the
        general conversion.
        """
        from eventpipe.render.jsonlines import _flat_value, _value
        from tests.support import SAMPLE

        with open(SAMPLE, "rb") as stream:
            sample = stream.read()
        flat = [b"<EVENT>" + part.split(b"<EVENT>", 1)[1] for part in sample.split(b"<?xml ")[1:]]
        flat = [part[: part.rindex(b"</EVENT>") + 8] for part in flat]
        flat += [
            make_event(3),
            b"<EVENT><a></a><b>&amp;&#233;</b>\n <c> x </c></EVENT>",
        ]
        other = [
            b'<EVENT kind="x"><a>1</a></EVENT>',
            b"<EVENT><a>1</a><a>2</a></EVENT>",
            b'<EVENT><a k="v">1</a></EVENT>',
            b"<EVENT>text<a>1</a></EVENT>",
            b"<EVENT><a>1</a>tail</EVENT>",
            b"<EVENT><a><b>1</b></a></EVENT>",
            b"<EVENT><a>1<!-- c --></a></EVENT>",
            b"<EVENT><!-- c --><a>1</a></EVENT>",
            b"<EVENT><?pi x?><a>1</a></EVENT>",
            b"<EVENT>  </EVENT>",
            b"<EVENT/>",
        ]
        for data, shape in [(d, True) for d in flat] + [(d, False) for d in other]:
            root = etree.fromstring(data, make_parser())
            value = _flat_value(root)
            self.assertEqual(value is not None, shape, data)
            if value is not None:
                self.assertEqual(value, _value(root, False), data)
            self.assertEqual(event_to_json(root), {"EVENT": _value(root, False)}, data)


class EncodingTests(SynchronousTestCase):
    def test_transcoded_to_utf8(self) -> None:
        """
        Events framed with their ISO-8859-1 or windows-1252 declaration are
        written as UTF-8, without it, in XML and JSON; a byte that the
        declared encoding does not define goes to quarantine.
        """
        directory = self.mktemp()
        spool = Spool(directory, "gw1", lambda: 1753805700.0)
        latin = b'<?xml version="1.0" encoding="ISO-8859-1"?>'
        windows = b'<?xml version="1.0" encoding="windows-1252"?>'
        spool.append(
            [
                latin + "<EVENT><n>Jürgen</n></EVENT>".encode("latin-1"),
                windows + "<EVENT><n>5 €</n></EVENT>".encode("cp1252"),
                windows + b"<EVENT><n>\x81</n></EVENT>",
                b"<EVENT><n>plain</n></EVENT>",
            ]
        )
        segment = spool.seal()
        assert segment is not None
        for fmt in ("xml", "json"):
            batch = os.path.join(directory, "batch." + fmt)
            result = render_segment(segment.path, batch, os.path.join(directory, "q." + fmt), fmt)
            self.assertEqual((result.events, result.quarantined), (3, 1))
            with open(batch, "rb") as stream:
                text = stream.read().decode("utf-8")
            self.assertIn("Jürgen", text)
            self.assertIn("5 €", text)
            self.assertNotIn("ISO-8859-1", text)
        with open(os.path.join(directory, "batch.xml"), "rb") as stream:
            self.assertIn("<EVENT><n>5 €</n></EVENT>\n", stream.read().decode("utf-8"))


class ForensicsTests(SynchronousTestCase):
    def test_quarantine_says_who_and_when(self) -> None:
        """
        Each quarantined piece carries the context of the read it came in:
        time, sender, listener; pieces of a spool without contexts say null.
        """
        from eventpipe.records import encode_context, encode_event, encode_rejected

        directory = self.mktemp()
        os.makedirs(directory)
        segment = os.path.join(directory, "segment")
        with open(segment, "wb") as stream:
            stream.write(encode_event(b"<EVENT><a></EVENT>"))
            stream.write(encode_context(1753805700.25, "10.0.0.7:5123", "tcp 0.0.0.0:8080"))
            stream.write(encode_event(make_event(1)))
            stream.write(encode_event(b"<EVENT><b></EVENT>"))
            stream.write(encode_context(1753805702.0, "10.0.0.8:6000", "udp 0.0.0.0:5140"))
            stream.write(
                encode_rejected(Rejected("bytes outside any <EVENT> document", b"\xff\x00"))
            )
        batch, quarantine = segment + ".xml", segment + ".q"
        result = render_segment(segment, batch, quarantine)
        self.assertEqual((result.events, result.quarantined), (1, 3))
        with open(quarantine, "rb") as stream:
            entries = quarantine_entries(stream.read())
        by_bytes = {e["bytes"]: e for e in entries}
        before = by_bytes[b"<EVENT><a></EVENT>"]
        self.assertEqual((before["sender"], before["received"]), (None, None))
        malformed = by_bytes[b"<EVENT><b></EVENT>"]
        self.assertEqual(malformed["sender"], "10.0.0.7:5123")
        self.assertEqual(malformed["listener"], "tcp 0.0.0.0:8080")
        self.assertEqual(malformed["received"], "2025-07-29T16:15:00.250Z")
        outside = by_bytes[b"\xff\x00"]
        self.assertEqual(outside["listener"], "udp 0.0.0.0:5140")
        self.assertEqual(outside["base64"], "/wA=")


class TornDocumentsTests(SynchronousTestCase):
    def test_whole_documents_of_a_torn_record_delivered(self) -> None:
        """
        A record of whole documents torn by a kill in the middle of its
        write: the documents written whole are delivered, only the damaged
        tail goes to quarantine, as torn.
        """
        from eventpipe.records import encode_documents, encode_event

        directory = self.mktemp()
        os.makedirs(directory)
        segment = os.path.join(directory, "segment")
        documents = b"".join(b'<?xml version="1.0"?>\n' + make_event(n) + b"\n" for n in range(3))
        record = encode_documents(documents)
        with open(segment, "wb") as stream:
            stream.write(encode_event(make_event(9)))
            stream.write(record[: len(record) - 300])
        batch, quarantine = segment + ".xml", segment + ".q"
        result = render_segment(segment, batch, quarantine)
        with open(batch, "rb") as stream:
            self.assertEqual(numbers_in_xml_batch(stream.read()), [9, 0, 1])
        with open(quarantine, "rb") as stream:
            [torn] = quarantine_entries(stream.read())
        self.assertTrue(str(torn["reason"]).startswith("torn record"))
        self.assertTrue(make_event(2).startswith(torn["bytes"]))  # type: ignore[arg-type]
        self.assertEqual(result.events, 3)


class UniformRecordTests(SynchronousTestCase):
    """
    Records of documents all alike (what ACM sends) are checked whole, as
    one run; the batch and the quarantine are what the framer and the
    per-chunk check make of them.
    """

    def render(self, documents: list[bytes]) -> tuple[object, bytes, bytes, int]:
        """Render one record per item; also say how often the framer ran."""
        from eventpipe.records import encode_documents
        from eventpipe.render import batch as render

        directory = self.mktemp()
        os.makedirs(directory)
        segment = os.path.join(directory, "segment")
        with open(segment, "wb") as stream:
            for data in documents:
                stream.write(encode_documents(data))
        framed = []
        frame = render.frame_documents
        self.patch(render, "frame_documents", lambda *a: framed.append(1) or frame(*a))
        result = render_segment(segment, segment + ".xml", segment + ".q")
        read = lambda p: open(p, "rb").read() if os.path.exists(p) else b""  # noqa: E731
        return result, read(segment + ".xml"), read(segment + ".q"), len(framed)

    def assertAsFramed(self, documents: list[bytes], framed: int) -> tuple[bytes, bytes]:
        from eventpipe.render import batch as render

        result, batch, quarantine, calls = self.render(documents)
        self.assertEqual(calls, framed, "records framed one by one")
        self.patch(render, "uniform_events", lambda *a: None)
        slow, slow_batch, slow_quarantine, _ = self.render(documents)
        self.assertEqual(
            (batch, quarantine, vars(result)), (slow_batch, slow_quarantine, vars(slow))
        )
        return batch, quarantine

    def test_acm_records_are_not_framed(self) -> None:
        """The sample stream (colons in text) goes the uniform way."""
        from tests.support import SAMPLE

        with open(SAMPLE, "rb") as stream:
            sample = stream.read()
        cut = sample.find(b"<?xml ", len(sample) // 2)
        batch, quarantine = self.assertAsFramed([sample[:cut], sample[cut:], sample], 0)
        self.assertEqual((batch.count(b"<EVENT>"), quarantine), (2 * sample.count(b"<EVENT>"), b""))

    def test_bad_events_in_uniform_records(self) -> None:
        """
        An undefined entity, an undeclared prefix (which a check that builds
        nothing does not see), one hidden behind a quoted ">", a stray end
        tag: each event alone goes to quarantine, its neighbours to the batch.
        """
        declaration = b'<?xml version="1.0" encoding="UTF-8"?>\n'
        bad = [
            b"<EVENT><a>&undefined;</a></EVENT>",
            b"<EVENT><a:b>x</a:b></EVENT>",
            b'<EVENT><a x=">" b:c="1">y</a></EVENT>',
            b"<EVENT></a></EVENT>",
        ]
        records = [
            b"".join(declaration + event + b"\n" for event in (make_event(n), piece, make_event(9)))
            for n, piece in enumerate(bad)
        ]
        # Each record is framed: two failed the whole check, two never took it.
        batch, quarantine = self.assertAsFramed(records, 4)
        self.assertEqual(numbers_in_xml_batch(batch), [0, 9, 1, 9, 2, 9, 3, 9])
        self.assertEqual([e["bytes"] for e in quarantine_entries(quarantine)], bad)

    def test_colons(self) -> None:
        """
        A colon in text keeps the whole-record check; one in a tag (a
        namespace prefix, which a parse that builds nothing does not check)
        leaves it.
        """
        from eventpipe.framing.reads import uniform_events
        from eventpipe.render.validate import _plain

        declaration = b'<?xml version="1.0" encoding="UTF-8"?>\n'
        for event, plain in [
            (b"<EVENT><m>26 bit raw: 0x25c7fff</m></EVENT>", True),
            (b"<EVENT><m>a:b</m><n>c:d</n>e:</EVENT>", True),
            (b"<EVENT><a:b>x</a:b></EVENT>", False),
            (b"<EVENT><a b:c='1'>x</a></EVENT>", False),
            (b'<EVENT><a x=">" b:c="1">x</a></EVENT>', False),
            (b'<EVENT><a x="1">y:z</a></EVENT>', False),
        ]:
            events = (event + b"\n") * 2
            self.assertEqual(_plain(events), plain, event)
            if plain:
                self.assertEqual(uniform_events((declaration + event + b"\n") * 2), (events, 2))
