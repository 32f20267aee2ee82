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

Large frames, in as little memory as the state: a writer keeps a frame in its parts
(:class:`FrameParts`: head, payload as packed, digest) and stores chunks that are views of
the payload; a reader of a chunked frame (:class:`FrameAssembler`) reads each bin of at
least :data:`LEAF_MIN_BYTES` straight into the bytes object the decoded state will hold,
computing the digest on the way (:class:`AssembledFrame`). Peak memory above the state,
256 MiB of bytes: 2.0x -> 1.02x for a commit, 3.0x -> 1.16x for a load.
"""

from __future__ import annotations

import io
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
    "FORMAT_VERSION", "MAGIC", "MAX_ZSTD_RATIO", "FrameHeader", "FrameParts", "AssembledFrame", "FrameAssembler",
    "encode_frame", "encode_frame_parts", "frame_checksum", "read_header", "decode_frame", "decode_payload",
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
    compression: str = "none", level: int = 3,
) -> FrameParts:
    """:func:`encode_frame` without joining the pieces: the payload is not copied (unless
    compressed), so a large commit holds its state and its encoding, nothing more."""
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
    return FrameParts(head, payload, digest.digest())


def frame_checksum(frame: bytes | FrameParts | AssembledFrame) -> str:
    """The frame's recorded digest, in hex (not recomputed: :func:`read_header` verifies it)."""
    if isinstance(frame, (FrameParts, AssembledFrame)):
        return frame.digest.hex()
    if len(frame) < _DIGEST_SIZE:
        raise FrameError(FrameDamage.TRUNCATED, f"{len(frame)} bytes cannot hold a checksum")
    return bytes(frame[-_DIGEST_SIZE:]).hex()


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
        if isinstance(payload, _SplitPayload):
            return decode_state(payload.rest, max_depth=max_depth, leaves=payload.leaves)
        return decode_state(payload, max_depth=max_depth)
    except ValueError as exc:
        raise _damage(header, FrameDamage.UNDECODABLE, str(exc)) from None


# ---------------------------------------------------------------- reading a chunked frame

#: a bin at least this long is read straight into its own bytes object (see FrameAssembler)
LEAF_MIN_BYTES = 1 << 20
#: msgpack objects the assembler parses before it takes the rest as it comes: 4096, or one per
#: 4 KiB of payload (the walk costs a few percent of the load at most)
_WALK_BUDGET = 4096
_HEAD_MAX = 16 << 20  # a header longer than this (huge metadata) is read the plain way
_PLACEHOLDER = struct.Struct(">BbI")  # fixext 4, ext code LEAF_EXT, the leaf's index
#: ext code of a placeholder for a bin read on its own; never written into a stored payload
LEAF_EXT = 127


def _object_sizes() -> list[tuple[int, int]]:
    """Per msgpack lead byte: (bytes before the data, width of the length field at offset 1),
    with the data length fixed (0) when the width is 0; fixstr is special-cased."""
    table = [(1, 0)] * 256  # fixints, nil, bool, fixmap, fixarray: one byte, items follow
    for lead, size in ((0xCA, 5), (0xCB, 9), (0xCC, 2), (0xCD, 3), (0xCE, 5), (0xCF, 9),
                       (0xD0, 2), (0xD1, 3), (0xD2, 5), (0xD3, 9), (0xD4, 3), (0xD5, 4), (0xD6, 6),
                       (0xD7, 10), (0xD8, 18), (0xDC, 3), (0xDD, 5), (0xDE, 3), (0xDF, 5)):
        table[lead] = (size, 0)
    for lead, width in ((0xC4, 1), (0xC5, 2), (0xC6, 4), (0xD9, 1), (0xDA, 2), (0xDB, 4)):
        table[lead] = (1 + width, width)  # bin / str: length, data
    for lead, width in ((0xC7, 1), (0xC8, 2), (0xC9, 4)):
        table[lead] = (2 + width, width)  # ext: length, type, data
    table[0xC1] = (0, 0)  # never used: the walk stops, msgpack will name it
    return table


_OBJECT_SIZES = _object_sizes()


class _SplitPayload:
    """A payload read in pieces: ``rest`` with each long bin replaced by a placeholder
    extension naming its index in ``leaves`` (the bins' contents)."""

    __slots__ = ("rest", "leaves")

    def __init__(self, rest: bytes, leaves: list[bytes]) -> None:
        self.rest, self.leaves = rest, leaves


class AssembledFrame:
    """A chunked frame as :class:`FrameAssembler` read it: its head, its payload in pieces
    (long bins apart, each its own bytes object) and its digest, checked while reading.
    :func:`decode_frame`, :func:`read_header` and :func:`frame_checksum` take it like the
    frame's bytes; ``bytes()`` rebuilds those (for an export)."""

    __slots__ = ("head", "payload", "cuts", "digest", "digest_ok", "size")

    def __init__(self, head: bytes, payload: _SplitPayload, cuts: list[tuple[int, bytes]], digest: bytes,
                 digest_ok: bool, size: int) -> None:
        self.head, self.payload, self.cuts = head, payload, cuts
        self.digest, self.digest_ok, self.size = digest, digest_ok, size

    def __len__(self) -> int:
        return self.size

    def __bytes__(self) -> bytes:
        pieces: list[bytes | memoryview] = [self.head]
        rest, at = memoryview(self.payload.rest), 0
        for (where, bin_head), leaf in zip(self.cuts, self.payload.leaves):
            pieces += (rest[at:where], bin_head, leaf)
            at = where + _PLACEHOLDER.size
        pieces += (rest[at:], self.digest)
        return b"".join(pieces)


class FrameAssembler:
    """Reads a frame of ``size`` bytes from its chunks, in order, into as little memory as
    the state it holds: each bin of at least :data:`LEAF_MIN_BYTES` goes straight into a
    bytes object of its own (a BytesIO's buffer, which getvalue() hands over), which the
    decoded state then holds (no second copy of it), while the digest is computed on the
    way. :meth:`finish` returns an :class:`AssembledFrame`, or the frame's bytes when it is
    read whole (compressed, too short to hold a long bin, a head this code did not write,
    or incomplete: then the plain verification names what is wrong).

    The payload is walked object header by object header (msgpack is a prefix code: no
    nesting to track) for at most :data:`_WALK_BUDGET` objects (more in a large payload);
    past that, the rest of it is kept as it comes.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.written = 0
        self._whole: io.BytesIO | None = None
        self._pending = bytearray()  # head bytes, then unparsed payload bytes
        self._head: bytes | None = None
        self._payload_end = 0  # offset of the digest in the frame
        self._hash = xxhash.xxh3_128()
        self._rest = io.BytesIO()
        self._cuts: list[tuple[int, bytes]] = []
        self._leaves: list[io.BytesIO] = []
        self._leaf_left = 0  # bytes of the current long bin still to come
        self._copy_left = 0  # bytes of the current object to keep as they come
        self._budget = _WALK_BUDGET
        self._digest = bytearray()

    def write(self, data: bytes) -> None:
        self.written += len(data)
        if self._whole is not None:
            self._whole.write(data)
            return
        view = memoryview(data)
        if self._head is None:
            self._pending += view
            if not self._read_head():
                return
            view, self._pending = memoryview(bytes(self._pending)), bytearray()  # the payload so far
            at = len(self._head)  # type: ignore[arg-type]
        else:
            at = self.written - len(data)  # frame offset of view[0]
        if at + len(view) > self._payload_end:  # the digest (or trailing bytes) begins in this piece
            cut = max(self._payload_end - at, 0)
            self._digest += view[cut:]
            view = view[:cut]
        self._hash.update(view)
        self._route(view)

    def _read_head(self) -> bool:
        """True once the head is complete and the frame worth splitting; else keep waiting, or
        switch to reading it whole."""
        pending = self._pending
        if len(pending) < _PREFIX.size:
            return False
        magic, version, codec, compression, _, _, header_len = _PREFIX.unpack_from(pending)
        head_len = _PREFIX.size + header_len + _PAYLOAD_LEN.size
        if (magic != MAGIC or version != FORMAT_VERSION or codec != CODEC_MSGPACK or compression != 0
                or header_len > _HEAD_MAX or self.size < head_len + LEAF_MIN_BYTES + _DIGEST_SIZE):
            self._go_whole()
            return False
        if len(pending) < head_len:
            return False
        (payload_len,) = _PAYLOAD_LEN.unpack_from(pending, head_len - _PAYLOAD_LEN.size)
        if head_len + payload_len + _DIGEST_SIZE != self.size:
            self._go_whole()
            return False
        self._head = bytes(pending[:head_len])
        self._hash.update(self._head)
        self._payload_end = head_len + payload_len
        self._budget = max(_WALK_BUDGET, payload_len >> 12)
        del pending[:head_len]
        return True

    def _go_whole(self) -> None:
        # grown as bytes arrive (a large buffer grows in place: realloc remaps its pages), never
        # sized from a length field ahead of them: a forged one cannot make a reader allocate
        self._whole = io.BytesIO()
        self._whole.write(self._pending)
        self._pending = bytearray()

    def _route(self, view: memoryview) -> None:
        while view:
            if self._leaf_left:
                n = min(self._leaf_left, len(view))
                self._leaves[-1].write(view[:n])
                self._leaf_left -= n
                view = view[n:]
            elif self._copy_left or not self._budget:
                n = len(view) if not self._budget else min(self._copy_left, len(view))
                self._rest.write(view[:n])
                self._copy_left -= min(n, self._copy_left)
                view = view[n:]
            else:
                self._pending += view
                view = self._walk()

    def _walk(self) -> memoryview:
        """Parse object headers from the pending bytes; return what the routing goes on with."""
        pending = self._pending
        at = 0
        while self._budget and at < len(pending):
            lead = pending[at]
            size, width = _OBJECT_SIZES[lead]
            if size == 0:  # 0xc1: never valid; keep everything as it comes
                self._budget = 0
                break
            if at + size > len(pending):
                break  # the header is not all here yet
            self._budget -= 1
            if width:
                data_len = int.from_bytes(pending[at + 1:at + 1 + width], "big")
            else:
                data_len = lead & 0x1F if 0xA0 <= lead <= 0xBF else 0
            if lead == 0xC6 and data_len >= LEAF_MIN_BYTES:
                self._rest.write(pending[:at])
                self._cuts.append((self._rest.tell(), bytes(pending[at:at + size])))
                self._rest.write(_PLACEHOLDER.pack(0xD6, LEAF_EXT, len(self._leaves)))
                self._leaves.append(io.BytesIO())  # grown as the bin's bytes arrive (see _go_whole)
                self._leaf_left = data_len
                rest = memoryview(bytes(pending[at + size:]))
                self._pending = bytearray()
                return rest
            at += size
            if data_len:
                if at + data_len > len(pending):  # the data runs on into later pieces
                    self._copy_left = at + data_len - len(pending)
                    at = len(pending)
                    break
                at += data_len
        self._rest.write(pending[:at])
        if self._budget:
            del pending[:at]
            return memoryview(b"")
        rest = memoryview(bytes(pending[at:]))  # walked enough: the rest as it comes
        self._pending = bytearray()
        return rest

    def finish(self) -> bytes | AssembledFrame:
        if self._whole is not None:
            return self._whole.getvalue()
        if self._head is None or self._pending or self._leaf_left or self._copy_left:
            return bytes(self)  # incomplete: the plain verification names what is wrong
        rest = self._rest.getvalue()
        leaves = [leaf.getvalue() for leaf in self._leaves]
        digest = bytes(self._digest)
        return AssembledFrame(self._head, _SplitPayload(rest, leaves), self._cuts, digest,
                              self._hash.digest() == digest, self.written)

    def __bytes__(self) -> bytes:
        """What was written, joined (only where the frame turned out not worth splitting)."""
        pieces: list[Any] = [self._head or b""]
        rest, at = memoryview(self._rest.getvalue()), 0
        for (where, bin_head), leaf in zip(self._cuts, self._leaves):
            pieces += (rest[at:where], bin_head, leaf.getvalue())
            at = where + _PLACEHOLDER.size
        pieces += (rest[at:], self._pending, self._digest)
        return b"".join(pieces)


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

    _, _, codec, compression_id, flags, schema_version, header_len = _PREFIX.unpack_from(head)
    payload_len_at = _PREFIX.size + header_len
    (payload_len,) = _PAYLOAD_LEN.unpack_from(head, payload_len_at)
    if flags:
        raise fail(FrameDamage.UNKNOWN_FORMAT, f"flags {flags:#04x} are not defined in format {FORMAT_VERSION}")
    fields = _parse_header(head[_PREFIX.size:payload_len_at])
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
