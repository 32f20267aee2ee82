"""Large generations: a frame split into bounded chunks, and the manifest that names them.

A frame longer than the store's ``chunk_bytes`` is stored as chunks ``g:<n>:c:<i>`` (each
at most ``chunk_bytes``) plus a small manifest under ``g:<n>``, so that no Lua argument,
reply or command is huge. The chunks are staged under ``stage:<commit id>:<i>`` with a TTL
before the commit script runs; the script renames them into place only if the commit
applies (and deletes them if it does not; the TTL covers a writer that dies in between).

Manifest layout (big-endian)::

    0     4   magic b"RCKM"
    4     1   manifest format version (1)
    5     4   body length B, u32
    9     B   msgpack map {"run": str, "gen": int, "size": int (whole frame),
                           "chunks": [xxh3-64 of each chunk, ...]}
    9+B   16  xxh3-128 of bytes [0, 9+B)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import msgpack
import xxhash

from ..errors import FrameDamage, FrameError
from .frame import FrameParts
from .frame.layout import exact_fields

__all__ = ["MANIFEST_MAGIC", "Manifest", "is_manifest", "split", "encode_manifest", "read_manifest", "check_chunk"]

MANIFEST_MAGIC = b"RCKM"
_VERSION = 1
_PREFIX = struct.Struct(">4sBI")
_DIGEST = 16
#: the manifest body's fields and their exact types
_BODY_FIELDS = {"run": str, "gen": int, "size": int, "chunks": list}


@dataclass(frozen=True)
class Manifest:
    run_id: str
    generation: int
    size: int
    chunk_sums: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.chunk_sums)


def is_manifest(blob: bytes | None) -> bool:
    return blob is not None and blob[:4] == MANIFEST_MAGIC


def split(frame: bytes | FrameParts, chunk_bytes: int) -> list[bytes | memoryview]:
    """Pieces of ``frame`` at most ``chunk_bytes`` long, views of it (of a FrameParts' payload:
    only the first and last piece, which take in its head and digest, are copies)."""
    if isinstance(frame, FrameParts):
        return frame.chunks(chunk_bytes)
    view = memoryview(frame)
    return [view[i : i + chunk_bytes] for i in range(0, len(frame), chunk_bytes)]


def encode_manifest(run_id: str, generation: int, chunks: list[memoryview]) -> bytes:
    body = msgpack.packb({
        "run": run_id, "gen": generation, "size": sum(len(c) for c in chunks),
        "chunks": [xxhash.xxh3_64_intdigest(c) for c in chunks],
    })
    head = _PREFIX.pack(MANIFEST_MAGIC, _VERSION, len(body)) + body
    return head + xxhash.xxh3_128_digest(head)


def read_manifest(blob: bytes, *, run_id: str, generation: int) -> Manifest:
    def bad(reason: FrameDamage, detail: str) -> FrameError:
        return FrameError(reason, f"manifest: {detail}", run_id=run_id, generation=generation)

    if len(blob) < _PREFIX.size + _DIGEST:
        raise bad(FrameDamage.TRUNCATED, f"{len(blob)} bytes is shorter than any manifest")
    magic, version, length = _PREFIX.unpack_from(blob)
    if version != _VERSION:
        raise bad(FrameDamage.UNKNOWN_FORMAT, f"manifest version {version}")
    end = _PREFIX.size + length
    if len(blob) < end + _DIGEST:
        raise bad(FrameDamage.TRUNCATED, f"{len(blob)} bytes, the manifest says {end + _DIGEST}")
    if len(blob) > end + _DIGEST:
        raise bad(FrameDamage.TRAILING_BYTES, f"{len(blob) - end - _DIGEST} bytes after the manifest")
    if xxhash.xxh3_128_digest(memoryview(blob)[:end]) != blob[end:]:
        raise bad(FrameDamage.CHECKSUM, "xxh3-128 mismatch")
    try:
        body = msgpack.unpackb(memoryview(blob)[_PREFIX.size:end], raw=False)
        try:
            run, gen, size, sizes = exact_fields(body, _BODY_FIELDS)
        except ValueError as exc:
            raise ValueError(f"the body {exc}") from None
        if not set(map(type, sizes)) <= {int}:
            raise ValueError("chunk sizes that are not ints")
        m = Manifest(run, gen, size, tuple(sizes))
    except (ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
        raise bad(FrameDamage.BAD_HEADER, f"unreadable body ({exc})") from None
    if m.run_id != run_id:
        raise bad(FrameDamage.WRONG_RUN, f"written for run {m.run_id!r}")
    if m.generation != generation:
        raise bad(FrameDamage.WRONG_GENERATION, f"written as generation {m.generation}")
    return m


def check_chunk(m: Manifest, index: int, data: bytes | None) -> None:
    """FrameError unless ``data`` is chunk ``index`` exactly as the manifest recorded it."""
    if data is None:
        raise FrameError(FrameDamage.MISSING, f"chunk {index} of {m.count} does not exist",
                         run_id=m.run_id, generation=m.generation)
    if xxhash.xxh3_64_intdigest(data) != m.chunk_sums[index]:
        raise FrameError(FrameDamage.CHECKSUM, f"chunk {index} of {m.count}: xxh3-64 mismatch",
                         run_id=m.run_id, generation=m.generation)
