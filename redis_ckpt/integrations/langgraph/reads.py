"""Reading a thread: one ``saver_read`` call per ``get_tuple``, per page of ``list`` and per
delta-channel history walk; a tuple is decoded here from what the script returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langgraph.checkpoint.base import CheckpointTuple, DeltaChannelHistory, PendingWrite, writes_sort_key

from ...core.ops import Cmd, Flow
from ...errors import FrameDamage, FrameError
from .engine import Engine, text
from .invocations import Invocation
from .model import ThreadKeys, check_name, pairs, parse_items, split_record, thread_of_run

__all__ = ["ListCursor", "get_flow", "page_flow", "history_flow", "threads_flow", "decode_tuples", "PAGE"]

#: checkpoints a page of ``list`` returns at most
PAGE = 32
#: checkpoints a history walk visits per round trip (a longer chain continues in another)
VISITS = 10_000


def _config(thread_id: str, ns: str, cid: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": cid}}


def decode_writes(e: Engine, run_id: str, cid: str, flat: Sequence[Any]) -> list[tuple[str, str, Any, Any]]:
    """(task_id, channel, value, sort key) of stored writes, in writes_sort_key order."""
    out = []
    for member, blob in pairs(flat):
        w = e.framer.open(run_id, f"write {text(member)!r} of checkpoint {cid!r}", blob, size=6)
        task_id, channel, task_path, idx = w[0], w[1], w[2], w[3]
        out.append((task_id, channel, e.serde.loads_typed((w[4], w[5])), writes_sort_key(task_path, task_id, idx)))
    out.sort(key=lambda x: x[3])
    return out


def decode_value(e: Engine, run_id: str, ch: str, ver: str, blob: Any) -> Any:
    v = e.framer.open(run_id, f"value of channel {ch!r} version {ver!r}", blob, size=4)
    if v[0] != ch or v[1] != ver:
        raise FrameError(FrameDamage.WRONG_RUN, f"the value of channel {ch!r} version {ver!r} holds channel "
                         f"{v[0]!r} version {v[1]!r}", run_id=run_id)
    return e.serde.loads_typed((v[2], v[3]))


def decode_record(e: Engine, run_id: str, ns: str, cid: str, stored: bytes) -> tuple[list[bytes], dict[str, Any]]:
    shape, frame = split_record(stored)
    rec = e.framer.open(run_id, f"checkpoint {cid!r} of namespace {ns!r}", frame, kind=dict)
    if rec.get("id") != cid or rec.get("ns") != ns:
        raise FrameError(FrameDamage.WRONG_RUN, f"the record of checkpoint {cid!r} of namespace {ns!r} holds "
                         f"checkpoint {rec.get('id')!r} of {rec.get('ns')!r}", run_id=run_id)
    return shape, rec


def decode_tuples(e: Engine, thread_id: str, run_id: str, blob: bytes) -> list[CheckpointTuple]:
    """The tuples of a ``page`` reply (items: see lua/saver_read.lua)."""
    parts = parse_items(blob)
    out = []
    i = 0
    while i < len(parts):
        ns, cid, stored = text(parts[i]), text(parts[i + 1]), parts[i + 2]
        shape, rec = decode_record(e, run_id, ns, cid, stored)
        i += 3
        values = {}
        for ch, ver in pairs(shape[1:]):
            raw = parts[i]
            i += 1
            values[text(ch)] = decode_value(e, run_id, text(ch), text(ver), raw[1:] if raw[:1] == b"1" else None)
        n = int(parts[i])
        ws = parts[i + 1:i + 1 + 2 * n]
        i += 1 + 2 * n
        checkpoint = e.serde.loads_typed(tuple(rec["checkpoint"]))
        checkpoint["channel_values"] = values
        parent = text(shape[0])
        out.append(CheckpointTuple(
            config=_config(thread_id, ns, cid),
            checkpoint=checkpoint,
            metadata=e.serde.loads_typed(tuple(rec["metadata"])),
            parent_config=_config(thread_id, ns, parent) if parent else None,
            pending_writes=[(w[0], w[1], w[2]) for w in decode_writes(e, run_id, cid, ws)],
        ))
    return out


def get_flow(e: Engine, thread_id: str, ns: str, cid: str | None,
             inv: Invocation | None) -> Flow[CheckpointTuple | None]:
    k = e.keys(thread_id)
    ns = check_name("checkpoint_ns", ns)
    args = ["page", e.read_ttl, "one", ns, "", "", 1, check_name("checkpoint_id", cid) if cid else ""]
    reply = yield from e.read(k, args, "get_tuple")
    if inv is not None:
        inv.saw(int(reply[0]))
    found = decode_tuples(e, thread_id, k.run_id, reply[2])
    return found[0] if found else None


@dataclass
class ListCursor:
    """Where a listing of one thread is: namespace scope, bounds, what is left to return."""

    thread_id: str
    scope: str  # "one" | "all"
    ns: str
    before: str
    exact: str
    filter: dict[str, Any] | None
    left: int | None
    upper: str = ""
    done: bool = False

    @classmethod
    def of(cls, thread_id: str, config: dict[str, Any] | None, before: dict[str, Any] | None,
           filter: dict[str, Any] | None, left: int | None) -> ListCursor:
        conf = (config or {}).get("configurable", {})
        ns = conf.get("checkpoint_ns")
        bid = ((before or {}).get("configurable") or {}).get("checkpoint_id") or ""
        return cls(thread_id, "all" if ns is None else "one", check_name("checkpoint_ns", ns or ""),
                   check_name("before", bid), check_name("checkpoint_id", conf.get("checkpoint_id") or ""),
                   filter, left)


def page_flow(e: Engine, cur: ListCursor) -> Flow[list[CheckpointTuple]]:
    """The next page of a listing (newest first within each namespace); filtered by metadata."""
    k = e.keys(cur.thread_id)
    out: list[CheckpointTuple] = []
    while not cur.done and not out:
        if cur.exact and cur.before and not cur.exact.encode() < cur.before.encode():
            cur.done = True
            break
        limit = PAGE if cur.left is None or cur.filter else max(1, min(PAGE, cur.left))
        args = ["page", e.read_ttl, cur.scope, cur.ns, cur.upper, cur.before, limit, cur.exact]
        reply = yield from e.read(k, args, "list")
        found = decode_tuples(e, cur.thread_id, k.run_id, reply[2])
        if int(reply[1]) and found and not cur.exact:
            last = found[-1].config["configurable"]
            cur.ns, cur.upper = last["checkpoint_ns"], last["checkpoint_id"]
        else:
            cur.done = True
        for tup in found:
            if cur.filter and not all(tup.metadata.get(key) == v for key, v in cur.filter.items()):
                continue
            if cur.left is not None:
                if cur.left <= 0:
                    cur.done = True
                    break
                cur.left -= 1
            out.append(tup)
        if cur.left is not None and cur.left <= 0:
            cur.done = True
    return out


def history_flow(e: Engine, config: dict[str, Any], channels: Sequence[str]) -> Flow[dict[str, DeltaChannelHistory]]:
    """get_delta_channel_history in one round trip (a chain longer than VISITS: more)."""
    conf = config["configurable"]
    thread_id = str(conf["thread_id"])
    k = e.keys(thread_id)
    ns = check_name("checkpoint_ns", conf.get("checkpoint_ns") or "")
    start = conf.get("checkpoint_id")
    if start is None:  # the newest checkpoint of the namespace
        tup = yield from get_flow(e, thread_id, ns, None, None)
        start = tup.config["configurable"]["checkpoint_id"] if tup else None
    wanted = [check_name("channel", c) for c in dict.fromkeys(channels)]
    groups: dict[str, list[bytes | Any]] = {}  # checkpoint id -> flat (member, frame), newest checkpoint first
    seeds: dict[str, Any] = {}
    cursors = {start}  # where each round trip started: a parent chain that loops (damage) comes back to one
    while start and wanted:
        reply = yield from e.read(k, ["history", e.read_ttl, ns, start, VISITS, *wanted], "get_state")
        _version, nxt, flat, found = reply
        looped = _collect_writes(groups, flat)
        for ch, blob in pairs(found):
            ch = text(ch)
            seeds[ch] = blob
        wanted = [c for c in wanted if c not in seeds]
        start = "" if looped or text(nxt) in cursors else text(nxt)
        cursors.add(start)
    collected: dict[str, list[PendingWrite]] = {c: [] for c in channels}
    for cid in reversed(list(groups)):  # oldest checkpoint first
        for task_id, ch, value, _key in decode_writes(e, k.run_id, cid, groups[cid]):
            if ch in collected:
                collected[ch].append((task_id, ch, value))
    out: dict[str, DeltaChannelHistory] = {}
    for c in channels:
        entry: DeltaChannelHistory = {"writes": collected[c]}
        if c in seeds:
            raw = seeds[c]
            if raw is None:
                raise FrameError(FrameDamage.MISSING, f"the stored value of channel {c!r} is missing",
                                 run_id=k.run_id)
            entry["seed"] = _seed(e, k, c, raw)
        out[c] = entry
    return out


def _collect_writes(groups: dict[str, list[Any]], flat: Sequence[Any]) -> bool:
    """Add a history reply's writes (checkpoint id, member, frame, ...) to ``groups``;
    whether the walk came back to a checkpoint an earlier round trip visited (a parent chain
    that loops: the walk ends there, and what follows is left out)."""
    fresh: dict[str, list[Any]] = {}
    for cid, member, blob in zip(flat[::3], flat[1::3], flat[2::3]):
        cid = text(cid)
        if cid in groups:
            groups.update(fresh)
            return True
        fresh.setdefault(cid, []).extend((member, blob))
    groups.update(fresh)
    return False


def _seed(e: Engine, k: ThreadKeys, ch: str, blob: bytes) -> Any:
    v = e.framer.open(k.run_id, f"value of channel {ch!r}", blob, size=4)
    if v[0] != ch:
        raise FrameError(FrameDamage.WRONG_RUN, f"the value of channel {ch!r} holds channel {v[0]!r}",
                         run_id=k.run_id)
    return e.serde.loads_typed((v[2], v[3]))


def threads_flow(e: Engine) -> Flow[list[str]]:
    """Every thread of the namespace (SCAN over the threads' meta keys)."""
    pattern = ThreadKeys.scan_pattern(e.backend.namespace)
    prefix = e.backend.namespace + ":{"

    def body() -> Flow[list[str]]:
        found: set[str] = set()
        hashed: list[str] = []
        cursor: Any = 0
        while True:
            cursor, batch = yield Cmd("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            for key in map(text, batch):
                run_id = key[len(prefix):key.index("}", len(prefix))]
                thread = thread_of_run(run_id)
                if thread is not None:
                    found.add(thread)
                else:
                    hashed.append(key)
            if int(cursor) == 0:
                break
        for key in hashed:
            thread = yield Cmd("HGET", key, "thread")
            if thread is not None:
                found.add(text(thread))
        return sorted(found)

    return (yield from e.backend.retrying(body, run_id=None, what="list", writes=False))
