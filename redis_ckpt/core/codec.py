"""The exact-type state codec: msgpack with extension types, no pickle.

A value comes back with the type it went in with (``type(x) is T``) and an equal
value, or it is refused at encode time with :class:`UnsupportedTypeError` naming
where it sits. Supported, exact types only (subclasses are refused):

* ``None``, ``bool``, ``int`` (any size), ``float`` (nan, inf, -0.0), ``str``
  (valid UTF-8), ``bytes``, ``bytearray``;
* ``list``, ``tuple``, ``dict`` (any supported hashable key), ``set``, ``frozenset``;
* ``datetime.datetime`` / ``datetime.time`` (naive, or with ``datetime.timezone``
  or a keyed ``zoneinfo.ZoneInfo``; ``fold`` kept), ``datetime.date``,
  ``datetime.timedelta``, ``decimal.Decimal`` (NaN, sNaN, -0, exponents), ``uuid.UUID``.

Containers may nest at most :data:`MAX_DEPTH` levels; cycles are refused. A NaN
(float or Decimal) anywhere inside a dict key or a set member is refused: it could
not be looked up after a round trip.

Wire form: plain msgpack for None/bool/int64/float/str/bytes/list/dict; a tuple,
set or frozenset is an array whose first item is an empty marker extension
(``[ext 2, *items]``), so containers never nest msgpack calls (each nested C
unpack puts ~40 KB on the C stack: nested extension payloads segfault at ~180
levels); every other type is one leaf extension (codes below).

Encoding a state made only of the types msgpack packs exactly and without calling back into
Python (None, bool, int within 64 bits, float, str, bytes, list, dict) takes the fast path
(``_plain``): one breadth-first pass over the state, level by level in C
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

Every other state takes the careful path: one pass (``_prepare``) visits every container
(never a leaf on its own), refuses the lossy types above, checks keys for NaN, bounds the
depth, and:

* spends a lower bound of the encoded size (a byte per item plus the length of each
  str/bytes/bytearray item, summed in C) against the caller's limit, so a state over it
  is refused before the packer copies anything (peak memory of a refused 300 MiB commit:
  0.97x the state, was 1.97x); the exact size is checked after packing;
* hands the packer a private shallow copy of each list/dict whose packing calls back
  into Python (see ``_prepare``), so another thread changing the state yields a torn
  but valid snapshot or a ``StateError``, never an invalid payload.

Only when encoding fails does a second, slow walk (``_find_problem``) find the path
to report.

Decoding runs msgpack's C unpacker with an ``ext_hook`` for the leaf extensions; the
``list_hook`` that turns a marked array into a tuple or set runs only when the payload can
hold a marker (an empty ext 8, bytes ``c7 00``, which valid UTF-8 never contains). A
payload read in pieces (frame.FrameAssembler) comes with its long bins apart: each
placeholder extension (code 127, never stored) is replaced by its bytes object, as is.
"""

from __future__ import annotations

import datetime as dt
import decimal
import gc
import math
import re
import reprlib
import uuid
import zoneinfo
from collections.abc import Callable
from itertools import compress
from operator import length_hint
from typing import Any

import msgpack
from msgpack import ExtType, Timestamp

try:
    import ormsgpack
except ImportError:  # pragma: no cover - no wheel for this platform or Python: msgpack packs every state
    ormsgpack = None

from ..errors import StateError, StateTooLargeError, UnsupportedTypeError

__all__ = [
    "CODEC_MSGPACK", "MAX_DEPTH", "UNPACK_MAX_DEPTH", "encode_state", "encode_state_buffer", "decode_state"]

CODEC_MSGPACK = 1
MAX_DEPTH = 128  # container levels: far inside msgpack's nesting limits and Python's recursion limit

# Extension type codes (stable: they are stored in checkpoints).
_BIGINT = 1  # int outside the signed 64-bit range: two's-complement big-endian bytes
_TUPLE = 2  # empty marker, first item of the array that holds the items
_SET = 3  # likewise
_FROZENSET = 4  # likewise
_DATETIME = 5  # packed [year, month, day, hour, minute, second, microsecond, fold, tz]
_DATE = 6  # packed [year, month, day]
_TIME = 7  # packed [hour, minute, second, microsecond, fold, tz]
_TIMEDELTA = 8  # packed [days, seconds, microseconds]
_DECIMAL = 9  # ASCII str(d)
_UUID = 10  # 16 bytes
_BYTEARRAY = 11  # the bytes
# tz above: nil (naive) | [offset_us] | [offset_us, name] (datetime.timezone) | key str (ZoneInfo)

_CONTAINERS = (list, tuple, dict, set, frozenset)
_CONTAINER_SET = frozenset(_CONTAINERS)
#: packed by msgpack's C code without calling back into Python (an int: within 64 bits)
_IN_C = frozenset((type(None), bool, int, float, str, bytes, list, dict))
#: each encodes to at least its len() in bytes (a str: len() characters, >= 1 byte each in UTF-8)
_SIZED = frozenset((str, bytes, bytearray))
_FOREIGN = (memoryview, ExtType, Timestamp)  # packed natively by msgpack but not round-tripped
# Types in a value position that _prepare must look at; in a key/member position also NaN-capable ones.
_LOOK_AT_VALUE = frozenset((*_CONTAINERS, bytearray, *_FOREIGN))
_LOOK_AT_KEY = _LOOK_AT_VALUE | {float, decimal.Decimal}
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1
_ONE_US = dt.timedelta(microseconds=1)


class _Refused(Exception):
    """Raised inside the fast path; the slow walk then says what and where."""


class _TooLarge(Exception):
    """Raised as soon as the size spent passes the limit."""


class _Budget:
    """A lower bound of the encoded size, spent container by container (:func:`_spend`)
    before the packer copies anything, against ``limit`` (None: no limit)."""

    __slots__ = ("limit", "spent")

    def __init__(self, limit: int | None) -> None:
        self.limit: float = math.inf if limit is None else limit
        self.spent = 0


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
        keys = _plain(state, limit)
    except _OverLimit as over:
        raise _too_large(root, over.spent, limit) from None  # type: ignore[arg-type]
    if keys is not None:
        if not keys & _OTHER_KEYS and ormsgpack is not None:
            try:  # it refuses every key but a str: no NaN key passes
                out = ormsgpack.packb(state, option=_ORM_STRICT)  # no default: nothing calls back into Python
            except Exception:  # noqa: BLE001 - a key other than str, or as below
                pass
            else:
                return _checked_size(memoryview(out) if as_buffer else out, root, limit)
        try:
            out = _pack_plain(state, as_buffer)
        except Exception:  # noqa: BLE001 - _NotPlain, or anything the careful path will name
            pass
        else:
            if not keys & _FLOAT_KEYS or not _may_hold_nan(out):  # a NaN may sit in a dict key: the careful path knows
                return _checked_size(out, root, limit)
    return _encode_carefully(state, root, _pack_buffer if as_buffer else _pack, limit)


def _checked_size(out: Any, root: str, limit: int | None) -> Any:
    if limit is not None and len(out) > limit:
        raise StateTooLargeError(
            f"{root} encodes to {len(out)} bytes, more than the limit of {limit} (max_state_bytes)",
            size=len(out), limit=limit,
        )
    return out


def _too_large(root: str, spent: int, limit: int) -> StateTooLargeError:
    return StateTooLargeError(
        f"{root} encodes to at least {spent} bytes, more than the limit of {limit} (max_state_bytes)",
        size=spent, limit=limit,
    )


def _encode_carefully(state: object, root: str, pack: Any, limit: int | None) -> bytes | memoryview:
    budget = _Budget(limit)
    try:
        out = pack(_prepare_root(state, budget))
    except _TooLarge:
        raise _too_large(root, budget.spent, limit) from None  # type: ignore[arg-type]
    except (_Refused, TypeError, ValueError, OverflowError, RecursionError) as exc:
        # UnicodeEncodeError (lone surrogate) is a ValueError; RecursionError only on a stack already deep.
        cause: BaseException = exc
    except RuntimeError as exc:  # "dictionary changed size during iteration"
        raise _changed(root, exc) from None
    else:
        return _checked_size(out, root, limit)  # type: ignore[no-any-return]
    try:
        problem = _find_problem(state, root, 0, {}, in_key=False)
    except RecursionError:
        problem = None
    except RuntimeError as exc:
        raise _changed(root, exc) from None
    if problem is None:  # the walks disagree: never expected, still never a silent success
        problem = UnsupportedTypeError(
            f"{root} cannot be encoded: {cause}", path=root, type_name=type(state).__name__
        )
    raise problem from None


def _changed(root: str, exc: BaseException) -> StateError:
    return StateError(f"{root} changed while it was being encoded ({exc}): another thread is modifying "
                      "it; commit a copy, or hold one lock around the changes and the commit")


#: nesting msgpack's C unpacker refuses (a fixed stack); every load is bounded by it
UNPACK_MAX_DEPTH = 1024


def decode_state(payload: bytes | memoryview, *, max_depth: int | None = None,
                 leaves: list[bytes] | None = None) -> object:
    """Decode what :func:`encode_state` wrote. Anything else raises ``ValueError``.

    Nesting is bounded by msgpack's own :data:`UNPACK_MAX_DEPTH`; ``max_depth`` (e.g.
    :data:`MAX_DEPTH`, what encoding allows) bounds it further, at the cost of a walk over
    every container of the result (import pays it, load does not).

    ``leaves``: the contents of long bins a chunked read set apart (frame.FrameAssembler),
    each named in ``payload`` by a placeholder extension and used exactly once, as is.
    """
    try:
        value = _unpack(payload, leaves)
    except msgpack.StackError:
        raise ValueError(f"containers nested more than {UNPACK_MAX_DEPTH} levels deep") from None
    except ValueError:
        raise
    except (TypeError, KeyError, OverflowError, RecursionError,
            decimal.InvalidOperation, msgpack.UnpackException, OSError) as exc:
        raise ValueError(f"not a valid state payload: {type(exc).__name__}: {exc}") from None
    if max_depth is not None and type(value) in _CONTAINER_SET and _too_deep(value, 0, max_depth):
        raise ValueError(f"containers nested more than {max_depth} levels deep")
    return value


def _too_deep(value: Any, depth: int, limit: int) -> bool:
    """Whether containers nest deeper than ``limit`` levels inside ``value`` (a container)."""
    if depth >= limit:
        return True
    items = (*value, *value.values()) if type(value) is dict else value
    if _CONTAINER_SET.isdisjoint(map(type, items)):
        return False
    return any(type(item) in _CONTAINER_SET and _too_deep(item, depth + 1, limit) for item in items)


# ---------------------------------------------------------------- fast path (plain states)

#: packed exactly by msgpack's C code without calling back into Python (an int: within 64 bits)
_PLAIN = frozenset((type(None), bool, int, float, str, bytes, list, dict))
_SCAN_CHUNK = 4096  # objects handed to one gc.get_referents call
#: items on one level past which the careful path takes over: the scan holds two levels,
#: 8 bytes an item (a state's own items take 8 bytes each in their container, and more)
_SCAN_CAP = 1 << 21
#: how msgpack starts a float 64 with the exponent's top bits all ones (NaN, infinity, or
#: past 2**1008); also found inside bin data or after an int: each only costs a careful
#: encode (never in valid UTF-8, where 0xcb needs 0x80-0xbf after it)
_HUGE_FLOAT = re.compile(rb"\xcb[\x7f\xff]")
_CONTAINERS_PLAIN = frozenset((list, dict))
# What _plain finds about the dict keys of a state that can take the fast path (0: every key
# may be a str: ormsgpack packs the state, or refuses a key that is not), or'ed:
_FLOAT_KEYS = 1  # a float may be one: where msgpack packs the state, a NaN in it must be looked for
_OTHER_KEYS = 2  # some dict has keys that are not all str: msgpack packs the state


class _NotPlain(Exception):
    """Raised by the fast path's default: the state holds a type the careful path must see."""


class _OverLimit(Exception):
    """Raised by :func:`_plain`: a lower bound of the encoded size is over the limit."""

    def __init__(self, spent: int) -> None:
        self.spent = spent


def _plain(state: object, limit: int | None) -> int | None:
    """Whether ``state`` can take the fast path: what is known of its dict keys (0,
    _FLOAT_KEYS, _OTHER_KEYS or'ed) when every value in it is of a _PLAIN type and containers
    nest at most MAX_DEPTH levels; None when the careful path must look; :class:`_OverLimit`
    (with a lower bound of the encoded size) when that is already over ``limit``.

    Breadth first, a level at a time, each step in C: the set of types on the level, the
    sum of its items' len() under a limit, then the next level (gc.get_referents: a list's
    items, a dict's values, and its keys too unless they are all str). The bound: every
    item takes at least one byte plus, for a str or bytes, its length; a container's len()
    counts one byte for each of its items (and 1 for the root's own header). Keys: on a
    level of containers alone, the next level holds keys exactly when it holds more items
    than the containers' lengths add up to.
    """
    level: list[Any] = [state]
    spent = 1
    keys = False  # whether this level may hold dict keys
    found = 0
    for depth in range(MAX_DEPTH + 1):
        kinds = set(map(type, level))
        if not kinds <= _PLAIN:
            return None
        if keys and float in kinds:
            found |= _FLOAT_KEYS
        if limit is not None:
            spent += sum(map(length_hint, level))
            if spent > limit:
                raise _OverLimit(spent)
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
        keys = dict in kinds and len(below) != items  # always, on a level that holds more than containers
        if keys and items >= 0:
            found |= _OTHER_KEYS  # only a dict whose keys are not all str lets them be seen
        level = below
    return None


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
#: none given, is refused; what it still packs natively is a _PLAIN type or one _plain rules
#: out (``bytearray``, ``memoryview``, its own ``Ext`` and, from 1.13, ``Fragment``)
_ORM_STRICT = 0 if ormsgpack is None else (
    ormsgpack.OPT_PASSTHROUGH_TUPLE | ormsgpack.OPT_PASSTHROUGH_DATETIME | ormsgpack.OPT_PASSTHROUGH_UUID
    | ormsgpack.OPT_PASSTHROUGH_SUBCLASS | ormsgpack.OPT_PASSTHROUGH_BIG_INT | ormsgpack.OPT_PASSTHROUGH_DATACLASS
    | ormsgpack.OPT_PASSTHROUGH_ENUM)


def _pack_plain(state: object, as_buffer: bool) -> bytes | memoryview:
    """Pack a state :func:`_plain` accepted; _NotPlain if it changed meanwhile (or holds an
    int beyond 64 bits). No Python code runs inside the packer, so no other thread does."""
    if not as_buffer:
        return msgpack.packb(state, use_bin_type=True, strict_types=True, default=_not_plain)
    packer = msgpack.Packer(use_bin_type=True, strict_types=True, default=_not_plain, autoreset=False)
    packer.pack(state)
    return packer.getbuffer()


# ---------------------------------------------------------------- careful path


def _prepare_root(state: Any, budget: _Budget) -> Any:
    """``state`` ready for the packer; a top-level str/bytes over the limit is refused before any copy."""
    kind = type(state)
    budget.spent = 1 + len(state) if kind in _SIZED else 1
    if budget.spent > budget.limit:
        raise _TooLarge
    return _prepare(state, 0, budget) if kind in _LOOK_AT_VALUE else state


def _spend(budget: _Budget, items: Any, types: set, extra: int = 0) -> None:
    """Spend a lower bound of the encoded size of ``items`` (whose item types are ``types``):
    a byte each, plus the length of each str/bytes/bytearray; _TooLarge past the limit."""
    n = len(items) + extra
    if not _SIZED.isdisjoint(types):
        if types <= _SIZED:
            n += sum(map(len, items))
        elif n <= 32:  # a plain loop beats the iterator chain below on small containers
            for item in items:
                if type(item) in _SIZED:
                    n += len(item)
        else:
            n += sum(map(len, compress(items, map(_SIZED.__contains__, map(type, items)))))
    budget.spent += n
    if budget.spent > budget.limit:
        raise _TooLarge


def _prepare(value: Any, depth: int, budget: _Budget) -> Any:
    """Check ``value`` (a type in _LOOK_AT_VALUE) for the C packer - depth, foreign types, NaN
    keys - and spend the size of its items. Returns ``value`` itself, or what to pack instead:
    an ExtType for a bytearray; for a list or dict, a private shallow copy (holding its prepared
    children) whenever a child was replaced or packing it would call back into Python.

    Why the copy: msgpack writes a container's length, then packs its items; a ``default()``
    call among them (tuple, set, Decimal, ...) runs Python code, and another thread that
    changes the container meanwhile makes the payload invalid (measured: 97 of 100 encodes
    under a concurrent ``append``). Containers of native types alone are packed in one piece.
    Residue: an int beyond 64 bits also goes through ``default()``; it is not looked for here.
    """
    kind = type(value)
    if kind is bytearray:
        return ExtType(_BYTEARRAY, bytes(value))  # its container (or the root) spent its size
    if kind in _FOREIGN or depth >= MAX_DEPTH:
        raise _Refused
    if kind is dict:
        return _prepare_dict(value, depth, budget)
    types = set(map(type, value))
    if kind is set or kind is frozenset:  # _default packs a new list of the members
        if not _LOOK_AT_KEY.isdisjoint(types):
            _check_members(value, depth)
        _spend(budget, value, types)
        return value
    private = kind is list and not types <= _IN_C
    descend = not _LOOK_AT_VALUE.isdisjoint(types)
    items = value
    if kind is list and (private or descend):
        items = list(value)  # one atomic copy: nothing another thread does changes what is packed
        types = set(map(type, items))
        private = not types <= _IN_C
        descend = not _LOOK_AT_VALUE.isdisjoint(types)
    _spend(budget, items, types)
    if not descend:
        return items if private else value
    changed = False
    prepared = items if kind is list else list(items)
    for index, item in enumerate(prepared):
        if type(item) in _LOOK_AT_VALUE:
            replacement = _prepare(item, depth + 1, budget)
            if replacement is not item:
                prepared[index] = replacement
                changed = True
    if kind is tuple:
        return tuple(prepared) if changed else value
    return prepared if changed or private else value


def _prepare_dict(value: dict, depth: int, budget: _Budget) -> dict:
    """:func:`_prepare` for a dict (keys count a byte each: their length is not looked at)."""
    key_types, value_types = set(map(type, value)), set(map(type, value.values()))
    private = not (key_types <= _IN_C and value_types <= _IN_C)
    descend = not _LOOK_AT_VALUE.isdisjoint(value_types)
    items = value
    if private:
        items = dict(value)  # one atomic copy, as for a list
        key_types, value_types = set(map(type, items)), set(map(type, items.values()))
        descend = not _LOOK_AT_VALUE.isdisjoint(value_types)
    if not _LOOK_AT_KEY.isdisjoint(key_types):
        _check_members(items, depth)
    _spend(budget, items.values(), value_types, len(items))
    if not descend:
        return items
    changes = {}
    for key, item in list(items.items()):  # a copy of the pairs: another thread may change `value`
        if type(item) in _LOOK_AT_VALUE:
            replacement = _prepare(item, depth + 1, budget)
            if replacement is not item:
                changes[key] = replacement
    if not changes:
        return items
    if items is value:
        items = dict(value)
    items.update(changes)
    return items


def _check_members(container: Any, depth: int) -> None:
    """Check the members of a set/frozenset/tuple in a key position, or the keys of a dict."""
    if not _LOOK_AT_KEY.isdisjoint(map(type, container)):
        for member in container:
            _check_member(member, depth + 1)


def _check_member(value: Any, depth: int) -> None:
    """A dict key or set member: hashable, so it holds no bytearray; refuse NaN and foreign types."""
    kind = type(value)
    if kind is float:
        if value != value:
            raise _Refused
    elif kind is decimal.Decimal:
        if value.is_nan():
            raise _Refused
    elif kind in _FOREIGN:
        raise _Refused
    elif kind is tuple or kind is frozenset:
        if depth >= MAX_DEPTH:
            raise _Refused
        _check_members(value, depth)


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True, strict_types=True, default=_default)


def _pack_buffer(value: Any) -> memoryview:
    packer = msgpack.Packer(use_bin_type=True, strict_types=True, default=_default, autoreset=False)
    packer.pack(value)
    return packer.getbuffer()


def _default(value: Any) -> object:
    """Called by the C packer for every type it does not pack natively (exact types only)."""
    kind = type(value)
    marker = _MARKERS.get(kind)
    if marker is not None:
        return [marker, *value]
    encode = _LEAF_ENCODERS.get(kind)
    if encode is None:
        raise TypeError(kind.__name__)
    return ExtType(*encode(value))


_MARKERS = {tuple: ExtType(_TUPLE, b""), set: ExtType(_SET, b""), frozenset: ExtType(_FROZENSET, b"")}


def _encode_int(value: int) -> tuple[int, bytes]:
    return _BIGINT, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True)


def _encode_tz(tz: dt.tzinfo | None) -> object:
    if tz is None:
        return None
    if type(tz) is dt.timezone:
        offset, *name = tz.__getinitargs__()  # the name only when one was given explicitly
        return [offset // _ONE_US, *name]
    if type(tz) is zoneinfo.ZoneInfo and tz.key is not None:
        return tz.key
    raise TypeError(type(tz).__name__)


def _encode_datetime(v: dt.datetime) -> tuple[int, bytes]:
    fields = [v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, v.fold, _encode_tz(v.tzinfo)]
    return _DATETIME, msgpack.packb(fields)


def _encode_time(v: dt.time) -> tuple[int, bytes]:
    return _TIME, msgpack.packb([v.hour, v.minute, v.second, v.microsecond, v.fold, _encode_tz(v.tzinfo)])


_LEAF_ENCODERS: dict[type, Callable[[Any], tuple[int, bytes]]] = {
    int: _encode_int,
    dt.datetime: _encode_datetime,
    dt.date: lambda v: (_DATE, msgpack.packb([v.year, v.month, v.day])),
    dt.time: _encode_time,
    dt.timedelta: lambda v: (_TIMEDELTA, msgpack.packb([v.days, v.seconds, v.microseconds])),
    decimal.Decimal: lambda v: (_DECIMAL, str(v).encode("ascii")),
    uuid.UUID: lambda v: (_UUID, v.bytes),
}


# ---------------------------------------------------------------- decoding


class _Marker:
    """What a marker extension decodes to, until the array it starts becomes its container."""

    __slots__ = ("build",)

    def __init__(self, build: Callable[[list], object]) -> None:
        self.build = build


_MARKER_CODES = {_TUPLE: _Marker(tuple), _SET: _Marker(set), _FROZENSET: _Marker(frozenset)}


class _MarkerSeen(Exception):
    """A container marker in a payload decoded without the list hook."""


def _leaf_ext_hook(code: int, ext: bytes) -> Any:
    decode = _LEAF_DECODERS.get(code)
    if decode is None:
        if code in _MARKER_CODES and not ext:
            raise _MarkerSeen
        raise ValueError(f"unknown extension type {code}")
    return decode(ext)


#: ext code of a placeholder for a long bin read apart (frame.LEAF_EXT); never stored
_LEAF_PLACEHOLDER = 127


class _Leaves:
    """Hands out each long bin a chunked read set apart, once, for its placeholder."""

    __slots__ = ("items", "used")

    def __init__(self, items: list[bytes]) -> None:
        self.items, self.used = items, [False] * len(items)

    def take(self, ext: bytes) -> bytes:
        index = int.from_bytes(ext, "big") if len(ext) == 4 else -1
        if not 0 <= index < len(self.items) or self.used[index]:
            raise ValueError("misplaced long-bin placeholder")
        self.used[index] = True
        return self.items[index]

    def check_all_used(self) -> None:
        if not all(self.used):
            raise ValueError("a long bin read apart has no place in the payload")


#: what every marker starts with as msgpack writes it (an empty ext 8); never in valid UTF-8
_MARKER_START = re.compile(rb"\xc7\x00")


def _may_hold_marker(data: bytes | memoryview) -> bool:
    """Whether ``data`` holds the bytes every marker starts with (c7 00)."""
    if type(data) is not bytes:
        if len(data) > 1 << 20:
            return _MARKER_START.search(data) is not None
        data = bytes(data)  # a copy of a small view is cheaper than the regular expression
    find = data.find  # a one-byte search runs at memchr speed; 0xc7 is rare outside markers
    at = find(b"\xc7")
    for _ in range(64):
        if at < 0:
            return False
        if data[at + 1:at + 2] == b"\x00":
            return True
        at = find(b"\xc7", at + 1)
    return at >= 0 and _MARKER_START.search(data, at) is not None


def _unpack(data: bytes | memoryview, leaves: list[bytes] | None = None) -> Any:
    n = len(data)  # every array item / map pair takes at least 1 / 2 bytes: tight, allocation-safe limits
    limits = {"max_str_len": n, "max_bin_len": n, "max_ext_len": n, "max_array_len": n, "max_map_len": n // 2}
    apart = _Leaves(leaves) if leaves else None
    if not _may_hold_marker(data):  # no tuple or set: no Python call per array
        hook = _leaf_ext_hook
        if apart is not None:
            def hook(code: int, ext: bytes) -> Any:
                return apart.take(ext) if code == _LEAF_PLACEHOLDER else _leaf_ext_hook(code, ext)
        try:
            value = msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True, ext_hook=hook, **limits)
        except _MarkerSeen:  # written another way (ext 16/32): decode with the hook
            apart = _Leaves(leaves) if leaves else None
        else:
            if apart is not None:
                apart.check_all_used()
            return value
    markers_open = 0  # markers seen but not yet consumed as the first item of an array

    def ext_hook(code: int, ext: bytes) -> Any:
        nonlocal markers_open
        marker = _MARKER_CODES.get(code)
        if marker is not None and not ext:
            markers_open += 1
            return marker
        if code == _LEAF_PLACEHOLDER and apart is not None:
            return apart.take(ext)
        decode = _LEAF_DECODERS.get(code)
        if decode is None:
            raise ValueError(f"unknown extension type {code}")
        return decode(ext)

    def list_hook(items: list) -> object:
        nonlocal markers_open
        if items and type(items[0]) is _Marker:
            markers_open -= 1
            return items.pop(0).build(items)
        return items

    value = msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True, ext_hook=ext_hook,
                           list_hook=list_hook, **limits)
    if markers_open:
        raise ValueError("container marker outside the first item of an array")
    if apart is not None:
        apart.check_all_used()
    return value


def _unpack_fields(data: bytes, count: int) -> list:
    """The fixed-length field list of a leaf extension (plain msgpack, no extensions inside)."""
    n = len(data)
    fields = msgpack.unpackb(data, raw=False, max_str_len=n, max_bin_len=0, max_ext_len=0,
                             max_array_len=n, max_map_len=0)
    if type(fields) is not list or len(fields) != count:
        raise ValueError("malformed extension payload")
    return fields


def _decode_tz(raw: object) -> dt.tzinfo | None:
    if raw is None:
        return None
    if type(raw) is str:
        return zoneinfo.ZoneInfo(raw)
    if type(raw) is list and 1 <= len(raw) <= 2 and type(raw[0]) is int:
        if len(raw) == 2 and type(raw[1]) is not str:
            raise ValueError("malformed timezone name")
        return dt.timezone(raw[0] * _ONE_US, *raw[1:])
    raise ValueError(f"malformed tzinfo {raw!r}")


def _decode_datetime(data: bytes) -> dt.datetime:
    *fields, fold, tz = _unpack_fields(data, 9)
    return dt.datetime(*fields, tzinfo=_decode_tz(tz), fold=fold)


def _decode_time(data: bytes) -> dt.time:
    *fields, fold, tz = _unpack_fields(data, 6)
    return dt.time(*fields, tzinfo=_decode_tz(tz), fold=fold)


def _decode_timedelta(data: bytes) -> dt.timedelta:
    fields = _unpack_fields(data, 3)
    if any(type(f) is not int for f in fields):  # timedelta() would accept floats
        raise ValueError("malformed timedelta")
    return dt.timedelta(*fields)


def _decode_decimal(data: bytes) -> decimal.Decimal:
    text = data.decode("ascii")
    value = decimal.Decimal(text)
    if str(value) != text:  # not what str() wrote (also catches a context that does not trap errors)
        raise ValueError(f"malformed decimal {text!r}")
    return value


def _decode_bigint(data: bytes) -> int:
    value = int.from_bytes(data, "big", signed=True)
    if _INT64_MIN <= value <= _UINT64_MAX:
        raise ValueError("big-int extension holding a 64-bit int")
    return value


def _decode_uuid(data: bytes) -> uuid.UUID:
    if len(data) != 16:
        raise ValueError("uuid extension is not 16 bytes")
    return uuid.UUID(bytes=data)


_LEAF_DECODERS: dict[int, Callable[[bytes], Any]] = {
    _BIGINT: _decode_bigint,
    _DATETIME: _decode_datetime,
    _DATE: lambda d: dt.date(*_unpack_fields(d, 3)),
    _TIME: _decode_time,
    _TIMEDELTA: _decode_timedelta,
    _DECIMAL: _decode_decimal,
    _UUID: _decode_uuid,
    _BYTEARRAY: bytearray,
}


# ---------------------------------------------------------------- slow walk (error path only)

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60
_SCALARS = (type(None), bool, int, bytes, bytearray, dt.date, dt.timedelta, uuid.UUID)
_SUPPORTED_NAMES = (
    "None, bool, int, float, str, bytes, bytearray, list, tuple, dict, set, frozenset, "
    "datetime.datetime/date/time/timedelta, decimal.Decimal, uuid.UUID"
)


def _qualname(kind: type) -> str:
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


# A path is built lazily, as (parent path, format, key) links ending in the root str,
# and rendered only for the error: the walk visits every item of a possibly large state.
_Path = Any
_AT, _IN_KEY, _IN_MEMBER = "[{}]", "[<key {}>]", "[<member {}>]"  # an item (index or key); inside a key; a member


def _render(path: _Path) -> str:
    parts = []
    while type(path) is tuple:
        path, form, key = path
        parts.append(form.format(_repr.repr(key)))
    return path + "".join(reversed(parts))


def _refuse(path: _Path, kind: type, why: str) -> UnsupportedTypeError:
    where = _render(path)
    return UnsupportedTypeError(f"{where}: {why}", path=where, type_name=_qualname(kind))


def _find_problem(
    value: Any, path: _Path, depth: int, enclosing: dict[int, _Path], *, in_key: bool
) -> UnsupportedTypeError | None:
    """The first value the codec refuses, as an error naming it; None if there is none.

    ``enclosing`` maps the id of every container around ``value`` to its path (cycle check).
    """
    kind = type(value)
    if kind in _SCALARS:
        return None
    if kind is float or kind is decimal.Decimal:
        if in_key and value != value:
            return _refuse(path, kind, f"{kind.__name__} NaN inside a dict key or set member "
                                       "cannot be looked up after a round trip")
        return None
    if kind is str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return _refuse(path, kind, f"str is not valid UTF-8 (lone surrogate at index {exc.start})")
        return None
    if kind is dt.datetime or kind is dt.time:
        tz = value.tzinfo
        if tz is None or type(tz) is dt.timezone or (type(tz) is zoneinfo.ZoneInfo and tz.key is not None):
            return None
        what = "a zoneinfo.ZoneInfo without a key" if type(tz) is zoneinfo.ZoneInfo else f"tzinfo {_qualname(type(tz))}"
        return _refuse(path, type(tz), f"{kind.__name__} with {what} cannot be stored exactly; "
                                       "use datetime.timezone or zoneinfo.ZoneInfo(key)")
    if kind not in _CONTAINERS:
        return _refuse(path, kind, f"type {_qualname(kind)} cannot be stored exactly{_subclass_hint(kind)}; "
                                   f"supported: {_SUPPORTED_NAMES}")
    if id(value) in enclosing:
        return _refuse(path, kind, f"cycle: this {kind.__name__} is the one at {_render(enclosing[id(value)])}, "
                                   "which contains it")
    if depth >= MAX_DEPTH:
        return _refuse(path, kind, f"containers nested more than {MAX_DEPTH} levels deep")
    enclosing[id(value)] = path
    try:
        return _find_in_items(value, kind, path, depth + 1, enclosing, in_key=in_key)
    finally:
        del enclosing[id(value)]


def _find_in_items(
    value: Any, kind: type, path: _Path, depth: int, enclosing: dict[int, _Path], *, in_key: bool
) -> UnsupportedTypeError | None:
    if kind is dict:
        for key, item in value.items():
            problem = (_find_problem(key, (path, _IN_KEY, key), depth, enclosing, in_key=True)
                       or _find_problem(item, (path, _AT, key), depth, enclosing, in_key=in_key))
            if problem:
                return problem
        return None
    if kind is set or kind is frozenset:
        for member in value:
            problem = _find_problem(member, (path, _IN_MEMBER, member), depth, enclosing, in_key=True)
            if problem:
                return problem
        return None
    for index, item in enumerate(value):
        problem = _find_problem(item, (path, _AT, index), depth, enclosing, in_key=in_key)
        if problem:
            return problem
    return None


def _subclass_hint(kind: type) -> str:
    if kind is memoryview:
        return " (it would come back as bytes: pass bytes(view))"
    if kind in _FOREIGN:
        return " (msgpack's own extension objects are reserved for the codec)"
    for base in (bool, int, float, str, bytes, bytearray, *_CONTAINERS, dt.datetime, dt.date, dt.time,
                 dt.timedelta, decimal.Decimal, uuid.UUID):
        if issubclass(kind, base):
            return f" (it is a subclass of {_qualname(base)}: convert it to a plain {base.__name__})"
    return ""
