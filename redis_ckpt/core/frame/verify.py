"""Reading a frame: verify it (in the order the package's doc gives, each failure its own
:class:`FrameDamage`), decompress within the bomb bound, decode its payload."""

from __future__ import annotations

from typing import Any

import msgpack
import xxhash

from ...errors import FrameDamage, FrameError
from ..codec import CODEC_MSGPACK, decode_state
from .assemble import AssembledFrame, SplitPayload
from .build import FrameParts
from .layout import (
    CODECS, COMPRESSIONS, DIGEST_SIZE, FORMAT_VERSION, HEADER_FIELDS, HEADER_RANGES, MAGIC, MAX_ZSTD_RATIO, MIN_SIZE,
    PAYLOAD_LEN, PREFIX, FrameHeader, exact_fields, zstd_module,
)


def frame_checksum(frame: bytes | FrameParts | AssembledFrame) -> str:
    """The frame's recorded digest, in hex (not recomputed: :func:`read_header` verifies it)."""
    if isinstance(frame, (FrameParts, AssembledFrame)):
        return frame.digest.hex()
    if len(frame) < DIGEST_SIZE:
        raise FrameError(FrameDamage.TRUNCATED, f"{len(frame)} bytes cannot hold a checksum")
    return bytes(frame[-DIGEST_SIZE:]).hex()


def read_header(frame: bytes | AssembledFrame, *, run_id: str | None = None,
                generation: int | None = None) -> FrameHeader:
    """Verify the whole frame (checksum included) and return its header; nothing is decompressed."""
    if isinstance(frame, AssembledFrame):
        return _verify_assembled(frame, run_id, generation)
    return _verify(memoryview(frame), run_id, generation)[0]


def decode_frame(
    frame: bytes | AssembledFrame, *, run_id: str | None = None, generation: int | None = None,
    max_payload_bytes: int | None = None,
) -> tuple[FrameHeader, Any]:
    """Verify the frame and return its header and the decompressed payload (a view of the
    frame when it is not compressed: no copy; what :func:`decode_payload` takes).

    A payload larger than ``max_payload_bytes`` once decompressed is refused (UNDECODABLE)
    before it is decompressed.
    """
    if isinstance(frame, AssembledFrame):
        header = _verify_assembled(frame, run_id, generation)
        payload: Any = frame.payload
    else:
        header, payload = _verify(memoryview(frame), run_id, generation)
        if header.compression == "zstd":
            return header, _decompress(header, payload, max_payload_bytes, len(frame))
    if max_payload_bytes is not None and header.payload_size > max_payload_bytes:
        raise _damage(header, FrameDamage.UNDECODABLE,
                      f"payload of {header.payload_size} bytes exceeds the limit of {max_payload_bytes}")
    return header, payload


def decode_payload(header: FrameHeader, payload: Any, *, max_depth: int | None = None) -> object:
    """The state a decoded frame holds; a payload that does not decode (or nests deeper
    than ``max_depth``, see :func:`decode_state`) is UNDECODABLE."""
    if header.codec != CODEC_MSGPACK:
        raise _damage(header, FrameDamage.UNKNOWN_CODEC, f"codec id {header.codec}")
    try:
        if isinstance(payload, SplitPayload):
            return decode_state(payload.rest, max_depth=max_depth, leaves=payload.leaves)
        return decode_state(payload, max_depth=max_depth)
    except ValueError as exc:
        raise _damage(header, FrameDamage.UNDECODABLE, str(exc)) from None


def _verify(blob: memoryview, run_id: str | None, generation: int | None) -> tuple[FrameHeader, memoryview]:
    where: dict[str, Any] = {"run_id": run_id, "generation": generation}  # what errors name

    def fail(reason: FrameDamage, detail: str) -> FrameError:
        return FrameError(reason, detail, **where)

    size = len(blob)
    if bytes(blob[:4]) != MAGIC[:size]:
        raise fail(FrameDamage.BAD_MAGIC, f"starts with {bytes(blob[:4])!r}, not {MAGIC!r}")
    if size > 4 and blob[4] != FORMAT_VERSION:
        raise fail(FrameDamage.UNKNOWN_FORMAT, f"format version {blob[4]}; this code reads {FORMAT_VERSION}")
    if size < MIN_SIZE:
        raise fail(FrameDamage.TRUNCATED, f"{size} bytes; the smallest frame is {MIN_SIZE}")
    _, _, codec, compression_id, flags, schema_version, header_len = PREFIX.unpack_from(blob)
    payload_len_at = PREFIX.size + header_len
    if size < payload_len_at + PAYLOAD_LEN.size + DIGEST_SIZE:
        raise fail(FrameDamage.TRUNCATED, f"{size} bytes cannot hold the {header_len}-byte header it announces")
    (payload_len,) = PAYLOAD_LEN.unpack_from(blob, payload_len_at)
    payload_at = payload_len_at + PAYLOAD_LEN.size
    expected = payload_at + payload_len + DIGEST_SIZE
    if size < expected:
        raise fail(FrameDamage.TRUNCATED, f"{size} bytes; its length fields need {expected}")
    if size > expected:
        raise fail(FrameDamage.TRAILING_BYTES, f"{size} bytes; its length fields account for {expected}")
    digest_at = size - DIGEST_SIZE
    if xxhash.xxh3_128_digest(blob[:digest_at]) != blob[digest_at:]:
        raise fail(FrameDamage.CHECKSUM, "xxh3-128 digest does not match the content")
    header = _checked_header(blob[:payload_at], run_id, generation)
    return header, blob[payload_at:digest_at]


def _verify_assembled(frame: AssembledFrame, run_id: str | None, generation: int | None) -> FrameHeader:
    """:func:`_verify` for a frame read in pieces: its layout was checked while reading (or it
    would have been read whole), its digest computed on the way."""
    if not frame.digest_ok:
        raise FrameError(FrameDamage.CHECKSUM, "xxh3-128 digest does not match the content",
                         run_id=run_id, generation=generation)
    return _checked_header(memoryview(frame.head), run_id, generation)


def _checked_header(head: memoryview, run_id: str | None, generation: int | None) -> FrameHeader:
    """The header of a frame whose layout and checksum are verified (``head``: its bytes up
    to the payload), or the FrameError naming what is wrong with it."""
    where: dict[str, Any] = {"run_id": run_id, "generation": generation}

    def fail(reason: FrameDamage, detail: str) -> FrameError:
        return FrameError(reason, detail, **where)

    _, _, codec, compression_id, flags, schema_version, header_len = PREFIX.unpack_from(head)
    payload_len_at = PREFIX.size + header_len
    (payload_len,) = PAYLOAD_LEN.unpack_from(head, payload_len_at)
    if flags:
        raise fail(FrameDamage.UNKNOWN_FORMAT, f"flags {flags:#04x} are not defined in format {FORMAT_VERSION}")
    fields = _parse_header(head[PREFIX.size:payload_len_at])
    if type(fields) is str:
        raise fail(FrameDamage.BAD_HEADER, fields)
    where = {"run_id": fields["run"] if run_id is None else run_id,
             "generation": fields["gen"] if generation is None else generation}
    if codec not in CODECS:
        raise fail(FrameDamage.UNKNOWN_CODEC, f"codec id {codec}; this code knows {sorted(CODECS)}")
    if compression_id not in COMPRESSIONS:
        raise fail(FrameDamage.UNKNOWN_COMPRESSION,
                   f"compression id {compression_id}; this code knows {sorted(COMPRESSIONS)}")
    if run_id is not None and fields["run"] != run_id:
        raise fail(FrameDamage.WRONG_RUN, f"frame belongs to run {fields['run']!r}")
    if generation is not None and fields["gen"] != generation:
        raise fail(FrameDamage.WRONG_GENERATION, f"frame holds generation {fields['gen']}")
    header = FrameHeader(
        run_id=fields["run"], generation=fields["gen"], token=fields["token"], owner=fields["owner"],
        created_ms=fields["created_ms"], schema_version=schema_version, codec=codec,
        compression=COMPRESSIONS[compression_id], metadata=fields["meta"], payload_size=payload_len,
    )
    return header


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
    try:  # keys beyond these are allowed: a later writer of format 1 may add fields
        exact_fields(fields, HEADER_FIELDS)
    except ValueError as exc:
        return f"header {exc}"
    for name, (low, high) in HEADER_RANGES.items():
        if not low <= fields[name] <= high:
            return f"header field {name!r} is {fields[name]}, outside [{low}, {high}]"
    try:
        fields["meta"] = decode_state(fields["meta"])
    except ValueError as exc:
        return f"metadata does not decode: {exc}"
    if type(fields["meta"]) is not dict:
        return f"metadata is {type(fields['meta']).__name__}, not dict"
    return fields


def _decompress(header: FrameHeader, data: memoryview, limit: int | None, frame_size: int) -> bytes:
    zstd = zstd_module(header.run_id)
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
