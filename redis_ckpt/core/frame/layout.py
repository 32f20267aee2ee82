"""The frame's layout: magic, version, the fixed-size fields and their structs, the codec and
compression ids, the header's fields and ranges, and what a verified header says
(:class:`FrameHeader`). The table is in the package's doc (core/frame/__init__.py)."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from ...errors import CodecUnavailableError
from ...models import MAX_MS, MIN_MS
from ..codec import CODEC_MSGPACK

MAGIC = b"RCKP"
FORMAT_VERSION = 1
PREFIX = struct.Struct(">4sBBBBII")  # magic, format, codec, compression, flags, schema, header length
PAYLOAD_LEN = struct.Struct(">Q")
DIGEST_SIZE = 16
MIN_SIZE = PREFIX.size + PAYLOAD_LEN.size + DIGEST_SIZE  # empty header and payload
CODECS = {CODEC_MSGPACK}
COMPRESSIONS = {0: "none", 1: "zstd"}
COMPRESSION_IDS = {name: cid for cid, name in COMPRESSIONS.items()}
HEADER_FIELDS = {"run": str, "gen": int, "token": int, "owner": str, "created_ms": int, "meta": bytes}
U32, I64 = 2**32, 2**63
#: the most a zstd payload may expand, relative to the whole stored frame (see the package's doc)
MAX_ZSTD_RATIO = 1000
#: the inclusive range of each int header field: what encode_frame accepts, and what a
#: reader can turn into a Python object (created_ms: a datetime) without failing
HEADER_RANGES = {"gen": (0, I64 - 1), "token": (0, I64 - 1), "created_ms": (MIN_MS, MAX_MS)}


def exact_fields(body: Any, kinds: Mapping[str, type], defaults: Mapping[str, Any] | None = None) -> list[Any]:
    """The values of ``kinds``' fields in ``body``, a decoded msgpack map (a field of
    ``defaults`` may be missing: its default then), each of its exact type; else ValueError
    saying which is not ("is not a map holding ...", "field 'x' is int, not str": the caller
    names what ``body`` is in front). Nothing is converted before it is checked: a frame's or
    a manifest's checksum is unkeyed, so a forged body can be well checksummed."""
    defaults = defaults or {}
    if type(body) is not dict or not all(name in body or name in defaults for name in kinds):
        *first, last = kinds
        raise ValueError(f"is not a map holding {', '.join(first)} and {last}")
    values = [body[name] if name in body else defaults[name] for name in kinds]
    for (name, kind), value in zip(kinds.items(), values):
        if type(value) is not kind:
            raise ValueError(f"field {name!r} is {type(value).__name__}, not {kind.__name__}")
    return values


@dataclass(frozen=True)
class FrameHeader:
    """What a verified frame says about itself (everything but the payload)."""

    run_id: str
    generation: int
    token: int
    owner: str
    created_ms: int
    schema_version: int
    codec: int
    compression: str  # "none" | "zstd"
    metadata: dict = field(hash=False)  # user metadata, exact types
    payload_size: int  # stored (possibly compressed) payload length


def zstd_module(run_id: str | None) -> ModuleType:
    """The zstandard module (an optional extra), or the error naming the extra to install."""
    try:
        import zstandard
    except ImportError:
        raise CodecUnavailableError("zstd compression (the zstandard package)", extra="zstd",
                                    run_id=run_id) from None
    return zstandard
