"""
Framing: a connection's bytes in, whole events and set-aside pieces out
(sans-I/O: no reactor, no sockets, no files).  L{eventpipe.framing.framer}
is the exact state machine; L{eventpipe.framing.reads} the fast path that
proves a read is plain documents.
"""
