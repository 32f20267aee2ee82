"""Decoding a state: msgpack's C unpacker with an ``ext_hook`` for the leaf extensions.

The ``list_hook`` that turns a marked array into a tuple or set runs only when the payload
can hold a marker (an empty ext 8, bytes ``c7 00``, which valid UTF-8 never contains). A
payload read in pieces (frame.FrameAssembler) comes with its long bins apart: each
placeholder extension (code ``LEAF_EXT``, never stored) is replaced by its bytes object, as is.
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Callable
from typing import Any

import msgpack

from .tags import CONTAINER_SET, FROZENSET, LEAF_DECODERS, LEAF_EXT, SET, TUPLE

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
    if max_depth is not None and type(value) in CONTAINER_SET and _too_deep(value, 0, max_depth):
        raise ValueError(f"containers nested more than {max_depth} levels deep")
    return value


def _too_deep(value: Any, depth: int, limit: int) -> bool:
    """Whether containers nest deeper than ``limit`` levels inside ``value`` (a container)."""
    if depth >= limit:
        return True
    items = (*value, *value.values()) if type(value) is dict else value
    if CONTAINER_SET.isdisjoint(map(type, items)):
        return False
    return any(type(item) in CONTAINER_SET and _too_deep(item, depth + 1, limit) for item in items)


class _Marker:
    """What a marker extension decodes to, until the array it starts becomes its container."""

    __slots__ = ("build",)

    def __init__(self, build: Callable[[list], object]) -> None:
        self.build = build


_MARKER_CODES = {TUPLE: _Marker(tuple), SET: _Marker(set), FROZENSET: _Marker(frozenset)}


class _MarkerSeen(Exception):
    """A container marker in a payload decoded without the list hook."""


def _leaf_ext_hook(code: int, ext: bytes) -> Any:
    decode = LEAF_DECODERS.get(code)
    if decode is None:
        if code in _MARKER_CODES and not ext:
            raise _MarkerSeen
        raise ValueError(f"unknown extension type {code}")
    return decode(ext)




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
                return apart.take(ext) if code == LEAF_EXT else _leaf_ext_hook(code, ext)
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
        if code == LEAF_EXT and apart is not None:
            return apart.take(ext)
        decode = LEAF_DECODERS.get(code)
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


