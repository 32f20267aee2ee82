"""A LangGraph checkpointer on redis-ckpt: fenced, durable, checksummed.

    from redis_ckpt import CheckpointStore
    from redis_ckpt.langgraph import RedisCkptSaver

    store = CheckpointStore.from_url("redis://localhost:6379/0", namespace="agents")
    graph = builder.compile(checkpointer=RedisCkptSaver(store, ttl=30))
    graph.invoke(inputs, {"configurable": {"thread_id": "conversation-7"}})

``pip install 'redis-ckpt[langgraph]'``. Give it a :class:`~redis_ckpt.CheckpointStore`
(sync graphs), an :class:`~redis_ckpt.aio.AsyncCheckpointStore` (``ainvoke``/``astream``),
or both (``RedisCkptSaver(store, async_store=astore)``). With only a sync store the async
methods run the sync ones in a worker thread. Writes to one thread are serialized within a
saver (LangGraph writes a superstep's task results concurrently); do not drive the same
thread from sync and async code of one saver at the same time.

What it adds to LangGraph's own Redis saver
-------------------------------------------
* **A thread has one writer.** The first write to a thread takes the thread's lease and a
  fencing token (waiting up to ``acquire_timeout`` for a dead writer's lease to expire).
  A second process writing the same thread gets :class:`~redis_ckpt.LeaseHeldError`; a
  writer that lost the thread (its lease expired and another process took over, or an
  admin revoked it) gets :class:`~redis_ckpt.FencedError` on its next write — its writes
  never become visible. A process whose view of a thread is older than the thread
  (it read generation *n*, another process committed *n+1* before this one took the
  lease) gets :class:`~redis_ckpt.ConflictError` instead of silently branching history;
  re-running the graph (which reads the thread again) continues from the newest state.
* **Every write is atomic and durable when it returns**: ``put`` and ``put_writes`` each
  end in one fenced, generation-CAS commit confirmed by ``WAITAOF`` (the store's
  :class:`~redis_ckpt.Durability` policy).
* **Damage is detected**: every stored value is a checksummed redis-ckpt frame bound to its
  run and generation; a damaged one raises :class:`~redis_ckpt.FrameError`, never a
  silently missing checkpoint.

Leases are renewed on each write once a third of ``ttl`` has passed; call
:meth:`RedisCkptSaver.renew` from a long node to keep the thread, and
:meth:`RedisCkptSaver.release` when a run is over so another process can continue the
thread at once instead of waiting for the lease to expire. A lease that merely expired
with nobody else acquiring it is taken back silently on the next write.

Data model
----------
One store run per thread (``checkpoint_ns`` of subgraphs included, so one lease fences a
thread's writer, subgraphs and all): run id ``lg.<thread_id, percent-encoded>``, or
``lg#<sha256 of thread_id>`` when that would exceed the run-id limit. Every key below
shares the run's hash tag, so a thread lives in one slot of a Redis Cluster.

The store's own generations hold the **thread manifest** (small, bounded)::

    {"kind": "langgraph-thread", "format": 1, "thread_id": str,
     "epochs": [[token, first_generation], ...],   # one entry per writer that committed
     "last": {"op": "put" | "writes" | "copy" | "prune", "checkpoint_ns": str, ...}}

Everything else sits beside it, under ``<ns>:{<run>}:lg:``, and is written *before* the
commit that makes it visible, in a pipeline confirmed by ``WAITAOF``:

==========================  ======  ===========================================================
``c:<t>:<g>:<i>``           hash    one put: field ``r`` = the checkpoint record (checkpoint
                                    without values, metadata, parent id, and for every channel
                                    its version and the ``c:`` key holding its value), fields
                                    ``v:<channel>`` = the values written by that put
``ix:<ns>``                 zset    index of a checkpoint namespace: members
                                    ``<checkpoint_id>\\0<t>:<g>:<i>``, lexicographic order
``w:<ns>:<checkpoint_id>``  hash    pending writes: ``<t>:<g>:0\\0<task_id>\\0<idx>`` -> write
``nss``                     set     the thread's checkpoint namespaces
``runs:<run_id>``           set     ``<ns>\\0<index member>`` of the checkpoints of a LangGraph run
``keys``                    set     every key above (so deleting a thread needs no SCAN)
==========================  ======  ===========================================================

``t`` is the writer's fencing token and ``g`` the generation of the commit the entry
belongs to. **An entry is visible only if the manifest says that token committed that
generation** (``epochs``: token ``t`` committed generations ``first .. next first - 1``).
A fenced writer's entries name a generation its token never committed, so they stay
invisible garbage (removed by ``prune`` and ``delete_thread``); keys are never
overwritten, because a token is abandoned (a new one acquired) after any failed write.
A put costs two round trips (pipeline + commit), stores only the channels that changed
(unchanged ones point at older puts' values), and reads cost O(log n) index lookups —
nothing is copied per put, however long the thread.

A checkpoint whose metadata carries a LangGraph ``run_id`` is also filed under
``runs:<run_id>`` (set of its index entries) and, outside the thread's slot, in
``<ns>:lgrun:{<run_id>}`` (set of thread ids) — an index written before the thread's
pre-writes, rebuildable from the threads, that ``delete_for_runs`` follows.

Capabilities (``langgraph-checkpoint-conformance``): all five base ones and all three
extended ones (``delete_for_runs``, ``copy_thread``, ``prune``).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import socket
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import quote, unquote

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_serializable_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from redis.exceptions import RedisError

from ._shell import LeaseBase, StoreBase, ttl_ms
from .core.codec import decode_state, encode_state
from .errors import (
    CheckpointError,
    ConflictError,
    DurabilityError,
    FencedError,
    FrameDamage,
    FrameError,
    LeaseHeldError,
    LeaseLostError,
    ServerError,
    StateTooLargeError,
)
from .core.frame import decode_frame, encode_frame
from .core.ops import Cmd, Flow, Pipe, Sleep
from .core.keys import MAX_RUN_ID, RunKeys

__all__ = ["RedisCkptSaver", "thread_run_id", "MANIFEST_KIND", "is_thread_manifest"]

T = TypeVar("T")

MANIFEST_KIND = "langgraph-thread"
MANIFEST_FORMAT = 1
RUN_PREFIX = "lg."
HASHED_RUN_PREFIX = "lg#"
_PAGE = 64  # index members fetched per round trip
_BATCH = 256  # commands per pre-write pipeline
_MAX_SEEN = 100_000  # threads whose last-read generation is remembered
_MAX_WRITERS = 10_000  # threads with write state kept before idle ones are forgotten


def thread_run_id(thread_id: Any) -> str:
    """The store run id that holds a LangGraph thread (stable, injective)."""
    text = str(thread_id)
    if not text:
        raise ValueError("thread_id must not be empty")
    encoded = RUN_PREFIX + quote(text, safe="-_.")
    if len(encoded) <= MAX_RUN_ID:
        return encoded
    return HASHED_RUN_PREFIX + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def is_thread_manifest(state: Any) -> bool:
    """Whether a checkpoint state is a LangGraph thread manifest written by this module."""
    return isinstance(state, dict) and state.get("kind") == MANIFEST_KIND


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _part(text: str) -> str:
    """A key-name part: percent-encoded, so it never contains ``:`` or braces."""
    return quote(text, safe="-_.")


def _text(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def _server_error(refused: RedisError) -> ServerError:
    return ServerError(f"the LangGraph saver's command failed: the server answered {type(refused).__name__}: "
                       f"{refused}", run_id=None, server_message=str(refused), outcome_unknown=True)


def _raise_errors(replies: Sequence[Any]) -> None:
    for r in replies:
        if isinstance(r, BaseException):
            raise r


@dataclass(frozen=True)
class _Loc:
    """Where one entry belongs: the token that wrote it, the generation it was committed
    with, and its position within that commit."""

    token: int
    generation: int
    index: int = 0

    def __str__(self) -> str:
        return f"{self.token}:{self.generation}:{self.index}"

    @classmethod
    def parse(cls, text: str) -> _Loc | None:
        parts = text.split(":")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            return None
        return cls(int(parts[0]), int(parts[1]), int(parts[2]))


class _Keys:
    """Key names of one thread (all under the run's hash tag)."""

    def __init__(self, namespace: str, run_id: str) -> None:
        self.run = RunKeys(namespace, run_id)
        self.base = self.run.base + ":lg"
        self.registry = self.base + ":keys"
        self.namespaces = self.base + ":nss"
        self.route = self.run.head

    def index(self, cns: str) -> str:
        return f"{self.base}:ix:{_part(cns)}"

    def commit(self, loc: _Loc | str) -> str:
        return f"{self.base}:c:{loc}"

    def writes(self, cns: str, cid: str) -> str:
        return f"{self.base}:w:{_part(cns)}:{_part(cid)}"

    def runs(self, run_id: str) -> str:
        return f"{self.base}:runs:{_part(run_id)}"

    def kind_of(self, key: str) -> str:
        """'c', 'ix', 'w' or 'runs' for a key of this thread, else ''."""
        if not key.startswith(self.base + ":"):
            return ""
        return key[len(self.base) + 1:].split(":", 1)[0]


class _Validity:
    """Which (token, generation) pairs the manifest says were committed."""

    def __init__(self, epochs: Sequence[Sequence[int]], head: int) -> None:
        self.head = head
        self.ranges: dict[int, tuple[int, int]] = {}
        for n, (token, first) in enumerate(epochs):
            last = epochs[n + 1][1] - 1 if n + 1 < len(epochs) else head
            if first <= last:
                self.ranges[token] = (first, last)

    def ok(self, loc: _Loc | None) -> bool:
        if loc is None:
            return False
        r = self.ranges.get(loc.token)
        return r is not None and r[0] <= loc.generation <= r[1]


def _member(cid: str, loc: _Loc) -> bytes:
    return cid.encode("utf-8") + b"\x00" + str(loc).encode()


def _parse_member(m: bytes) -> tuple[str, _Loc | None]:
    cid, _, loc = m.rpartition(b"\x00")
    return cid.decode("utf-8", "replace"), _Loc.parse(loc.decode("ascii", "replace"))


def _newest_valid(members: Sequence[bytes], valid: _Validity) -> dict[str, tuple[_Loc, bytes]]:
    """checkpoint id -> (the newest visible entry, its member); invisible ones dropped."""
    best: dict[str, tuple[_Loc, bytes]] = {}
    for m in members:
        cid, loc = _parse_member(m)
        if valid.ok(loc):
            assert loc is not None
            old = best.get(cid)
            if old is None or (loc.generation, loc.index) > (old[0].generation, old[0].index):
                best[cid] = (loc, m)
    return best


def _batches(ops: Sequence[Cmd | Pipe], route: str) -> Iterator[tuple[str, list[Cmd]]]:
    """(route, commands) pipelines, in order: runs of ``Cmd`` (at most _BATCH) to ``route``,
    each ``Pipe`` to its own."""
    run: list[Cmd] = []
    for op in ops:
        if isinstance(op, Pipe):
            if run:
                yield route, run
                run = []
            yield op.route or route, [o for o in op.ops if isinstance(o, Cmd)]
        else:
            run.append(op)
            if len(run) >= _BATCH:
                yield route, run
                run = []
    if run:
        yield route, run


def _check_cid(cid: str) -> str:
    if not isinstance(cid, str) or not cid or "\x00" in cid:
        raise ValueError(f"checkpoint id must be a non-empty str without NUL, got {cid!r}")
    return cid


def _check_ns(cns: Any) -> str:
    cns = cns or ""
    if not isinstance(cns, str) or "\x00" in cns:
        raise ValueError(f"checkpoint_ns must be a str without NUL, got {cns!r}")
    return cns


@dataclass
class _View:
    """One consistent read of a thread: its manifest and what is visible."""

    run_id: str
    keys: _Keys
    thread_id: str
    generation: int
    valid: _Validity


@dataclass
class _Record:
    cns: str
    cid: str
    loc: _Loc
    parent: str | None
    checkpoint: tuple[str, bytes]
    metadata: tuple[str, bytes]
    refs: dict[str, tuple[Any, str | None]]  # channel -> (version, loc of the c: key holding it | None)


@dataclass
class _Writer:
    """This saver's write side of one thread: its lease and the manifest it committed."""

    thread_id: str
    run_id: str
    keys: _Keys
    lease: LeaseBase | None = None
    manifest: dict[str, Any] | None = None
    renewed_at: float = 0.0
    tainted: bool = False  # a write failed after something was sent: abandon this token
    fenced: FencedError | None = None  # lost to another writer: refuse until the thread is read again
    refs: dict[str, tuple[str, dict[str, tuple[Any, str | None]]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class _ListCursor:
    thread_id: str
    cns: str | None  # None: every namespace of the thread
    cid: str | None
    before: str | None
    view: _View | None = None
    namespaces: list[str] | None = None
    ns_at: int = 0
    upper: bytes | None = None  # exclusive upper bound of the next page in the current namespace
    done: bool = False


#: what a write operation contributes: given the writer and the (token, generation) of the
#: commit to come, the commands to send before it (None: nothing to write, no commit). A
#: ``Pipe`` among them goes to its own route (the cross-thread run index), the ``Cmd``s to
#: the thread's slot; every pipeline is confirmed like the commit.
Build = Callable[["_Writer", "_Loc"], Flow["list[Cmd | Pipe] | None"]]


class _Engine:
    """Configuration and every flow of the saver (sans-IO: driven by a store's ``_run``)."""

    def __init__(self, store: StoreBase, serde: SerializerProtocol, owner: str, ttl: int,
                 acquire_timeout: float) -> None:
        self.store = store
        self.core = store._core
        self.serde = serde
        self.owner = owner
        self.ttl_ms = ttl
        self.acquire_timeout = acquire_timeout

    # -- framing ---------------------------------------------------------------------------

    def seal(self, run_id: str, loc: _Loc, obj: Any) -> bytes:
        """One stored value: a redis-ckpt frame bound to this run and generation."""
        payload = encode_state(obj, root="langgraph")
        if len(payload) > self.core.max_state_bytes:
            raise StateTooLargeError(
                f"a value of thread run {run_id!r} encodes to {len(payload)} bytes; the store's "
                f"max_state_bytes is {self.core.max_state_bytes}",
                size=len(payload), limit=self.core.max_state_bytes, run_id=run_id)
        return encode_frame(payload, run_id=run_id, generation=loc.generation, token=loc.token,
                            owner=self.owner, created_ms=_now_ms(), schema_version=1,
                            compression=self.core.compression)

    def open(self, run_id: str, key: str, generation: int, blob: bytes) -> Any:
        try:
            header, payload = decode_frame(blob, run_id=run_id, generation=generation,
                                           max_payload_bytes=self.core.max_state_bytes)
            return decode_state(payload)
        except FrameError as bad:
            raise FrameError(bad.reason, f"{key}: {bad.detail}", run_id=run_id, generation=generation) from None
        except ValueError as exc:
            raise FrameError(FrameDamage.UNDECODABLE, f"{key}: {exc}", run_id=run_id, generation=generation) from None

    # -- plumbing --------------------------------------------------------------------------

    def confirmed(self, ops: list[Cmd], route: str, run_id: str, what: str) -> Flow[list[Any]]:
        """Send ``ops`` in one pipeline followed by the durability commands; check both."""
        d = self.core.durability
        tail = [Cmd(*c) for c in d.commands()] if self.core.confirm else []
        replies = yield Pipe([*ops, *tail], route=route)
        body, confirmations = replies[: len(ops)], replies[len(ops):]
        _raise_errors(body)
        if tail:
            failed = next((r for r in confirmations if isinstance(r, BaseException)), None)
            got = None if failed is not None else d.read(confirmations)
            if got is None or not d.satisfied(got):
                raise DurabilityError(
                    run_id, what=what, generation=None, local_asked=1, local_got=got.local if got else 0,
                    replicas_asked=d.replicas, replicas_got=got.replicas if got else 0,
                    timeout_ms=d.timeout_ms, server_error=str(failed) if failed is not None else None,
                )
        return body

    def view_flow(self, thread_id: str) -> Flow[_View | None]:
        run_id = thread_run_id(thread_id)
        ck = yield from self.core.load_flow(run_id)
        if ck is None:
            return None
        manifest = ck.state
        if not is_thread_manifest(manifest):
            raise CheckpointError(f"run {run_id!r} does not hold a LangGraph thread (kind "
                                  f"{manifest.get('kind') if isinstance(manifest, dict) else type(manifest).__name__!r})",
                                  run_id=run_id)
        return _View(run_id, _Keys(self.core.namespace, run_id), manifest["thread_id"], ck.generation,
                     _Validity(manifest["epochs"], ck.generation))

    @staticmethod
    def writer_view(w: _Writer) -> _View:
        assert w.lease is not None and w.manifest is not None
        return _View(w.run_id, w.keys, w.thread_id, w.lease.generation,
                     _Validity(w.manifest["epochs"], w.lease.generation))

    # -- reading ---------------------------------------------------------------------------

    def find_flow(self, view: _View, cns: str, cid: str | None) -> Flow[tuple[str, _Loc] | None]:
        """The visible entry of checkpoint ``cid`` (newest checkpoint when None) in ``cns``."""
        ix = view.keys.index(cns)
        if cid is not None:
            c = _check_cid(cid).encode("utf-8")
            members = yield Cmd("ZRANGEBYLEX", ix, b"[" + c + b"\x00", b"(" + c + b"\x01")
            hit = _newest_valid(members or [], view.valid).get(cid)
            return (cid, hit[0]) if hit else None
        upper = b"+"
        while True:
            members = yield Cmd("ZREVRANGEBYLEX", ix, upper, b"-", "LIMIT", 0, _PAGE)
            for m in members or []:
                mcid, loc = _parse_member(m)
                if view.valid.ok(loc):
                    return (yield from self.find_flow(view, cns, mcid))
            if not members or len(members) < _PAGE:
                return None
            upper = b"(" + members[-1]

    def records_flow(self, view: _View, entries: Sequence[tuple[str, str, _Loc]]) -> Flow[list[_Record | None]]:
        """The records of ``(cns, cid, loc)`` entries (None where one was deleted meanwhile)."""
        if not entries:
            return []
        keys = [view.keys.commit(loc) for _, _, loc in entries]
        replies = yield Pipe([Cmd("HGET", k, "r") for k in keys], route=view.keys.route)
        _raise_errors(replies)
        out: list[_Record | None] = []
        for (cns, cid, loc), key, blob in zip(entries, keys, replies):
            if blob is None:
                out.append(None)
                continue
            r = self.open(view.run_id, key, loc.generation, blob)
            if r.get("id") != cid or r.get("ns") != cns:
                raise FrameError(FrameDamage.WRONG_RUN, f"{key} holds checkpoint {r.get('id')!r} of namespace "
                                 f"{r.get('ns')!r}, not {cid!r} of {cns!r}", run_id=view.run_id,
                                 generation=loc.generation)
            out.append(_Record(cns, cid, loc, r["parent"], r["checkpoint"], r["metadata"], r["refs"]))
        return out

    def tuples_flow(self, view: _View, records: Sequence[_Record]) -> Flow[list[CheckpointTuple | None]]:
        """Full tuples (channel values and pending writes) of loaded records; None for a
        checkpoint deleted (pruned) while it was being read. A value that a still-existing
        checkpoint refers to but that is gone is damage: FrameError (MISSING)."""
        if not records:
            return []
        wanted: dict[str, list[str]] = {}
        for rec in records:
            for ch, (_ver, vloc) in rec.refs.items():
                if vloc is not None:
                    fields = wanted.setdefault(vloc, [])
                    if ch not in fields:
                        fields.append(ch)
        value_keys = list(wanted)
        ops = [Cmd("HMGET", view.keys.commit(v), *(f"v:{ch}" for ch in wanted[v])) for v in value_keys]
        ops += [Cmd("HGETALL", view.keys.writes(rec.cns, rec.cid)) for rec in records]
        replies = yield Pipe(ops, route=view.keys.route)
        _raise_errors(replies)
        blobs: dict[tuple[str, str], bytes | None] = {}
        for vloc, reply in zip(value_keys, replies):
            for ch, blob in zip(wanted[vloc], reply):
                blobs[(vloc, ch)] = blob
        gone = [rec for rec in records
                if any(v is not None and blobs[(v, ch)] is None for ch, (_ver, v) in rec.refs.items())]
        if gone:
            still = yield Pipe([Cmd("HEXISTS", view.keys.commit(rec.loc), "r") for rec in gone],
                               route=view.keys.route)
            _raise_errors(still)
            deleted = {id(rec) for rec, there in zip(gone, still) if not int(there)}
        else:
            deleted = set()
        out: list[CheckpointTuple | None] = []
        for rec, writes_reply in zip(records, replies[len(value_keys):]):
            if id(rec) in deleted:
                out.append(None)
                continue
            values: dict[str, Any] = {}
            for ch, (_ver, vloc) in rec.refs.items():
                if vloc is None:
                    continue
                blob = blobs[(vloc, ch)]
                key = view.keys.commit(vloc)
                if blob is None:
                    raise FrameError(FrameDamage.MISSING, f"{key} has no value for channel {ch!r}, which "
                                     f"checkpoint {rec.cid!r} refers to", run_id=view.run_id,
                                     generation=rec.loc.generation)
                loc = _Loc.parse(vloc)
                assert loc is not None
                values[ch] = self.serde.loads_typed(tuple(self.open(view.run_id, key, loc.generation, blob)))
            checkpoint = self.serde.loads_typed(rec.checkpoint)
            checkpoint["channel_values"] = values
            metadata = self.serde.loads_typed(rec.metadata)
            thread_id = view.thread_id
            out.append(CheckpointTuple(
                config={"configurable": {"thread_id": thread_id, "checkpoint_ns": rec.cns,
                                         "checkpoint_id": rec.cid}},
                checkpoint=checkpoint,
                metadata=metadata,
                parent_config=({"configurable": {"thread_id": thread_id, "checkpoint_ns": rec.cns,
                                                 "checkpoint_id": rec.parent}} if rec.parent else None),
                pending_writes=self.pending_writes(view, rec, writes_reply),
            ))
        return out

    def visible_writes(self, view: _View, key: str, reply: Any) -> list[dict[str, Any]]:
        """The visible writes in a ``w:`` hash, one per (task_id, idx): the first one for a
        regular write, the last one for a special (negative idx) write."""
        items = reply.items() if isinstance(reply, dict) else zip(reply[::2], reply[1::2])
        chosen: dict[tuple[str, int], tuple[_Loc, dict[str, Any]]] = {}
        for f, blob in items:
            loc = _Loc.parse(f.split(b"\x00", 1)[0].decode("ascii", "replace"))
            if not view.valid.ok(loc):
                continue
            assert loc is not None
            w = self.open(view.run_id, key, loc.generation, blob)
            k = (w["task_id"], w["idx"])
            old = chosen.get(k)
            if old is None or (w["idx"] < 0 and (loc.generation, loc.index) > (old[0].generation, old[0].index)) \
                    or (w["idx"] >= 0 and (loc.generation, loc.index) < (old[0].generation, old[0].index)):
                chosen[k] = (loc, w)
        found = [w for _, w in chosen.values()]
        found.sort(key=lambda w: writes_sort_key(w["task_path"], w["task_id"], w["idx"]))
        return found

    def pending_writes(self, view: _View, rec: _Record, reply: Any) -> list[tuple[str, str, Any]]:
        key = view.keys.writes(rec.cns, rec.cid)
        return [(w["task_id"], w["channel"], self.serde.loads_typed(tuple(w["value"])))
                for w in self.visible_writes(view, key, reply)]

    def get_flow(self, thread_id: str, cns: str, cid: str | None) -> Flow[tuple[CheckpointTuple | None, int]]:
        """(the tuple or None, the thread's generation as read)."""
        return (yield from self.core._retrying(lambda: self._get(thread_id, cns, cid), run_id=thread_run_id(thread_id),
                                               what="get_tuple", writes=False))

    def _get(self, thread_id: str, cns: str, cid: str | None) -> Flow[tuple[CheckpointTuple | None, int]]:
        view = yield from self.view_flow(thread_id)
        if view is None:
            return None, 0
        hit = yield from self.find_flow(view, cns, cid)
        if hit is None:
            return None, view.generation
        recs = yield from self.records_flow(view, [(cns, hit[0], hit[1])])
        if recs[0] is None:
            return None, view.generation
        tuples = yield from self.tuples_flow(view, [recs[0]])
        return tuples[0], view.generation

    def list_page_flow(self, cur: _ListCursor, filter: dict[str, Any] | None,
                       want: int | None) -> Flow[tuple[list[CheckpointTuple], int]]:
        """The next page of a listing (newest first per namespace); (tuples, generation read)."""

        def attempt() -> Flow[tuple[list[CheckpointTuple], int]]:
            saved = (cur.view, cur.namespaces, cur.ns_at, cur.upper, cur.done)
            try:
                return (yield from self._page(cur, filter, want))
            except BaseException:
                cur.view, cur.namespaces, cur.ns_at, cur.upper, cur.done = saved  # a retry reads the same page
                raise

        return (yield from self.core._retrying(attempt, run_id=thread_run_id(cur.thread_id), what="list",
                                               writes=False))

    def _page(self, cur: _ListCursor, filter: dict[str, Any] | None,
              want: int | None) -> Flow[tuple[list[CheckpointTuple], int]]:
        if cur.view is None:
            cur.view = yield from self.view_flow(cur.thread_id)
            if cur.view is None:
                cur.done = True
                return [], 0
            if cur.cns is not None:
                cur.namespaces = [cur.cns]
            else:
                raw = yield Cmd("SMEMBERS", cur.view.keys.namespaces)
                cur.namespaces = sorted(_text(n) for n in raw or [])
        view = cur.view
        assert cur.namespaces is not None
        while cur.ns_at < len(cur.namespaces):
            cns = cur.namespaces[cur.ns_at]
            if cur.cid is not None:
                hit = yield from self.find_flow(view, cns, cur.cid)
                picked = [(cns, hit[0], hit[1])] if hit and (cur.before is None or hit[0] < cur.before) else []
                cur.ns_at += 1
            else:
                if cur.upper is None:
                    cur.upper = (b"(" + _check_cid(cur.before).encode("utf-8") + b"\x00") if cur.before else b"+"
                members = yield Cmd("ZREVRANGEBYLEX", view.keys.index(cns), cur.upper, b"-", "LIMIT", 0, _PAGE)
                members = list(members or [])
                if len(members) == _PAGE:
                    # the last checkpoint id may continue on the next page: leave it whole for then
                    last_cid = _parse_member(members[-1])[0]
                    head = [m for m in members if _parse_member(m)[0] != last_cid]
                    if head:
                        members = head
                        cur.upper = b"(" + last_cid.encode("utf-8") + b"\x01"
                    else:  # one checkpoint id fills the page: take all of its entries at once
                        c = last_cid.encode("utf-8")
                        members = yield Cmd("ZRANGEBYLEX", view.keys.index(cns), b"[" + c + b"\x00", b"(" + c + b"\x01")
                        cur.upper = b"(" + c + b"\x00"
                else:
                    cur.ns_at += 1
                    cur.upper = None
                best = _newest_valid(members, view.valid)
                picked = [(cns, cid, best[cid][0]) for cid in sorted(best, reverse=True)]
            if not picked:
                continue
            recs = [r for r in (yield from self.records_flow(view, picked)) if r is not None]
            if filter:
                kept = []
                for r in recs:
                    md = self.serde.loads_typed(r.metadata)
                    if all(md.get(k) == v for k, v in filter.items()):
                        kept.append(r)
                recs = kept
            if want is not None:
                recs = recs[:want]
            if recs:
                tuples = [t for t in (yield from self.tuples_flow(view, recs)) if t is not None]
                if tuples:
                    return tuples, view.generation
        cur.done = True
        return [], view.generation

    def entries_flow(self, view: _View) -> Flow[dict[str, list[tuple[str, _Loc]]]]:
        """Every visible checkpoint of a thread: namespace -> [(cid, loc)] oldest first."""
        raw = yield Cmd("SMEMBERS", view.keys.namespaces)
        out: dict[str, list[tuple[str, _Loc]]] = {}
        for cns in sorted(_text(n) for n in raw or []):
            members = yield Cmd("ZRANGEBYLEX", view.keys.index(cns), b"-", b"+")
            best = _newest_valid(members or [], view.valid)
            out[cns] = [(cid, best[cid][0]) for cid in sorted(best)]
        return out

    # -- the lease -------------------------------------------------------------------------

    def _fenced(self, w: _Writer, fence: int, why: str) -> FencedError:
        assert w.lease is not None
        err = FencedError(w.run_id, token=w.lease.token, fence=fence)
        err.args = (f"{err.args[0]} ({why})",)
        w.fenced = err
        return err

    def ensure_lease_flow(self, w: _Writer, seen: int | None) -> Flow[None]:
        """Make ``w`` hold the thread's lease with a token that may commit next."""
        if w.fenced is not None:
            raise w.fenced
        if w.lease is not None:
            if not w.tainted:
                if time.monotonic() - w.renewed_at < self.ttl_ms / 3000:
                    return
                try:
                    yield from w.lease._renew_flow(None)
                    w.renewed_at = time.monotonic()
                    return
                except LeaseLostError:
                    pass
            # expired, or a write failed midway: take the thread back only if nobody else
            # acquired it (or revoked us) since our token was issued
            info = yield from self.core.info_flow(w.run_id)
            if info.fence != w.lease.token:
                raise self._fenced(w, info.fence, f"thread {w.thread_id!r} was taken over: last leased by "
                                   f"{info.lease_owner!r} with token {info.lease_token}")
        previous = w.lease
        deadline = time.monotonic() + self.acquire_timeout
        while True:
            try:
                grant = yield from self.core.acquire_flow(w.run_id, self.owner, self.ttl_ms)
                break
            except LeaseHeldError as held:
                if previous is not None:
                    info = yield from self.core.info_flow(w.run_id)
                    raise self._fenced(w, info.fence, f"thread {w.thread_id!r} is now leased by "
                                       f"{held.owner!r}") from held
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                yield Sleep(min(left, held.ms_left / 1000 + 0.02))
        lease = LeaseBase(self.store, w.run_id, self.owner, grant, self.ttl_ms)
        if previous is not None and grant.previous_token != previous.token:
            # another writer acquired the thread between our check and our acquire
            yield from lease._release_flow()
            raise self._fenced(w, grant.previous_token, f"another writer took thread {w.thread_id!r} meanwhile")
        ck = yield from self.core.load_flow(w.run_id)
        manifest = ck.state if ck is not None else {
            "kind": MANIFEST_KIND, "format": MANIFEST_FORMAT, "thread_id": w.thread_id, "epochs": [], "last": None}
        if not is_thread_manifest(manifest):
            yield from lease._release_flow()
            raise CheckpointError(f"run {w.run_id!r} does not hold a LangGraph thread", run_id=w.run_id)
        if previous is None and seen is not None and grant.generation != seen:
            yield from lease._release_flow()
            raise ConflictError(w.run_id, expected=seen, actual=grant.generation)
        w.lease, w.manifest, w.renewed_at, w.tainted, w.refs = lease, manifest, time.monotonic(), False, {}

    def mutate_flow(self, w: _Writer, seen: int | None, what: str, meta: dict[str, Any],
                    build: Build) -> Flow[int]:
        """Lease, then ``build`` the pre-writes for the next generation, send them
        (confirmed), and commit the manifest that makes them visible. Returns the generation."""
        yield from self.ensure_lease_flow(w, seen)
        assert w.lease is not None and w.manifest is not None
        loc = _Loc(w.lease.token, w.lease.generation + 1)
        ops = yield from build(w, loc)
        if ops is None:  # nothing to write
            return w.lease.generation
        epochs = [list(e) for e in w.manifest["epochs"]]
        if not epochs or epochs[-1][0] != loc.token:
            epochs.append([loc.token, loc.generation])
        manifest = {**w.manifest, "epochs": epochs, "last": {"op": what, **meta}}
        try:
            for route, batch in _batches(ops, w.keys.route):
                # resending is safe: nothing of it is visible before the commit below
                yield from self.core._retrying(self._sender(batch, route, w.run_id, what), run_id=w.run_id,
                                               what=what, writes=True)
            generation = yield from w.lease._commit_flow(manifest, {"op": what, **meta})
        except FencedError as fenced:
            w.fenced = fenced
            raise
        except BaseException:
            w.tainted = True  # something may have been written under this (token, generation)
            raise
        w.manifest = manifest
        return generation

    def _sender(self, batch: list[Cmd], route: str, run_id: str, what: str) -> Callable[[], Flow[list[Any]]]:
        return lambda: self.confirmed(batch, route, run_id, what)

    def cross_key(self, run_id: str) -> str:
        """The cross-thread index of a LangGraph run id: the threads holding its checkpoints.
        Outside every thread's slot; rebuildable from the threads' ``runs:`` keys."""
        return f"{self.core.namespace}:lgrun:{{{_part(run_id)}}}"

    def index_run(self, w: _Writer, lg_run: Any, cns: str, member: bytes) -> list[Cmd | Pipe]:
        """The writes that file a checkpoint under its LangGraph run id (``metadata.run_id``)."""
        if lg_run is None:
            return []
        rid = str(lg_run)
        key = self.cross_key(rid)
        return [Pipe([Cmd("SADD", key, w.thread_id)], route=key),  # first: the index never misses a thread
                Cmd("SADD", w.keys.registry, w.keys.runs(rid)),
                Cmd("SADD", w.keys.runs(rid), cns.encode("utf-8") + b"\x00" + member)]

    # -- writing ---------------------------------------------------------------------------

    def refs_flow(self, w: _Writer, cns: str, parent: str | None) -> Flow[dict[str, tuple[Any, str | None]]]:
        """Channel refs of the parent checkpoint (else the newest one) of ``cns``."""
        cached = w.refs.get(cns)
        if cached is not None and (parent is None or cached[0] == parent):
            return cached[1]
        view = self.writer_view(w)
        for cid in ([parent] if parent else []) + [None]:  # type: ignore[list-item]
            hit = yield from self.find_flow(view, cns, cid)
            if hit is not None:
                recs = yield from self.records_flow(view, [(cns, hit[0], hit[1])])
                if recs[0] is not None:
                    return recs[0].refs
        return {}

    def put_build(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
                  new_versions: ChannelVersions, made: dict[str, Any]) -> Build:
        """The pre-writes of a put; ``made["refs"]`` receives the channel refs it recorded."""
        conf = config["configurable"]
        cns = _check_ns(conf.get("checkpoint_ns"))
        parent = conf.get("checkpoint_id")
        cid = _check_cid(checkpoint["id"])
        c: dict[str, Any] = dict(checkpoint)
        values: dict[str, Any] = c.pop("channel_values", {}) or {}
        md = get_serializable_checkpoint_metadata(config, metadata)

        def build(w: _Writer, loc: _Loc) -> Flow[list[Cmd | Pipe] | None]:
            refs: dict[str, tuple[Any, str | None]] = {}
            fields: list[Any] = []
            for ch, ver in new_versions.items():
                if ch in values:
                    fields += [f"v:{ch}", self.seal(w.run_id, loc, self.serde.dumps_typed(values[ch]))]
                    refs[ch] = (ver, str(loc))
                else:
                    refs[ch] = (ver, None)
            missing = [ch for ch in c.get("channel_versions", {}) if ch not in refs]
            if missing:
                base = yield from self.refs_flow(w, cns, parent)
                for ch in missing:
                    ref = base.get(ch)
                    if ref is not None and ref[0] == c["channel_versions"][ch]:
                        refs[ch] = ref
            record = {"id": cid, "ns": cns, "parent": parent, "checkpoint": self.serde.dumps_typed(c),
                      "metadata": self.serde.dumps_typed(md), "refs": refs}
            ck, ix = w.keys.commit(loc), w.keys.index(cns)
            w.refs.pop(cns, None)
            made["refs"] = refs
            return [
                *self.index_run(w, md.get("run_id"), cns, _member(cid, loc)),
                Cmd("SADD", w.keys.registry, ck, ix),
                Cmd("SADD", w.keys.namespaces, cns),
                Cmd("ZADD", ix, 0, _member(cid, loc)),
                Cmd("HSET", ck, "r", self.seal(w.run_id, loc, record), *fields),
            ]

        return build

    def writes_build(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str,
                     task_path: str) -> Build:
        conf = config["configurable"]
        cns = _check_ns(conf.get("checkpoint_ns"))
        cid = _check_cid(conf["checkpoint_id"])
        items = [(WRITES_IDX_MAP.get(ch, idx), ch, self.serde.dumps_typed(v)) for idx, (ch, v) in enumerate(writes)]

        def build(w: _Writer, loc: _Loc) -> Flow[list[Cmd | Pipe] | None]:
            if not items:
                return None
            key = w.keys.writes(cns, cid)
            fields: list[Any] = []
            for widx, ch, typed in items:
                fields += [f"{loc}\x00{task_id}\x00{widx}".encode("utf-8"),
                           self.seal(w.run_id, loc, {"task_id": task_id, "channel": ch, "value": typed,
                                                     "task_path": task_path, "idx": widx})]
            return [Cmd("SADD", w.keys.registry, key), Cmd("SADD", w.keys.namespaces, cns), Cmd("HSET", key, *fields)]
            yield  # pragma: no cover  (a flow that needs no reads)

        return build

    def copy_build(self, source: str) -> Build:
        def build(w: _Writer, loc: _Loc) -> Flow[list[Cmd | Pipe] | None]:
            src = yield from self.view_flow(source)
            if src is None:
                return None
            entries = yield from self.entries_flow(src)
            ops: list[Cmd | Pipe] = []
            new_keys: list[str] = []
            mapping: dict[str, _Loc] = {}  # source c: loc -> target loc
            n = 0

            def target(vloc: str) -> _Loc:
                nonlocal n
                if vloc not in mapping:
                    mapping[vloc] = _Loc(loc.token, loc.generation, n)
                    n += 1
                return mapping[vloc]

            for cns, items in entries.items():
                recs = yield from self.records_flow(src, [(cns, cid, l) for cid, l in items])
                for rec in recs:
                    if rec is None:
                        continue
                    # every c: key the record uses, its own first
                    sources = [str(rec.loc)] + sorted({v for _, v in rec.refs.values() if v is not None} - {str(rec.loc)})
                    for s in sources:
                        if s in mapping:
                            continue
                        t = target(s)
                        slot = _Loc.parse(s)
                        assert slot is not None
                        raw = yield Cmd("HGETALL", src.keys.commit(s))
                        pairs = raw.items() if isinstance(raw, dict) else zip(raw[::2], raw[1::2])
                        fields: list[Any] = []
                        for f, blob in pairs:
                            if f.startswith(b"v:"):
                                obj = self.open(src.run_id, src.keys.commit(s), slot.generation, blob)
                                fields += [f, self.seal(w.run_id, t, obj)]
                        if fields:
                            ops.append(Cmd("HSET", w.keys.commit(t), *fields))
                            new_keys.append(w.keys.commit(t))
                    t = mapping[str(rec.loc)]
                    refs = {ch: (ver, str(mapping[v]) if v is not None else None) for ch, (ver, v) in rec.refs.items()}
                    record = {"id": rec.cid, "ns": cns, "parent": rec.parent, "checkpoint": rec.checkpoint,
                              "metadata": rec.metadata, "refs": refs}
                    ops.append(Cmd("HSET", w.keys.commit(t), "r", self.seal(w.run_id, t, record)))
                    ops.append(Cmd("ZADD", w.keys.index(cns), 0, _member(rec.cid, t)))
                    ops += self.index_run(w, self.serde.loads_typed(rec.metadata).get("run_id"), cns,
                                          _member(rec.cid, t))
                    new_keys += [w.keys.commit(t), w.keys.index(cns)]
                    wkey_src = src.keys.writes(cns, rec.cid)
                    raw = yield Cmd("HGETALL", wkey_src)
                    wfields: list[Any] = []
                    for wr in self.visible_writes(src, wkey_src, raw or {}):
                        wfields += [f"{loc}\x00{wr['task_id']}\x00{wr['idx']}".encode("utf-8"),
                                    self.seal(w.run_id, loc, wr)]
                    if wfields:
                        ops.append(Cmd("HSET", w.keys.writes(cns, rec.cid), *wfields))
                        new_keys.append(w.keys.writes(cns, rec.cid))
                if items:
                    ops.insert(0, Cmd("SADD", w.keys.namespaces, cns))
            w.refs = {}
            if not ops:
                return None
            registry: list[Cmd | Pipe] = [Cmd("SADD", w.keys.registry, *sorted(set(new_keys)))]
            return registry + ops  # registered before anything they name is written

        return build

    def prune_build(self, strategy: str) -> Build:
        if strategy not in ("keep_latest", "delete"):
            raise ValueError(f"unknown prune strategy {strategy!r}: use 'keep_latest' or 'delete'")

        def build(w: _Writer, loc: _Loc) -> Flow[list[Cmd | Pipe] | None]:
            view = self.writer_view(w)
            entries = yield from self.entries_flow(view)
            keep: dict[str, tuple[str, _Loc]] = {}
            if strategy == "keep_latest":
                keep = {cns: items[-1] for cns, items in entries.items() if items}
            kept_recs = yield from self.records_flow(view, [(cns, cid, l) for cns, (cid, l) in keep.items()])
            keep_commit = {w.keys.commit(r.loc) for r in kept_recs if r is not None}
            keep_commit |= {w.keys.commit(v) for r in kept_recs if r is not None for _, v in r.refs.values() if v}
            keep_writes = {w.keys.writes(cns, cid) for cns, (cid, _) in keep.items()}
            keep_members = {cns: _member(cid, l) for cns, (cid, l) in keep.items()}
            registry = [_text(k) for k in ((yield Cmd("SMEMBERS", w.keys.registry)) or [])]
            ops: list[Cmd | Pipe] = []
            drop = [k for k in registry if (w.keys.kind_of(k) == "c" and k not in keep_commit)
                    or (w.keys.kind_of(k) == "w" and k not in keep_writes)]
            kept_entries = {cns.encode("utf-8") + b"\x00" + m for cns, m in keep_members.items()}
            for key in (k for k in registry if w.keys.kind_of(k) == "runs"):
                filed = set((yield Cmd("SMEMBERS", key)) or [])
                if filed & kept_entries:
                    if filed - kept_entries:
                        ops.append(Cmd("SREM", key, *(filed - kept_entries)))
                else:
                    drop.append(key)
                    ops += self.unindex_run(w, key)
            raw_ns = yield Cmd("SMEMBERS", w.keys.namespaces)
            for cns in sorted(_text(n) for n in raw_ns or []):
                ix = w.keys.index(cns)
                if cns in keep_members:
                    ops.append(Cmd("ZREMRANGEBYLEX", ix, b"(" + keep_members[cns], b"+"))
                    ops.append(Cmd("ZREMRANGEBYLEX", ix, b"-", b"(" + keep_members[cns]))
                else:
                    drop.append(ix)
                    ops.append(Cmd("SREM", w.keys.namespaces, cns))
            for start in range(0, len(drop), _BATCH):
                chunk = drop[start:start + _BATCH]
                ops += [Cmd("UNLINK", *chunk), Cmd("SREM", w.keys.registry, *chunk)]
            w.refs = {}
            return ops

        return build

    def runs_delete_build(self, rid: str) -> Build:
        """Remove the checkpoints (and their writes) that LangGraph run ``rid`` put in a thread.
        Their values stay while a newer checkpoint refers to them (``prune`` collects the rest)."""

        def build(w: _Writer, loc: _Loc) -> Flow[list[Cmd | Pipe] | None]:
            key = w.keys.runs(rid)
            entries = (yield Cmd("SMEMBERS", key)) or []
            if not entries:
                return None
            ops: list[Cmd | Pipe] = []
            gone: dict[tuple[str, str], set[bytes]] = {}
            for e in entries:
                cns_b, _, member = e.partition(b"\x00")
                cns = cns_b.decode("utf-8")
                cid, mloc = _parse_member(member)
                ops.append(Cmd("ZREM", w.keys.index(cns), member))
                if mloc is not None:
                    ops.append(Cmd("HDEL", w.keys.commit(mloc), "r"))
                gone.setdefault((cns, cid), set()).add(member)
            for (cns, cid), members in gone.items():
                c = cid.encode("utf-8")
                left = set((yield Cmd("ZRANGEBYLEX", w.keys.index(cns), b"[" + c + b"\x00", b"(" + c + b"\x01")) or [])
                if not left - members:  # the checkpoint id is gone entirely: so are its writes
                    ops += [Cmd("UNLINK", w.keys.writes(cns, cid)), Cmd("SREM", w.keys.registry, w.keys.writes(cns, cid))]
            ops += [Cmd("UNLINK", key), Cmd("SREM", w.keys.registry, key), *self.unindex_run(w, key)]
            w.refs = {}
            return ops

        return build

    def unindex_run(self, w: _Writer, runs_key: str) -> list[Cmd | Pipe]:
        """Take this thread out of the cross-thread index of the run id a ``runs:`` key names."""
        rid = unquote(runs_key.rsplit(":", 1)[1])
        cross = self.cross_key(rid)
        return [Pipe([Cmd("SREM", cross, w.thread_id)], route=cross)]

    def run_threads_flow(self, rid: str) -> Flow[list[str]]:
        def body() -> Flow[list[str]]:
            return sorted(_text(t) for t in ((yield Cmd("SMEMBERS", self.cross_key(rid))) or []))

        return (yield from self.core._retrying(body, run_id=None, what="delete_for_runs", writes=False))

    def drop_run_index_flow(self, rid: str) -> Flow[None]:
        key = self.cross_key(rid)

        def body() -> Flow[None]:
            yield from self.confirmed([Cmd("UNLINK", key)], key, key, "delete_for_runs")

        return (yield from self.core._retrying(body, run_id=None, what="delete_for_runs", writes=True))

    def delete_flow(self, thread_id: str) -> Flow[None]:
        return (yield from self.core._retrying(lambda: self._delete(thread_id), run_id=thread_run_id(thread_id),
                                               what="delete_thread", writes=True))

    def _delete(self, thread_id: str) -> Flow[None]:
        run_id = thread_run_id(thread_id)
        keys = _Keys(self.core.namespace, run_id)
        info = yield from self.core.info_flow(run_id)
        if info.fence == 0 and not (yield Cmd("EXISTS", keys.registry)):
            return  # never written: leave no tombstone behind
        yield from self.core.delete_flow(run_id, self.owner)  # bumps the fence: every writer is fenced off
        registry = [_text(k) for k in ((yield Cmd("SMEMBERS", keys.registry)) or [])]
        for k in registry:
            if keys.kind_of(k) == "runs":
                rid = unquote(k.rsplit(":", 1)[1])
                cross = self.cross_key(rid)
                yield from self.confirmed([Cmd("SREM", cross, thread_id)], cross, run_id, "delete_thread")
        for start in range(0, len(registry), _BATCH):
            yield from self.confirmed([Cmd("UNLINK", *registry[start:start + _BATCH])], keys.route, run_id,
                                      "delete_thread")
        yield from self.confirmed([Cmd("UNLINK", keys.registry, keys.namespaces)], keys.route, run_id,
                                  "delete_thread")

    def threads_flow(self) -> Flow[list[str]]:
        return (yield from self.core._retrying(self._threads, run_id=None, what="list", writes=False))

    def _threads(self) -> Flow[list[str]]:
        runs = yield from self.core.runs_flow()
        out = []
        for run_id in runs:
            if run_id.startswith((RUN_PREFIX, HASHED_RUN_PREFIX)):
                ck = yield from self.core.load_flow(run_id)
                if ck is not None and is_thread_manifest(ck.state):
                    out.append(ck.state["thread_id"])
        return out


def _default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class RedisCkptSaver(BaseCheckpointSaver[str]):
    """A LangGraph ``BaseCheckpointSaver`` on a redis-ckpt store (see the module docstring).

    :param store: a :class:`~redis_ckpt.CheckpointStore` for the sync methods.
    :param async_store: an :class:`~redis_ckpt.aio.AsyncCheckpointStore` for the async methods
        (same server and namespace as ``store`` when both are given).
    :param owner: this writer's name in leases and audit events (default ``host:pid:random``,
        unique per saver, so two savers never share a lease).
    :param ttl: lease time-to-live in seconds; a crashed writer's threads can be taken over
        after it.
    :param acquire_timeout: how long a first write waits for another writer's lease to expire
        before raising :class:`~redis_ckpt.LeaseHeldError` (default: ``ttl``).
    :param serde: LangGraph serializer (default ``JsonPlusSerializer()``, no pickle).

    Errors a write may raise: :class:`~redis_ckpt.FencedError` (another writer owns the
    thread now; nothing of this write is visible), :class:`~redis_ckpt.LeaseHeldError`,
    :class:`~redis_ckpt.ConflictError` (the thread changed since this process read it),
    :class:`~redis_ckpt.DurabilityError`, :class:`~redis_ckpt.StoreUnavailableError` —
    all :class:`~redis_ckpt.CheckpointError`.
    """

    def __init__(
        self,
        store: Any = None,
        *,
        async_store: Any = None,
        owner: str | None = None,
        ttl: float | timedelta = 30.0,
        acquire_timeout: float | None = None,
        serde: SerializerProtocol | None = None,
    ) -> None:
        super().__init__(serde=serde)
        if store is None and async_store is None:
            raise ValueError("RedisCkptSaver needs a CheckpointStore and/or an AsyncCheckpointStore")
        if store is not None and async_store is not None and store.namespace != async_store.namespace:
            raise ValueError("store and async_store must use the same namespace")
        self.store = store
        self.async_store = async_store
        self.owner = owner or _default_owner()
        self.ttl_ms = ttl_ms(ttl)
        wait = self.ttl_ms / 1000 if acquire_timeout is None else float(acquire_timeout)
        base = store if store is not None else async_store
        self._engine = _Engine(base, self.serde, self.owner, self.ttl_ms, wait)
        self._writers: dict[str, _Writer] = {}
        self._writers_lock = threading.Lock()
        self._evict_at = _MAX_WRITERS
        self._seen: OrderedDict[str, int] = OrderedDict()
        self._alocks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = \
            weakref.WeakKeyDictionary()

    @property
    def acquire_timeout(self) -> float:
        """Seconds a first write waits for another writer's lease to expire."""
        return self._engine.acquire_timeout

    @acquire_timeout.setter
    def acquire_timeout(self, seconds: float) -> None:
        self._engine.acquire_timeout = float(seconds)

    # -- plumbing --------------------------------------------------------------------------

    def _run(self, flow: Flow[T]) -> T:
        if self.store is None:
            raise RuntimeError("this RedisCkptSaver has only an AsyncCheckpointStore: use the async graph "
                               "API (ainvoke/astream) or pass a CheckpointStore too")
        try:
            return self.store._run(flow)  # type: ignore[no-any-return]
        except RedisError as refused:  # (connection errors became StoreUnavailableError in _run)
            raise _server_error(refused) from refused

    async def _arun(self, flow: Flow[T]) -> T:
        try:
            return await self.async_store._run(flow)  # type: ignore[no-any-return]
        except RedisError as refused:  # (connection errors became StoreUnavailableError in _run)
            raise _server_error(refused) from refused

    def _writer(self, thread_id: str) -> _Writer:
        with self._writers_lock:
            w = self._writers.get(thread_id)
            if w is None:
                if len(self._writers) >= self._evict_at:
                    self._evict()
                run_id = thread_run_id(thread_id)
                w = _Writer(thread_id, run_id, _Keys(self._engine.core.namespace, run_id))
                self._writers[thread_id] = w
            return w

    def _evict(self) -> None:
        """Forget threads whose lease lapsed here anyway (held under ``_writers_lock``)."""
        now = time.monotonic()
        for thread_id, w in list(self._writers.items()):
            idle = w.lease is None or w.fenced is not None or now - w.renewed_at > self.ttl_ms / 1000
            if idle and not w.lock.locked():
                del self._writers[thread_id]
                for locks in self._alocks.values():
                    lock = locks.get(thread_id)
                    if lock is not None and not lock.locked():
                        del locks[thread_id]
        self._evict_at = max(_MAX_WRITERS, 2 * len(self._writers))

    def _alock(self, thread_id: str) -> asyncio.Lock:
        locks = self._alocks.setdefault(asyncio.get_running_loop(), {})
        lock = locks.get(thread_id)
        if lock is None:
            lock = locks[thread_id] = asyncio.Lock()
        return lock

    def _saw(self, thread_id: str, generation: int) -> None:
        """Remember what this process read of a thread; a writer that lost the thread gets
        a fresh start (its next write takes the lease again, checked against this)."""
        with self._writers_lock:
            self._seen[thread_id] = generation
            self._seen.move_to_end(thread_id)
            while len(self._seen) > _MAX_SEEN:
                self._seen.popitem(last=False)
        w = self._writers.get(thread_id)
        if w is not None and w.fenced is not None:
            with self._writers_lock:
                if self._writers.get(thread_id) is w:
                    del self._writers[thread_id]

    @staticmethod
    def _thread(config: RunnableConfig) -> str:
        try:
            return str(config["configurable"]["thread_id"])
        except KeyError:
            raise ValueError("the config has no configurable.thread_id") from None

    def _mutate(self, thread_id: str, what: str, meta: dict[str, Any], build: Any,
                after: Callable[[_Writer], None] | None = None) -> int:
        w = self._writer(thread_id)
        with w.lock:
            generation = self._run(self._engine.mutate_flow(w, self._seen.get(thread_id), what, meta, build))
            self._seen[thread_id] = generation
            if after is not None:
                after(w)
            return generation

    async def _amutate(self, thread_id: str, what: str, meta: dict[str, Any], build: Any,
                       after: Callable[[_Writer], None] | None = None) -> int:
        w = self._writer(thread_id)
        async with self._alock(thread_id):
            generation = await self._arun(self._engine.mutate_flow(w, self._seen.get(thread_id), what, meta, build))
            self._seen[thread_id] = generation
            if after is not None:
                after(w)
            return generation

    # -- lease control ---------------------------------------------------------------------

    def renew(self, thread_id: str) -> None:
        """Keep this saver's lease on a thread alive (call it from a node that runs long)."""
        w = self._writers.get(str(thread_id))
        if w is None:
            return
        with w.lock:
            if w.lease is not None and not w.tainted and w.fenced is None:
                self._run(w.lease._renew_flow(None))
                w.renewed_at = time.monotonic()

    def release(self, thread_id: str) -> bool:
        """Let go of a thread's lease so another process can continue it without waiting."""
        with self._writers_lock:
            w = self._writers.pop(str(thread_id), None)
        if w is None or w.lease is None or w.fenced is not None:
            return False
        with w.lock:
            return self._run(w.lease._release_flow())

    async def arelease(self, thread_id: str) -> bool:
        with self._writers_lock:
            w = self._writers.pop(str(thread_id), None)
        if w is None or w.lease is None or w.fenced is not None:
            return False
        if self.async_store is None:
            return await asyncio.to_thread(self._run, w.lease._release_flow())
        return await self._arun(w.lease._release_flow())

    def close(self) -> None:
        """Release every lease this saver holds."""
        for thread_id in list(self._writers):
            self.release(thread_id)

    async def aclose(self) -> None:
        for thread_id in list(self._writers):
            await self.arelease(thread_id)

    def __enter__(self) -> RedisCkptSaver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> RedisCkptSaver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- BaseCheckpointSaver: sync ---------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        thread_id = self._thread(config)
        conf = config["configurable"]
        tup, generation = self._run(self._engine.get_flow(thread_id, conf.get("checkpoint_ns", "") or "",
                                                          conf.get("checkpoint_id")))
        self._saw(thread_id, generation)
        return tup

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        threads = [self._thread(config)] if config else self._run(self._engine.threads_flow())
        left = limit
        for thread_id in threads:
            cur = self._cursor(thread_id, config, before)
            while not cur.done and (left is None or left > 0):
                page, generation = self._run(self._engine.list_page_flow(cur, filter, left))
                self._saw(thread_id, generation)
                for tup in page:
                    yield tup
                if left is not None:
                    left -= len(page)

    @staticmethod
    def _cursor(thread_id: str, config: RunnableConfig | None, before: RunnableConfig | None) -> _ListCursor:
        conf = (config or {}).get("configurable", {})
        before_id = (before or {}).get("configurable", {}).get("checkpoint_id") if before else None
        return _ListCursor(thread_id, conf.get("checkpoint_ns"), conf.get("checkpoint_id"), before_id)

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        thread_id = self._thread(config)
        cns, cid, after, build = self._put_parts(config, checkpoint, metadata, new_versions)
        self._mutate(thread_id, "put", {"checkpoint_ns": cns, "checkpoint_id": cid}, build, after)
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": cns, "checkpoint_id": cid}}

    def _put_parts(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
                   new_versions: ChannelVersions) -> tuple[str, str, Callable[[_Writer], None], Any]:
        cns = config["configurable"].get("checkpoint_ns", "") or ""
        cid = checkpoint["id"]
        made: dict[str, Any] = {}
        build = self._engine.put_build(config, checkpoint, metadata, new_versions, made)

        def after(w: _Writer) -> None:
            w.refs[cns] = (cid, made["refs"])

        return cns, cid, after, build

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        thread_id = self._thread(config)
        conf = config["configurable"]
        build = self._engine.writes_build(config, writes, task_id, task_path)
        self._mutate(thread_id, "writes", {"checkpoint_ns": conf.get("checkpoint_ns", "") or "",
                                           "checkpoint_id": conf["checkpoint_id"], "task_id": task_id}, build)

    def delete_thread(self, thread_id: str) -> None:
        thread_id = str(thread_id)
        w = self._writer(thread_id)
        with w.lock:
            self._run(self._engine.delete_flow(thread_id))
            self._forget(thread_id, w)

    def _forget(self, thread_id: str, w: _Writer) -> None:
        with self._writers_lock:
            if self._writers.get(thread_id) is w:
                del self._writers[thread_id]
        self._seen.pop(thread_id, None)

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their pending writes) of LangGraph runs, in every thread
        and namespace (found through the run-id index; each thread is changed under its lease)."""
        for rid in map(str, run_ids):
            for thread_id in self._run(self._engine.run_threads_flow(rid)):
                if self._run(self._exists_flow(thread_id)):
                    self._mutate(thread_id, "delete_for_runs", {"run_id": rid}, self._engine.runs_delete_build(rid))
            self._run(self._engine.drop_run_index_flow(rid))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        if self.async_store is None:
            return await asyncio.to_thread(self.delete_for_runs, run_ids)
        for rid in map(str, run_ids):
            for thread_id in await self._arun(self._engine.run_threads_flow(rid)):
                if await self._arun(self._exists_flow(thread_id)):
                    await self._amutate(thread_id, "delete_for_runs", {"run_id": rid},
                                        self._engine.runs_delete_build(rid))
            await self._arun(self._engine.drop_run_index_flow(rid))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        target = str(target_thread_id)
        self._mutate(target, "copy", {"source_thread_id": str(source_thread_id)},
                     self._engine.copy_build(str(source_thread_id)))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        for thread_id in thread_ids:
            thread_id = str(thread_id)
            if not self._run(self._exists_flow(thread_id)):
                continue
            self._mutate(thread_id, "prune", {"strategy": strategy}, self._engine.prune_build(strategy))

    def _exists_flow(self, thread_id: str) -> Flow[bool]:
        view = yield from self._engine.view_flow(thread_id)
        return view is not None

    # -- BaseCheckpointSaver: async --------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        if self.async_store is None:
            return await asyncio.to_thread(self.get_tuple, config)
        thread_id = self._thread(config)
        conf = config["configurable"]
        tup, generation = await self._arun(self._engine.get_flow(thread_id, conf.get("checkpoint_ns", "") or "",
                                                                 conf.get("checkpoint_id")))
        self._saw(thread_id, generation)
        return tup

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        if self.async_store is None:
            found = await asyncio.to_thread(lambda: [*self.list(config, filter=filter, before=before, limit=limit)])
            for tup in found:
                yield tup
            return
        threads = [self._thread(config)] if config else await self._arun(self._engine.threads_flow())
        left = limit
        for thread_id in threads:
            cur = self._cursor(thread_id, config, before)
            while not cur.done and (left is None or left > 0):
                page, generation = await self._arun(self._engine.list_page_flow(cur, filter, left))
                self._saw(thread_id, generation)
                for tup in page:
                    yield tup
                if left is not None:
                    left -= len(page)

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        if self.async_store is None:
            return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)
        thread_id = self._thread(config)
        cns, cid, after, build = self._put_parts(config, checkpoint, metadata, new_versions)
        await self._amutate(thread_id, "put", {"checkpoint_ns": cns, "checkpoint_id": cid}, build, after)
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": cns, "checkpoint_id": cid}}

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        if self.async_store is None:
            return await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)
        thread_id = self._thread(config)
        conf = config["configurable"]
        build = self._engine.writes_build(config, writes, task_id, task_path)
        await self._amutate(thread_id, "writes", {"checkpoint_ns": conf.get("checkpoint_ns", "") or "",
                                                  "checkpoint_id": conf["checkpoint_id"], "task_id": task_id}, build)

    async def adelete_thread(self, thread_id: str) -> None:
        if self.async_store is None:
            return await asyncio.to_thread(self.delete_thread, thread_id)
        thread_id = str(thread_id)
        w = self._writer(thread_id)
        async with self._alock(thread_id):
            await self._arun(self._engine.delete_flow(thread_id))
            self._forget(thread_id, w)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        if self.async_store is None:
            return await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)
        await self._amutate(str(target_thread_id), "copy", {"source_thread_id": str(source_thread_id)},
                            self._engine.copy_build(str(source_thread_id)))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        if self.async_store is None:
            return await asyncio.to_thread(self.prune, thread_ids, strategy=strategy)
        for thread_id in thread_ids:
            thread_id = str(thread_id)
            if not await self._arun(self._exists_flow(thread_id)):
                continue
            await self._amutate(thread_id, "prune", {"strategy": strategy}, self._engine.prune_build(strategy))

    def with_allowlist(self, extra_allowlist: Any) -> RedisCkptSaver:
        """A clone with a stricter msgpack allowlist (LangGraph calls this when compiling a
        graph); it shares this saver's leases."""
        clone = super().with_allowlist(extra_allowlist)
        if clone is not self:
            assert isinstance(clone, RedisCkptSaver)
            clone._engine = _Engine(self._engine.store, clone.serde, self.owner, self.ttl_ms, self.acquire_timeout)
        return clone  # type: ignore[return-value]

    # -- versions --------------------------------------------------------------------------

    def get_next_version(self, current: str | None, channel: None) -> str:
        """Monotonic versions with a random tail (as LangGraph's own savers), so forks of a
        thread never reuse a version."""
        if current is None:
            current_v = 0
        elif isinstance(current, int):
            current_v = current
        else:
            current_v = int(current.split(".")[0])
        return f"{current_v + 1:032}.{random.random():016}"
