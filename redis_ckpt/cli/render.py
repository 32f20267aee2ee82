"""Output of the admin CLI: aligned tables for people, stable JSON for scripts.

Every JSON document is one top-level object per command (see the README's "--json"
section). Datetimes are ISO 8601 UTC strings with millisecond precision and a ``Z``
(``2026-05-25T12:00:00.123Z``), durations are integers in milliseconds (keys end in
``_ms``), sizes are integers in bytes.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

import click

from ..models import Event, GenerationInfo, RunInfo, RunUsage, ms_to_datetime
from .state import tagged

__all__ = [
    "iso",
    "age",
    "duration",
    "size",
    "table",
    "keyvalues",
    "emit_json",
    "jsonable",
    "head_json",
    "lease_json",
    "run_json",
    "generation_json",
    "event_json",
    "rejected_json",
    "event_details",
    "lease_text",
    "now_ms",
    "printable",
    "as_int",
    "usage_json",
    "usage_text",
]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# --------------------------------------------------------------------------- scalars


def iso(dt: datetime | None) -> str | None:
    """``2026-05-25T12:00:00.123Z`` (UTC, milliseconds), or None."""
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def duration(ms: int | float | None) -> str:
    """A short human duration: ``850ms``, ``12.3s``, ``4m05s``, ``2h03m``, ``3d04h``."""
    if ms is None:
        return "-"
    ms = max(0, int(ms))
    if ms < 1000:
        return f"{ms}ms"
    s = ms / 1000
    if s < 60:
        return f"{s:.1f}s"
    m, sec = divmod(int(s), 60)
    if m < 60:
        return f"{m}m{sec:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


def age(ms: int | None) -> str:
    return "-" if ms is None else f"{duration(ms)} ago"


def size(n: int | None) -> str:
    if n is None:
        return "-"
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def printable(text: str) -> str:
    """``text`` with every non-printable character escaped (``\\x1b``), so that stored data
    (owner names, event fields) can never drive the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _cell(v: Any) -> str:
    return "-" if v is None else printable(str(v))


# --------------------------------------------------------------------------- tables


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces; ``None`` prints as ``-``.

    The last column is not padded (it may hold long free text)."""
    cells = [[_cell(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    return "\n".join([line(headers, widths), *(line(r, widths) for r in cells)])


def line(row: Sequence[Any], widths: Sequence[int]) -> str:
    """One line of a table whose column widths are set before its rows are known (a table
    printed row by row): as :func:`table` lays it out; a wider cell pushes the rest of its own
    line only."""
    cells = [_cell(c) for c in row]
    last = len(cells) - 1
    return "  ".join(c if i == last else c.ljust(widths[i]) for i, c in enumerate(cells)).rstrip()


def keyvalues(pairs: Iterable[tuple[str, Any]]) -> str:
    """``key   value`` lines with the values aligned; a value with newlines continues indented."""
    pairs = list(pairs)
    width = max((len(k) for k, _ in pairs), default=0)
    out = []
    for k, v in pairs:
        text = [_cell(line) for line in ("-" if v is None else str(v)).split("\n")]
        out.append(f"{k.ljust(width)}  {text[0]}")
        out.extend(f"{' ' * width}  {more}" for more in text[1:])
    return "\n".join(out)


# --------------------------------------------------------------------------- JSON


def jsonable(value: Any) -> Any:
    """User metadata as JSON: datetimes as ISO strings, bytes as ``{"base64": ...}``,
    sets/tuples as lists, Decimal as its string, mapping keys as strings; anything else
    that JSON cannot hold as its ``repr``; NaN and the infinities tagged as ``show --state``
    tags them (``{"$float": "nan" | "inf" | "-inf"}``: JSON has no such numbers)."""
    if isinstance(value, float):
        return tagged(float(value))  # the one rule for floats JSON cannot hold (state.py)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        items = [jsonable(v) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    return repr(value)


def emit_json(obj: Mapping[str, Any], *, compact: bool = False) -> None:
    """One JSON object on stdout (pretty unless ``compact``: one line, for JSON Lines). Strict
    JSON: a NaN or an infinity that reaches here is a bug (ValueError), never ``NaN`` printed."""
    if compact:
        click.echo(json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")))
    else:
        click.echo(json.dumps(obj, ensure_ascii=False, allow_nan=False, indent=2))


def _at(ms: int | None) -> datetime | None:
    """A time in ms since the epoch as a datetime; None when there is none or it is out of range
    (a stored number redis-ckpt never wrote)."""
    try:
        return ms_to_datetime(ms)
    except (OverflowError, ValueError, OSError):
        return None


def as_int(v: str | None) -> int | None:
    """A stored number as an int; None when there is none or it is not a number."""
    if v is None or v == "":
        return None
    try:
        return int(v)
    except ValueError:
        return None


def head_json(info: RunInfo, now: int) -> dict[str, Any] | None:
    h = info.head
    if not h:
        return None
    created = as_int(h.get("created_ms"))
    return {
        "generation": as_int(h.get("generation")),
        "token": as_int(h.get("token")),
        "owner": h.get("owner"),
        "commit_id": h.get("commit_id"),
        "checksum": h.get("checksum"),
        "size": as_int(h.get("size")),
        "schema_version": as_int(h.get("schema_version")),
        "codec": h.get("codec"),
        "created_at": iso(_at(created)),
        "age_ms": max(0, now - created) if created is not None else None,
    }


def lease_json(info: RunInfo, now: int) -> dict[str, Any] | None:
    if info.lease_state is None and info.lease_owner is None:
        return None
    left = info.lease_ms_left
    return {
        "state": info.lease_state,
        "owner": info.lease_owner,
        "token": info.lease_token,
        "ms_left": left,
        "expires_at": iso(_at(now + left)) if left is not None else None,
    }


def run_json(info: RunInfo, now: int) -> dict[str, Any]:
    """The summary of one run that ``runs`` lists and ``show`` starts with."""
    return {
        "run": info.run_id,
        "generation": info.generation,
        "fence": info.fence,
        "kept": list(info.kept),
        "head": head_json(info, now),
        "lease": lease_json(info, now),
    }


def generation_json(g: GenerationInfo) -> dict[str, Any]:
    return {
        "generation": g.generation,
        "ok": g.ok,
        "reason": g.reason,
        "detail": g.detail,
        "size": g.size,
        "token": g.token,
        "owner": g.owner,
        "created_at": iso(g.created_at),
        "schema_version": g.schema_version,
        "checksum": g.checksum,
        "compression": g.compression,
        "metadata": jsonable(g.metadata),
    }


def event_json(e: Event) -> dict[str, Any]:
    """An audit event; ``fields`` are the stream entry's fields as stored (strings)."""
    return {"id": e.id, "kind": e.kind, "at": iso(e.at), "fields": dict(e.fields)}


def rejected_json(e: Event) -> dict[str, Any]:
    """A rejected stale write (event kind ``fenced``), with its numbers as integers."""
    return {
        "id": e.id,
        "at": iso(e.at),
        "owner": e.fields.get("owner"),
        "token": as_int(e.fields.get("token")),
        "fence": as_int(e.fields.get("fence")),
        "expected": as_int(e.fields.get("expected")),
        "commit_id": e.fields.get("commit_id"),
    }


# --------------------------------------------------------------------------- human text


def lease_text(info: RunInfo, now: int) -> str:
    if info.lease_state == "held" and info.lease_ms_left is not None:
        expires = iso(_at(now + info.lease_ms_left))
        return (f"held by {info.lease_owner} with token {info.lease_token}, "
                f"{duration(info.lease_ms_left)} left (expires {expires})")
    if info.lease_state == "released":
        return f"released (last holder {info.lease_owner}, token {info.lease_token})"
    if info.lease_state is None and info.lease_owner is None:
        return "none (never acquired, expired, or revoked)"
    return f"{info.lease_state} ({info.lease_owner}, token {info.lease_token})"


def _f(e: Event, *names: str) -> str:
    return " ".join(f"{n}={e.fields[n]}" for n in names if e.fields.get(n) not in (None, ""))


def event_details(e: Event) -> str:
    """One line describing an audit event for people."""
    f = e.fields
    k = e.kind
    if k == "fenced":
        exp = f" (expected g{f['expected']})" if f.get("expected") else ""
        return (f"REJECTED stale write by {f.get('owner')}: token {f.get('token')} < fence {f.get('fence')}"
                f"{exp} commit {f.get('commit_id', '-')}")
    if k == "fence_behind":
        return (f"REJECTED write by {f.get('owner')}: token {f.get('token')} > fence {f.get('fence')} "
                "(the server lost fence increments)")
    if k in ("acquire", "takeover", "reacquire"):
        prev = ""
        if f.get("previous_owner"):
            prev = f", previous holder {f['previous_owner']} token {f.get('previous_token', '?')}"
        elif f.get("previous_token") not in (None, "", "0"):
            prev = f", previous token {f['previous_token']}"
        ttl = f", ttl {duration(as_int(f.get('ttl_ms')))}" if f.get("ttl_ms") else ""
        return f"{f.get('owner')} got token {f.get('token')}{ttl}{prev}"
    if k == "revoke":
        prev = f", fenced off {f.get('previous_owner')} token {f.get('previous_token')}" if f.get("previous_owner") else ""
        return f"by {f.get('by')}: fence now {f.get('fence')}{prev}"
    if k == "commit":
        return f"{f.get('owner')} token {f.get('token')} wrote g{f.get('generation')} ({size(as_int(f.get('size')))})"
    if k == "conflict":
        return f"{f.get('owner')} token {f.get('token')} expected g{f.get('expected')} but head is g{f.get('actual')}"
    if k == "fallback":
        return f"load fell back to g{f.get('loaded')}; skipped {f.get('skipped')}"
    shown = [n for n in f if n not in ("kind", "ms")]
    return _f(e, *shown)


def usage_json(u: RunUsage | None) -> dict[str, int] | None:
    """A run's bytes by kind (None: MEMORY USAGE not allowed)."""
    if u is None:
        return None
    return {"generations": u.generations, "staging": u.staging, "events": u.events, "control": u.control,
            "total": u.total}


def usage_text(u: RunUsage | None) -> str:
    if u is None:
        return "unknown (MEMORY USAGE is not allowed)"
    return (f"{size(u.total)}: generations {size(u.generations)}, staging {size(u.staging)}, "
            f"events {size(u.events)}, fence/lease/head {size(u.control)}")
