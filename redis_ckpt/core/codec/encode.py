"""Encoding a state: the fast path (plain.py) when the state is plain, else the careful
path (careful.py); either way exact, bounded by the caller's size limit, never torn."""

from __future__ import annotations

from .careful import checked_size, encode_carefully, pack, pack_buffer, too_large
from .plain import OverLimit, pack_plain, scan


def encode_state(state: object, *, root: str = "state", limit: int | None = None) -> bytes:
    """Encode ``state`` exactly; :class:`UnsupportedTypeError` names the first field that cannot be.

    An encoding longer than ``limit`` bytes is :class:`StateTooLargeError`, raised as soon as
    it is known: before anything is copied when the strings and bytes inside already pass it.
    A state another thread changes meanwhile is a :class:`StateError`, never a torn payload.
    """
    return _encode(state, root, limit, as_buffer=False)  # type: ignore[return-value]


def encode_state_buffer(state: object, *, root: str = "state", limit: int | None = None) -> memoryview:
    """:func:`encode_state`, as a view of the packer's own buffer: no final copy (for large
    states, where every 16 MiB copy costs ~10 ms of page faults)."""
    return _encode(state, root, limit, as_buffer=True)  # type: ignore[return-value]


def _encode(state: object, root: str, limit: int | None, *, as_buffer: bool) -> bytes | memoryview:
    try:
        keys = scan(state, limit)
    except OverLimit as over:
        raise too_large(root, over.spent, limit) from None  # type: ignore[arg-type]
    if keys is not None:
        out = pack_plain(state, keys, as_buffer)
        if out is not None:
            return checked_size(out, root, limit)  # type: ignore[no-any-return]
    return encode_carefully(state, root, pack_buffer if as_buffer else pack, limit)
