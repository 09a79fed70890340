"""
Shipping: one shipment per sealed segment, from the spool to the
destination (L{eventpipe.shipping.chain.Shipping}).

    render (in a worker process: validate, wrap in <EVENTS>, quarantine,
            JSON, gzip)
      -> upload (IUploader)
      -> remove the segment (the "reset")
    and on any failure: wait (exponential backoff with jitter), then again.

A shipment's lifecycle is an explicit L{Phase}.  At most
C{upload_concurrency} shipments render and upload at once (slots), so
rendered files never pile up while the destination is down; a slot is held
for one attempt only, never while a shipment waits to retry, so one segment
that keeps failing cannot keep the others out.  An attempt drops its
rendered files when it ends: rendering a segment again gives the same
bytes.  A delivery wakes the shipments waiting to retry: the destination is
back.

Each render and each upload has a time limit (C{--render-timeout},
C{--upload-timeout}): one past it is abandoned (its worker process killed,
its thread replaced) and the attempt fails.  A segment whose render fails
L{RENDER_ATTEMPTS} times in a row is moved to the spool's C{failed/}
directory -- set aside, never deleted -- and the others go on.

The format, compression and key of a segment are fixed when it is sealed.
If the key turns out to hold another writer's object (the spool's sequence
counter was lost, or two instances share an instance id), the segment takes
the next free sequence number at once, within the same attempt.
"""
