"""A stored state as JSON (``show --state``); a damaged frame is described by
:func:`redis_ckpt.core.frame.damage.frame_report`.

:func:`tagged` turns any state the codec stores into JSON: ``None``, ``bool``, ``str``, lists,
finite floats and ints up to 2**53 as themselves; a dict with string keys (none starting with
``$``) as an object; every other value as a one-key object naming its type::

    {"$datetime": "2026-01-02T03:04:05+00:00"}   (+ "tz": "Europe/Paris" for a ZoneInfo, "fold": 1)
    {"$date": "2026-01-02"}  {"$time": "03:04:05.000006"}  {"$timedelta": [days, seconds, microseconds]}
    {"$bytes": "<base64>"}  {"$bytearray": "<base64>"}  {"$decimal": "1.10"}  {"$uuid": "..."}
    {"$int": "123456789012345678901234567890"}  {"$float": "nan" | "inf" | "-inf"}
    {"$tuple": [...]}  {"$set": [...]}  {"$frozenset": [...]}  {"$dict": [[key, value], ...]}
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import math
import uuid
import zoneinfo
from typing import Any

__all__ = ["tagged"]

_EXACT = 2**53


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
