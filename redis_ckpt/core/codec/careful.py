"""The encoder's careful path, for every state the fast path (plain.py) does not take.

One pass (:func:`_prepare`) visits every container (never a leaf on its own), refuses the
types msgpack would pack but not give back (``tags.FOREIGN``), checks keys for NaN, bounds
the depth, and:

* spends a lower bound of the encoded size (a byte per item plus the length of each
  str/bytes/bytearray item, summed in C) against the caller's limit, so a state over it
  is refused before the packer copies anything (peak memory of a refused 300 MiB commit:
  0.97x the state, was 1.97x); the exact size is checked after packing;
* hands the packer a private shallow copy of each list/dict whose packing calls back
  into Python (see ``_prepare``), so another thread changing the state yields a torn
  but valid snapshot or a ``StateError``, never an invalid payload.

Only when encoding fails does a second, slow walk (problems.py) find the path to report.
"""

from __future__ import annotations

import decimal
import math
from itertools import compress
from typing import Any

import msgpack
from msgpack import ExtType

from ...errors import StateError, StateTooLargeError, UnsupportedTypeError
from .problems import find_problem
from .tags import BYTEARRAY, FOREIGN, IN_C, LOOK_AT_KEY, LOOK_AT_VALUE, MAX_DEPTH, SIZED, default


class _Refused(Exception):
    """Raised inside :func:`_prepare`; the slow walk then says what and where."""


class _TooLarge(Exception):
    """Raised as soon as the size spent passes the limit."""


class _Budget:
    """A lower bound of the encoded size, spent container by container (:func:`_spend`)
    before the packer copies anything, against ``limit`` (None: no limit)."""

    __slots__ = ("limit", "spent")

    def __init__(self, limit: int | None) -> None:
        self.limit: float = math.inf if limit is None else limit
        self.spent = 0


def checked_size(out: Any, root: str, limit: int | None) -> Any:
    if limit is not None and len(out) > limit:
        raise StateTooLargeError(
            f"{root} encodes to {len(out)} bytes, more than the limit of {limit} (max_state_bytes)",
            size=len(out), limit=limit,
        )
    return out


def too_large(root: str, spent: int, limit: int) -> StateTooLargeError:
    return StateTooLargeError(
        f"{root} encodes to at least {spent} bytes, more than the limit of {limit} (max_state_bytes)",
        size=spent, limit=limit,
    )


def encode_carefully(state: object, root: str, pack: Any, limit: int | None, depth: int = 0) -> bytes | memoryview:
    """``state`` packed, checked as stored ``depth`` levels down (see plain.scan)."""
    budget = _Budget(limit)
    try:
        out = pack(_prepare_root(state, budget, depth))
    except _TooLarge:
        raise too_large(root, budget.spent, limit) from None  # type: ignore[arg-type]
    except (_Refused, TypeError, ValueError, OverflowError, RecursionError) as exc:
        # UnicodeEncodeError (lone surrogate) is a ValueError; RecursionError only on a stack already deep.
        cause: BaseException = exc
    except RuntimeError as exc:  # "dictionary changed size during iteration"
        raise _changed(root, exc) from None
    else:
        return checked_size(out, root, limit)  # type: ignore[no-any-return]
    try:
        problem = find_problem(state, root, depth, {}, in_key=False)
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


def _prepare_root(state: Any, budget: _Budget, depth: int) -> Any:
    """``state`` ready for the packer; a top-level str/bytes over the limit is refused before any copy."""
    kind = type(state)
    budget.spent = 1 + len(state) if kind in SIZED else 1
    if budget.spent > budget.limit:
        raise _TooLarge
    return _prepare(state, depth, budget) if kind in LOOK_AT_VALUE else state


def _spend(budget: _Budget, items: Any, types: set, extra: int = 0) -> None:
    """Spend a lower bound of the encoded size of ``items`` (whose item types are ``types``):
    a byte each, plus the length of each str/bytes/bytearray; _TooLarge past the limit."""
    n = len(items) + extra
    if not SIZED.isdisjoint(types):
        if types <= SIZED:
            n += sum(map(len, items))
        elif n <= 32:  # a plain loop beats the iterator chain below on small containers
            for item in items:
                if type(item) in SIZED:
                    n += len(item)
        else:
            n += sum(map(len, compress(items, map(SIZED.__contains__, map(type, items)))))
    budget.spent += n
    if budget.spent > budget.limit:
        raise _TooLarge


def _prepare(value: Any, depth: int, budget: _Budget) -> Any:
    """Check ``value`` (a type in LOOK_AT_VALUE) for the C packer - depth, foreign types, NaN
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
        return ExtType(BYTEARRAY, bytes(value))  # its container (or the root) spent its size
    if kind in FOREIGN or depth >= MAX_DEPTH:
        raise _Refused
    if kind is dict:
        return _prepare_dict(value, depth, budget)
    types = set(map(type, value))
    if kind is set or kind is frozenset:  # default packs a new list of the members
        if not LOOK_AT_KEY.isdisjoint(types):
            _check_members(value, depth)
        _spend(budget, value, types)
        return value
    private = kind is list and not types <= IN_C
    descend = not LOOK_AT_VALUE.isdisjoint(types)
    items = value
    if kind is list and (private or descend):
        items = list(value)  # one atomic copy: nothing another thread does changes what is packed
        types = set(map(type, items))
        private = not types <= IN_C
        descend = not LOOK_AT_VALUE.isdisjoint(types)
    _spend(budget, items, types)
    if not descend:
        return items if private else value
    changed = False
    prepared = items if kind is list else list(items)
    for index, item in enumerate(prepared):
        if type(item) in LOOK_AT_VALUE:
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
    private = not (key_types <= IN_C and value_types <= IN_C)
    descend = not LOOK_AT_VALUE.isdisjoint(value_types)
    items = value
    if private:
        items = dict(value)  # one atomic copy, as for a list
        key_types, value_types = set(map(type, items)), set(map(type, items.values()))
        descend = not LOOK_AT_VALUE.isdisjoint(value_types)
    if not LOOK_AT_KEY.isdisjoint(key_types):
        _check_members(items, depth)
    _spend(budget, items.values(), value_types, len(items))
    if not descend:
        return items
    changes = {}
    for key, item in list(items.items()):  # a copy of the pairs: another thread may change `value`
        if type(item) in LOOK_AT_VALUE:
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
    if not LOOK_AT_KEY.isdisjoint(map(type, container)):
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
    elif kind in FOREIGN:
        raise _Refused
    elif kind is tuple or kind is frozenset:
        if depth >= MAX_DEPTH:
            raise _Refused
        _check_members(value, depth)


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True, strict_types=True, default=default)


def pack_buffer(value: Any) -> memoryview:
    packer = msgpack.Packer(use_bin_type=True, strict_types=True, default=default, autoreset=False)
    packer.pack(value)
    return packer.getbuffer()


