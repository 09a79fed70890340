"""
C{eventpipe quarantine list | show | replay}: the quarantine objects at the
destination (outbox, S3 or Azure Blob Storage), read with the options the
service reads.

Replay sends the pieces that pass now (after an upgrade, or with
C{--repair-acm-tag-names}) through the service's own framing, validation
and render into new batches, exactly once.  A replayed batch's key comes
from the quarantine object it came from::

    quarantine/2026/11/24/20261124_101500_gw1_000042.jsonl
      -> 2026/11/24/20261124_101500_gw1_000042-r1.xml

and its metadata names that object and the lines it holds.  A replay first
reads which lines earlier replays hold and sends only the others, as the
next C{-rN}: a second replay, or one interrupted and run again, delivers no
piece twice.  The write is the service's conditional one; a key taken by a
replay running at the same time makes this one read again and take the next
number.  Pieces that still fail stay where they are, counted by reason.

Blocking calls, no reactor: these are commands.
"""
