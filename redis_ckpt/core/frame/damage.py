"""A frame that failed verification, described without decoding it (``redis-ckpt show --state``).

:func:`frame_report` reads a damaged frame only as far as it verifies: the steps of the
verification order (verify.py, the package's doc) that passed, the one that failed, and the
header fields the prefix announces (marked unverified when the checksum failed); the payload
is never decoded.
"""

from __future__ import annotations

from typing import Any

import msgpack

from ...errors import FrameDamage, FrameError
from .layout import COMPRESSIONS, PREFIX

__all__ = ["frame_report", "VERIFY_STEPS"]

#: the verification order of verify.py, each step with the damage that fails it
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
    if len(frame) < PREFIX.size:
        return None
    _, version, codec, compression, flags, schema, header_len = PREFIX.unpack_from(frame)
    out: dict[str, Any] = {"format": version, "codec": codec, "compression": COMPRESSIONS.get(compression, compression),
                           "flags": flags, "schema_version": schema, "header_bytes": header_len}
    raw = frame[PREFIX.size:PREFIX.size + header_len]
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
