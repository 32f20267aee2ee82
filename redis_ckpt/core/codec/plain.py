"""The encoder's fast path, for a state made only of the types msgpack packs exactly and
without calling back into Python (None, bool, int within 64 bits, float, str, bytes, list, dict).

One breadth-first pass over the state (:func:`scan`), level by level in C
(``gc.get_referents``), looks at the set of types on each level - which bounds the depth and
rules out the types the packers would pack natively but lossily (``bytearray``/``memoryview``
would come back as ``bytes``; ``msgpack.ExtType``/``Timestamp``, ``ormsgpack.Ext``/``Fragment``
would alias our extensions) - and, under a size limit, spends a lower bound of the encoded
size (every item's ``len``, summed in C) so that a state over it is refused before the packer
copies anything. Then ``ormsgpack`` (Rust, ~2.5x msgpack's packer here) packs it: its bytes
are msgpack's own (tests pin them); it refuses every key but a str (so no NaN key passes it)
and, with its passthrough options and no ``default``, every type it would pack otherwise than
as itself (tests hold the whole matrix). A state with other keys, or without ormsgpack, is
packed by msgpack's C packer with ``strict_types``, whose ``default`` aborts the fast path;
where a float can sit in a dict key (a level of the scan that holds keys other than str), a
NaN float in its packed bytes sends the state to the careful path, which knows whether it is
a key. Neither packer calls back into Python nor releases the GIL, so the packing is atomic
with respect to other threads and never torn (ormsgpack reads a list's items up to the
length it read first: a ``default`` running Python while another thread shrinks the list
would make it read freed memory; it is given none). Residue, as on the careful path for
containers it does not copy: a bytearray another thread puts into the state between the scan
and the packing comes back as bytes. The scan costs about 2x what ormsgpack's packing does
(3x under a limit): this per-item type check is what exactness costs (no option of either
packer hands bytearray/memoryview to ``default``). A state whose non-str keys the scan cannot
tell apart (a dict on a level that also holds scalars) pays the part of a packing ormsgpack
does before it meets such a key.
"""

from __future__ import annotations

import gc
import re
import sys
from itertools import compress
from operator import gt, length_hint
from typing import Any

import msgpack

try:
    import ormsgpack
except ImportError:  # pragma: no cover - no wheel for this platform or Python: msgpack packs every state
    ormsgpack = None

from .tags import IN_C, MAX_DEPTH

_SCAN_CHUNK = 4096  # objects handed to one gc.get_referents call
#: items on one level past which the careful path takes over: the scan holds two levels,
#: 8 bytes an item (a state's own items take 8 bytes each in their container, and more)
_SCAN_CAP = 1 << 21
#: how msgpack starts a float 64 with the exponent's top bits all ones (NaN, infinity, or
#: past 2**1008); also found inside bin data or after an int: each only costs a careful
#: encode (never in valid UTF-8, where 0xcb needs 0x80-0xbf after it)
_HUGE_FLOAT = re.compile(rb"\xcb[\x7f\xff]")
_CONTAINERS_PLAIN = frozenset((list, dict))
_IS_DICT = frozenset((dict,)).__contains__
#: from Python 3.13 an object's own dict (``vars(obj)``) may keep its values inline in the
#: object, and gc.get_referents of that dict leaves them out (the object visits them): a
#: level holding one would hide what is below it (a bytearray packed as bin, any depth)
_INLINE_VALUES = sys.version_info >= (3, 13)
# What scan finds about the dict keys of a state that can take the fast path (0: every key
# may be a str: ormsgpack packs the state, or refuses a key that is not), or'ed:
FLOAT_KEYS = 1  # a float may be one: where msgpack packs the state, a NaN in it must be looked for
OTHER_KEYS = 2  # some dict has keys that are not all str: msgpack packs the state


class _NotPlain(Exception):
    """Raised by the fast path's default: the state holds a type the careful path must see."""


class OverLimit(Exception):
    """Raised by :func:`scan`: a lower bound of the encoded size is over the limit."""

    def __init__(self, spent: int) -> None:
        self.spent = spent


def scan(state: object, limit: int | None, depth: int = 0) -> int | None:
    """Whether ``state`` can take the fast path: what is known of its dict keys (0,
    FLOAT_KEYS, OTHER_KEYS or'ed) when every value in it is of an IN_C type and containers
    nest at most MAX_DEPTH levels; None when the careful path must look; :class:`OverLimit`
    (with a lower bound of the encoded size) when that is already over ``limit``.

    Breadth first, a level at a time, each step in C: the set of types on the level, the
    sum of its items' len() under a limit, then the next level (gc.get_referents: a list's
    items, a dict's values, and its keys too unless they are all str). The bound: every
    item takes at least one byte plus, for a str or bytes, its length; a container's len()
    counts one byte for each of its items (and 1 for the root's own header). Keys: on a
    level of containers alone, the next level holds keys exactly when it holds more items
    than the containers' lengths add up to. ``depth``: the level ``state`` itself is stored
    at (a value spliced into a state's top-level dict: 1, or 2 inside an EncodedMap/EncodedList).
    """
    level: list[Any] = [state]
    spent = 1
    keys = False  # whether this level may hold dict keys
    found = 0
    for depth in range(depth, MAX_DEPTH + 1):
        kinds = set(map(type, level))
        if not kinds <= IN_C:
            return None
        if keys and float in kinds:
            found |= FLOAT_KEYS
        if limit is not None:
            spent += sum(map(length_hint, level))
            if spent > limit:
                raise OverLimit(spent)
        if list not in kinds and dict not in kinds:
            return found
        if depth == MAX_DEPTH:
            return None  # a container at depth MAX_DEPTH: the careful path names it
        items = sum(map(len, level)) if dict in kinds and kinds <= _CONTAINERS_PLAIN else -1
        if len(level) == 1 and type(level[0]) is list:  # its items are the next level: no copy of them
            level = level[0]
            keys = False
            continue
        if len(level) <= _SCAN_CHUNK:
            below = gc.get_referents(*level)
        else:
            below = []
            for at in range(0, len(level), _SCAN_CHUNK):  # a cycle or shared subtrees grow levels fast
                below += gc.get_referents(*level[at:at + _SCAN_CHUNK])
                if len(below) > _SCAN_CAP:
                    return None
        if len(below) > _SCAN_CAP:
            return None
        if _INLINE_VALUES and dict in kinds and _hides_values(level, kinds):
            return None  # the careful path reads such a dict's values itself
        keys = dict in kinds and len(below) != items  # always, on a level that holds more than containers
        if keys and items >= 0:
            found |= OTHER_KEYS  # only a dict whose keys are not all str lets them be seen
        level = below
    return None


def _hides_values(level: list, kinds: set) -> bool:
    """Whether a dict on ``level`` has values gc.get_referents does not give (one whose values
    are inline in an object, from 3.13): it gives every other dict's values, and more. A
    get_referents call per dict, in C; only where Python has such dicts."""
    dicts = level if len(kinds) == 1 else list(compress(level, map(_IS_DICT, map(type, level))))
    return any(map(gt, map(len, dicts), map(len, map(gc.get_referents, dicts))))


def _may_hold_nan(packed: bytes | memoryview) -> bool:
    """Whether ``packed`` may hold a float NaN (exponent all ones, mantissa not zero)."""
    for found in _HUGE_FLOAT.finditer(packed):
        rest = bytes(packed[found.end():found.end() + 7])  # the other 7 bytes of the float
        if len(rest) == 7 and rest[0] >= 0xF0 and (rest[0] > 0xF0 or any(rest[1:])):
            return True
    return False


def _not_plain(value: object) -> object:
    raise _NotPlain


#: every type ormsgpack would pack otherwise than as itself (tuple as array, datetime as str,
#: subclass as its base, enum as its value, int past 64 bits, ...) goes to ``default``, and with
#: none given, is refused; what it still packs natively is an IN_C type or one scan rules
#: out (``bytearray``, ``memoryview``, its own ``Ext`` and, from 1.13, ``Fragment``)
ORM_STRICT = 0 if ormsgpack is None else (
    ormsgpack.OPT_PASSTHROUGH_TUPLE | ormsgpack.OPT_PASSTHROUGH_DATETIME | ormsgpack.OPT_PASSTHROUGH_UUID
    | ormsgpack.OPT_PASSTHROUGH_SUBCLASS | ormsgpack.OPT_PASSTHROUGH_BIG_INT | ormsgpack.OPT_PASSTHROUGH_DATACLASS
    | ormsgpack.OPT_PASSTHROUGH_ENUM)


def pack_plain(state: object, keys: int, as_buffer: bool) -> bytes | memoryview | None:
    """Pack a state :func:`scan` accepted (``keys``: what it found of the dict keys), or None
    when the careful path must encode it."""
    if not keys & OTHER_KEYS and ormsgpack is not None:
        try:  # it refuses every key but a str: no NaN key passes
            out = ormsgpack.packb(state, option=ORM_STRICT)  # no default: nothing calls back into Python
        except Exception:  # noqa: BLE001 - a key other than str, or as below
            pass
        else:
            return memoryview(out) if as_buffer else out
    try:
        out = _pack_plain(state, as_buffer)
    except Exception:  # noqa: BLE001 - _NotPlain, or anything the careful path will name
        return None
    if keys & FLOAT_KEYS and _may_hold_nan(out):  # a NaN may sit in a dict key: the careful path knows
        return None
    return out


def _pack_plain(state: object, as_buffer: bool) -> bytes | memoryview:
    """Pack a state :func:`scan` accepted; _NotPlain if it changed meanwhile (or holds an
    int beyond 64 bits). No Python code runs inside the packer, so no other thread does."""
    if not as_buffer:
        return msgpack.packb(state, use_bin_type=True, strict_types=True, default=_not_plain)
    packer = msgpack.Packer(use_bin_type=True, strict_types=True, default=_not_plain, autoreset=False)
    packer.pack(state)
    return packer.getbuffer()

