"""The codec's type tags: what each supported type is on the wire, in both directions.

Plain msgpack for None/bool/int64/float/str/bytes/list/dict; a tuple, set or frozenset is
an array whose first item is an empty marker extension (``[ext 2, *items]``), so containers
never nest msgpack calls (each nested C unpack puts ~40 KB on the C stack: nested extension
payloads segfault at ~180 levels); every other type is one leaf extension (codes below).
Also the classes of types the encoder's two paths look at.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
import zoneinfo
from collections.abc import Callable
from typing import Any

import msgpack
from msgpack import ExtType, Timestamp

CODEC_MSGPACK = 1
MAX_DEPTH = 128  # container levels: far inside msgpack's nesting limits and Python's recursion limit

# Extension type codes (stable: they are stored in checkpoints).
_BIGINT = 1  # int outside the signed 64-bit range: two's-complement big-endian bytes
TUPLE = 2  # empty marker, first item of the array that holds the items
SET = 3  # likewise
FROZENSET = 4  # likewise
_DATETIME = 5  # packed [year, month, day, hour, minute, second, microsecond, fold, tz]
_DATE = 6  # packed [year, month, day]
_TIME = 7  # packed [hour, minute, second, microsecond, fold, tz]
_TIMEDELTA = 8  # packed [days, seconds, microseconds]
_DECIMAL = 9  # ASCII str(d)
_UUID = 10  # 16 bytes
BYTEARRAY = 11  # the bytes
# tz above: nil (naive) | [offset_us] | [offset_us, name] (datetime.timezone) | key str (ZoneInfo)

#: ext code of a placeholder for a long bin a chunked read set apart (frame.FrameAssembler); never stored
LEAF_EXT = 127

CONTAINERS = (list, tuple, dict, set, frozenset)
CONTAINER_SET = frozenset(CONTAINERS)
#: packed by msgpack's C code without calling back into Python (an int: within 64 bits)
IN_C = frozenset((type(None), bool, int, float, str, bytes, list, dict))
#: each encodes to at least its len() in bytes (a str: len() characters, >= 1 byte each in UTF-8)
SIZED = frozenset((str, bytes, bytearray))
FOREIGN = (memoryview, ExtType, Timestamp)  # packed natively by msgpack but not round-tripped
# Types in a value position that careful._prepare must look at; in a key/member position also NaN-capable ones.
LOOK_AT_VALUE = frozenset((*CONTAINERS, bytearray, *FOREIGN))
LOOK_AT_KEY = LOOK_AT_VALUE | {float, decimal.Decimal}
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1
_ONE_US = dt.timedelta(microseconds=1)
#: a Decimal's stored text is written and read under this context, never the thread's own: str()
#: follows the thread context's ``capitals`` ("1e+5" under capitals=0), so the text, and whether
#: it read back, depended on which thread wrote and which one loaded (only ``capitals`` and the
#: traps matter: the text and the constructor ignore the precision and rounding)
_DECIMAL_TEXT = decimal.Context(capitals=1, traps=[decimal.InvalidOperation])
#: what the encoder wrote before, in a thread whose context had capitals=0 ("1e+5"): read as well
_DECIMAL_TEXT_LOWER = decimal.Context(capitals=0, traps=[decimal.InvalidOperation])


# ---------------------------------------------------------------- encoding (the C packer's default)


def default(value: Any) -> object:
    """Called by the C packer for every type it does not pack natively (exact types only)."""
    kind = type(value)
    marker = _MARKERS.get(kind)
    if marker is not None:
        return [marker, *value]
    encode = _LEAF_ENCODERS.get(kind)
    if encode is None:
        raise TypeError(kind.__name__)
    return ExtType(*encode(value))


_MARKERS = {tuple: ExtType(TUPLE, b""), set: ExtType(SET, b""), frozenset: ExtType(FROZENSET, b"")}


def _encode_int(value: int) -> tuple[int, bytes]:
    return _BIGINT, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True)


def from_file(tz: zoneinfo.ZoneInfo) -> bool:
    """Whether ``tz`` was read from a file (``ZoneInfo.from_file``): its key, if any, names
    the system's zone, not the rules it holds, so it cannot be rebuilt from its key (pickle
    refuses it for the same reason: that refusal, a ``pickle.PicklingError``, is how it is
    told; the codec never imports pickle, so any error of ``__reduce__`` counts)."""
    try:
        tz.__reduce__()
    except Exception:  # noqa: BLE001 - pickle.PicklingError, without importing pickle
        return True
    return False


def _encode_tz(tz: dt.tzinfo | None) -> object:
    if tz is None:
        return None
    if type(tz) is dt.timezone:
        offset, *name = tz.__getinitargs__()  # the name only when one was given explicitly
        return [offset // _ONE_US, *name]
    if type(tz) is zoneinfo.ZoneInfo and tz.key is not None and not from_file(tz):
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
    decimal.Decimal: lambda v: (_DECIMAL, _DECIMAL_TEXT.to_sci_string(v).encode("ascii")),
    uuid.UUID: lambda v: (_UUID, v.bytes),
}

# ---------------------------------------------------------------- decoding (leaf extensions)


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
    value = decimal.Decimal(text, _DECIMAL_TEXT)  # InvalidOperation on a malformed text, in any thread
    if _DECIMAL_TEXT.to_sci_string(value) != text and _DECIMAL_TEXT_LOWER.to_sci_string(value) != text:
        raise ValueError(f"malformed decimal {text!r}")  # not a text the encoder writes (or wrote)
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


LEAF_DECODERS: dict[int, Callable[[bytes], Any]] = {
    _BIGINT: _decode_bigint,
    _DATETIME: _decode_datetime,
    _DATE: lambda d: dt.date(*_unpack_fields(d, 3)),
    _TIME: _decode_time,
    _TIMEDELTA: _decode_timedelta,
    _DECIMAL: _decode_decimal,
    _UUID: _decode_uuid,
    BYTEARRAY: bytearray,
}

