"""Reading a chunked frame in as little memory as the state it holds.

A writer keeps a frame in its parts (build.FrameParts: head, payload as packed, digest) and stores chunks that are views of
the payload; a reader of a chunked frame (:class:`FrameAssembler`) reads each bin of at
least :data:`LEAF_MIN_BYTES` straight into the bytes object the decoded state will hold,
computing the digest on the way (:class:`AssembledFrame`). Peak memory above the state,
256 MiB of bytes: 2.0x -> 1.02x for a commit, 3.0x -> 1.16x for a load.
"""

from __future__ import annotations

import io
import struct
from typing import Any

import xxhash

from ..codec import CODEC_MSGPACK
from ..codec.tags import LEAF_EXT
from .layout import DIGEST_SIZE, FORMAT_VERSION, MAGIC, PAYLOAD_LEN, PREFIX

#: a bin at least this long is read straight into its own bytes object (see FrameAssembler)
LEAF_MIN_BYTES = 1 << 20
#: msgpack objects the assembler parses before it takes the rest as it comes: 4096, or one per
#: 4 KiB of payload (the walk costs a few percent of the load at most)
_WALK_BUDGET = 4096
_HEAD_MAX = 16 << 20  # a header longer than this (huge metadata) is read the plain way
_PLACEHOLDER = struct.Struct(">BbI")  # fixext 4, ext code LEAF_EXT, the leaf's index


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


def _head_size(header_len: int) -> int:
    """The bytes of a frame's head: its prefix, its header (``header_len``), the payload's length."""
    return PREFIX.size + header_len + PAYLOAD_LEN.size


class SplitPayload:
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

    def __init__(self, head: bytes, payload: SplitPayload, cuts: list[tuple[int, bytes]], digest: bytes,
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
            # only the head's bytes are kept aside; the payload that follows it in this piece
            # is routed as it is (a piece of a chunked frame is megabytes: never copied whole)
            while self._head is None:
                want = self._head_wanted()
                self._pending += view[:want]
                view = view[want:]
                if self._read_head():
                    break
                if self._whole is not None:  # not worth splitting: the rest goes in whole
                    self._whole.write(view)
                    return
                if not view:
                    return
            at = len(self._head)  # type: ignore[arg-type]
        else:
            at = self.written - len(data)  # frame offset of view[0]
        if at + len(view) > self._payload_end:  # the digest (or trailing bytes) begins in this piece
            cut = max(self._payload_end - at, 0)
            self._digest += view[cut:]
            view = view[:cut]
        self._hash.update(view)
        self._route(view)

    def _head_wanted(self) -> int:
        """Bytes the head still needs: the prefix's first, then the rest of the head."""
        pending = self._pending
        if len(pending) < PREFIX.size:
            return PREFIX.size - len(pending)
        return max(_head_size(PREFIX.unpack_from(pending)[-1]) - len(pending), 0)

    def _read_head(self) -> bool:
        """True once the head is complete and the frame worth splitting; else keep waiting, or
        switch to reading it whole."""
        pending = self._pending
        if len(pending) < PREFIX.size:
            return False
        magic, version, codec, compression, _, _, header_len = PREFIX.unpack_from(pending)
        head_len = _head_size(header_len)
        if (magic != MAGIC or version != FORMAT_VERSION or codec != CODEC_MSGPACK or compression != 0
                or header_len > _HEAD_MAX or self.size < head_len + LEAF_MIN_BYTES + DIGEST_SIZE):
            self._go_whole()
            return False
        if len(pending) < head_len:
            return False
        (payload_len,) = PAYLOAD_LEN.unpack_from(pending, head_len - PAYLOAD_LEN.size)
        if head_len + payload_len + DIGEST_SIZE != self.size:
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
                if self._pending:  # a header split across pieces (a few bytes): joined to this one
                    view = memoryview(bytes(self._pending) + bytes(view))
                    self._pending = bytearray()
                view = self._walk(view)

    def _walk(self, buf: memoryview) -> memoryview:
        """Parse object headers from ``buf``; return what the routing goes on with (a header
        cut off at its end waits in the pending bytes for the next piece)."""
        at, end = 0, len(buf)
        while self._budget and at < end:
            lead = buf[at]
            size, width = _OBJECT_SIZES[lead]
            if size == 0:  # 0xc1: never valid; keep everything as it comes
                self._budget = 0
                break
            if at + size > end:
                break  # the header is not all here yet
            self._budget -= 1
            if width:
                data_len = int.from_bytes(buf[at + 1:at + 1 + width], "big")
            else:
                data_len = lead & 0x1F if 0xA0 <= lead <= 0xBF else 0
            if lead == 0xC6 and data_len >= LEAF_MIN_BYTES:
                self._rest.write(buf[:at])
                self._cuts.append((self._rest.tell(), bytes(buf[at:at + size])))
                self._rest.write(_PLACEHOLDER.pack(0xD6, LEAF_EXT, len(self._leaves)))
                self._leaves.append(io.BytesIO())  # grown as the bin's bytes arrive (see _go_whole)
                self._leaf_left = data_len
                return buf[at + size:]
            at += size
            if data_len:
                if at + data_len > end:  # the data runs on into later pieces
                    self._copy_left = at + data_len - end
                    at = end
                    break
                at += data_len
        self._rest.write(buf[:at])
        if self._budget:
            self._pending += buf[at:]
            return memoryview(b"")
        return buf[at:]  # walked enough: the rest as it comes

    def finish(self) -> bytes | AssembledFrame:
        if self._whole is not None:
            return self._whole.getvalue()
        if self._head is None or self._pending or self._leaf_left or self._copy_left:
            return bytes(self)  # incomplete: the plain verification names what is wrong
        rest = self._rest.getvalue()
        leaves = [leaf.getvalue() for leaf in self._leaves]
        digest = bytes(self._digest)
        return AssembledFrame(self._head, SplitPayload(rest, leaves), self._cuts, digest,
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
