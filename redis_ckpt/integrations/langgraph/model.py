"""How a LangGraph thread is laid out in Redis, and how its values are framed.

One thread = one store run, ``lg.<thread_id, percent-encoded>`` (``lg#<sha256>`` past the
run-id limit): every key below shares the run's hash tag, so a thread lives in one slot of
a Redis Cluster and every operation on it is one Lua script (``lua/saver_*.lua``, whose
headers say what each key holds). The store's own ``fence`` and ``events`` keys serve the
thread too: tokens come from the same fence (``store.revoke`` fences a thread's writer), and
claims and refused writes go to the same audit stream.

Every stored value, record and write is an entry (:class:`Framer`: checksummed, bound to
the thread's run id) whose payload also names what it is (channel and version, checkpoint
id, task and index), so an entry read from the wrong field is damage, never a wrong answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import quote, unquote

import xxhash

from ...core.codec import decode_state, encode_state
from ...core.config import MAX_TTL_MS
from ...core.frame import MAX_ZSTD_RATIO
from ...core.frame.layout import zstd_module
from ...core.keys import MAX_RUN_ID, RunKeys, glob_escape
from ...errors import FrameDamage, FrameError, InvalidOptionError, OutOfRangeError, StateTooLargeError

__all__ = [
    "RUN_PREFIX", "HASHED_RUN_PREFIX", "thread_run_id", "thread_of_run", "ThreadKeys", "ThreadTTL",
    "Framer", "items", "parse_items", "split_record", "check_text", "check_keys", "check_thread_id", "check_name",
    "check_checkpoint_id", "version_text",
]

RUN_PREFIX = "lg."
HASHED_RUN_PREFIX = "lg#"


def thread_run_id(thread_id: Any) -> str:
    """The store run id that holds a LangGraph thread (stable, injective)."""
    text = check_thread_id("thread_id", str(thread_id))
    encoded = RUN_PREFIX + quote(text, safe="-_.")
    if len(encoded) <= MAX_RUN_ID:
        return encoded
    return HASHED_RUN_PREFIX + hashlib.sha256(text.encode("utf-8")).hexdigest()


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


def cross_key(namespace: str, lg_run_id: str, *, pending: bool = False) -> str:
    """The cross-thread index of a LangGraph run id (the threads holding its checkpoints):
    outside every thread's slot, rebuildable from the threads' ``runs`` keys. ``pending``:
    the threads a delete_for_runs of the run took out of the index and has not finished
    (same slot as the index)."""
    return f"{namespace}:{'lgrundel' if pending else 'lgrun'}:{{{quote(lg_run_id, safe='-_.')}}}"


def check_text(kind: str, value: Any) -> Any:
    """``value``, unless it is a str UTF-8 cannot encode (what goes to Redis must be): then a
    ValueError naming ``kind``, before anything is sent (the codec would refuse it later, at a
    path such as ``langgraph[0]`` that tells the caller nothing)."""
    if isinstance(value, str) and not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"{kind} {value!r} is not encodable as UTF-8 (lone surrogate at index {exc.start})"
                             ) from None
    return value


def check_keys(kind: str, value: Any) -> None:
    """After the serializer refused ``value`` (a TypeError, "string contains surrogates"):
    check_text's ValueError for a dict key in it UTF-8 cannot encode, named by its path
    (``metadata['a'][0] key``), when its dicts, lists and tuples hold one. LangGraph's
    serializer replaces such a str with "?" where it is a value, and refuses it where it is
    a key without saying where; found nowhere, this returns (the caller re-raises)."""
    stack: list[tuple[str, Any]] = [("", value)]
    seen: set[int] = set()
    while stack:
        path, v = stack.pop()
        if not isinstance(v, (dict, list, tuple)) or id(v) in seen:
            continue
        seen.add(id(v))
        if isinstance(v, dict):
            for key in v:
                if isinstance(key, str):
                    check_text(f"{kind}{path} key", key)
            children = [(f"{path}[{key!r}]", item) for key, item in v.items()]
        else:
            children = [(f"{path}[{i}]", item) for i, item in enumerate(v)]
        stack.extend(reversed(children))


def check_thread_id(kind: str, value: str) -> str:
    """A thread id (named ``kind`` in the error: copy_thread has two): not empty, encodable as UTF-8."""
    check_text(kind, value)
    if not value:
        raise ValueError(f"{kind} must not be empty")
    return value


def check_name(kind: str, value: Any) -> str:
    """A name that becomes part of a field or member: a str without NUL, encodable as UTF-8."""
    if not isinstance(value, str) or "\x00" in value:
        raise ValueError(f"{kind} must be a str without NUL, got {value!r}")
    check_text(kind, value)
    return value


def check_checkpoint_id(value: Any) -> str:
    """A checkpoint id a put or put_writes stores under: a name, not empty (a read takes ""
    for "the newest": a checkpoint stored under it could never be read)."""
    if check_name("checkpoint id", value) == "":
        raise ValueError("checkpoint id must not be empty")
    return value  # type: ignore[no-any-return]


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
    data lives after its last write (and, with refresh_on_read, its last read); at most 1/16
    of that longer (see saver_write.lua, "Expiry")."""

    ms: int = 0
    refresh_on_read: bool = False

    @property
    def slack_ms(self) -> int:
        """How far a thread's expiry may fall behind the TTL before a write or read moves it
        (saver_write.lua, "Expiry": the same TTL / 16)."""
        return self.ms // 16

    @property
    def index_ms(self) -> int:
        """The expiry a LangGraph run's cross-thread index gets at each refresh (every
        ``slack_ms`` while the run writes): twice the longest a thread lives past a write, so
        it outlives every thread the run's writes kept alive, even when one refresh is lost."""
        return 2 * (self.ms + self.slack_ms)

    @classmethod
    def parse(cls, spec: Mapping[str, Any] | None) -> ThreadTTL:
        if spec is None:
            return cls()
        if not isinstance(spec, Mapping) or not set(spec) <= {"default_ttl", "refresh_on_read"}:
            raise InvalidOptionError(f'thread_ttl must be {{"default_ttl": minutes, "refresh_on_read": bool}}, '
                                     f'got {spec!r}', argument="thread_ttl")
        minutes = spec.get("default_ttl")
        refresh = spec.get("refresh_on_read", False)
        if not isinstance(refresh, bool):
            raise InvalidOptionError(f"thread_ttl refresh_on_read must be a bool, got {refresh!r}",
                                     argument="thread_ttl")
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
    """Seals the saver's entries (values, records, writes) and opens them again.

    An entry is smaller and ~10x cheaper to check than a store generation's frame (the saver
    reads many small entries per call: a page of ``list`` opens dozens), with the same
    guarantees: checksummed, bound to its thread, its payload encoded exactly::

        offset  size  field
        0       4     magic b"RCLG"
        4       1     entry format version (1)
        5       1     compression id (0 none, 1 zstd: one zstd frame recording its content size)
        6       16    xxh3-128 of the thread's run id (UTF-8), a NUL, bytes [0, 6) and the body
        22      ...   body: the payload encoded by redis_ckpt's exact codec (maybe compressed)

    Damage (and an entry moved to another thread, whose run id is not in its digest) is a
    :class:`FrameError`: BAD_MAGIC, UNKNOWN_FORMAT, TRUNCATED, CHECKSUM, UNKNOWN_COMPRESSION,
    UNDECODABLE; a missing entry MISSING.
    """

    MAGIC = b"RCLG"
    HEAD = 22

    def __init__(self, owner: str, max_bytes: int, compression: str) -> None:
        self.owner = owner
        self.max_bytes = max_bytes
        self.compression = compression
        self._zstd: Any = None

    def _codec(self, run_id: str) -> Any:
        if self._zstd is None:
            self._zstd = zstd_module(run_id)
        return self._zstd

    def seal(self, run_id: str, payload: Any) -> bytes:
        body = encode_state(payload, root="langgraph")
        if len(body) > self.max_bytes:
            raise StateTooLargeError(
                f"a value of thread run {run_id!r} encodes to {len(body)} bytes; the store's max_state_bytes "
                f"is {self.max_bytes}", size=len(body), limit=self.max_bytes, run_id=run_id)
        head = b"RCLG\x01\x00"
        if self.compression == "zstd" and len(body) > 512:
            zstd = self._codec(run_id)
            body = zstd.ZstdCompressor(level=3, write_content_size=True).compress(body)
            head = b"RCLG\x01\x01"
        digest = xxhash.xxh3_128(run_id.encode("utf-8"))
        digest.update(b"\x00" + head)
        digest.update(body)
        return b"".join((head, digest.digest(), body))

    def open(self, run_id: str, where: str, blob: bytes | None, *, kind: type = list, size: int = 0) -> Any:
        """The payload of a stored entry; FrameError names ``where`` when it is missing,
        damaged, bound to another thread, or not the ``kind`` of payload expected there."""

        def damage(reason: FrameDamage, detail: str) -> FrameError:
            return FrameError(reason, f"{where}: {detail}", run_id=run_id)

        if blob is None:
            raise FrameError(FrameDamage.MISSING, f"{where} is missing", run_id=run_id)
        if blob[:4] != self.MAGIC:
            raise damage(FrameDamage.BAD_MAGIC, f"starts with {bytes(blob[:4])!r}, not {self.MAGIC!r}")
        if len(blob) < self.HEAD:
            raise damage(FrameDamage.TRUNCATED, f"{len(blob)} bytes; an entry has at least {self.HEAD}")
        if blob[4] != 1:
            raise damage(FrameDamage.UNKNOWN_FORMAT, f"entry format {blob[4]}; this code reads 1")
        view = memoryview(blob)
        digest = xxhash.xxh3_128(run_id.encode("utf-8"))
        digest.update(b"\x00")
        digest.update(view[:6])
        digest.update(view[self.HEAD:])
        if digest.digest() != blob[6:self.HEAD]:
            raise damage(FrameDamage.CHECKSUM, "xxh3-128 digest does not match the content (damaged, or the "
                         "entry of another thread)")
        body: Any = view[self.HEAD:]
        if blob[5] == 1:
            body = self._decompress(run_id, damage, body)
        elif blob[5] != 0:
            raise damage(FrameDamage.UNKNOWN_COMPRESSION, f"compression id {blob[5]}")
        try:
            value = decode_state(bytes(body))
        except ValueError as exc:
            raise damage(FrameDamage.UNDECODABLE, str(exc)) from None
        if not isinstance(value, kind) or (size and len(value) != size):
            raise damage(FrameDamage.UNDECODABLE, "it does not hold what the saver stores there")
        return value

    def _decompress(self, run_id: str, damage: Any, data: memoryview) -> bytes:
        zstd = self._codec(run_id)
        try:
            n = zstd.frame_content_size(data)
        except zstd.ZstdError as exc:
            raise damage(FrameDamage.UNDECODABLE, f"zstd frame header: {exc}") from None
        if n < 0 or n > self.max_bytes or n > MAX_ZSTD_RATIO * len(data):
            raise damage(FrameDamage.UNDECODABLE, f"zstd content size {n} (recorded: >= 0, at most "
                         f"{self.max_bytes} and {MAX_ZSTD_RATIO}x the entry)")
        try:
            return zstd.ZstdDecompressor().decompress(data)  # type: ignore[no-any-return]
        except zstd.ZstdError as exc:
            raise damage(FrameDamage.UNDECODABLE, f"zstd: {exc}") from None


def pairs(flat: Sequence[Any]) -> list[tuple[Any, Any]]:
    return list(zip(flat[::2], flat[1::2]))
