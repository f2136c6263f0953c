"""The columnar path: whole batches of frames analysed with NumPy, Python only where it matters.

A capture read in `FrameBatch`es goes through `ColumnarFeed` instead of frame by frame. Each batch
is decoded into columns (`segments`), every frame is assigned to its TCP connection, and the frames
that change nothing but counters and clocks (the steady state of a healthy session: in-order
segments and copies of ones already seen, acknowledgements, pings answered in time, packets well
inside the keep-alive) are applied
per connection in one step (`steady`). Every other frame (a handshake, a CONNECT, a late packet, a
loss, a close, anything unusual) goes through `CaptureAnalysis.frame` exactly as it would have, in
capture order. The verdicts are the per-frame path's, byte for byte; tests hold the two paths to
identical reports.
"""
