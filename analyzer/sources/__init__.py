"""Where frames come from. Capture files and stdin are read by `files` (pcap and pcapng, plain or
gzip/bz2/xz-compressed); every source yields plain (frame_no, ts_ns, linktype, data, wire_len)
tuples, the hot path's currency."""

from analyzer.sources.files import CaptureReader, expand_inputs, open_capture

__all__ = ["CaptureReader", "expand_inputs", "open_capture"]
