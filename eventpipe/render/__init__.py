"""
Render: a sealed segment in, the batch that is delivered and a quarantine
file out (L{eventpipe.render.batch.render_segment}); plain files, no reactor,
run in the render workers.
"""
