"""
eventpipe: ACM Generic XML events over TCP, delivered as batches Snowflake
loads to S3, Azure Blob Storage, Google Cloud Storage or a local outbox.

The journey of an event, a package or module each: L{eventpipe.protocol}
(the receiving ends) -> L{eventpipe.framing} -> L{eventpipe.ingest} ->
L{eventpipe.spool} -> L{eventpipe.rotation} -> L{eventpipe.shipping}
(L{eventpipe.render} in worker processes) -> L{eventpipe.destinations}.
L{eventpipe.service} owns the order of start and stop; L{eventpipe.tap}
wires it for C{twistd}; L{eventpipe.config} holds the settings.
"""

__version__ = "0.1.0"
