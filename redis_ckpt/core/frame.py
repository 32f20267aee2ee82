"""One generation on the wire: a self-describing, length-prefixed, checksummed frame.

Layout (big-endian; H = header length, P = payload length)::

    offset      size  field
    0           4     magic b"RCKP"
    4           1     frame format version (1)
    5           1     codec id (1 = exact msgpack, see _codec)
    6           1     compression id (0 none, 1 zstd)
    7           1     flags (0; no flag is defined in format 1)
    8           4     schema version, u32
    12          4     header length H, u32
    16          H     header: msgpack map {"run": str, "gen": int, "token": int, "owner": str,
                      "created_ms": int, "meta": bin = user metadata dict encoded by _codec}
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
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import msgpack
import xxhash

from .codec import CODEC_MSGPACK, decode_state, encode_state
from ..errors import CodecUnavailableError, FrameDamage, FrameError
from ..models import MAX_MS, MIN_MS

__all__ = [
    "FORMAT_VERSION", "MAGIC", "MAX_ZSTD_RATIO", "FrameHeader",
    "encode_frame", "frame_checksum", "read_header", "decode_frame", "decode_payload",
]

MAGIC = b"RCKP"
FORMAT_VERSION = 1
_PREFIX = struct.Struct(">4sBBBBII")  # magic, format, codec, compression, flags, schema, header length
_PAYLOAD_LEN = struct.Struct(">Q")
_DIGEST_SIZE = 16
_MIN_SIZE = _PREFIX.size + _PAYLOAD_LEN.size + _DIGEST_SIZE  # empty header and payload
_CODECS = {CODEC_MSGPACK}
_COMPRESSIONS = {0: "none", 1: "zstd"}
_COMPRESSION_IDS = {name: cid for cid, name in _COMPRESSIONS.items()}
_HEADER_FIELDS = {"run": str, "gen": int, "token": int, "owner": str, "created_ms": int, "meta": bytes}
_U32, _I64 = 2**32, 2**63
#: the most a zstd payload may expand, relative to the whole stored frame (see the module doc)
MAX_ZSTD_RATIO = 1000
#: the inclusive range of each int header field: what encode_frame accepts, and what a
#: reader can turn into a Python object (created_ms: a datetime) without failing
_HEADER_RANGES = {"gen": (0, _I64 - 1), "token": (0, _I64 - 1), "created_ms": (MIN_MS, MAX_MS)}


@dataclass(frozen=True)
class FrameHeader:
    """What a verified frame says about itself (everything but the payload)."""

    run_id: str
    generation: int
    token: int
    owner: str
    created_ms: int
    schema_version: int
    codec: int
    compression: str  # "none" | "zstd"
    metadata: dict = field(hash=False)  # user metadata, exact types
    payload_size: int  # stored (possibly compressed) payload length


def encode_frame(
    payload: bytes, *, run_id: str, generation: int, token: int, owner: str, created_ms: int,
    schema_version: int, metadata: dict | None = None, codec: int = CODEC_MSGPACK,
    compression: str = "none", level: int = 3,
) -> bytes:
    """Frame ``payload`` (an encoded state). ``metadata`` is encoded exactly, like state."""
    _require(isinstance(payload, (bytes, bytearray, memoryview)), "payload must be bytes")
    _require(type(run_id) is str and type(owner) is str, "run_id and owner must be str")
    for name, value, low, high in (("generation", generation, *_HEADER_RANGES["gen"]),
                                   ("token", token, *_HEADER_RANGES["token"]),
                                   ("created_ms", created_ms, *_HEADER_RANGES["created_ms"]),
                                   ("schema_version", schema_version, 0, _U32 - 1)):
        _require(type(value) is int and low <= value <= high, f"{name} must be an int in [{low}, {high}]")
    _require(codec in _CODECS, f"unknown codec {codec!r}")
    _require(compression in _COMPRESSION_IDS, f"compression must be 'none' or 'zstd', not {compression!r}")
    _require(metadata is None or type(metadata) is dict, "metadata must be a dict")
    fields = {
        "run": run_id, "gen": generation, "token": token, "owner": owner, "created_ms": created_ms,
        "meta": encode_state({} if metadata is None else metadata, root="metadata"),
    }
    header = msgpack.packb(fields, use_bin_type=True)
    if compression == "zstd":
        compressor = _zstd(run_id).ZstdCompressor(level=level, write_content_size=True, write_checksum=True)
        content_size = len(payload)
        payload = compressor.compress(payload)
        short = -(-content_size // MAX_ZSTD_RATIO) - (_MIN_SIZE + len(header) + len(payload))
        if short > 0:  # compresses better than the reader accepts: pad the frame (module doc)
            header = msgpack.packb({**fields, "pad": bytes(short)}, use_bin_type=True)
    head = b"".join((
        _PREFIX.pack(MAGIC, FORMAT_VERSION, codec, _COMPRESSION_IDS[compression], 0, schema_version, len(header)),
        header, _PAYLOAD_LEN.pack(len(payload)),
    ))
    digest = xxhash.xxh3_128(head)
    digest.update(payload)
    return b"".join((head, payload, digest.digest()))  # the payload is copied once, here


def frame_checksum(frame: bytes) -> str:
    """The frame's recorded digest, in hex (not recomputed: :func:`read_header` verifies it)."""
    if len(frame) < _DIGEST_SIZE:
        raise FrameError(FrameDamage.TRUNCATED, f"{len(frame)} bytes cannot hold a checksum")
    return bytes(frame[-_DIGEST_SIZE:]).hex()


def read_header(frame: bytes, *, run_id: str | None = None, generation: int | None = None) -> FrameHeader:
    """Verify the whole frame (checksum included) and return its header; nothing is decompressed."""
    return _verify(memoryview(frame), run_id, generation)[0]


def decode_frame(
    frame: bytes, *, run_id: str | None = None, generation: int | None = None,
    max_payload_bytes: int | None = None,
) -> tuple[FrameHeader, bytes]:
    """Verify the frame and return its header and the decompressed payload.

    A payload larger than ``max_payload_bytes`` once decompressed is refused (UNDECODABLE)
    before it is decompressed.
    """
    header, payload = _verify(memoryview(frame), run_id, generation)
    if header.compression == "zstd":
        return header, _decompress(header, payload, max_payload_bytes, len(frame))
    if max_payload_bytes is not None and len(payload) > max_payload_bytes:
        raise _damage(header, FrameDamage.UNDECODABLE,
                      f"payload of {len(payload)} bytes exceeds the limit of {max_payload_bytes}")
    return header, bytes(payload)


def decode_payload(header: FrameHeader, payload: bytes, *, max_depth: int | None = None) -> object:
    """The state a decoded frame holds; a payload that does not decode (or nests deeper
    than ``max_depth``, see :func:`decode_state`) is UNDECODABLE."""
    if header.codec != CODEC_MSGPACK:
        raise _damage(header, FrameDamage.UNKNOWN_CODEC, f"codec id {header.codec}")
    try:
        return decode_state(payload, max_depth=max_depth)
    except ValueError as exc:
        raise _damage(header, FrameDamage.UNDECODABLE, str(exc)) from None


# ---------------------------------------------------------------- verification


def _verify(blob: memoryview, run_id: str | None, generation: int | None) -> tuple[FrameHeader, memoryview]:
    where: dict[str, Any] = {"run_id": run_id, "generation": generation}  # what errors name

    def fail(reason: FrameDamage, detail: str) -> FrameError:
        return FrameError(reason, detail, **where)

    size = len(blob)
    if bytes(blob[:4]) != MAGIC[:size]:
        raise fail(FrameDamage.BAD_MAGIC, f"starts with {bytes(blob[:4])!r}, not {MAGIC!r}")
    if size > 4 and blob[4] != FORMAT_VERSION:
        raise fail(FrameDamage.UNKNOWN_FORMAT, f"format version {blob[4]}; this code reads {FORMAT_VERSION}")
    if size < _MIN_SIZE:
        raise fail(FrameDamage.TRUNCATED, f"{size} bytes; the smallest frame is {_MIN_SIZE}")
    _, _, codec, compression_id, flags, schema_version, header_len = _PREFIX.unpack_from(blob)
    payload_len_at = _PREFIX.size + header_len
    if size < payload_len_at + _PAYLOAD_LEN.size + _DIGEST_SIZE:
        raise fail(FrameDamage.TRUNCATED, f"{size} bytes cannot hold the {header_len}-byte header it announces")
    (payload_len,) = _PAYLOAD_LEN.unpack_from(blob, payload_len_at)
    payload_at = payload_len_at + _PAYLOAD_LEN.size
    expected = payload_at + payload_len + _DIGEST_SIZE
    if size < expected:
        raise fail(FrameDamage.TRUNCATED, f"{size} bytes; its length fields need {expected}")
    if size > expected:
        raise fail(FrameDamage.TRAILING_BYTES, f"{size} bytes; its length fields account for {expected}")
    digest_at = size - _DIGEST_SIZE
    if xxhash.xxh3_128_digest(blob[:digest_at]) != blob[digest_at:]:
        raise fail(FrameDamage.CHECKSUM, "xxh3-128 digest does not match the content")
    if flags:
        raise fail(FrameDamage.UNKNOWN_FORMAT, f"flags {flags:#04x} are not defined in format {FORMAT_VERSION}")
    fields = _parse_header(blob[_PREFIX.size:payload_len_at])
    if type(fields) is str:
        raise fail(FrameDamage.BAD_HEADER, fields)
    where = {"run_id": fields["run"] if run_id is None else run_id,
             "generation": fields["gen"] if generation is None else generation}
    if codec not in _CODECS:
        raise fail(FrameDamage.UNKNOWN_CODEC, f"codec id {codec}; this code knows {sorted(_CODECS)}")
    if compression_id not in _COMPRESSIONS:
        raise fail(FrameDamage.UNKNOWN_COMPRESSION,
                   f"compression id {compression_id}; this code knows {sorted(_COMPRESSIONS)}")
    if run_id is not None and fields["run"] != run_id:
        raise fail(FrameDamage.WRONG_RUN, f"frame belongs to run {fields['run']!r}")
    if generation is not None and fields["gen"] != generation:
        raise fail(FrameDamage.WRONG_GENERATION, f"frame holds generation {fields['gen']}")
    header = FrameHeader(
        run_id=fields["run"], generation=fields["gen"], token=fields["token"], owner=fields["owner"],
        created_ms=fields["created_ms"], schema_version=schema_version, codec=codec,
        compression=_COMPRESSIONS[compression_id], metadata=fields["meta"], payload_size=payload_len,
    )
    return header, blob[payload_at:digest_at]


def _parse_header(raw: memoryview) -> dict[str, Any] | str:
    """The header's fields with ``meta`` decoded, or why it is not a valid header.

    Every field is checked to be one this code could have written, so that turning it into
    a Python object later (a datetime, a key name) cannot fail.
    """
    n = len(raw)
    try:
        fields = msgpack.unpackb(raw, raw=False, use_list=True, max_str_len=n, max_bin_len=n,
                                 max_array_len=n, max_map_len=n // 2, max_ext_len=n)
    except (ValueError, TypeError, msgpack.UnpackException):
        return "header is not msgpack"
    if type(fields) is not dict or not _HEADER_FIELDS.keys() <= fields.keys():
        return "header is not a map holding run, gen, token, owner, created_ms and meta"
    # keys beyond these are allowed: a later writer of format 1 may add fields
    for name, kind in _HEADER_FIELDS.items():
        if type(fields[name]) is not kind:
            return f"header field {name!r} is {type(fields[name]).__name__}, not {kind.__name__}"
    for name, (low, high) in _HEADER_RANGES.items():
        if not low <= fields[name] <= high:
            return f"header field {name!r} is {fields[name]}, outside [{low}, {high}]"
    try:
        fields["meta"] = decode_state(fields["meta"])
    except ValueError as exc:
        return f"metadata does not decode: {exc}"
    if type(fields["meta"]) is not dict:
        return f"metadata is {type(fields['meta']).__name__}, not dict"
    return fields


# ---------------------------------------------------------------- compression


def _zstd(run_id: str | None) -> ModuleType:
    try:
        import zstandard
    except ImportError:
        raise CodecUnavailableError("zstd compression (the zstandard package)", extra="zstd",
                                    run_id=run_id) from None
    return zstandard


def _decompress(header: FrameHeader, data: memoryview, limit: int | None, frame_size: int) -> bytes:
    zstd = _zstd(header.run_id)
    try:
        size = zstd.frame_content_size(data)
    except zstd.ZstdError as exc:
        raise _damage(header, FrameDamage.UNDECODABLE, f"zstd frame header: {exc}") from None
    if size < 0:
        raise _damage(header, FrameDamage.UNDECODABLE, "zstd frame does not record its content size")
    if size > frame_size * MAX_ZSTD_RATIO:
        raise _damage(header, FrameDamage.UNDECODABLE,
                      f"zstd content of {size} bytes is more than {MAX_ZSTD_RATIO} times the "
                      f"{frame_size}-byte frame (a decompression bomb, or damage)")
    if limit is not None and size > limit:
        raise _damage(header, FrameDamage.UNDECODABLE,
                      f"payload of {size} bytes once decompressed exceeds the limit of {limit}")
    try:
        out = zstd.ZstdDecompressor().decompress(data)  # writes into a buffer of exactly `size`
    except zstd.ZstdError as exc:
        raise _damage(header, FrameDamage.UNDECODABLE, f"zstd: {exc}") from None
    if len(out) != size:
        raise _damage(header, FrameDamage.UNDECODABLE, f"zstd gave {len(out)} bytes, not the recorded {size}")
    return out


def _damage(header: FrameHeader, reason: FrameDamage, detail: str) -> FrameError:
    return FrameError(reason, detail, run_id=header.run_id, generation=header.generation)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)
