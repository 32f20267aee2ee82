"""Values the codec already encoded, emitted verbatim when a state holds them.

A state that grows by appending (the step runner's results: one entry per completed step,
never changed once stored) need not be encoded whole at every commit: its owner keeps the
encoding of what it stored and a commit encodes only what is new. :class:`Encoded` is such
an encoding; encode.py's ``encoded()`` and ``EncodedMap`` are the only ways to make one, and
both run the value through this codec (``encode_state``), so the bytes are exactly
what encoding the value itself gives (a test pins them byte for byte): decoding needs
nothing new, a payload with spliced parts reads back with the exact types that went in, and
the frame's checksum covers every byte as before. A state written before these existed
decodes as it always did.

Where one may sit: a value of the state's top-level dict, whose keys must then be str (no
NaN or other key to check). Anywhere else it is a type the codec does not know, refused
with :class:`UnsupportedTypeError` naming its path. The top-level dict's other values are
encoded as usual, each under what is left of the size limit. Every piece is checked at the
depth it is stored at (a value under a top-level key at depth 1, an EncodedMap's values and an
EncodedList's items at 2): a state accepted here is one fork and import accept.
"""

from __future__ import annotations

import struct
from typing import Any

from msgpack import packb

from ...errors import StateTooLargeError, UnsupportedTypeError
from .careful import checked_size, too_large

__all__ = ["Encoded", "map_header", "array_header", "mint", "holds_encoded", "encode_spliced"]

_MINT = object()  # the constructor's key: only this module makes an Encoded


class Encoded:
    """One value's encoding, as this codec produced it (immutable; ``parts`` joined)."""

    __slots__ = ("parts", "size")
    #: the refusal of an Encoded anywhere but a top-level value (see problems.py)
    REFUSED = ("an Encoded value can sit only directly under a key of the top-level dict of a state (or of "
               "metadata), not inside another container")

    def __init__(self, parts: tuple[bytes, ...], size: int, *, _key: object = None) -> None:
        if _key is not _MINT:
            raise TypeError("an Encoded is made by redis_ckpt.core.codec.encoded() or EncodedMap, from a value")
        self.parts = parts
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return f"<Encoded {self.size} bytes>"


def map_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x80 | n,))
    if n < 1 << 16:
        return b"\xde" + struct.pack(">H", n)
    return b"\xdf" + struct.pack(">I", n)


def array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 1 << 16:
        return b"\xdc" + struct.pack(">H", n)
    return b"\xdd" + struct.pack(">I", n)


def mint(parts: tuple[bytes, ...], size: int) -> Encoded:
    """An Encoded of ``parts``: only for encode.py, which made them with the codec."""
    return Encoded(parts, size, _key=_MINT)


def holds_encoded(state: object) -> bool:
    """Whether ``state`` is a dict with an :class:`Encoded` among its values."""
    return type(state) is dict and Encoded in set(map(type, state.values()))


def encode_spliced(state: dict, root: str, limit: int | None, encode: Any) -> bytes:
    """The encoding of ``state`` (a top-level dict holding Encoded values): its header, then
    each key and value, an Encoded one as it is, every other through ``encode(value, root,
    limit)``; over ``limit`` is :class:`StateTooLargeError` as soon as it is known."""
    items = list(state.items())  # one atomic copy of the pairs: another thread may change the dict
    parts: list[bytes | memoryview] = [map_header(len(items))]
    spent = len(parts[0])
    for key, value in items:
        if type(key) is not str:
            raise UnsupportedTypeError(
                f"{root}: a state holding Encoded values has str keys only, not {type(key).__name__} ({key!r})",
                path=root, type_name=type(key).__name__)
        path = f"{root}[{key!r}]"
        try:
            key_bytes = packb(key)  # a str's encoding, as either path packs it
        except UnicodeEncodeError:  # a lone surrogate: the codec names it
            key_bytes = encode(key, path, None)
        parts.append(key_bytes)
        spent += len(key_bytes)
        if type(value) is Encoded:
            parts.extend(value.parts)
            spent += value.size
        else:
            try:
                data = encode(value, path, None if limit is None else max(limit - spent, 0))
            except StateTooLargeError as exc:  # over what was left: say so of the whole state, its limit
                raise too_large(root, spent + exc.size, limit) from None  # type: ignore[arg-type]
            parts.append(data)
            spent += len(data)
        if limit is not None and spent > limit:
            raise too_large(root, spent, limit)
    return checked_size(b"".join(parts), root, limit)  # type: ignore[no-any-return]
