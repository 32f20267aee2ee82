"""Building a frame: the header, the payload (compressed or not, padded against the
decompression-bomb bound) and the digest, held as :class:`FrameParts` (views, not copies)."""

from __future__ import annotations

from typing import Any

import msgpack
import xxhash

from ..codec import CODEC_MSGPACK, encode_state
from .layout import (
    CODECS, COMPRESSION_IDS, FORMAT_VERSION, HEADER_RANGES, MAGIC, MAX_ZSTD_RATIO, MIN_SIZE, PAYLOAD_LEN, PREFIX,
    U32, zstd_module,
)


class FrameParts:
    """A frame held as its three pieces: the head (prefix, header, payload length), the
    payload as given (e.g. a view of the packer's own buffer: never copied), and the digest.
    What a large commit stages, as chunks that are views of the payload (:meth:`chunks`)."""

    __slots__ = ("head", "payload", "digest")

    def __init__(self, head: bytes, payload: Any, digest: bytes) -> None:
        self.head, self.payload, self.digest = head, memoryview(payload).cast("B"), digest

    def __len__(self) -> int:
        return len(self.head) + len(self.payload) + len(self.digest)

    def __bytes__(self) -> bytes:
        return b"".join((self.head, self.payload, self.digest))

    def chunks(self, size: int) -> list[bytes | memoryview]:
        """The frame in pieces of ``size`` bytes (the last one shorter): views of the payload,
        but where a piece straddles the head or the digest (two pieces at most, copied)."""
        pieces: list[bytes | memoryview] = []
        total = len(self)
        head, payload_end = len(self.head), len(self.head) + len(self.payload)
        for start in range(0, total, size):
            end = min(start + size, total)
            if head <= start and end <= payload_end:
                pieces.append(self.payload[start - head:end - head])
                continue
            part = []
            if start < head:
                part.append(self.head[start:end])
            if start < payload_end and end > head:
                part.append(self.payload[max(start, head) - head:min(end, payload_end) - head])
            if end > payload_end:
                part.append(self.digest[max(start, payload_end) - payload_end:end - payload_end])
            pieces.append(b"".join(part))
        return pieces


def encode_frame(
    payload: bytes, *, run_id: str, generation: int, token: int, owner: str, created_ms: int,
    schema_version: int, metadata: dict | None = None, codec: int = CODEC_MSGPACK,
    compression: str = "none", level: int = 3,
) -> bytes:
    """Frame ``payload`` (an encoded state). ``metadata`` is encoded exactly, like state."""
    return bytes(encode_frame_parts(
        payload, run_id=run_id, generation=generation, token=token, owner=owner, created_ms=created_ms,
        schema_version=schema_version, metadata=metadata, codec=codec, compression=compression, level=level))


def encode_frame_parts(
    payload: bytes | memoryview, *, run_id: str, generation: int, token: int, owner: str, created_ms: int,
    schema_version: int, metadata: dict | None = None, codec: int = CODEC_MSGPACK,
    compression: str = "none", level: int = 3, metadata_limit: int | None = None,
) -> FrameParts:
    """:func:`encode_frame` without joining the pieces: the payload is not copied (unless
    compressed), so a large commit holds its state and its encoding, nothing more.
    ``metadata_limit``: metadata encoding to more bytes is :class:`StateTooLargeError`."""
    _require(isinstance(payload, (bytes, bytearray, memoryview)), "payload must be bytes")
    _require(type(run_id) is str and type(owner) is str, "run_id and owner must be str")
    for name, value, low, high in (("generation", generation, *HEADER_RANGES["gen"]),
                                   ("token", token, *HEADER_RANGES["token"]),
                                   ("created_ms", created_ms, *HEADER_RANGES["created_ms"]),
                                   ("schema_version", schema_version, 0, U32 - 1)):
        _require(type(value) is int and low <= value <= high, f"{name} must be an int in [{low}, {high}]")
    _require(codec in CODECS, f"unknown codec {codec!r}")
    _require(compression in COMPRESSION_IDS, f"compression must be 'none' or 'zstd', not {compression!r}")
    _require(metadata is None or type(metadata) is dict, "metadata must be a dict")
    fields = {
        "run": run_id, "gen": generation, "token": token, "owner": owner, "created_ms": created_ms,
        "meta": encode_state({} if metadata is None else metadata, root="metadata", limit=metadata_limit),
    }
    header = msgpack.packb(fields, use_bin_type=True)
    if compression == "zstd":
        compressor = zstd_module(run_id).ZstdCompressor(level=level, write_content_size=True, write_checksum=True)
        content_size = len(payload)
        payload = compressor.compress(payload)
        short = -(-content_size // MAX_ZSTD_RATIO) - (MIN_SIZE + len(header) + len(payload))
        if short > 0:  # compresses better than the reader accepts: pad the frame (package doc)
            header = msgpack.packb({**fields, "pad": bytes(short)}, use_bin_type=True)
    head = b"".join((
        PREFIX.pack(MAGIC, FORMAT_VERSION, codec, COMPRESSION_IDS[compression], 0, schema_version, len(header)),
        header, PAYLOAD_LEN.pack(len(payload)),
    ))
    digest = xxhash.xxh3_128(head)
    digest.update(payload)
    return FrameParts(head, payload, digest.digest())



def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)
