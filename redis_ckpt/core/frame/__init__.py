"""One generation on the wire: a self-describing, length-prefixed, checksummed frame.

Layout (big-endian; H = header length, P = payload length)::

    offset      size  field
    0           4     magic b"RCKP"
    4           1     frame format version (1)
    5           1     codec id (1 = exact msgpack, see core.codec)
    6           1     compression id (0 none, 1 zstd)
    7           1     flags (0; no flag is defined in format 1)
    8           4     schema version, u32
    12          4     header length H, u32
    16          H     header: msgpack map {"run": str, "gen": int, "token": int, "owner": str,
                      "created_ms": int, "meta": bin = user metadata dict encoded by core.codec}
                      (gen and token in [0, 2**63), created_ms a time a datetime holds;
                      "pad": bin of zeros, only where the ratio bound below needs it)
    16+H        8     payload length P, u64 (as stored, i.e. after compression)
    24+H        P     payload: the encoded state, or one zstd frame of it (content size
                      and zstd's own content checksum recorded)
    24+H+P      16    xxh3-128 digest of bytes [0, 24+H+P)

Verification order, each failure its own :class:`FrameDamage`: BAD_MAGIC,
UNKNOWN_FORMAT, TRUNCATED, TRAILING_BYTES, CHECKSUM, then (covered by the checksum)
UNKNOWN_FORMAT for undefined flags, BAD_HEADER, UNKNOWN_CODEC, UNKNOWN_COMPRESSION,
WRONG_RUN, WRONG_GENERATION. Lengths are checked against the blob before anything
is allocated from them; decompression is bounded by the size zstd records.

Decompression bomb bound: a zstd payload may decompress to at most :data:`MAX_ZSTD_RATIO`
times the size of the whole frame (and to at most the reader's ``max_payload_bytes``);
the content size zstd records is checked against both before a byte is decompressed, so
a stored frame never costs a reader more than 1000x its own size. zstd itself reaches
~32,000:1 (64 MiB of zeros -> 2 KiB; repetitive msgpack ~10,000:1), so the writer pads
such a frame with a "pad" header field up to 1/1000 of the content: a 400 MiB run of
zeros is stored in 400 KiB instead of 13 KiB, and still loads.

Large frames travel in as little memory as the state (assemble.py).

Modules: layout.py (the fields above, FrameHeader), build.py (encode_frame, FrameParts),
verify.py (read_header, decode_frame, decode_payload, frame_checksum), assemble.py
(FrameAssembler, AssembledFrame: a chunked frame read in pieces), damage.py (frame_report:
how far a damaged frame verifies, for ``redis-ckpt show --state``).
"""

from __future__ import annotations

from .assemble import AssembledFrame, FrameAssembler
from .build import FrameParts, encode_frame, encode_frame_parts
from .layout import FORMAT_VERSION, MAGIC, MAX_ZSTD_RATIO, FrameHeader
from .verify import decode_frame, decode_payload, frame_checksum, read_header

__all__ = [
    "FORMAT_VERSION", "MAGIC", "MAX_ZSTD_RATIO", "FrameHeader", "FrameParts", "AssembledFrame", "FrameAssembler",
    "encode_frame", "encode_frame_parts", "frame_checksum", "read_header", "decode_frame", "decode_payload",
]
