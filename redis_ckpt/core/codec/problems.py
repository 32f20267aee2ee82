"""The slow walk, on the error path only: which value of a state the codec refuses, and where.

The encoder's passes refuse fast and say nothing; when they refuse, :func:`find_problem`
walks the state again and names the first value that cannot be stored exactly, by its path.
"""

from __future__ import annotations

import datetime as dt
import decimal
import reprlib
import uuid
import zoneinfo
from typing import Any

from ...errors import UnsupportedTypeError
from .tags import CONTAINERS, FOREIGN, MAX_DEPTH, from_file

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


def _refuse(path: _Path, kind: type, why: str, type_name: str | None = None) -> UnsupportedTypeError:
    where = _render(path)
    return UnsupportedTypeError(f"{where}: {why}", path=where, type_name=type_name or _qualname(kind))


#: where the codec's own value types are defined (a user type's REFUSED means nothing here)
_OWN_MODULES = ("redis_ckpt.core.codec.encode", "redis_ckpt.core.codec.spliced")


def _misplaced(path: _Path, kind: type) -> UnsupportedTypeError | None:
    """A value of the codec's own types (Encoded, EncodedList, EncodedMap) where it cannot
    go, refused with the type's own words on where it may (its ``REFUSED`` class attribute:
    read from the class's namespace, so no user type's hooks run) and its public name."""
    why = kind.__dict__.get("REFUSED") if kind.__module__ in _OWN_MODULES else None
    return _refuse(path, kind, why, f"redis_ckpt.{kind.__name__}") if type(why) is str else None


def find_problem(
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
        if tz is None:
            return None
        if type(tz) is zoneinfo.ZoneInfo and tz.key is not None and from_file(tz):
            return _refuse(path, type(tz), f"{kind.__name__} with a zoneinfo.ZoneInfo read from a file "
                                           "(ZoneInfo.from_file) cannot be stored exactly: a key names the "
                                           "system's zone, not the file's rules; use zoneinfo.ZoneInfo(key) "
                                           "or datetime.timezone")
        if type(tz) is dt.timezone or (type(tz) is zoneinfo.ZoneInfo and tz.key is not None):
            name = tz.key if type(tz) is zoneinfo.ZoneInfo else (tz.__getinitargs__()[1:] or ("",))[0]
            try:
                name.encode("utf-8")  # stored as a str, as the encoder writes it
            except UnicodeEncodeError as exc:
                return _refuse(path, type(tz), f"{kind.__name__} with a timezone name that is not valid UTF-8 "
                                               f"(lone surrogate at index {exc.start})")
            return None
        what = "a zoneinfo.ZoneInfo without a key" if type(tz) is zoneinfo.ZoneInfo else f"tzinfo {_qualname(type(tz))}"
        return _refuse(path, type(tz), f"{kind.__name__} with {what} cannot be stored exactly; "
                                       "use datetime.timezone or zoneinfo.ZoneInfo(key)")
    if kind not in CONTAINERS:
        return _misplaced(path, kind) or _refuse(
            path, kind, f"type {_qualname(kind)} cannot be stored exactly{_subclass_hint(kind)}; "
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
            problem = (find_problem(key, (path, _IN_KEY, key), depth, enclosing, in_key=True)
                       or find_problem(item, (path, _AT, key), depth, enclosing, in_key=in_key))
            if problem:
                return problem
        return None
    if kind is set or kind is frozenset:
        for member in value:
            problem = find_problem(member, (path, _IN_MEMBER, member), depth, enclosing, in_key=True)
            if problem:
                return problem
        return None
    for index, item in enumerate(value):
        problem = find_problem(item, (path, _AT, index), depth, enclosing, in_key=in_key)
        if problem:
            return problem
    return None


def _subclass_hint(kind: type) -> str:
    if kind is memoryview:
        return " (it would come back as bytes: pass bytes(view))"
    if kind in FOREIGN:
        return " (msgpack's own extension objects are reserved for the codec)"
    for base in (bool, int, float, str, bytes, bytearray, *CONTAINERS, dt.datetime, dt.date, dt.time,
                 dt.timedelta, decimal.Decimal, uuid.UUID):
        if issubclass(kind, base):
            return f" (it is a subclass of {_qualname(base)}: convert it to a plain {base.__name__})"
    return ""
