"""The sans-IO core shared by :class:`CheckpointStore` and :class:`AsyncCheckpointStore`.

Every store operation is a generator *flow* (see ``_io``): it decides, the shells do the
I/O. Nothing here touches a socket, a clock for waiting, or a thread.
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .chunks import check_chunk, encode_manifest, is_manifest, read_manifest, split
from .codec import CODEC_MSGPACK, MAX_DEPTH, encode_state_buffer
from .durability import Durability
from ..errors import (
    CodecUnavailableError,
    ConflictError,
    CorruptCheckpointError,
    DurabilityError,
    FencedError,
    FrameDamage,
    FrameError,
    HeadMovingError,
    LeaseHeldError,
    LeaseLostError,
    NotFoundError,
    OutcomeUnknownError,
    OutOfRangeError,
    SchemaVersionError,
    ServerError,
    StateError,
    StoreUnavailableError,
    UnsupportedTypeError,
)
from .frame import decode_frame, decode_payload, encode_frame, frame_checksum, read_header
from .ops import Cmd, Deadline, Flow, Pipe, Script, Sleep
from ..probe.rules import DRIFT_KEYS, drift_problems
from .keys import RunKeys, glob_escape, validate_namespace, validate_owner, validate_run_id
from ..models import Checkpoint, Event, GenerationInfo, Grant, RunInfo, SkippedGeneration, ms_to_datetime

__all__ = ["StoreCore", "RetryPolicy", "default_owner", "MAX_INT", "MAX_TTL_MS"]

log = logging.getLogger("redis_ckpt")
T = TypeVar("T")

#: Errors after which an operation may be sent again: the connection broke or timed out.
RETRYABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError)
Migration = Callable[[Any], Any]
#: The exact-number bound: every token, generation, fence, ttl and time a Lua script compares
#: or writes is an integer up to MAX_INT. Lua 5.1 numbers are doubles, exact up to 2**53; the
#: margin keeps ``x + 1`` and sums of times exact. The scripts refuse past it (OUT_OF_RANGE)
#: before writing anything; the flows refuse first (OutOfRangeError). Also in lua/*.lua.
MAX_INT = 2**50
#: the longest lease: 2**50 ms (~35,700 years); the same bound, so PEXPIRE and the lease's
#: ttl_ms stay exact
MAX_TTL_MS = MAX_INT
#: staged keys of a commit whose writer dies before its script runs expire after the retry
#: deadline twice over plus this margin (the run's next commit or acquire removes them sooner)
STAGE_TTL_MARGIN_MS = 60_000
_COMMIT_ID = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
#: chunks fetched per round trip when loading a chunked generation
READ_BATCH = 4
DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024
#: frames up to this size go to the commit script as an argument; larger ones are staged
INLINE_BYTES = 16 * 1024
#: audit events read per round trip when the head is missing (is the run deleted, or lost?)
EVENTS_PAGE = 200
#: kinds of audit event that mean "a generation was written" (``*_unknown``, a resend that
#: cannot tell whether its first attempt applied, proves nothing: the search goes on)
COMMIT_KINDS = frozenset({"commit", "commit_retry", "import", "import_retry"})
#: keys a SCAN call looks at when the head is missing and the audit stream cannot tell
SCAN_COUNT = 1000
#: the least time an attempt gets: with less left before the deadline, the operation gives up
MIN_ATTEMPT_S = 0.01
#: the head fields a load needs (fewer replies to parse than HGETALL)
LOAD_FIELDS = ("generation", "kept", "checksum", "commit_id", "kept_ms")


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _hash(reply: Any) -> dict[str, str]:
    if not reply:
        return {}
    if isinstance(reply, dict):
        return {_text(k): _text(v) for k, v in reply.items()}
    it = iter(reply)  # flat [k, v, k, v] (RESP2 without callbacks)
    return {_text(k): _text(v) for k, v in zip(it, it)}


def _kept(head: Mapping[str, str]) -> list[tuple[int, int]]:
    """The head's kept generations as (generation, chunks), oldest first."""
    out = []
    for entry in head.get("kept", "").split(","):
        if entry:
            g, _, c = entry.partition(":")
            out.append((int(g), int(c or 0)))
    return out


def _fields(*values: object) -> str:
    """The scalar arguments of commit.lua as one ARGV entry (fewer arguments to encode and send).

    None of them can hold a newline: numbers, hex, and owner/by names validated as printable.
    """
    return "\n".join(map(str, values))


def _entry(g: int, chunks: int) -> str:
    return f"{g}:{chunks}"


def _kept_times(head: Mapping[str, str]) -> dict[int, int]:
    """generation -> server time (ms) of its commit, for the kept generations whose time the
    head recorded (``kept_ms``, aligned with ``kept``; "-" or absent for older heads)."""
    gens = [g for g, _ in _kept(head)]
    times = head.get("kept_ms", "").split(",") if head.get("kept_ms") else []
    out = {}
    for g, t in zip(reversed(gens), reversed(times)):
        if t.isdigit():
            out[g] = int(t)
    return out


def check_int(argument: str, value: object, low: int, high: int, *, run_id: str | None = None) -> int:
    """``value`` if it is an int in [low, high], else OutOfRangeError naming ``argument``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise OutOfRangeError(
            f"{argument} must be an int in [{low}, {high}], got {value!r}"
            + (f" (run {run_id!r})" if run_id is not None else ""),
            argument=argument, value=value, minimum=low, maximum=high, run_id=run_id,
        )
    return value


def check_ttl_ms(ttl_ms: object, *, run_id: str | None = None) -> int:
    """A lease ttl in whole ms: an int in [1, MAX_TTL_MS], else OutOfRangeError."""
    return check_int("ttl", ttl_ms, 1, MAX_TTL_MS, run_id=run_id)


def _staged(entries: Mapping[str, str]) -> list[str]:
    """The staging hash's entries as "<cid>:<count>" (what the scripts take)."""
    out = []
    for cid, value in entries.items():
        parts = value.split(":")
        out.append(f"{cid}:{parts[2] if len(parts) == 4 and parts[2].isdigit() else 0}")
    return sorted(out)


def _out_of_range(run_id: str, fields: list[str], what: str) -> OutOfRangeError:
    """The OutOfRangeError for a script's "OUT_OF_RANGE <argument> <value>" answer."""
    argument, value = fields[0], (fields[1] if len(fields) > 1 else "")
    shown: object = int(value) if value.isdigit() else value
    if argument == "fence":
        message = (f"{what} of run {run_id!r} refused: its fence is {value}, at or past the bound "
                   f"{MAX_INT} up to which tokens stay exact; no token can be handed out")
    else:
        message = f"{what} of run {run_id!r} refused: {argument} {value} is out of range [1, {MAX_INT}]"
    return OutOfRangeError(message, argument=argument, value=shown, minimum=1, maximum=MAX_INT, run_id=run_id)


def _outcome_unknown(run_id: str, fields: list[str], what: str) -> OutcomeUnknownError:
    """The error for "OUTCOME_UNKNOWN <code> <token> <fence> <expected> <actual>"."""
    code, token, fence, expected, actual = fields[:5]
    return OutcomeUnknownError(run_id, what=what, refused=code, token=int(token), fence=int(fence),
                               expected=int(expected), actual=int(actual))


def _script_error(reply: Any) -> tuple[str, list[str]] | None:
    """(code, fields) of a script's error reply, else None."""
    if isinstance(reply, ResponseError):
        code, _, rest = str(reply).partition(" ")
        return code, rest.split(" ") if rest else []
    return None


def _pairs(reply: Any) -> dict[str, Any]:
    """A map reply (XINFO ...) as a dict with str keys; values as they came."""
    if isinstance(reply, dict):
        return {_text(k): v for k, v in reply.items()}
    it = iter(reply or [])
    return {_text(k): v for k, v in zip(it, it)}


def _first_fence(event: Mapping[str, str]) -> bool:
    """Whether an audit event is the first fence increment of a run (its first acquire,
    revoke or delete): nothing can have been written before it."""
    kind = event.get("kind")
    return (kind == "acquire" and event.get("token") == "1") or \
        (kind in ("revoke", "delete") and event.get("fence") == "1")


def _deadline(seconds: float) -> Flow[float]:
    """The operation's deadline (``time.monotonic()``): the driver's, which started with the
    operation; a driver that keeps none starts one now."""
    until = yield Deadline(seconds)
    return until if until is not None else time.monotonic() + seconds


def _exec_replies(replies: list[Any], n: int) -> list[Any]:
    """The ``n`` replies inside the EXEC of a ``MULTI ... EXEC`` pipe; an error raised."""
    for r in replies:
        if isinstance(r, Exception):
            raise r
    inner = replies[-1]
    if not isinstance(inner, list) or len(inner) != n:
        raise ResponseError(f"EXEC answered {inner!r}, not {n} replies")
    for r in inner:
        if isinstance(r, Exception):
            raise r
    return inner


@dataclass(frozen=True)
class RetryPolicy:
    """How an operation is sent again, and when it ends.

    Every operation ends by ``deadline_s`` seconds from its start, whatever the server does:
    each attempt's socket timeout is capped by the time left, the back-off never sleeps past
    it, and at the deadline the operation raises :class:`StoreUnavailableError`
    (``outcome_unknown=True`` when it writes). A broken or timed-out connection, and a server
    answering LOADING (restarted, replaying its AOF), are retried with an exponential back-off
    (``initial_backoff_s`` doubling up to ``max_backoff_s``, plus up to ``initial_backoff_s``
    of jitter) until the deadline, so a restart within it is ridden out. ``attempts`` caps the
    number of attempts in all, the first included (1 = never retry); None: as many as the
    deadline allows.

    Only operations that are safe to repeat are retried: a commit carries its commit id
    (a resent commit that already applied returns the same generation), reads are reads.
    """

    attempts: int | None = None
    deadline_s: float = 15.0
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 1.0

    def __post_init__(self) -> None:
        a = self.attempts
        if a is not None and (not isinstance(a, int) or isinstance(a, bool) or a < 1):
            raise ValueError(f"RetryPolicy.attempts must be None or an int >= 1, got {a!r}")
        for name, low in (("deadline_s", None), ("initial_backoff_s", 0.0), ("max_backoff_s", 0.0)):
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if not ok or (v <= 0 if low is None else v < low):
                need = "> 0" if low is None else ">= 0"
                raise ValueError(f"RetryPolicy.{name} must be a finite number {need} (seconds), got {v!r}")


class StoreCore:
    """Configuration, migrations and every flow of a store."""

    def __init__(
        self,
        *,
        namespace: str,
        schema_version: int = 1,
        keep: int = 3,
        durability: Durability | None = None,
        compression: str = "none",
        max_state_bytes: int = 512 * 1024 * 1024,
        events_maxlen: int = 1000,
        retry: RetryPolicy | None = None,
        confirm: bool = True,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        if not isinstance(schema_version, int) or schema_version < 1:
            raise ValueError("schema_version must be an int >= 1")
        if not isinstance(keep, int) or keep < 1:
            raise ValueError("keep must be an int >= 1")
        if compression not in ("none", "zstd"):
            raise ValueError("compression must be 'none' or 'zstd'")
        self.namespace = validate_namespace(namespace)
        self.schema_version = schema_version
        self.keep = keep
        self.durability = durability or Durability()
        self.compression = compression
        self.max_state_bytes = max_state_bytes
        self.events_maxlen = events_maxlen
        self.retry = retry or RetryPolicy()
        self.confirm = confirm
        if not isinstance(chunk_bytes, int) or chunk_bytes < 1024:
            raise ValueError("chunk_bytes must be an int >= 1024")
        self.chunk_bytes = chunk_bytes
        self.migrations: dict[int, Migration] = {}
        self._watched_engine: str | None = None
        self._keys: dict[str, RunKeys] = {}
        #: the newest head generation this process saw per run: a load reads it with the head
        self._last_generation: dict[str, int] = {}
        self._chunks_of: dict[tuple[str, int], int] = {}

    # -- configuration -------------------------------------------------------------------

    def _remember(self, run_id: str, generation: int, chunks: int = 0) -> None:
        """What this process last saw of a run: its head generation (a load reads it in the
        same round trip as the head) and the chunk counts of the chunked generations it
        committed (a later commit that rotates one out passes all its keys at once)."""
        if len(self._last_generation) >= 4096:
            self._last_generation.clear()
            self._chunks_of.clear()
        self._last_generation[run_id] = generation
        if chunks:
            self._chunks_of[(run_id, generation)] = chunks
        self._chunks_of.pop((run_id, generation - self.keep), None)

    @property
    def stage_ttl_ms(self) -> int:
        """How long staged keys live when their commit never runs: tied to the commit deadline
        (a resend within it finds them, or stages again), minutes rather than an hour."""
        return int(2 * self.retry.deadline_s * 1000) + STAGE_TTL_MARGIN_MS

    def keys(self, run_id: str) -> RunKeys:
        """The keys of ``run_id`` (validated); recently used runs are remembered."""
        k = self._keys.get(run_id) if isinstance(run_id, str) else None
        if k is None:
            k = RunKeys(self.namespace, validate_run_id(run_id))
            if len(self._keys) >= 4096:
                self._keys.clear()
            self._keys[k.run_id] = k
        return k

    def register_migration(self, from_version: int, fn: Migration | None = None) -> Any:
        """Register ``fn(state) -> state`` that turns schema ``from_version`` into ``from_version + 1``.

        Usable as a call or as a decorator: ``@store.register_migration(1)``.
        """
        if not isinstance(from_version, int) or from_version < 1:
            raise ValueError("from_version must be an int >= 1")

        def add(f: Migration) -> Migration:
            if from_version in self.migrations:
                raise ValueError(f"a migration from schema {from_version} is already registered")
            self.migrations[from_version] = f
            return f

        return add if fn is None else add(fn)

    # -- plumbing ------------------------------------------------------------------------

    def watch_config(self, engine: str) -> None:
        """Re-read the durability settings with every confirmed write (the probe could read CONFIG).

        A server whose settings drift after start (``CONFIG SET maxmemory-policy allkeys-lru``)
        then fails the next write with DurabilityError instead of acknowledging it silently.
        The CONFIG GET rides in the write's pipeline: no extra round trip.
        """
        self._watched_engine = engine

    def _confirmed(self, script: Script, route: str, before: list[Cmd] | None = None) -> Pipe:
        ops: list[Cmd | Script] = [*(before or []), script]
        if self.confirm:
            ops += [Cmd(*c) for c in self.durability.commands()]
            if self._watched_engine is not None:
                ops.append(Cmd("CONFIG", "GET", *DRIFT_KEYS))
        return Pipe(ops, route=route)

    def _check_confirmed(self, replies: list[Any], *, what: str, run_id: str, generation: int | None) -> None:
        if not self.confirm:
            return
        d = self.durability
        n = len(d.commands())
        tail = replies[1 : 1 + n]

        def unconfirmed(local: int, replicas: int, server_error: str | None = None) -> DurabilityError:
            return DurabilityError(
                run_id, what=what, generation=generation, local_asked=1, local_got=local,
                replicas_asked=d.replicas, replicas_got=replicas, timeout_ms=d.timeout_ms,
                server_error=server_error,
            )

        failed = next((r for r in tail if isinstance(r, ResponseError)), None)
        if failed is not None:
            raise unconfirmed(0, 0, str(failed))
        got = d.read(tail)
        if not d.satisfied(got):
            raise unconfirmed(got.local, got.replicas)
        if self._watched_engine is not None:
            config = replies[1 + n]
            if isinstance(config, Exception):
                drifted = [f"CONFIG GET, readable at start, now fails: {config}"]
            else:
                drifted = drift_problems(_hash(config), self._watched_engine)
            if drifted:
                raise unconfirmed(got.local, got.replicas,
                                  "the server's settings changed since the store started: " + "; ".join(drifted))

    def _with_keys(self, build: Callable[[list[str], list[str], bool], Script], entries: list[str], route: str,
                   before: list[Cmd] | None = None, *, resend: bool = False) -> Flow[list[Any]]:
        """Send ``before`` then ``build(entries, dead, strict)`` and the confirmations on one connection.

        ``entries`` name the generations ("<g>:<chunks>") whose keys the script is given,
        ``dead`` the dead staged commits ("<cid>:<count>") whose staged keys it removes. When it
        answers NEED_KEYS (it would touch generations whose keys were not passed) or NEED_STAGE
        (dead staged commits whose keys were not passed), they are added and the script is
        sent again: nothing but the staging was written before that answer, and the staged keys
        stay in place for the resend; STAGE_MISSING stages them again. After three NEED_STAGE
        answers the script is sent not ``strict``: it applies and leaves what it was not given
        (to the next commit, or the staged keys' TTL), so a stream of dying stagers cannot
        starve a commit. ``resend``: an earlier attempt went out (its outcome unknown), so its
        staging may be in place: the script goes first alone, the staging again only on
        STAGE_MISSING. Returns the replies from the script's on.
        """
        send = None if resend else before
        dead: list[str] = []
        need_stage = 0
        for _ in range(8):
            replies = yield self._confirmed(build(entries, dead, need_stage < 3), route=route, before=send)
            staged, replies = replies[: len(send or [])], replies[len(send or []):]
            for r in staged:  # an EXEC's reply is the list of its commands' replies
                for one in r if isinstance(r, list) else [r]:
                    if isinstance(one, Exception):
                        raise one
            err = _script_error(replies[0])
            if err is None or err[0] not in ("NEED_KEYS", "STAGE_MISSING", "NEED_STAGE"):
                return replies
            if err[0] == "NEED_KEYS":
                entries = sorted(set(entries) | set(err[1]))
                send = None
            elif err[0] == "NEED_STAGE":
                dead = sorted(set(dead) | set(err[1]))
                need_stage += 1
                send = None
            else:
                send = before
        raise AssertionError("the generation key set did not converge")

    def _stored_form(self, k: RunKeys, generation: int, frame: bytes, cid: str, *, token: int,
                     expected: int) -> tuple[bytes, int, list[Cmd], list[str]]:
        """How a frame travels: (ARGV value for g:<n>, chunk count, staging commands, KEYS of
        the staged keys followed by the keys they become).

        Up to INLINE_BYTES the frame goes to the script as an argument; up to chunk_bytes it is
        staged whole with a plain SET and renamed into g:<n> (an argument of a script costs the
        server ~0.4 ms per MiB, a SET a fraction of that); beyond, it is staged as chunks and
        g:<n> gets the manifest. Staging first records the commit in the run's staging hash
        (so that the next commit or acquire can find and remove it if this writer dies before
        its script runs); every staged key and the hash expire after ``stage_ttl_ms``.
        """
        if len(frame) <= min(INLINE_BYTES, self.chunk_bytes):
            return frame, 0, [], []
        ttl = self.stage_ttl_ms
        if len(frame) <= self.chunk_bytes:
            stage = k.stage(cid, 0)
            return b"", 0, [*self._register(k, cid, token, expected, 1, len(frame), ttl),
                            Cmd("SET", stage, frame, "PX", ttl)], [stage, k.generation(generation)]
        parts = split(frame, self.chunk_bytes)
        # one MULTI/EXEC: the server applies (and, under appendfsync always, fsyncs) the chunks
        # in one go instead of once per chunk as each arrives
        staging = [Cmd("MULTI"), *self._register(k, cid, token, expected, len(parts), len(frame), ttl),
                   *(Cmd("SET", k.stage(cid, i), part, "PX", ttl) for i, part in enumerate(parts)),
                   Cmd("EXEC")]
        keys = [*(k.stage(cid, i) for i in range(len(parts))), *(k.chunk(generation, i) for i in range(len(parts)))]
        return encode_manifest(k.run_id, generation, parts), len(parts), staging, keys

    @staticmethod
    def _register(k: RunKeys, cid: str, token: int, expected: int, count: int, size: int, ttl: int) -> list[Cmd]:
        return [Cmd("HSET", k.staging, cid, f"{token}:{expected}:{count}:{size}"), Cmd("PEXPIRE", k.staging, ttl)]

    @staticmethod
    def _stage_keys(k: RunKeys, dead: list[str]) -> list[str]:
        """The staged keys of "<cid>:<count>" entries."""
        out: list[str] = []
        for e in dead:
            cid, _, count = e.rpartition(":")
            out += [k.stage(cid, i) for i in range(int(count))]
        return out

    def _drop_keys(self, k: RunKeys, entries: list[str]) -> list[str]:
        out: list[str] = []
        for e in entries:
            g, c = (int(x) for x in e.split(":"))
            out += k.generation_keys(g, c)
        return out

    def _retrying(self, body: Callable[[], Flow[T]], *, run_id: str | None, what: str, writes: bool) -> Flow[T]:
        """Run ``body`` until it returns, fails for a reason other than the connection, or the
        operation's deadline passes (see :class:`RetryPolicy`).

        A broken or timed-out connection and a server answering LOADING are retried with a
        bounded exponential back-off; the driver caps every attempt by the time left (the
        deadline is the driver's: it starts with the operation, and the flow asks for it only
        after a first failure, so the first attempt runs bare). A server error (NOPERM, OOM,
        ...) is a :class:`ServerError` at once.
        """
        p = self.retry
        until = 0.0  # the operation's deadline, asked of the driver after a first failure
        subject = f"{what} of run {run_id!r}" if run_id is not None else what

        def unavailable(exc: BaseException, attempts: int) -> StoreUnavailableError:
            unknown = " (the write may or may not have been applied)" if writes else ""
            spent = p.deadline_s - max(0.0, until - time.monotonic())
            return StoreUnavailableError(
                f"{subject} failed: the server is unreachable after {attempts} attempt(s) in "
                f"{spent:.1f} s (deadline {p.deadline_s:g} s): {type(exc).__name__}: {exc}{unknown}",
                run_id=run_id,
                outcome_unknown=writes,
            )

        def server_error(exc: RedisError) -> ServerError:
            return ServerError(
                f"{subject} failed: the server answered {type(exc).__name__}: {exc}",
                run_id=run_id, server_message=str(exc), outcome_unknown=writes,
            )

        attempts = 0
        while True:
            attempts += 1
            try:
                return (yield from body())
            except RETRYABLE as exc:  # BusyLoadingError (LOADING) is a ConnectionError
                last: BaseException = exc
            except RedisError as refused:
                raise server_error(refused) from refused
            if attempts == 1:  # the first attempt runs bare: no op but its own on the hot path
                until = yield from _deadline(p.deadline_s)
            left = until - time.monotonic()
            if (p.attempts is not None and attempts >= p.attempts) or left <= MIN_ATTEMPT_S:
                raise unavailable(last, attempts) from last
            pause = min(p.max_backoff_s, p.initial_backoff_s * 2 ** min(attempts - 1, 30))
            pause += random.uniform(0, p.initial_backoff_s)
            yield Sleep(min(pause, left - MIN_ATTEMPT_S))

    # -- lease ---------------------------------------------------------------------------

    def acquire_flow(self, run_id: str, owner: str, ttl_ms: int) -> Flow[Grant]:
        k = self.keys(run_id)
        owner = validate_owner(owner)
        check_ttl_ms(ttl_ms, run_id=k.run_id)

        def body() -> Flow[Grant]:
            dead: list[str] = []
            for attempt in range(6):
                # staged commits are all dead once the fence moves; the script names those it
                # was not given (NEED_STAGE, nothing written) and removes the ones it was
                strict = int(attempt < 5)
                script = Script("acquire", [k.fence, k.lease, k.head, k.events, k.staging, *self._stage_keys(k, dead)],
                                [owner, ttl_ms, self.events_maxlen, strict, *dead])
                replies = yield self._confirmed(script, route=k.fence)
                err = _script_error(replies[0])
                if err is not None:
                    code, fields = err
                    if code == "NEED_STAGE":
                        dead = sorted(set(dead) | set(fields))
                        continue
                    if code == "LEASE_HELD":
                        raise LeaseHeldError(k.run_id, owner=" ".join(fields[1:]), ms_left=int(fields[0]))
                    if code == "OUT_OF_RANGE":
                        raise _out_of_range(k.run_id, fields, "acquire")
                    raise replies[0]
                token, generation, kind, previous = replies[0]
                self._check_confirmed(replies, what="acquire", run_id=k.run_id, generation=None)
                return Grant(int(token), int(generation), _text(kind), int(previous))
            raise AssertionError("the staged key set did not converge")

        return self._retrying(body, run_id=k.run_id, what="acquire", writes=True)

    def renew_flow(self, run_id: str, owner: str, token: int, ttl_ms: int) -> Flow[int]:
        k = self.keys(run_id)
        check_ttl_ms(ttl_ms, run_id=k.run_id)

        def body() -> Flow[int]:
            script = Script("renew", [k.fence, k.lease, k.events], [token, ttl_ms, owner, self.events_maxlen])
            reply = (yield Pipe([script], route=k.lease))[0]
            err = _script_error(reply)
            if err is not None:
                code, fields = err
                if code == "LEASE_LOST":
                    holder_token = int(fields[1]) or None
                    holder = " ".join(fields[2:]) or None
                    raise LeaseLostError(k.run_id, token=token, holder=holder, holder_token=holder_token,
                                         fence=int(fields[0]))
                if code == "OUT_OF_RANGE":
                    raise _out_of_range(k.run_id, fields, "renew")
                raise reply
            return int(reply)

        return self._retrying(body, run_id=k.run_id, what="renew", writes=False)

    def release_flow(self, run_id: str, owner: str, token: int) -> Flow[bool]:
        k = self.keys(run_id)

        def body() -> Flow[bool]:
            script = Script("release", [k.lease, k.events], [token, owner, self.events_maxlen])
            reply = (yield Pipe([script], route=k.lease))[0]
            if isinstance(reply, Exception):
                raise reply
            return bool(int(reply))

        return self._retrying(body, run_id=k.run_id, what="release", writes=False)

    def revoke_flow(self, run_id: str, by: str) -> Flow[int]:
        k = self.keys(run_id)

        def body() -> Flow[int]:
            script = Script("revoke", [k.fence, k.lease, k.events], [by, self.events_maxlen])
            replies = yield self._confirmed(script, route=k.fence)
            if isinstance(replies[0], Exception):
                raise replies[0]
            self._check_confirmed(replies, what="revoke", run_id=k.run_id, generation=None)
            return int(replies[0])

        return self._retrying(body, run_id=k.run_id, what="revoke", writes=True)

    # -- commit --------------------------------------------------------------------------

    def encode(self, run_id: str, state: Any, *, generation: int, token: int, owner: str,
               metadata: Mapping[Any, Any] | None) -> bytes:
        """The framed generation for ``state``; raises StateError subclasses, writes nothing.

        A state over max_state_bytes is refused as soon as that is known (see encode_state).
        """
        try:
            if metadata is not None and not isinstance(metadata, Mapping):
                raise UnsupportedTypeError(
                    f"metadata must be a dict (or another Mapping), not {type(metadata).__name__}",
                    path="metadata", type_name=type(metadata).__name__,
                )
            payload = encode_state_buffer(state, limit=self.max_state_bytes)
            return encode_frame(
                payload, run_id=run_id, generation=generation, token=token, owner=owner,
                created_ms=_now_ms(), schema_version=self.schema_version,
                metadata=dict(metadata or {}), codec=CODEC_MSGPACK, compression=self.compression,
            )
        except (StateError, CodecUnavailableError) as exc:
            exc.run_id = run_id
            raise

    def commit_flow(self, run_id: str, state: Any, *, token: int, expected_generation: int,
                    owner: str, metadata: Mapping[Any, Any] | None = None,
                    commit_id: str | None = None) -> Flow[int]:
        k = self.keys(run_id)
        owner = validate_owner(owner)
        check_int("token", token, 1, MAX_INT, run_id=k.run_id)
        check_int("expected_generation", expected_generation, 0, MAX_INT - 1, run_id=k.run_id)
        if commit_id is not None and not (isinstance(commit_id, str) and _COMMIT_ID.fullmatch(commit_id)):
            raise ValueError("commit_id must be 1-128 characters of A-Z a-z 0-9 _ . -")
        new = expected_generation + 1
        frame = self.encode(k.run_id, state, generation=new, token=token, owner=owner, metadata=metadata)
        cid = commit_id or uuid.uuid4().hex
        stored, chunks, staging, chunk_keys = self._stored_form(k, new, frame, cid, token=token,
                                                                expected=expected_generation)
        checksum, size = frame_checksum(frame), len(frame)
        del frame  # the stored form (or its chunks, zero-copy views) is all that is kept
        # a guess at what rotation drops (the script asks for more when it is wrong)
        old = new - self.keep
        drop = [_entry(old, self._chunks_of.get((k.run_id, old), 0))] if old >= 1 else []
        sent = [0]  # attempts that went out: from the second on, a resend of this commit id
        # Staged bytes per run stay bounded: every commit that applies removes the staging of
        # commits that can no longer apply, and all other staging once it passes
        # max_state_bytes; so at any time a run holds its in-flight commits' data plus at most
        # max_state_bytes left over, and nothing older than stage_ttl_ms.

        def build(drop: list[str], dead: list[str], strict: bool) -> Script:
            return Script(
                "commit",
                [k.fence, k.head, k.events, k.lease, k.staging, k.generation(new), *chunk_keys,
                 *self._drop_keys(k, drop), *self._stage_keys(k, dead)],
                [_fields("commit", token, expected_generation, cid, checksum, self.schema_version,
                         CODEC_MSGPACK, owner, self.keep, self.events_maxlen, new, size, chunks, "",
                         len(chunk_keys) // 2, int(sent[0] > 1), len(drop), self.max_state_bytes, int(strict)),
                 stored, *drop, *dead],
            )

        def body() -> Flow[int]:
            sent[0] += 1
            replies = yield from self._with_keys(build, drop, route=k.head, before=staging, resend=sent[0] > 1)
            err = _script_error(replies[0])
            if err is None:
                reply = replies[0]  # n (applied) or [n, "retry"] (a resend of an applied commit)
                generation = int(reply if isinstance(reply, int) else reply[0])
                self._remember(k.run_id, generation, chunks)
                self._check_confirmed(replies, what="commit", run_id=k.run_id, generation=generation)
                return generation
            code, fields = err
            if code in ("FENCED", "FENCE_BEHIND"):
                raise FencedError(k.run_id, token=int(fields[0]), fence=int(fields[1]))
            if code == "CONFLICT":
                raise ConflictError(k.run_id, expected=int(fields[0]), actual=int(fields[1]))
            if code == "OUTCOME_UNKNOWN":
                raise _outcome_unknown(k.run_id, fields, "commit")
            if code == "OUT_OF_RANGE":
                raise _out_of_range(k.run_id, fields, "commit")
            raise replies[0]

        return self._retrying(body, run_id=k.run_id, what="commit", writes=True)

    # -- load ----------------------------------------------------------------------------

    def _read(self, k: RunKeys, generation: int, prefetched: Any = None) -> Flow[bytes]:
        """The whole stored frame of a generation, reassembled from its chunks if it has any.

        ``prefetched`` is the value of g:<n> when it was already read. FrameError (MISSING, or
        the manifest's or a chunk's damage) when the frame cannot be had.
        """
        blob = prefetched if prefetched is not None else (yield Cmd("GET", k.generation(generation)))
        if blob is None:
            raise FrameError(FrameDamage.MISSING, "the key does not exist", run_id=k.run_id, generation=generation)
        if not is_manifest(blob):
            return blob  # type: ignore[no-any-return]
        m = read_manifest(blob, run_id=k.run_id, generation=generation)
        parts: list[bytes] = []
        for first in range(0, m.count, READ_BATCH):
            idx = range(first, min(first + READ_BATCH, m.count))
            replies = yield Pipe([Cmd("GET", k.chunk(generation, i)) for i in idx], route=k.head)
            for i, r in zip(idx, replies):
                if isinstance(r, Exception):
                    raise r
                check_chunk(m, i, r)
                parts.append(r)
        frame = b"".join(parts)
        del parts
        if len(frame) != m.size:
            raise FrameError(FrameDamage.TRUNCATED, f"chunks hold {len(frame)} bytes, the manifest says {m.size}",
                             run_id=k.run_id, generation=generation)
        return frame

    def _verify(self, k: RunKeys, generation: int, frame: bytes, head: Mapping[str, str]) -> tuple[Any, Any]:
        """(header, payload) of a verified generation, else FrameError."""
        header, payload = decode_frame(frame, run_id=k.run_id, generation=generation,
                                       max_payload_bytes=self.max_state_bytes)
        if generation == int(head.get("generation", 0)) and head.get("checksum") not in (None, frame_checksum(frame)):
            raise FrameError(FrameDamage.HEAD_MISMATCH,
                             "checksum differs from the one the head recorded at commit",
                             run_id=k.run_id, generation=generation)
        return header, payload

    def _migrate(self, run_id: str, state: Any, stored: int) -> Any:
        if stored > self.schema_version:
            raise SchemaVersionError(
                f"run {run_id!r} was written with schema {stored}, newer than this code's "
                f"{self.schema_version}: upgrade the code before loading it",
                run_id=run_id, found=stored, supported=self.schema_version,
            )
        for v in range(stored, self.schema_version):
            fn = self.migrations.get(v)
            if fn is None:
                raise SchemaVersionError(
                    f"run {run_id!r} has schema {stored}; this code is at {self.schema_version} "
                    f"but no migration from {v} to {v + 1} is registered",
                    run_id=run_id, found=stored, supported=self.schema_version,
                )
            state = fn(state)
        return state

    def _committed_before(self, k: RunKeys) -> Flow[bool]:
        """Whether the run has (or had, and lost) generations although its head is missing:
        True is corruption, False "never committed" (or deleted with ``delete``).

        * no fence: every commit needs a token the fence handed out, an import raises it and
          ``delete`` keeps it (a tombstone), so the run was never committed. (A restore that
          brings back generations without their fence is not detected: it is unsafe anyway,
          tokens would be handed out again.)
        * the audit stream, newest first: a ``delete`` before any commit means deleted; a
          commit or import means committed. A stream holding the run's whole history (nothing
          trimmed, its oldest event the run's first fence: token 1) without a commit means
          never committed. All this in one round trip for a run just acquired.
        * otherwise (a trimmed or deleted stream: hundreds of idle acquire/release events
          since the last commit) the keys answer, whatever the stream holds: a SCAN of the
          node owning the run's slot for the run's own ``g:*`` keys, the pattern escaped.
          It walks that node's keyspace, on this rare path only.
        """
        replies = yield Pipe([Cmd("EXISTS", k.fence), Cmd("XINFO", "STREAM", k.events),
                              Cmd("XREVRANGE", k.events, "+", "-", "COUNT", EVENTS_PAGE)], route=k.head)
        fence, info, page = replies
        for r in (fence, page):
            if isinstance(r, Exception):
                raise r
        if not int(fence):
            return False
        info = {} if isinstance(info, Exception) else _pairs(info)  # no stream: "no such key"
        length, added = info.get("length"), info.get("entries-added")
        seen, oldest = 0, None
        while page:
            for entry_id, fields in page:
                f = _hash(fields)
                kind = f.get("kind", "")
                if kind == "delete":
                    return False
                if kind in COMMIT_KINDS:
                    return True
                seen, oldest = seen + 1, f
            if len(page) < EVENTS_PAGE:
                break
            page = yield Cmd("XREVRANGE", k.events, f"({_text(entry_id)}", "-", "COUNT", EVENTS_PAGE)
        whole = isinstance(length, int) and length == added == seen
        if whole and oldest is not None and _first_fence(oldest):
            return False
        pattern = glob_escape(k.base) + ":g:*"
        cursor: Any = 0
        while True:
            (reply,) = yield Pipe([Cmd("SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT)], route=k.head)
            if isinstance(reply, Exception):
                raise reply
            cursor, found = reply
            if found:
                return True
            if int(cursor) == 0:
                return False

    def load_flow(self, run_id: str) -> Flow[Checkpoint | None]:
        """The newest generation that verifies; None when the run was never committed.

        The head and the generation it names are read as one snapshot (MULTI/EXEC, one round
        trip) when this process knows the head's generation (it committed or loaded the run);
        otherwise the head is read first. A head that moved since (a concurrent commit) is
        read again with its new generation, and a generation rotated away while it was read
        (chunks, older ones) starts the read again: a moving head is never corruption. When it
        still moves at the deadline: :class:`HeadMovingError` (retryable, nothing damaged).
        """
        k = self.keys(run_id)

        def attempt() -> Flow[Checkpoint | None]:
            until = None  # the operation's deadline, asked of the driver when the head moves
            guess = self._last_generation.get(k.run_id)
            reads = 0
            while True:
                reads += 1
                # after a miss the head may move once more before this read: ask for the next
                # generation too (with keep=1 at most one of the two exists: no extra bytes)
                wanted = [guess, guess + 1] if guess and reads > 1 else [guess] if guess else []
                if wanted:
                    replies = yield Pipe([Cmd("MULTI"), Cmd("HMGET", k.head, *LOAD_FIELDS),
                                          *(Cmd("GET", k.generation(g)) for g in wanted), Cmd("EXEC")],
                                         route=k.head)
                    raw, *blobs = _exec_replies(replies, 1 + len(wanted))
                else:
                    raw, blobs = (yield Cmd("HMGET", k.head, *LOAD_FIELDS)), []
                head = {f: _text(v) for f, v in zip(LOAD_FIELDS, raw) if v is not None}
                if not head:
                    if (yield from self._committed_before(k)):
                        raise CorruptCheckpointError(
                            k.run_id, {},
                            message=f"run {k.run_id!r} has committed generations but its head is missing "
                                    "(deleted by hand, or a partial restore); restore the head or "
                                    "import an exported frame",
                        )
                    return None
                generation = int(head.get("generation") or 0)
                if generation < 1 or generation in wanted:  # a snapshot (or a head naming none)
                    result = yield from self._load_from(k, head, dict(zip(wanted, blobs)))
                    if result is not None:
                        self._remember(k.run_id, result.head_generation)
                        return result  # else a generation it read was rotated away meanwhile
                if generation >= 1:
                    guess = generation  # read the head again with the generation it names now
                if reads > 1 and until is None:
                    until = yield from _deadline(self.retry.deadline_s)
                if reads > 1 and time.monotonic() >= until - MIN_ATTEMPT_S:
                    # no pause between reads: each is one round trip and the next one is what
                    # catches up with the writer (a pause only lets the head move further)
                    raise HeadMovingError(k.run_id, reads=reads, deadline_s=self.retry.deadline_s)

        return self._retrying(attempt, run_id=k.run_id, what="load", writes=False)

    def _load_from(self, k: RunKeys, head: dict[str, str], prefetched: dict[int, Any]) -> Flow[Checkpoint | None]:
        head_gen = int(head.get("generation", 0))
        skipped: list[SkippedGeneration] = []
        for g, _chunks in sorted(_kept(head), reverse=True):
            try:
                blob = yield from self._read(k, g, prefetched.get(g))
                header, payload = self._verify(k, g, blob, head)
                state = decode_payload(header, payload)
                del payload
            except FrameError as bad:
                if bad.reason is FrameDamage.MISSING:
                    now = _hash((yield Cmd("HGETALL", k.head)))
                    if now.get("commit_id") != head.get("commit_id"):
                        return None  # rotated away meanwhile: reload from the new head
                skipped.append(SkippedGeneration(g, bad.reason.value, bad.detail))
                continue
            state = self._migrate(k.run_id, state, header.schema_version)
            if skipped:
                yield from self._report_fallback(k, g, skipped)
            return Checkpoint(
                run_id=k.run_id, state=state, generation=g, head_generation=head_gen,
                token=header.token, owner=header.owner,  # the server's commit time, else the writer's
                created_at=ms_to_datetime(_kept_times(head).get(g, header.created_ms)),  # type: ignore[arg-type]
                schema_version=self.schema_version, stored_schema_version=header.schema_version,
                metadata=header.metadata, checksum=frame_checksum(blob),  # type: ignore[arg-type]
                size=len(blob), skipped=tuple(skipped),  # type: ignore[arg-type]
            )
        raise CorruptCheckpointError(k.run_id, {s.generation: f"{s.reason}: {s.detail}" for s in skipped})

    def _report_fallback(self, k: RunKeys, loaded: int, skipped: list[SkippedGeneration]) -> Flow[None]:
        summary = ", ".join(f"g{s.generation}: {s.reason}" for s in skipped)
        log.error("run %r: loaded generation %d because newer ones failed verification (%s)",
                  k.run_id, loaded, summary)
        yield Cmd("XADD", k.events, "MAXLEN", "~", self.events_maxlen, "*", "kind", "fallback",
                  "loaded", loaded, "skipped", summary, "ms", _now_ms())

    # -- inspection and admin ------------------------------------------------------------

    def generations_flow(self, run_id: str) -> Flow[list[GenerationInfo]]:
        """Every kept generation, newest first, each verified (frame and checksum), no migration."""
        k = self.keys(run_id)

        def body() -> Flow[list[GenerationInfo]]:
            head = _hash((yield Cmd("HGETALL", k.head)))
            times = _kept_times(head)  # the server's commit times (the frame's own is the writer's clock)
            out: list[GenerationInfo] = []
            for g, _chunks in sorted(_kept(head), reverse=True):
                blob = b""
                try:
                    blob = yield from self._read(k, g)
                    self._verify(k, g, blob, head)
                    h = read_header(blob, run_id=k.run_id, generation=g)  # type: ignore[arg-type]
                except FrameError as bad:
                    out.append(GenerationInfo(g, len(blob or b""), False, bad.reason.value, bad.detail))
                    continue
                except CodecUnavailableError as missing:
                    out.append(GenerationInfo(g, len(blob or b""), False, "codec-unavailable", str(missing)))
                    continue
                out.append(GenerationInfo(
                    g, len(blob), True, token=h.token, owner=h.owner,  # type: ignore[arg-type]
                    created_at=ms_to_datetime(times.get(g, h.created_ms)), schema_version=h.schema_version,
                    checksum=frame_checksum(blob), compression=h.compression,  # type: ignore[arg-type]
                    metadata=h.metadata,
                ))
            return out

        return self._retrying(body, run_id=k.run_id, what="generations", writes=False)

    def info_flow(self, run_id: str) -> Flow[RunInfo]:
        k = self.keys(run_id)

        def body() -> Flow[RunInfo]:
            fence, head, lease, pttl, registry = yield Pipe(
                [Cmd("GET", k.fence), Cmd("HGETALL", k.head), Cmd("HGETALL", k.lease), Cmd("PTTL", k.lease),
                 Cmd("HGETALL", k.staging)],
                route=k.fence,
            )
            for r in (fence, head, lease, pttl, registry):
                if isinstance(r, Exception):
                    raise r
            head, lease = _hash(head), _hash(lease)
            staged_commits, staged_bytes = yield from self._staged_size(k, _hash(registry))
            held = lease.get("state") == "held"
            return RunInfo(
                run_id=k.run_id, fence=int(fence or 0), generation=int(head.get("generation", 0)),
                kept=tuple(g for g, _ in _kept(head)), head=head,
                lease_owner=lease.get("owner"), lease_token=int(lease["token"]) if "token" in lease else None,
                lease_ms_left=int(pttl) if held and int(pttl) > 0 else None,
                lease_state=lease.get("state"), staged_commits=staged_commits, staged_bytes=staged_bytes,
            )

        return self._retrying(body, run_id=k.run_id, what="info", writes=False)

    def _staged_size(self, k: RunKeys, registry: Mapping[str, str]) -> Flow[tuple[int, int]]:
        """(commits, bytes) of the run's staged data still there: the sizes the staging hash
        records, for the commits whose staged keys exist (one EXISTS per commit)."""
        entries = [(v, keys) for cid, v in sorted(registry.items()) if (keys := self._stage_keys(k, _staged({cid: v})))]
        if not entries:
            return 0, 0
        present = yield Pipe([Cmd("EXISTS", *keys) for _, keys in entries], route=k.fence)
        commits = total = 0
        for (value, _), n in zip(entries, present):
            parts = value.split(":")
            if isinstance(n, int) and n > 0:
                commits += 1
                total += int(parts[3]) if len(parts) == 4 and parts[3].isdigit() else 0
        return commits, total

    def events_flow(self, run_id: str, *, count: int = 100, after: str | None = None) -> Flow[list[Event]]:
        """Audit events, oldest first: the newest ``count``, or those after id ``after``."""
        k = self.keys(run_id)

        def body() -> Flow[list[Event]]:
            if after is None:
                raw = list(reversed((yield Cmd("XREVRANGE", k.events, "+", "-", "COUNT", count)) or []))
            else:
                raw = (yield Cmd("XRANGE", k.events, f"({after}", "+", "COUNT", count)) or []
            return [_event(i, f) for i, f in raw]

        return self._retrying(body, run_id=k.run_id, what="events", writes=False)

    def delete_flow(self, run_id: str, by: str) -> Flow[int]:
        k = self.keys(run_id)
        staged: list[str] = []

        def build(entries: list[str], _dead: list[str], _strict: bool) -> Script:
            return Script("delete", [k.fence, k.lease, k.head, k.events, k.staging, *self._drop_keys(k, entries),
                                     *self._stage_keys(k, staged)],
                          [by, self.events_maxlen, len(entries), *entries, *staged])

        def body() -> Flow[int]:
            head, registry = yield Pipe([Cmd("HGETALL", k.head), Cmd("HGETALL", k.staging)], route=k.head)
            for r in (head, registry):
                if isinstance(r, Exception):
                    raise r
            staged[:] = _staged(_hash(registry))
            replies = yield from self._with_keys(build, [_entry(g, c) for g, c in _kept(_hash(head))], route=k.fence)
            if isinstance(replies[0], Exception):
                raise replies[0]
            self._check_confirmed(replies, what="delete", run_id=k.run_id, generation=None)
            return int(replies[0][1])

        return self._retrying(body, run_id=k.run_id, what="delete", writes=True)

    def export_flow(self, run_id: str, generation: int | None = None) -> Flow[bytes]:
        """The stored frame of ``generation`` (default: the newest that verifies), verified."""
        k = self.keys(run_id)

        def body() -> Flow[bytes]:
            head = _hash((yield Cmd("HGETALL", k.head)))
            kept = sorted((g for g, _ in _kept(head)), reverse=True)
            if not head:
                raise NotFoundError(f"run {k.run_id!r} has no committed generation", run_id=k.run_id)
            if generation is not None and generation not in kept:
                raise NotFoundError(f"run {k.run_id!r} does not keep generation {generation} "
                                    f"(kept: {', '.join(map(str, kept))})", run_id=k.run_id)
            reasons: dict[int, str] = {}
            for g in kept if generation is None else [generation]:
                try:
                    frame = yield from self._read(k, g)
                    self._verify(k, g, frame, head)
                except FrameError as bad:
                    if generation is not None:
                        raise
                    reasons[g] = f"{bad.reason.value}: {bad.detail}"
                    continue
                return frame
            raise CorruptCheckpointError(k.run_id, reasons)

        return self._retrying(body, run_id=k.run_id, what="export", writes=False)

    def import_flow(self, frame: bytes, by: str) -> Flow[int]:
        """Restore an exported frame under its own run and generation; the fence only rises.

        The frame's checksum is its commit id: a resend of an import that applied (or the same
        frame imported again while its generation is kept) returns that generation. The frame
        is verified and its payload decoded first - decompression bounded by max_state_bytes
        and MAX_ZSTD_RATIO, nesting by the codec's MAX_DEPTH - so a frame that load could not
        read is refused (FrameError) before anything is written.
        """
        h, payload = decode_frame(frame, max_payload_bytes=self.max_state_bytes)
        decode_payload(h, payload, max_depth=MAX_DEPTH)
        del payload
        k = self.keys(h.run_id)
        by, _ = validate_owner(by), validate_owner(h.owner)  # both travel newline-joined to the script
        if h.generation < 1:
            raise FrameError(FrameDamage.BAD_HEADER, "generation < 1", run_id=h.run_id, generation=h.generation)
        check_int("generation", h.generation, 1, MAX_INT, run_id=k.run_id)
        check_int("token", h.token, 0, MAX_INT - 1, run_id=k.run_id)  # the fence becomes token + 1 at most
        checksum, size = frame_checksum(frame), len(frame)
        cid = f"import-{checksum}"
        stored, chunks, staging, chunk_keys = self._stored_form(k, h.generation, frame, cid, token=h.token,
                                                                expected=h.generation - 1)
        sent = [0]

        def build(drop: list[str], dead: list[str], strict: bool) -> Script:
            return Script(
                "commit",
                [k.fence, k.head, k.events, k.lease, k.staging, k.generation(h.generation), *chunk_keys,
                 *self._drop_keys(k, drop), *self._stage_keys(k, dead)],
                [_fields("import", h.token, 0, cid, checksum, h.schema_version, h.codec, h.owner, self.keep,
                         self.events_maxlen, h.generation, size, chunks, by, len(chunk_keys) // 2,
                         int(sent[0] > 1), len(drop), self.max_state_bytes, int(strict)),
                 stored, *drop, *dead],
            )

        def body() -> Flow[int]:
            sent[0] += 1
            head = _hash((yield Cmd("HGETALL", k.head)))
            kept = [_entry(g, c) for g, c in _kept(head)]
            drop = kept[: max(0, len(kept) + 1 - self.keep)]
            replies = yield from self._with_keys(build, drop, route=k.head, before=staging, resend=sent[0] > 1)
            err = _script_error(replies[0])
            if err is not None:
                if err[0] == "CONFLICT":
                    raise ConflictError(k.run_id, expected=int(err[1][0]), actual=int(err[1][1]))
                if err[0] == "OUTCOME_UNKNOWN":
                    raise _outcome_unknown(k.run_id, err[1], "import")
                if err[0] == "OUT_OF_RANGE":
                    raise _out_of_range(k.run_id, err[1], "import")
                raise replies[0]
            generation = int(replies[0][0])
            self._check_confirmed(replies, what="import", run_id=k.run_id, generation=generation)
            return generation

        return self._retrying(body, run_id=k.run_id, what="import", writes=True)

    def runs_flow(self, *, limit: int | None = None) -> Flow[list[str]]:
        """Run ids in this namespace (SCAN over fence keys: every run that ever had a lease or commit)."""
        pattern = RunKeys.scan_pattern(self.namespace)

        def body() -> Flow[list[str]]:
            found: set[str] = set()
            cursor: Any = 0
            while True:
                cursor, batch = yield Cmd("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
                for key in batch:
                    rid = RunKeys.run_id_from_key(self.namespace, _text(key))
                    if rid is not None:
                        found.add(rid)
                if int(cursor) == 0 or (limit is not None and len(found) >= limit):
                    break
            runs = sorted(found)
            return runs[:limit] if limit is not None else runs

        return self._retrying(body, run_id=None, what="runs", writes=False)


def _event(entry_id: Any, fields: Any) -> Event:
    f = _hash(fields)
    eid = _text(entry_id)
    ms = f.get("ms") or eid.partition("-")[0]  # a stream entry id is "<ms>-<seq>"
    return Event(id=eid, kind=f.get("kind", "?"), at=ms_to_datetime(int(ms)) if ms.isdigit() else None, fields=f)

