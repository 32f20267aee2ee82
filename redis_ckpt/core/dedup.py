"""Shared chunks: a generation stored as content-addressed chunks that kept generations share.

Design (issue 16; opt-in, ``CheckpointStore(..., dedup=True)``, see the README for why):

* **What is chunked.** A frame of more than :data:`DEDUP_MIN_BYTES` (and only when the store
  has ``dedup``) is cut into its head, its payload and its digest (the frame's own xxh3-128
  over the whole state, unchanged). Only the payload is cut, at content-defined boundaries
  (FastCDC: the compiled ``fastcdc`` wheel, extra ``redis-ckpt[dedup]``; without it fixed
  pieces, which keep their boundaries under an append at the end of the payload only), in
  chunks of 32 KiB on average, larger for larger payloads (:data:`CLASSES`: each chunk is a
  key to write, rename and count), so an insertion moves no boundary but its own and the head, which
  changes every generation (generation, token, time), changes no chunk.
* **Where chunks live.** Each chunk under ``<ns>:{run}:x:<xxh3-128 hex of its bytes>``: in
  the run's hash slot, shared by every kept generation of the run that lists it, never by
  another run. ``g:<n>`` holds the generation's manifest (:func:`encode_manifest`): the
  chunks' addresses and lengths, the frame's head and digest, its own xxh3-128.
* **Reference counts.** ``<ns>:{run}:x:refs`` is a hash {address: number of kept generations
  listing it}. It changes only inside the fenced generation-CAS ``commit.lua`` (mode
  ``dedup``), in the same atomic step as the generation it describes: the script adds the
  new manifest's distinct addresses, subtracts those of every generation rotation drops
  (it reads their manifests itself), and deletes a chunk whose count reaches zero. Only the
  addresses whose count changes are touched, so a commit costs what changed.
* **What a commit sends.** The lease holder remembers the addresses of the run's generation
  it last committed or loaded (:class:`Held`): it stages (``stage:<cid>:<i>``, with a TTL,
  registered in the staging hash like any staged commit) only the chunks not among them.
  It also remembers that generation's chunks in order, so that
  cutting starts from them (:func:`split_parts`): a chunk whose address matches the bytes at
  its offset (or at its offset moved by the growth) is taken uncut, and only what changed is
  cut, with the boundaries a whole cut would give; every chunk is still hashed, and the
  frame's xxh3-128 still covers the whole state.
  The script answers ``NEED_CHUNKS <address> ...`` when the manifest lists a chunk the run
  does not hold, or one whose key is gone (the commit passes the key of every chunk of its
  manifest: one EXISTS per 4000 it reuses), and the commit did not stage it (nothing
  written), and ``NEED_FREE <address> ...`` when rotation frees chunks whose keys were not
  passed; the flow stages / passes them and sends again. A chunk's bytes are not read by a
  commit: a damaged one is found by a load, after which the process stages every chunk again. Staged chunks are renamed into ``x:<address>`` only if the script applies;
  a killed writer's staging is removed by the run's next commit or acquire, or expires.
* **Reading.** A load fetches a generation's chunks in pipelines of READ_BATCH_BYTES, checks each
  against its address and the whole frame against its digest; a damaged or missing chunk
  fails every generation that lists it (``verify``/``show`` name each, with the address),
  and the load falls back to the newest generation that does not list it.
* ``delete`` and ``prune`` remove the refs hash and every chunk it names (``delete.lua`` and
  ``prune.lua`` answer NEED_SHARED unless they got exactly those); export, import and fork carry whole,
  self-contained frames (stored as plain or chunked generations).
* Retention: a chunk outlives the generation that staged it, so it cannot expire with it.
  ``dedup`` refuses a store retention, and the script answers a ``dedup`` commit to a run
  whose head records one with RETAINED (nothing written): it is sent again as a plain
  generation, and the process sends the run's later commits (and any commit with a
  retention) as plain ones at once. The shared generations a run keeps when it comes under a retention expire
  with it: ``retain.lua`` (``finish``), and ``acquire.lua`` and ``commit.lua`` under a
  retention, give x:refs and every chunk it names the expiry they give the generations
  (those scripts need every such chunk's key: NEED_SHARED, nothing written, and the flow
  reads x:refs and sends again); an acquire under a retention the head does not record yet
  records it when the run holds shared chunks, so every later commit (RETAINED) and acquire
  moves their expiry on. A finished run leaves no chunk behind, and a chunk never expires
  before a kept generation that lists it.
* No command beyond the documented ACL line: ``EXISTS`` x:refs before reading a dropped
  generation, ``HGETALL`` for x:refs, ``GET`` for chunks.

Manifest layout (the addresses first and fixed-width, so that ``commit.lua`` reads them
without decoding anything)::

    0        4    magic b"RCKX"
    4        1    format version (1)
    5        4    N, number of chunks, u32 big-endian
    9        32N  the chunks' addresses, lowercase hex xxh3-128, in frame order
    9+32N    4    B, body length, u32
    13+32N   B    msgpack {"run": str, "gen": int, "size": int (whole frame), "head": bytes,
                           "digest": bytes (the frame's), "lengths": [int, ...] (N),
                           "avg": int (the average chunk it was cut with, see CLASSES)}
    13+32N+B 16   xxh3-128 of everything before
"""

from __future__ import annotations

import struct
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import xxhash

from ..errors import FrameDamage, FrameError
from .frame import FrameAssembler, FrameParts
from .frame.layout import exact_fields

__all__ = [
    "DEDUP_MIN_BYTES", "CLASSES", "RESYNC_TRIES", "NEAR_TRIES", "MAGIC", "Held", "SharedManifest", "chunk_class",
    "cut", "chunker_name",
    "address", "split_parts", "encode_manifest", "is_manifest", "read_manifest", "assemble",
]

MAGIC = b"RCKX"
_VERSION = 1
_PREFIX = struct.Struct(">4sBI")
_U32 = struct.Struct(">I")
_DIGEST = 16
_HEX = 32
#: frames above this are stored as shared chunks (a store with ``dedup``); smaller ones go
#: inline to the script as today (one key, nothing to share worth a manifest)
DEDUP_MIN_BYTES = 64 * 1024
#: FastCDC's sizes (bytes) for payloads up to 8 MiB: minimum, average, maximum. 32 KiB
#: chunks keep an append's new bytes per commit near 2-3 chunks (bench/incremental.py)
MIN_CHUNK, AVG_CHUNK, MAX_CHUNK = 16 * 1024, 32 * 1024, 128 * 1024
#: the average chunk per payload size (up to that many bytes: that average; minimum half
#: of it, maximum 4x). Every chunk is a key to send, rename and count: measured side by
#: side, a 64 MiB state with nothing to share committed in 2.4x today's time as 32 KiB
#: chunks and 1.0x as 128 KiB ones
CLASSES = ((8 << 20, AVG_CHUNK), (128 << 20, 128 << 10), (1 << 62, 512 << 10))
#: without the fastcdc wheel: fixed pieces of the class's average (stable under an append only)
FALLBACK_BYTES = AVG_CHUNK

try:  # the compiled chunker; its pure-Python fallback is far too slow to use
    from fastcdc.fastcdc_cy import fastcdc_cy as _fastcdc
except ImportError:  # pragma: no cover - depends on the extra
    _fastcdc = None


def chunker_name() -> str:
    return "fastcdc" if _fastcdc is not None else "fixed"


def chunk_class(size: int, held: int | None = None) -> int:
    """The average chunk for a payload of ``size`` bytes (see CLASSES). ``held``: the average
    the run's previous generation was cut with, kept while ``size`` stays within half and
    twice that class's range, so that a payload growing past a class limit is not cut anew
    (every boundary moved) at every step near it."""
    low = 0
    for limit, avg in CLASSES:
        if avg == held and low // 2 <= size <= 2 * limit:
            return held
        low = limit
    return next(avg for limit, avg in CLASSES if size <= limit)


def cut(payload: Any, avg: int = AVG_CHUNK, *, use_fastcdc: bool = True, first: bool = False) -> list[int]:
    """The lengths of ``payload``'s chunks of about ``avg`` bytes, in order (content-defined
    with fastcdc); ``first``: only the first chunk's."""
    view = memoryview(payload).cast("B")
    n = len(view)
    if n == 0:
        return []
    if _fastcdc is not None and use_fastcdc and n > avg // 2:
        chunks = _fastcdc(view, min_size=avg // 2, avg_size=avg, max_size=4 * avg)  # a generator
        return [next(chunks).length] if first else [c.length for c in chunks]
    piece = FALLBACK_BYTES * avg // AVG_CHUNK
    return [min(piece, n)] if first else [min(piece, n - i) for i in range(0, n, piece)]


def address(chunk: Any) -> str:
    """A chunk's address: the lowercase hex xxh3-128 of its bytes."""
    return xxhash.xxh3_128_hexdigest(chunk)


#: chunks cut in a row, none followed by one of the previous payload's, after which split_parts
#: cuts the rest in one go (a payload with nothing to reuse costs no more than a few lookups)
RESYNC_TRIES = 8
#: the previous chunks nearest a boundary tried there, past the likely offsets
NEAR_TRIES = 4


def split_parts(parts: FrameParts, avg: int = AVG_CHUNK,
                previous: Sequence[tuple[str, int]] = ()) -> list[tuple[str, memoryview]]:
    """(address, bytes) of each chunk of a frame's payload, views of it (never copied).

    ``previous``: (address, length) of the chunks, in order, of a payload cut with the same
    ``avg`` (the run's generation this process last committed or loaded). Where one of them
    starts a chunk of this payload - at its own offset, moved by what the payload or the last
    match moved, or one of the :data:`NEAR_TRIES` nearest within a maximum chunk (4 x ``avg``)
    of it - and its address matches the bytes there, it is taken without cutting; elsewhere
    one chunk is cut, and the same is tried where it ends (:data:`RESYNC_TRIES` misses in a
    row: the rest is cut). Every chunk
    but the previous payload's last may be taken: FastCDC ends a chunk at the first position
    past the minimum whose rolling hash of the bytes since the chunk's start fits the mask for
    that position, or at the maximum, or at the end of the data (only the last chunk, which
    is why it is cut again); the fixed fallback's boundaries depend on the position alone. So
    the result is what cutting the whole payload gives (tests/unit/test_dedup.py compares
    them over random edits), at the cost of cutting what changed.
    """
    payload = parts.payload
    size, most = len(payload), 4 * avg
    taken: dict[int, tuple[str, int]] = {}
    at = 0
    for addr, n in previous[:-1]:  # its last chunk ended where that payload did
        taken[at] = (addr, n)
        at += n
    before = at + (previous[-1][1] if previous else 0)
    starts = list(taken)  # in order
    moved = shift = size - before
    out: list[tuple[str, memoryview]] = []
    at = misses = 0

    def match(at: int, start: int) -> bool:
        if start not in taken:
            return False
        addr, n = taken[start]
        if at + n > size or address(payload[at:at + n]) != addr:
            return False
        out.append((addr, payload[at:at + n]))
        return True

    while at < size:
        if taken and misses < RESYNC_TRIES:
            if match(at, at - shift):  # the common case, first: the previous chunk where the last one led
                at += len(out[-1][1])
                misses = 0
                continue
            tried = dict.fromkeys((at - shift, at, at - moved))
            start = next((b for b in tried if match(at, b)), None)
            if start is None:
                near = starts[bisect_left(starts, at - most):bisect_right(starts, at + most)]
                closest = sorted((b for b in near if b not in tried), key=lambda b: abs(b - at))[:NEAR_TRIES]
                start = next((b for b in closest if match(at, b)), None)
            if start is not None:
                shift = at - start
                at += len(out[-1][1])
                misses = 0
                continue
        misses += 1
        for n in cut(payload[at:], avg, first=bool(taken) and misses < RESYNC_TRIES):
            piece = payload[at:at + n]
            out.append((address(piece), piece))
            at += n
    return out


@dataclass(frozen=True)
class SharedManifest:
    run_id: str
    generation: int
    size: int  # the whole frame
    head: bytes
    digest: bytes
    addresses: tuple[str, ...]
    lengths: tuple[int, ...]
    avg: int = AVG_CHUNK  # the average chunk it was cut with

    @property
    def distinct(self) -> frozenset[str]:
        return frozenset(self.addresses)


@dataclass(frozen=True)
class Held:
    """What the process knows a run holds: the addresses of its generation ``generation``
    (committed or loaded by this process), so counted in the run's refs while it is kept."""

    generation: int
    addresses: frozenset[str]
    avg: int = AVG_CHUNK  # the average chunk it was cut with
    #: (address, length) of its chunks in order: where the next commit's cut may start (split_parts)
    order: tuple[tuple[str, int], ...] = ()


def encode_manifest(run_id: str, generation: int, parts: FrameParts, chunks: Sequence[tuple[str, Any]],
                    avg: int = AVG_CHUNK) -> bytes:
    body = msgpack.packb({
        "run": run_id, "gen": generation, "size": len(parts), "head": bytes(parts.head),
        "digest": bytes(parts.digest), "lengths": [len(c) for _, c in chunks], "avg": avg,
    }, use_bin_type=True)
    addresses = "".join(a for a, _ in chunks).encode("ascii")
    blob = b"".join((_PREFIX.pack(MAGIC, _VERSION, len(chunks)), addresses, _U32.pack(len(body)), body))
    return blob + xxhash.xxh3_128_digest(blob)


def is_manifest(blob: Any) -> bool:
    return blob is not None and bytes(blob[:4]) == MAGIC


#: the manifest body's fields and their exact types (``avg``: AVG_CHUNK when missing)
_BODY_FIELDS = {"run": str, "gen": int, "size": int, "head": bytes, "digest": bytes, "lengths": list, "avg": int}


def _exact_fields(body: Any) -> tuple[str, int, int, bytes, bytes, tuple[int, ...], int]:
    """(run, gen, size, head, digest, lengths, avg) of a manifest's decoded body, each of its
    exact type, else ValueError. Nothing is converted before it is checked (exact_fields):
    ``bytes(n)`` of an int "head" would allocate n bytes (a MemoryError out of load instead
    of a fallback)."""
    try:
        run, gen, size, head, digest, lengths, avg = exact_fields(body, _BODY_FIELDS, {"avg": AVG_CHUNK})
    except ValueError as exc:
        raise ValueError(f"the body {exc}") from None
    if not set(map(type, lengths)) <= {int} or (lengths and min(lengths) < 0):
        raise ValueError("chunk lengths that are not sizes")
    return run, gen, size, head, digest, tuple(lengths), avg


def read_manifest(blob: bytes, *, run_id: str, generation: int) -> SharedManifest:
    """The verified manifest of generation ``generation``, else FrameError naming why."""
    def bad(reason: FrameDamage, detail: str) -> FrameError:
        return FrameError(reason, f"shared manifest: {detail}", run_id=run_id, generation=generation)

    view = memoryview(blob)
    if len(view) < _PREFIX.size + _U32.size + _DIGEST:
        raise bad(FrameDamage.TRUNCATED, f"{len(view)} bytes is shorter than any manifest")
    _, version, count = _PREFIX.unpack_from(view)
    if version != _VERSION:
        raise bad(FrameDamage.UNKNOWN_FORMAT, f"manifest version {version}")
    at = _PREFIX.size + _HEX * count
    if len(view) < at + _U32.size + _DIGEST:
        raise bad(FrameDamage.TRUNCATED, f"{len(view)} bytes cannot hold {count} addresses")
    (length,) = _U32.unpack_from(view, at)
    end = at + _U32.size + length
    if len(view) != end + _DIGEST:
        reason = FrameDamage.TRUNCATED if len(view) < end + _DIGEST else FrameDamage.TRAILING_BYTES
        raise bad(reason, f"{len(view)} bytes, the manifest says {end + _DIGEST}")
    if xxhash.xxh3_128_digest(view[:end]) != view[end:]:
        raise bad(FrameDamage.CHECKSUM, "xxh3-128 mismatch")
    try:
        text = bytes(view[_PREFIX.size:at]).decode("ascii")
        addresses = tuple(text[i:i + _HEX] for i in range(0, len(text), _HEX))
        body = msgpack.unpackb(view[at + _U32.size:end], raw=False)
        run, gen, size, head, digest, lengths, avg = _exact_fields(body)
        m = SharedManifest(run, gen, size, head, digest, addresses, lengths, avg)
    except (ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
        raise bad(FrameDamage.BAD_HEADER, f"unreadable body ({exc})") from None
    if len(m.lengths) != count or len(m.head) + sum(m.lengths) + len(m.digest) != m.size:
        raise bad(FrameDamage.BAD_HEADER, "chunk lengths do not add up to the frame's size")
    if m.run_id != run_id:
        raise bad(FrameDamage.WRONG_RUN, f"written for run {m.run_id!r}")
    if m.generation != generation:
        raise bad(FrameDamage.WRONG_GENERATION, f"written as generation {m.generation}")
    return m


#: chunk bytes a load asks for in one pipeline: a batch's values are copied into the frame and
#: freed before the next batch comes, so a large generation's chunks pass through the same
#: memory instead of all being held at once in fresh pages
READ_BATCH_BYTES = 8 << 20


def read_batches(lengths: Sequence[int], limit: int | None = None) -> Iterator[range]:
    """Consecutive index ranges of chunks of ``lengths``, each at most ``limit`` bytes
    (:data:`READ_BATCH_BYTES`), or one chunk."""
    limit = READ_BATCH_BYTES if limit is None else limit
    start, size = 0, 0
    for i, n in enumerate(lengths):
        if size and size + n > limit:
            yield range(start, i)
            start, size = i, 0
        size += n
    if start < len(lengths):
        yield range(start, len(lengths))


class SharedAssembler:
    """The frame of ``m`` from its chunks' values, added in manifest order (in as many pieces
    as the reader fetches them), each checked against its address: FrameError (MISSING or
    CHECKSUM, naming the chunk) at the first bad one."""

    def __init__(self, m: SharedManifest) -> None:
        self.m = m
        self.added = 0
        self._frame = FrameAssembler(m.size)
        self._frame.write(m.head)

    def add(self, data: Any) -> None:
        m, i = self.m, self.added
        addr = m.addresses[i]
        if data is None:
            raise FrameError(FrameDamage.MISSING, f"shared chunk {addr} ({i + 1} of {len(m.addresses)}) does not exist",
                             run_id=m.run_id, generation=m.generation)
        if len(data) != m.lengths[i] or address(data) != addr:
            raise FrameError(FrameDamage.CHECKSUM, f"shared chunk {addr} ({i + 1} of {len(m.addresses)}) "
                             "does not match its address", run_id=m.run_id, generation=m.generation)
        self._frame.write(data)
        self.added += 1

    def finish(self) -> Any:
        self._frame.write(self.m.digest)
        return self._frame.finish()


def assemble(m: SharedManifest, chunks: Iterable[Any]) -> Any:
    """The frame of ``m`` from all its chunks' values (see :class:`SharedAssembler`)."""
    assembler = SharedAssembler(m)
    for data in chunks:
        assembler.add(data)
    return assembler.finish()
