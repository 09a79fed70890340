from twisted.trial.unittest import SynchronousTestCase

from eventpipe.naming import (
    instance_id_from_hostname,
    normalize_prefix,
    object_key,
    quarantine_key,
    segment_name,
    sequence_of,
    valid_instance_id,
)


class NamingTests(SynchronousTestCase):
    def test_key(self) -> None:
        name = segment_name(1753805700.0, "gw1", 42)
        self.assertEqual(name, "20250729_161500_gw1_000042")
        self.assertEqual(object_key(name, ".xml"), "2025/07/29/20250729_161500_gw1_000042.xml")
        self.assertEqual(
            object_key(name, ".json.gz", "acm"), "acm/2025/07/29/20250729_161500_gw1_000042.json.gz"
        )
        self.assertEqual(
            quarantine_key(name, "acm/"),
            "acm/quarantine/2025/07/29/20250729_161500_gw1_000042.jsonl",
        )
        self.assertEqual(sequence_of(name), 42)
        self.assertEqual(sequence_of(segment_name(0, "a-b.c", 1234567)), 1234567)

    def test_prefix(self) -> None:
        for given, expected in [("", ""), ("acm", "acm/"), ("acm/", "acm/"), ("/a/b/", "a/b/")]:
            self.assertEqual(normalize_prefix(given), expected)

    def test_instance_id(self) -> None:
        self.assertTrue(valid_instance_id("gw-1.site"))
        for bad in ("", "a_b", "a/b", "-x", "x" * 64, "a b"):
            self.assertFalse(valid_instance_id(bad), bad)
        self.assertEqual(instance_id_from_hostname("My_Host.local"), "My-Host.local")
        self.assertEqual(instance_id_from_hostname("___"), "eventpipe")
        self.assertEqual(instance_id_from_hostname("ü" * 80), "eventpipe")
        self.assertTrue(valid_instance_id(instance_id_from_hostname("h" * 80)))
