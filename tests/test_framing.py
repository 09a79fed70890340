"""
The framer, fed the same bytes at every chunk size (as Twisted's own
test_basic does) and at hypothesis-chosen splits.
"""

from __future__ import annotations

import itertools
import time

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from eventpipe.framing.common import Rejected, State
from eventpipe.framing.framer import EventFramer
from eventpipe.framing.reads import ReadSplitter, frame_documents, uniform_events
from tests.support import SAMPLE, make_event

DECL = b'<?xml version="1.0" encoding="UTF-8"?>'

# (bytes on the wire, the events expected, how many rejected pieces)
VARIANTS: list[tuple[bytes, list[bytes]]] = []


def _variant(wire: bytes, *events: bytes) -> None:
    VARIANTS.append((wire, list(events)))


E1 = b"<EVENT><cn>1</cn><plasectrxCardno>               0</plasectrxCardno></EVENT>"
E2 = "<EVENT><plasectrxFname>Jürgen</plasectrxFname></EVENT>".encode()
E3 = b"<EVENT id=\"3\" kind='x'><a>&amp;&lt;&#233;</a></EVENT >"
E4 = b"<EVENT><![CDATA[ </EVENT> <EVENT> ]]><b/></EVENT>"
E5 = b"<EVENT><!-- </EVENT> --><c>5</c></EVENT\r\n>"
E6 = b"<EVENT><EVENT>nested</EVENT><d/></EVENT>"
E7 = b"<EVENT/>"
E8 = b'<EVENT a="1"\n/>'
E9 = b"<EVENT><EVENTS>not the end</EVENTS></EVENT>"

_variant(DECL + b"\n" + E1 + b"\n", E1)
_variant(DECL + E1 + DECL + E2, E1, E2)
_variant(E1 + E2 + E3, E1, E2, E3)
_variant(DECL + b"\r\n" + E1 + b"\r\n" + DECL + b"\r\n" + E2 + b"\r\n", E1, E2)
_variant(b"\xef\xbb\xbf" + DECL + E1 + b"\xef\xbb\xbf" + DECL + E2, E1, E2)
_variant(b"<?xml version='1.0' encoding='UTF-8'?>" + E3, E3)
_variant(b"<!-- keep-alive -->\n  \t" + DECL + E1 + b"\n<!-- ping -->\n", E1)
_variant(DECL + E4 + DECL + E5 + DECL + E6, E4, E5, E6)
_variant(DECL + E7 + DECL + E8 + E9, E7, E8, E9)
_variant(b'<?xml version="1.0"?><?other pi?>\n' + E2, E2)


def feed_in_chunks(data: bytes, size: int, **kwargs: object) -> tuple[list[bytes], list[Rejected]]:
    framer = EventFramer(**kwargs)  # type: ignore[arg-type]
    events: list[bytes] = []
    rejected: list[Rejected] = []
    for start in range(0, len(data), size):
        got, bad = framer.feed(data[start : start + size])
        events.extend(got)
        rejected.extend(bad)
    rejected.extend(framer.close())
    return events, rejected


def feed_at(data: bytes, cuts: list[int], **kwargs: object) -> tuple[list[bytes], list[Rejected]]:
    framer = EventFramer(**kwargs)  # type: ignore[arg-type]
    events: list[bytes] = []
    rejected: list[Rejected] = []
    edges = [0, *sorted(set(c for c in cuts if 0 < c < len(data))), len(data)]
    for start, end in zip(edges, edges[1:]):
        got, bad = framer.feed(data[start:end])
        events.extend(got)
        rejected.extend(bad)
    rejected.extend(framer.close())
    return events, rejected


class EveryChunkSizeTests(SynchronousTestCase):
    def test_variants(self) -> None:
        """
        Each variant of the stream gives exactly its events, byte for byte,
        and nothing rejected, whatever the chunk size.
        """
        for wire, expected in VARIANTS:
            for size in range(1, len(wire) + 1):
                events, rejected = feed_in_chunks(wire, size)
                self.assertEqual((events, rejected), (expected, []), (wire, size))

    def test_all_variants_in_one_stream(self) -> None:
        wire = b"".join(v[0] for v in VARIANTS)
        expected = [e for v in VARIANTS for e in v[1]]
        for size in range(1, len(wire) + 1):
            self.assertEqual(feed_in_chunks(wire, size), (expected, []), size)

    def test_sample_stream(self) -> None:
        """
        The 25 events of the sample stream, at chunk sizes 1 to 700 and a
        few large ones: the same events each time, declarations stripped,
        padding kept.
        """
        with open(SAMPLE, "rb") as stream:
            wire = stream.read()
        whole, rejected = feed_in_chunks(wire, len(wire))
        self.assertEqual(rejected, [])
        self.assertEqual(len(whole), 25)
        for event in whole:
            self.assertTrue(event.startswith(b"<EVENT>"))
            self.assertTrue(event.endswith(b"</EVENT>"))
            self.assertIn(event, wire)
            self.assertNotIn(b"<?xml", event)
        self.assertIn(b"<plasectrxCardno>         8339220</plasectrxCardno>", whole[0])
        for size in [*range(1, 701), 1021, 4096, 65536]:
            self.assertEqual(feed_in_chunks(wire, size), (whole, []), size)


class SplitTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(st.sampled_from(range(len(VARIANTS))), min_size=1, max_size=8),
        st.lists(st.integers(min_value=0, max_value=4000), max_size=30),
    )
    def test_any_split(self, which: list[int], cuts: list[int]) -> None:
        """Any mix of variants, split anywhere, gives the events in order."""
        wire = b"".join(VARIANTS[i][0] for i in which)
        expected = [e for i in which for e in VARIANTS[i][1]]
        self.assertEqual(feed_at(wire, cuts), (expected, []))

    @settings(max_examples=200, deadline=None)
    @given(
        st.binary(max_size=3000), st.lists(st.integers(min_value=0, max_value=3000), max_size=20)
    )
    def test_arbitrary_bytes(self, noise: bytes, cuts: list[int]) -> None:
        """
        Arbitrary bytes never raise, every event handed over is a slice of
        the input, and the framer never holds much more than its limit.
        """
        limit = 512
        framer = EventFramer(max_event_size=limit)
        edges = [0, *sorted(set(c for c in cuts if 0 < c < len(noise))), len(noise)]
        for start, end in zip(edges, edges[1:]):
            events, rejected = framer.feed(noise[start:end])
            for event in events:
                self.assertIn(event, noise)
            for piece in rejected:
                self.assertLessEqual(len(piece.data), limit)
            self.assertLessEqual(framer.buffered, 2 * limit + (end - start) + 64)
        framer.close()

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(
            st.one_of(
                st.sampled_from([DECL + make_event(n) + b"\n" for n in range(3)]),
                st.binary(max_size=40).filter(lambda b: b"<" not in b and b.strip()),
            ),
            max_size=10,
        ),
        st.lists(st.integers(min_value=0, max_value=5000), max_size=20),
    )
    def test_garbage_never_spoils_neighbours(self, pieces: list[bytes], cuts: list[int]) -> None:
        """Junk between documents is set aside; the events around it still come out."""
        wire = b"".join(pieces)
        events, rejected = feed_at(wire, cuts)
        expected = [p[len(DECL) : -1] for p in pieces if p.startswith(DECL)]
        self.assertEqual(events, expected)
        junk = b"".join(p for p in pieces if not p.startswith(DECL))

        # Whitespace and byte order marks next to a document are layout;
        # the junk itself is kept.
        def squeeze(data: bytes) -> bytes:
            return data.replace(b"\xef\xbb\xbf", b"").translate(None, b" \t\r\n")

        self.assertEqual(squeeze(b"".join(r.data for r in rejected)), squeeze(junk))


class LimitTests(SynchronousTestCase):
    def test_oversized_event(self) -> None:
        """
        An event above the limit is rejected with its first bytes and a
        count of the rest; the stream resynchronises and the next event
        comes out whole.
        """
        big = b"<EVENT>" + b"x" * 5000 + b"</EVENT>"
        wire = DECL + E1 + DECL + big + DECL + E2
        for size in (1, 7, 100, 4096, len(wire)):
            events, rejected = feed_in_chunks(wire, size, max_event_size=1000)
            self.assertEqual(events, [E1, E2], size)
            self.assertEqual(len(rejected), 1)
            self.assertEqual(rejected[0].data, big[:1000])
            self.assertEqual(rejected[0].dropped, len(big) - 1000)
            self.assertIn("max-event-size", rejected[0].reason)

    def test_oversized_without_end(self) -> None:
        """
        An event that never ends is cut at the next declaration; memory
        stays bounded while it streams in.
        """
        framer = EventFramer(max_event_size=1000)
        framer.feed(DECL + b"<EVENT>")
        for _ in range(200):
            events, rejected = framer.feed(b"y" * 997)
            self.assertEqual((events, rejected), ([], []))
            self.assertLess(framer.buffered, 3000)
        events, rejected = framer.feed(DECL + E1)
        self.assertEqual(events, [E1])
        self.assertEqual(len(rejected), 1)
        self.assertEqual(len(rejected[0].data), 1000)
        self.assertEqual(rejected[0].dropped, 7 + 200 * 997 - 1000)

    def test_truncated_at_close(self) -> None:
        framer = EventFramer()
        self.assertEqual(framer.feed(DECL + E1 + DECL + b"<EVENT><cn>"), ([E1], []))
        rejected = framer.close()
        self.assertEqual([r.data for r in rejected], [b"<EVENT><cn>"])
        self.assertIn("closed in the middle", rejected[0].reason)

    def test_garbage_between(self) -> None:
        events, rejected = feed_in_chunks(b"hello" + DECL + E1 + b"<OTHER>x</OTHER>" + E2, 3)
        self.assertEqual(events, [E1, E2])
        self.assertEqual([r.data for r in rejected], [b"hello", b"<OTHER>x</OTHER>"])

    def test_other_tag(self) -> None:
        """The root element name is configurable."""
        wire = DECL + b"<ALARM><a/></ALARM>" + DECL + E1
        events, rejected = feed_in_chunks(wire, 5, event_tag="ALARM")
        self.assertEqual(events, [b"<ALARM><a/></ALARM>"])
        self.assertEqual([r.data for r in rejected], [E1])


class StateTests(SynchronousTestCase):
    def test_states_are_named(self) -> None:
        """The framer says where it stands, as one of its named states."""
        framer = EventFramer("EVENT", 64)
        self.assertIs(framer.state, State.BETWEEN)
        framer.feed(b'<?xml version="1.0"?>\n<EVENT a="1"')
        self.assertIs(framer.state, State.START_TAG)
        framer.feed(b"><![CDATA[</EVENT>]]>")
        self.assertIs(framer.state, State.BODY_CAREFUL)
        events, _ = framer.feed(b"</EVENT>")
        self.assertEqual(events, [b'<EVENT a="1"><![CDATA[</EVENT>]]></EVENT>'])
        self.assertIs(framer.state, State.BETWEEN)
        framer.feed(b"<EVENT>" + b"x" * 100)
        self.assertIs(framer.state, State.SKIPPING)
        _, rejected = framer.feed(b"</EVENT>")
        self.assertEqual(len(rejected), 1)
        self.assertIs(framer.state, State.BETWEEN)
        framer.feed(b"<EVENT><a>")
        self.assertIs(framer.state, State.BODY)


class EncodingTests(SynchronousTestCase):
    def test_declaration_kept_when_framed_at_render(self) -> None:
        """
        Whole documents kept as read and framed at render keep a declaration
        naming another encoding too, as the framer does, whether the other
        documents are declared alike or not; UTF-8 ones are dropped.
        """
        for name in ("ISO-8859-1", "windows-1252", "utf-8", "US-ASCII"):
            declaration = f'<?xml version="1.0" encoding="{name}"?>'.encode("ascii")
            for documents in (
                declaration + b"<EVENT><n>J\xfcrgen</n></EVENT>\n",
                DECL + b"<EVENT>1</EVENT>\n" + declaration + b"\n<EVENT>2</EVENT>\n",
            ):
                framer = EventFramer()
                expected, rejected = framer.feed(documents + b"<?xml ")
                self.assertEqual(frame_documents(documents), (expected, rejected), documents)
                self.assertEqual(
                    expected[-1].startswith(declaration), name.lower() not in ("utf-8", "us-ascii")
                )

    def test_declaration_kept_for_other_encodings(self) -> None:
        """
        An event whose declaration names an encoding other than UTF-8 keeps
        the declaration in front of it, at every split; UTF-8 and ASCII
        declarations are dropped as before.
        """
        latin = '<?xml version="1.0" encoding="ISO-8859-1"?>'.encode("ascii")
        stream = (
            latin
            + "\r\n<EVENT><n>J\u00fcrgen</n></EVENT>\n".encode("latin-1")
            + b"<?xml version='1.0' encoding='utf-8'?><EVENT/>"
            + b'<?xml version="1.0" encoding="US-ASCII"?><EVENT><n>x</n></EVENT>'
        )
        for size in range(1, len(stream) + 1):
            framer = EventFramer()
            events: list[bytes] = []
            for start in range(0, len(stream), size):
                found, rejected = framer.feed(stream[start : start + size])
                events += found
                self.assertEqual(rejected, [])
            self.assertEqual(
                events,
                [
                    latin + "<EVENT><n>J\u00fcrgen</n></EVENT>".encode("latin-1"),
                    b"<EVENT/>",
                    b"<EVENT><n>x</n></EVENT>",
                ],
                size,
            )


class Ways:
    """How many reads went the cheap way, and how many of those the uniform way."""

    cheap = 0
    uniform = 0


def render_frames(
    testcase: SynchronousTestCase, documents: bytes, limit: int, ways: Ways
) -> tuple[list[bytes], list[Rejected]]:
    """
    What the render makes of whole documents kept as read: the framer's
    events, which must be what the uniform way found when it found them.
    """
    events, rejected = frame_documents(documents, "EVENT", limit)
    uniform = uniform_events(documents, "EVENT", limit)
    if uniform is not None:
        ways.uniform += 1
        testcase.assertEqual(
            (b"".join(event + b"\n" for event in events), len(events), rejected),
            (uniform[0], uniform[1], []),
            documents,
        )
    return events, rejected


def split_then_frame(
    testcase: SynchronousTestCase,
    data: bytes,
    cuts: list[int],
    limit: int = 1 << 20,
    ways: Ways | None = None,
) -> tuple[list[bytes], list[Rejected]]:
    """
    What ingest's cheap path and the render make of a stream read in pieces:
    whole documents kept as read and framed later, the rest framed at once.
    """
    ways = ways or Ways()
    splitter = ReadSplitter("EVENT", limit)
    events: list[bytes] = []
    rejected: list[Rejected] = []
    edges = [0, *sorted(set(c for c in cuts if 0 < c < len(data))), len(data)]
    for start, end in zip(edges, edges[1:]):
        documents, _, now, set_aside = splitter.feed(data[start:end])
        if documents:
            ways.cheap += 1
            later, later_aside = render_frames(testcase, documents, limit, ways)
            events += later
            rejected += later_aside
        events += now
        rejected += set_aside
    now, set_aside = splitter.close()
    return events + now, rejected + set_aside


def exact(data: bytes, cuts: list[int], limit: int = 1 << 20) -> tuple[list[bytes], list[Rejected]]:
    events, rejected = feed_at(data, cuts, max_event_size=limit)
    return events, rejected


_PIECES = st.one_of(
    st.sampled_from([DECL + make_event(n) + b"\n" for n in range(3)]),
    st.sampled_from([v[0] for v in VARIANTS]),
    st.sampled_from(
        [
            DECL + b"<EVENT><a>" + b"x" * 400 + b"</a></EVENT>\n",  # larger than the limit
            DECL + b"<EVENT><a>cut short",  # interrupted by the next document
            DECL + b"<EVENT><a><?xml inside</a></EVENT>\n",
            DECL + b"<EVENT><!-- </EVENT> --></EVENT>\n",
            DECL + b"<!DOCTYPE EVENT><EVENT/>\n",
            b'<?xml version="1.0" encoding="ISO-8859-1"?><EVENT>\xe9</EVENT>',
            b"<EVENT>no declaration</EVENT>",
            b"</EVENT>",
            DECL,
            # Near misses of the uniform way.
            DECL + b"\n<EVENT>x</EVENT>\n",
            DECL + b"\n<EVENT>x</EVENT>\n<EVENT>y</EVENT>\n",
            DECL + b"\n<EVENT><EVENTS/></EVENT>\n",
            DECL + b"\n<EVENT>a<EVENT>b</EVENT>\n",
            DECL + b"\n<EVENT>x</EVENT>\ny\n",
            DECL + b"\n<EVENT>x</EVENT>\n\n",
            DECL + b"\n<EVENT>x</EVENT>",
            DECL + b"\n\n<EVENT>a\n" + DECL + b"\n\n</EVENT>\n",
            b'<?xml version="1.0"?>\n<EVENT>z</EVENT>\n',
            b'<?xml version="1.0" encoding="utf-16"?>\n<EVENT>z</EVENT>\n',
            DECL + b"\n<EVENT a='1'>x</EVENT>\n",
            DECL + b"\n<EVENT>&bad;</EVENT>\n",
            DECL + b"\n<EVENT>a:b</EVENT>\n",
        ]
    ),
    st.binary(max_size=60),
)


class CheapPathEquivalenceTests(SynchronousTestCase):
    """
    Keeping whole documents as read and framing them at render gives the
    same events and the same set-aside pieces as framing at once, for any
    stream and any split into reads.
    """

    @settings(max_examples=500, deadline=None)
    @given(
        st.lists(_PIECES, max_size=12),
        st.lists(st.integers(min_value=0, max_value=6000), max_size=25),
        st.sampled_from([64, 300, 2000]),
    )
    def test_any_stream_any_split(self, pieces: list[bytes], cuts: list[int], limit: int) -> None:
        wire = b"".join(pieces)
        events, rejected = split_then_frame(self, wire, cuts, limit=limit)
        self.assertEqual((events, rejected), exact(wire, cuts, limit=limit))

    def test_found_cases(self) -> None:
        """
        Streams that once framed otherwise at ingest and at render: an
        instruction cut by a read (its resumed search must not outlive it),
        and a whole-looking last document whose nested root is still open.
        """
        cases = [
            (
                DECL + b"\n\n<EVENT>a\n" + DECL + b"\n\n</EVENT>\n"
                b'<?xml version="1.0"?><?other pi?>\n' + E2,
                [33],
                64,
            ),
            (DECL + b"\n<EVENT>a<EVENT>b</EVENT>\n", [], 64),
        ]
        for wire, cuts, limit in cases:
            events, rejected = split_then_frame(self, wire, cuts, limit=limit)
            self.assertEqual((events, rejected), exact(wire, cuts, limit=limit), wire)

    def test_every_chunk_size(self) -> None:
        """The sample stream and every variant, at every chunk size."""
        with open(SAMPLE, "rb") as stream:
            wire = stream.read()
        wire += b"".join(v[0] for v in VARIANTS)
        for size in [*range(1, 400), 1021, 4096, 65536, len(wire)]:
            cuts = list(range(size, len(wire), size))
            events, rejected = split_then_frame(self, wire, cuts)
            self.assertEqual((events, rejected), exact(wire, cuts), size)

    def test_most_reads_go_the_cheap_way(self) -> None:
        """
        An ACM stream read in large pieces is hardly framed at ingest, and
        not at all at render: each read is found uniform.
        """
        with open(SAMPLE, "rb") as stream:
            sample = stream.read()
        for wire in (b"".join(DECL + make_event(n) + b"\n" for n in range(400)), sample * 20):
            cuts = list(range(65536, len(wire), 65536))
            ways = Ways()
            events, rejected = split_then_frame(self, wire, cuts, ways=ways)
            self.assertEqual((len(events), rejected), (wire.count(b"<?xml "), []))
            self.assertEqual((ways.cheap, ways.uniform), (len(cuts) + 1, len(cuts) + 1))


class ShortReadTests(SynchronousTestCase):
    def test_a_short_read_keeps_the_cheap_way(self) -> None:
        """
        One short read in an ACM stream (fewer bytes than wait from the
        last one) does not send the connection to the framer for good.
        """
        wire = b"".join(DECL + make_event(n) + b"\n" for n in range(3000))
        splitter = ReadSplitter("EVENT", 1 << 20)
        position = cheap = framed = 0
        for size in [65536, 65536, 100, *[65536] * 100]:
            documents, count, events, _ = splitter.feed(wire[position : position + size])
            position += size
            cheap += count
            framed += len(events)
        self.assertEqual((cheap, framed), (3000, 0))


class UniformTests(SynchronousTestCase):
    def test_near_misses(self) -> None:
        """
        Documents that are not all alike are left to the framer; whatever
        the uniform way takes, it takes as the framer does.
        """
        good = DECL + b"\n<EVENT>x</EVENT>\n"
        misses = [
            DECL + b"\n<EVENT>x</EVENT>\n<EVENT>y</EVENT>\n",
            DECL + b"\n<EVENT>a<EVENT>b</EVENT>\n",
            DECL + b"\n<EVENT><EVENTS/></EVENT>\n",
            DECL + b"\n<EVENT>x</EVENT>\ny\n",
            # Another separator: alike alone, not beside the newline.
            DECL + b"\n<EVENT>x</EVENT>\n\n",
            DECL + b"\n<EVENT>x</EVENT>",
            DECL + b"\n<EVENT>x</EVENT>\r\n",
            DECL + b"\n<EVENT>a\n" + DECL + b"\n</EVENT>\n",
            b'<?xml version="1.0"?>\n<EVENT>z</EVENT>\n',
            b'<?xml version="1.0" encoding="utf-16"?>\n<EVENT>z</EVENT>\n',
            DECL + b"\n<EVENT a='1'>x</EVENT>\n",
            DECL + b"\n<EVENT><?pi?></EVENT>\n",
            DECL + b"\n<EVENT><!-- c --></EVENT>\n",
            b"\n" + DECL + b"\n<EVENT>x</EVENT>\n",
        ]
        # Alike throughout: another separator, another declaration.
        alike_alone = {misses[4], misses[5], misses[6], misses[8]}
        for miss in misses:
            for documents in (miss, good + miss, miss + good, good + miss + good):
                render_frames(self, documents, 1 << 20, Ways())
                if documents not in alike_alone:
                    self.assertIsNone(uniform_events(documents), documents)
        self.assertEqual(uniform_events(misses[8]), (b"<EVENT>z</EVENT>\n", 1))
        for miss in (misses[4], misses[5], misses[6]):
            self.assertEqual(uniform_events(miss), (b"<EVENT>x</EVENT>\n", 1))


# What senders write between one document's end tag and the next
# declaration, and after the declaration.
SEPARATORS = [b"", b"\n", b"\r\n", b" ", b"  \t", b"\n\n"]


def laid_out(count: int, separator: bytes, after_declaration: bytes = b"\n") -> list[bytes]:
    """ACM-style documents, one a write, with the given layout."""
    return [DECL + after_declaration + make_event(n) + separator for n in range(count)]


class LayoutTests(SynchronousTestCase):
    """
    Every layout a sender may use between documents takes the cheap way at
    ingest and the uniform way at render, one write per event as well as
    in large writes, and gives what the framer gives.
    """

    def test_every_separator_every_write_pattern(self) -> None:
        for separator in SEPARATORS:
            for after in (b"", b"\n", b"\r\n"):
                writes = laid_out(300, separator, after)
                wire = b"".join(writes)
                per_event = list(itertools.accumulate(len(w) for w in writes))[:-1]
                for cuts in (per_event, list(range(65536, len(wire), 65536)), [len(wire) // 2]):
                    ways = Ways()
                    events, rejected = split_then_frame(self, wire, cuts, ways=ways)
                    case = (separator, after, len(cuts))
                    self.assertEqual((events, rejected), exact(wire, cuts), case)
                    self.assertEqual(len(events), 300, case)
                    # Every read but the last (which waits for its end) is
                    # kept as read, and found uniform at render.
                    self.assertGreaterEqual(ways.cheap, len(cuts), case)
                    self.assertEqual(ways.uniform, ways.cheap, case)

    def test_separator_split_from_its_document(self) -> None:
        """
        A read that ends between an end tag and its newline keeps the
        cheap way: the next read begins with the newline.
        """
        writes = laid_out(50, b"\n")
        wire = b"".join(writes)
        cuts = [wire.index(b"</EVENT>", 4000) + len(b"</EVENT>")]
        cuts.append(cuts[0] + 1)
        ways = Ways()
        events, rejected = split_then_frame(self, wire, cuts, ways=ways)
        self.assertEqual((events, rejected), exact(wire, cuts))
        self.assertEqual((ways.cheap, ways.uniform), (3, 3))

    def test_back_to_back_at_ingest(self) -> None:
        """The splitter hands on reads of documents back to back, framing none."""
        splitter = ReadSplitter("EVENT", 1 << 20)
        cheap = framed = 0
        for write in laid_out(2000, b"", b""):
            _, count, events, rejected = splitter.feed(write)
            cheap += count
            framed += len(events) + len(rejected)
        # Each write ends with a whole document: nothing waits.
        self.assertEqual((cheap, framed, splitter.buffered), (2000, 0, 0))
        self.assertEqual(splitter.close(), ([], []))

    def test_mixed_separators_go_to_the_framer(self) -> None:
        """Documents laid out differently in one read are framed, and give the same."""
        wire = b"".join(laid_out(3, b"\n") + laid_out(3, b"") + laid_out(3, b"\r\n"))
        self.assertIsNone(uniform_events(wire))
        events, rejected = split_then_frame(self, wire, [])
        self.assertEqual((events, rejected), exact(wire, []))


class IngestCountTests(SynchronousTestCase):
    def test_count_at_ingest(self) -> None:
        """
        The events counted as reads arrive: exact for a sender that declares
        each document alike; never more than the events, otherwise.
        """
        with open(SAMPLE, "rb") as stream:
            sample = stream.read() * 10
        for wire in (sample, b"".join(v[0] for v in VARIANTS) * 3):
            splitter = ReadSplitter()
            counted = framed = 0
            for start in range(0, len(wire), 4096):
                documents, count, now, _ = splitter.feed(wire[start : start + 4096])
                counted += count + len(now)
                framed += len(frame_documents(documents)[0]) + len(now)
            now, _ = splitter.close()
            counted += len(now)
            framed += len(now)
            if wire is sample:
                self.assertEqual(counted, framed)
                self.assertEqual(counted, sample.count(b"<EVENT>"))
            else:
                self.assertLessEqual(counted, framed)


class FramingCostTests(SynchronousTestCase):
    """
    A piece arriving in small reads costs time linear in its size: the
    searches resume where they stopped instead of rescanning the piece.
    """

    def cost(self, wire: bytes, read: int = 16) -> float:
        splitter = ReadSplitter("EVENT", 1 << 20)
        began = time.process_time()
        for start in range(0, len(wire), read):
            splitter.feed(wire[start : start + read])
        splitter.close()
        return time.process_time() - began

    def test_large_pieces_in_small_reads(self) -> None:
        """
        A 256 KiB event (plain, with CDATA, with an end tag's layout cut
        by reads) and a 256 KiB comment between documents, in 16-byte
        reads, each against as many bytes of small events in the same reads:
        a quadratic framer takes hundreds of times longer, a linear one
        about as long.
        """
        size = 256 << 10
        pieces = {
            "plain": DECL + b"\n<EVENT><a>" + b"x" * size + b"</a></EVENT>\n",
            "cdata": DECL + b"\n<EVENT><![CDATA[" + b"x" * size + b"]]></EVENT>\n",
            "layout": DECL + b"\n<EVENT><a/></EVENT" + b" " * size + b">\n",
            "comment": b"<!--" + b"x" * size + b"-->" + DECL + b"\n<EVENT/>\n",
        }
        small = b""
        number = 0
        while len(small) < size:
            small += DECL + b"\n" + make_event(number) + b"\n"
            number += 1
        reference = min(self.cost(small) for _ in range(3))
        for name, wire in pieces.items():
            took = min(self.cost(wire) for _ in range(2))
            self.assertLess(took, 8 * reference + 0.1, f"{name}: {took:.3f} s, {reference:.3f} s")
