"""A stored state as JSON, and a damaged frame described without decoding it (``show --state``).

:func:`tagged` turns any state the codec stores into JSON: ``None``, ``bool``, ``str``, lists,
finite floats and ints up to 2**53 as themselves; a dict with string keys (none starting with
``$``) as an object; every other value as a one-key object naming its type::

    {"$datetime": "2026-01-02T03:04:05+00:00"}   (+ "tz": "Europe/Paris" for a ZoneInfo, "fold": 1)
    {"$date": "2026-01-02"}  {"$time": "03:04:05.000006"}  {"$timedelta": [days, seconds, microseconds]}
    {"$bytes": "<base64>"}  {"$bytearray": "<base64>"}  {"$decimal": "1.10"}  {"$uuid": "..."}
    {"$int": "123456789012345678901234567890"}  {"$float": "nan" | "inf" | "-inf"}
    {"$tuple": [...]}  {"$set": [...]}  {"$frozenset": [...]}  {"$dict": [[key, value], ...]}

:func:`frame_report` reads a frame that failed verification only as far as it verifies:
the steps of ``core.frame``'s verification order that passed, the one that failed, and the
header fields the prefix announces (marked unverified when the checksum failed); the payload
is never decoded.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import math
import struct
import uuid
import zoneinfo
from typing import Any

import msgpack

from ..errors import FrameDamage, FrameError

__all__ = ["tagged", "frame_report", "VERIFY_STEPS"]

_EXACT = 2**53

#: the verification order of redis_ckpt.core.frame, each step with the damage that fails it
VERIFY_STEPS: tuple[tuple[str, tuple[FrameDamage, ...]], ...] = (
    ("stored", (FrameDamage.MISSING,)),
    ("magic", (FrameDamage.BAD_MAGIC,)),
    ("format", (FrameDamage.UNKNOWN_FORMAT,)),
    ("length", (FrameDamage.TRUNCATED, FrameDamage.TRAILING_BYTES)),
    ("checksum", (FrameDamage.CHECKSUM,)),
    ("header", (FrameDamage.BAD_HEADER,)),
    ("codec", (FrameDamage.UNKNOWN_CODEC, FrameDamage.UNKNOWN_COMPRESSION)),
    ("identity", (FrameDamage.WRONG_RUN, FrameDamage.WRONG_GENERATION, FrameDamage.HEAD_MISMATCH)),
    ("payload", (FrameDamage.UNDECODABLE,)),
)
#: the frame's prefix as core/frame.py's module doc lays it out: magic, format, codec,
#: compression, flags, schema version, header length (big-endian)
_PREFIX = struct.Struct(">4sBBBBII")
_COMPRESSIONS = {0: "none", 1: "zstd"}


def tagged(value: Any) -> Any:
    """``value`` (a state as the codec returns it) as JSON-ready data, non-JSON types tagged."""
    t = type(value)
    if value is None or t is bool or t is str:
        return value
    if t is int:
        return value if -_EXACT <= value <= _EXACT else {"$int": str(value)}
    if t is float:
        return value if math.isfinite(value) else {"$float": repr(value)}
    if t is list:
        return [tagged(v) for v in value]
    if t is dict:
        if all(type(k) is str and not k.startswith("$") for k in value):
            return {k: tagged(v) for k, v in value.items()}
        return {"$dict": [[tagged(k), tagged(v)] for k, v in value.items()]}
    if t in (tuple, set, frozenset):
        items = [tagged(v) for v in value]
        if t is not tuple:
            items.sort(key=lambda v: json.dumps(v, sort_keys=True))
        return {f"${t.__name__}": items}
    if t in (bytes, bytearray):
        return {f"${t.__name__}": base64.b64encode(value).decode("ascii")}
    if t is dt.datetime:
        out: dict[str, Any] = {"$datetime": value.isoformat()}
        if isinstance(value.tzinfo, zoneinfo.ZoneInfo):
            out["tz"] = value.tzinfo.key
        if value.fold:
            out["fold"] = 1
        return out
    if t is dt.date:
        return {"$date": value.isoformat()}
    if t is dt.time:
        out = {"$time": value.isoformat()}
        if isinstance(value.tzinfo, zoneinfo.ZoneInfo):
            out["tz"] = value.tzinfo.key
        return out
    if t is dt.timedelta:
        return {"$timedelta": [value.days, value.seconds, value.microseconds]}
    if t is decimal.Decimal:
        return {"$decimal": str(value)}
    if t is uuid.UUID:
        return {"$uuid": str(value)}
    return {"$unknown": f"{t.__module__}.{t.__qualname__}"}  # nothing the codec returns


def frame_report(frame: bytes | None, damage: FrameError) -> dict[str, Any]:
    """How far a frame that failed with ``damage`` verifies, and what its header says."""
    failed = next((name for name, reasons in VERIFY_STEPS if damage.reason in reasons), "payload")
    names = [name for name, _ in VERIFY_STEPS]
    passed = names[: names.index(failed)]
    report: dict[str, Any] = {
        "reason": damage.reason.value, "detail": damage.detail, "size": len(frame) if frame is not None else None,
        "verified": passed, "failed": failed,
        "header": _peek_header(frame) if frame is not None and "magic" in passed else None,
    }
    if report["header"] is not None:
        report["header"]["verified"] = "checksum" in passed
    return report


def _peek_header(frame: bytes) -> dict[str, Any] | None:
    """The prefix's fields and the header map, read without trusting them (bounded by the
    blob's size, the payload untouched); None where not even the prefix can be read."""
    if len(frame) < _PREFIX.size:
        return None
    _, version, codec, compression, flags, schema, header_len = _PREFIX.unpack_from(frame)
    out: dict[str, Any] = {"format": version, "codec": codec, "compression": _COMPRESSIONS.get(compression, compression),
                           "flags": flags, "schema_version": schema, "header_bytes": header_len}
    raw = frame[_PREFIX.size:_PREFIX.size + header_len]
    if len(raw) < header_len:
        out["fields"] = None
        return out
    n = len(raw)
    try:
        fields = msgpack.unpackb(raw, raw=False, max_str_len=n, max_bin_len=n, max_array_len=n,
                                 max_map_len=n // 2 + 1, max_ext_len=n)
    except Exception:  # noqa: BLE001 - damaged bytes: say so, decode nothing further
        out["fields"] = None
        return out
    if isinstance(fields, dict):
        out["fields"] = {str(k): (v if isinstance(v, (int, str)) and not isinstance(v, bool) else
                                  f"<{len(v)} bytes>" if isinstance(v, (bytes, bytearray)) else repr(v)[:80])
                         for k, v in fields.items()}
    else:
        out["fields"] = None
    return out
