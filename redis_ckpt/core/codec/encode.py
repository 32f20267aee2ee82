"""Encoding a state: the fast path (plain.py) when the state is plain, else the careful
path (careful.py); either way exact, bounded by the caller's size limit, never torn. A
top-level dict holding values encoded before (spliced.py) is joined around them."""

from __future__ import annotations

import threading
from typing import Any

from ...errors import UnsupportedTypeError
from .careful import checked_size, encode_carefully, pack, pack_buffer, too_large
from .spliced import Encoded, array_header, encode_spliced, holds_encoded, map_header, mint
from .plain import OverLimit, pack_plain, scan


def encode_state(state: object, *, root: str = "state", limit: int | None = None) -> bytes:
    """Encode ``state`` exactly; :class:`UnsupportedTypeError` names the first field that cannot be.

    An encoding longer than ``limit`` bytes is :class:`StateTooLargeError`, raised as soon as
    it is known: before anything is copied when the strings and bytes inside already pass it.
    A state another thread changes meanwhile is a :class:`StateError`, never a torn payload.
    """
    return _encode(state, root, limit, as_buffer=False, top=True)  # type: ignore[return-value]


def encode_state_buffer(state: object, *, root: str = "state", limit: int | None = None) -> memoryview:
    """:func:`encode_state`, as a view of the packer's own buffer: no final copy (for large
    states, where every 16 MiB copy costs ~10 ms of page faults)."""
    return _encode(state, root, limit, as_buffer=True, top=True)  # type: ignore[return-value]


def _value(value: object, root: str, limit: int | None, depth: int) -> bytes:
    """The encoding of ``value``, to be stored ``depth`` container levels down in a state (so
    bounded to MAX_DEPTH - depth levels of its own: what decoding the whole state with
    max_depth=MAX_DEPTH, as fork and import do, accepts)."""
    return _encode(value, root, limit, as_buffer=False, top=False, depth=depth)  # type: ignore[return-value]


#: how deep a value spliced into a top-level dict is stored: encoded() and the plain values
#: beside it sit under a key of the top-level dict; an EncodedMap's values and an
#: EncodedList's items one level further down
_SPLICED_DEPTH = 1
_GROWN_DEPTH = 2


def _encode(state: object, root: str, limit: int | None, *, as_buffer: bool, top: bool,
            depth: int = 0) -> bytes | memoryview:
    try:
        keys = scan(state, limit, depth)  # an Encoded is no type it knows: None at the first level
    except OverLimit as over:
        raise too_large(root, over.spent, limit) from None  # type: ignore[arg-type]
    if keys is not None:
        out = pack_plain(state, keys, as_buffer)
        if out is not None:
            return checked_size(out, root, limit)  # type: ignore[no-any-return]
    if top and holds_encoded(state):
        out = encode_spliced(state, root, limit, lambda v, path, left: _value(v, path, left, _SPLICED_DEPTH))
        return memoryview(out) if as_buffer else out
    return encode_carefully(state, root, pack_buffer if as_buffer else pack, limit, depth)


def exactly_equal(a: object, b: object, *, root: str = "state") -> bool:
    """Whether ``a`` and ``b`` are the same state as this codec stores it: the same types and
    exact values (NaN is NaN; 1, True and 1.0 differ, so do 0.0 and -0.0, Decimal 1.0 and 1.00,
    datetimes of one instant in two zones), dict entries and set members in any order.
    :class:`UnsupportedTypeError` (naming ``root``) when either cannot be stored."""
    return encode_state(a, root=root) == encode_state(b, root=root) or _ordered(a) == _ordered(b)


def _ordered(value: Any) -> bytes:
    """The exact encoding of ``value`` with its dicts' entries and its sets' members sorted by
    their own (a value already encoded once, so well formed)."""
    kind = type(value)
    if kind is dict:
        return encode_state(["dict", sorted([_ordered(k), _ordered(v)] for k, v in value.items())])
    if kind is set or kind is frozenset:
        return encode_state([kind.__name__, sorted(_ordered(m) for m in value)])
    if kind is list or kind is tuple:
        return encode_state([kind.__name__, [_ordered(v) for v in value]])
    return encode_state(value)


def encoded(value: Any, *, root: str = "state") -> Encoded:
    """``value`` encoded now, to sit in a state's top-level dict (see spliced.py); refused,
    naming ``root``, when the codec cannot store it exactly there (also: containers nesting
    more than MAX_DEPTH - 1 levels, as for a plain value under a top-level key)."""
    data = _value(value, root, None, _SPLICED_DEPTH)
    return mint((data,), len(data))


#: held while an EncodedMap / EncodedList grows or is snapshot (a few microseconds): one lock
#: for all of them, so that they stay plain data (copied and pickled like before)
_GROWING = threading.Lock()


def _refused_whole(name: str) -> str:
    """The refusal of a growing map or list put in a state itself (see problems.py)."""
    return (f"an {name} is stored through its encoding: put its .encoded() in the state, directly under a key "
            "of the top-level dict")


class EncodedMap:
    """A dict with str keys, encoded one entry at a time and only ever appended to: each
    :meth:`add` encodes its key and value once; :meth:`encoded` is the whole dict's encoding
    (its entries in the order added), at the cost of joining their bytes, not of encoding them.
    Threads may add and take :meth:`encoded` at once: an encoding holds the entries added
    before it, its header counting exactly those."""

    __slots__ = ("_pieces", "_keys", "_size")
    REFUSED = _refused_whole("EncodedMap")

    def __init__(self) -> None:
        self._pieces: list[bytes] = []
        self._keys: set[str] = set()
        self._size = 0

    def __len__(self) -> int:
        return len(self._pieces)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def add(self, key: str, value: Any, *, root: str = "state") -> None:
        """Append ``key: value``; the key must be a str not added before (else nothing changes)."""
        if type(key) is not str:
            raise UnsupportedTypeError(f"{root}: an EncodedMap's keys are str, not {type(key).__name__}",
                                       path=root, type_name=type(key).__name__)
        if key in self._keys:
            raise ValueError(f"{root}: key {key!r} is already in the map")
        piece = _value(key, root, None, _GROWN_DEPTH) + _value(value, f"{root}[{key!r}]", None, _GROWN_DEPTH)
        with _GROWING:
            if key in self._keys:  # added by another thread meanwhile
                raise ValueError(f"{root}: key {key!r} is already in the map")
            self._keys.add(key)
            self._pieces.append(piece)
            self._size += len(piece)

    def encoded(self) -> Encoded:
        with _GROWING:
            pieces, size = tuple(self._pieces), self._size
        header = map_header(len(pieces))
        return mint((header, *pieces), len(header) + size)


class EncodedList:
    """A list encoded one item at a time and only ever appended to (as :class:`EncodedMap`)."""

    __slots__ = ("_pieces", "_size")
    REFUSED = _refused_whole("EncodedList")

    def __init__(self, items: Any = (), *, root: str = "state") -> None:
        self._pieces: list[bytes] = []
        self._size = 0
        for item in items:
            self.add(item, root=root)

    def __len__(self) -> int:
        return len(self._pieces)

    def add(self, item: Any, *, root: str = "state") -> None:
        piece = _value(item, f"{root}[{len(self._pieces)}]", None, _GROWN_DEPTH)
        with _GROWING:
            self._pieces.append(piece)
            self._size += len(piece)

    def encoded(self) -> Encoded:
        with _GROWING:
            pieces, size = tuple(self._pieces), self._size
        header = array_header(len(pieces))
        return mint((header, *pieces), len(header) + size)
