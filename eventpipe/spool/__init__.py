"""
The spool: events on local disk, between the socket and the destination
(L{eventpipe.spool.spool.Spool}; its layout on disk is described there).
"""
