"""How a LangGraph thread is laid out in Redis, and how its values are framed.

One thread = one store run, ``lg.<thread_id, percent-encoded>`` (``lg#<sha256>`` past the
run-id limit): every key below shares the run's hash tag, so a thread lives in one slot of
a Redis Cluster and every operation on it is one Lua script (``lua/saver_*.lua``, whose
headers say what each key holds). The store's own ``fence`` and ``events`` keys serve the
thread too: tokens come from the same fence (``store.revoke`` fences a thread's writer), and
claims and refused writes go to the same audit stream.

Every stored value, record and write is a redis-ckpt frame (checksummed, bound to the
thread's run id) whose payload also names what it is (channel and version, checkpoint id,
task and index), so a frame read from the wrong field is damage, never a wrong answer.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import quote, unquote

from ...core.codec import decode_state, encode_state
from ...core.frame import decode_frame, encode_frame
from ...core.keys import MAX_RUN_ID, RunKeys, glob_escape
from ...errors import FrameDamage, FrameError, OutOfRangeError, StateTooLargeError

__all__ = [
    "RUN_PREFIX", "HASHED_RUN_PREFIX", "thread_run_id", "thread_of_run", "ThreadKeys", "ThreadTTL",
    "Framer", "items", "parse_items", "split_record", "check_name", "version_text",
]

RUN_PREFIX = "lg."
HASHED_RUN_PREFIX = "lg#"
#: the longest thread TTL: 2**50 ms, the bound below which the scripts keep numbers exact
MAX_TTL_MS = 2**50


def thread_run_id(thread_id: Any) -> str:
    """The store run id that holds a LangGraph thread (stable, injective)."""
    text = str(thread_id)
    if not text:
        raise ValueError("thread_id must not be empty")
    encoded = RUN_PREFIX + quote(text, safe="-_.")
    if len(encoded) <= MAX_RUN_ID:
        return encoded
    return HASHED_RUN_PREFIX + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def thread_of_run(run_id: str) -> str | None:
    """The thread id a run id names, when it can be read from it (not for hashed ones)."""
    return unquote(run_id[len(RUN_PREFIX):]) if run_id.startswith(RUN_PREFIX) else None


@dataclass(frozen=True)
class ThreadKeys:
    """The keys of one thread, in the order every ``saver_*`` script takes them."""

    namespace: str
    run_id: str

    @cached_property
    def run(self) -> RunKeys:
        return RunKeys(self.namespace, self.run_id)

    @cached_property
    def all(self) -> list[str]:
        base = self.run.base + ":lg:"
        return [self.run.fence, self.run.events, base + "meta", base + "ix", base + "cp", base + "v",
                base + "wi", base + "w", base + "ns", base + "runs"]

    @property
    def meta(self) -> str:
        return self.all[2]

    @property
    def route(self) -> str:
        return self.run.fence

    @staticmethod
    def scan_pattern(namespace: str) -> str:
        """SCAN MATCH pattern for the meta key of every thread of a namespace."""
        return f"{glob_escape(namespace)}:{{lg[.#]*}}:lg:meta"


def cross_key(namespace: str, lg_run_id: str) -> str:
    """The cross-thread index of a LangGraph run id (the threads holding its checkpoints):
    outside every thread's slot, rebuildable from the threads' ``runs`` keys."""
    return f"{namespace}:lgrun:{{{quote(lg_run_id, safe='-_.')}}}"


def check_name(kind: str, value: Any) -> str:
    """A name that becomes part of a field or member: a str without NUL."""
    if not isinstance(value, str) or "\x00" in value:
        raise ValueError(f"{kind} must be a str without NUL, got {value!r}")
    return value


def version_text(version: Any) -> str:
    """A channel version as the text that names its value (int, float or str versions)."""
    if isinstance(version, bool) or not isinstance(version, (int, float, str)):
        raise ValueError(f"channel versions must be int, float or str, got {version!r}")
    return check_name("a channel version", version if isinstance(version, str) else repr(version))


def items(parts: Iterable[str | bytes]) -> bytes:
    """Strings as ``<length>:<bytes>`` one after another (what the scripts parse)."""
    out = []
    for p in parts:
        b = p.encode("utf-8") if isinstance(p, str) else p
        out.append(b"%d:%s" % (len(b), b))
    return b"".join(out)


def parse_items(blob: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(blob):
        c = blob.index(b":", i)
        n = int(blob[i:c])
        out.append(blob[c + 1:c + 1 + n])
        i = c + 1 + n
    return out


def split_record(stored: bytes) -> tuple[list[bytes], bytes]:
    """A stored record: (its shape: parent id, then channel/version pairs; its frame)."""
    c = stored.index(b":")
    n = int(stored[:c])
    return parse_items(stored[c + 1:c + 1 + n]), stored[c + 1 + n:]


@dataclass(frozen=True)
class ThreadTTL:
    """``thread_ttl={"default_ttl": minutes, "refresh_on_read": bool}``: how long a thread's
    data lives after its last write (and, with refresh_on_read, its last read)."""

    ms: int = 0
    refresh_on_read: bool = False

    @classmethod
    def parse(cls, spec: Mapping[str, Any] | None) -> ThreadTTL:
        if spec is None:
            return cls()
        if not isinstance(spec, Mapping) or not set(spec) <= {"default_ttl", "refresh_on_read"}:
            raise ValueError(f'thread_ttl must be {{"default_ttl": minutes, "refresh_on_read": bool}}, got {spec!r}')
        minutes = spec.get("default_ttl")
        refresh = spec.get("refresh_on_read", False)
        if not isinstance(refresh, bool):
            raise ValueError(f"thread_ttl refresh_on_read must be a bool, got {refresh!r}")
        if minutes is None:
            return cls(0, refresh)
        ok = isinstance(minutes, (int, float)) and not isinstance(minutes, bool) and minutes > 0
        ms = round(minutes * 60_000) if ok and minutes * 60_000 <= MAX_TTL_MS else 0
        if ms < 1:
            raise OutOfRangeError(f"thread_ttl default_ttl must be a positive number of minutes up to "
                                  f"{MAX_TTL_MS // 60_000}, got {minutes!r}", argument="default_ttl",
                                  value=minutes, minimum=1 / 60_000, maximum=MAX_TTL_MS / 60_000)
        return cls(ms, refresh)


class Framer:
    """Seals values into frames bound to a thread's run, and opens them again."""

    def __init__(self, owner: str, max_bytes: int, compression: str) -> None:
        self.owner = owner
        self.max_bytes = max_bytes
        self.compression = compression

    def seal(self, run_id: str, payload: Any) -> bytes:
        data = encode_state(payload, root="langgraph")
        if len(data) > self.max_bytes:
            raise StateTooLargeError(
                f"a value of thread run {run_id!r} encodes to {len(data)} bytes; the store's max_state_bytes "
                f"is {self.max_bytes}", size=len(data), limit=self.max_bytes, run_id=run_id)
        return encode_frame(data, run_id=run_id, generation=0, token=0, owner=self.owner,
                            created_ms=time.time_ns() // 1_000_000, schema_version=1, compression=self.compression)

    def open(self, run_id: str, where: str, blob: bytes | None, *, kind: type = list, size: int = 0) -> Any:
        """The payload of a stored frame; FrameError names ``where`` when it is missing,
        damaged, bound to another run, or not the ``kind`` of payload expected there."""
        if blob is None:
            raise FrameError(FrameDamage.MISSING, f"{where} is missing", run_id=run_id)
        try:
            _header, data = decode_frame(blob, run_id=run_id, generation=0, max_payload_bytes=self.max_bytes)
            value = decode_state(data)
        except FrameError as bad:
            raise FrameError(bad.reason, f"{where}: {bad.detail}", run_id=run_id) from None
        except ValueError as exc:
            raise FrameError(FrameDamage.UNDECODABLE, f"{where}: {exc}", run_id=run_id) from None
        if not isinstance(value, kind) or (size and len(value) != size):
            raise FrameError(FrameDamage.UNDECODABLE, f"{where} does not hold what the saver stores there",
                             run_id=run_id)
        return value


def pairs(flat: Sequence[Any]) -> list[tuple[Any, Any]]:
    return list(zip(flat[::2], flat[1::2]))
