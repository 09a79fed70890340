"""
Ingest (L{eventpipe.ingest.ingest.Ingest}): connections hand their events here and they go to the spool at once
(local disk, on the reactor thread, no network).

When the spool holds more than C{max_spool_size} bytes, when its filesystem
runs low, or when the disk refuses a write, every connection stops being
read (TCP pushes back on the sender) until there is room again.  Events
already framed when the disk refused are kept in memory (at most one read
per connection, as reading stops) and written first when the disk accepts
again.
"""
