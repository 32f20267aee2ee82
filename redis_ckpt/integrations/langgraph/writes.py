"""Writing a thread: ``put`` and ``put_writes`` as one ``saver_write`` call each (one round
trip ending in the WAITAOF that confirms it), and the whole-thread operations (delete, prune,
copy) as ``saver_admin``/``saver_read``/``saver_write`` calls. Filing threads in the runs'
cross-thread index, which each of them keeps up, and delete_for_runs are in runs.py."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any

from langgraph.checkpoint.base import WRITES_IDX_MAP, Checkpoint, CheckpointMetadata, get_serializable_checkpoint_metadata

from ...core.ops import Cmd, Flow
from ...errors import ConflictError
from . import runs
from .engine import Engine, text
from .invocations import Invocation
from .model import (ThreadKeys, check_checkpoint_id, check_keys, check_name, check_text, check_thread_id, items,
                    pairs, thread_run_id, version_text)
from .reads import decode_record

__all__ = ["put_flow", "writes_flow", "delete_flow", "prune_flow", "copy_flow"]

#: bytes of items a copy sends per script call
COPY_BATCH_BYTES = 4 * 1024 * 1024
#: times prune keep_latest reads a thread's newest checkpoints when puts keep replacing them
PRUNE_READS = 8


def dumps(e: Engine, kind: str, value: Any) -> tuple[str, bytes]:
    """The serializer's ``dumps_typed(value)``; a dict key in ``value`` UTF-8 cannot encode is a
    ValueError saying where (``kind`` and the path), not the serializer's bare TypeError "string
    contains surrogates". Looked for only when the serializer refused."""
    try:
        return e.serde.dumps_typed(value)
    except TypeError:
        check_keys(kind, value)
        raise


def put_item(e: Engine, run_id: str, config: dict[str, Any], checkpoint: Checkpoint,
             metadata: CheckpointMetadata, new_versions: dict[str, Any]) -> tuple[list[Any], str, str, str | None]:
    """The "P" item of a put: (item, namespace, checkpoint id, LangGraph run id or None).
    Only channels in ``new_versions`` send their value; the others refer to stored ones."""
    conf = config["configurable"]
    ns = check_name("checkpoint_ns", conf.get("checkpoint_ns") or "")
    cid = check_checkpoint_id(checkpoint["id"])
    parent = check_name("parent checkpoint id", conf.get("checkpoint_id") or "")
    if parent == cid:  # re-saving a tuple under its own config: a parent chain that loops
        raise ValueError(f"checkpoint {cid!r} cannot be its own parent: put a checkpoint with a new id "
                         "(config's checkpoint_id is the parent of the checkpoint put)")
    c: dict[str, Any] = dict(checkpoint)
    values: dict[str, Any] = c.pop("channel_values", None) or {}
    md = get_serializable_checkpoint_metadata(config, metadata)
    lg_run = md.get("run_id")
    lg_run = check_name("metadata run_id", str(lg_run)) if lg_run is not None else None
    lg_run = lg_run or None  # "": no run (no index: delete_for_runs refuses "")
    versions = {**(c.get("channel_versions") or {}), **new_versions}
    triples: list[Any] = []
    for ch, ver in versions.items():
        v = version_text(ver)
        check_name("channel", ch)
        blob = b""
        if ch in new_versions and ch in values:
            typed = dumps(e, f"channel_values[{ch!r}]", values[ch])
            blob = e.framer.seal(run_id, [ch, v, typed[0], typed[1]])
        triples += [ch, v, blob]
    checkpoint_typed = list(dumps(e, "checkpoint", c))
    metadata_typed = list(dumps(e, "metadata", md))
    record = e.framer.seal(run_id, {"ns": ns, "id": cid, "parent": parent or None, "checkpoint": checkpoint_typed,
                                    "metadata": metadata_typed})
    return ["P", ns, cid, parent, record, lg_run or "",
            len(versions), *triples], ns, cid, lg_run


def put_flow(e: Engine, inv: Invocation | None, filed: runs.FiledRuns, config: dict[str, Any],
             parts: tuple[list[Any], str, str, str | None], company: list[Any]) -> Flow[dict[str, Any]]:
    """A put (its ``put_item`` ``parts``), with ``company``: the items of the invocation's
    writes that wait for it (outbox.py), stored in the same script call, before it."""
    thread_id = str(config["configurable"]["thread_id"])
    k = e.keys(thread_id)
    item, ns, cid, lg_run = parts
    now = time.monotonic()
    if lg_run is not None and filed.due(lg_run, thread_id, now):
        # the cross-thread index of the LangGraph run first: it never misses a thread (once a run per
        # thread; under a TTL again every slack_ms, so that it outlives the thread, see runs.index_run)
        yield from runs.file_run(e, k, filed, lg_run, thread_id, now)
    written = yield from e.write(k, thread_id, inv, [*company, *item], "put")
    if lg_run is not None and (lg_run in written.new_runs or written.resent):
        # the thread held no checkpoint of the run before this one (or a resend cannot tell: the first
        # attempt may have landed): a delete_for_runs (or a delete, a prune, maybe in another process)
        # may have taken the thread out of the run's index since it was filed, even just now, between
        # the filing above and the write
        yield from runs.refile_run(e, k, filed, lg_run, thread_id, now)
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": cid}}


def writes_item(e: Engine, run_id: str, config: dict[str, Any], writes: Sequence[tuple[str, Any]], task_id: str,
                task_path: str) -> list[Any]:
    conf = config["configurable"]
    ns = check_name("checkpoint_ns", conf.get("checkpoint_ns") or "")
    cid = check_checkpoint_id(conf["checkpoint_id"])
    check_name("task id", task_id)
    check_text("task path", task_path)
    quads: list[Any] = []
    for idx, (ch, value) in enumerate(writes):
        widx = WRITES_IDX_MAP.get(ch, idx)
        typed = dumps(e, f"writes[{idx}] ({ch!r})", value)
        quads += [task_id, widx, check_name("channel", ch),
                  e.framer.seal(run_id, [task_id, ch, task_path, widx, typed[0], typed[1]])]
    return ["W", ns, cid, len(writes), *quads]


def writes_flow(e: Engine, inv: Invocation | None, thread_id: str, items: list[Any]) -> Flow[None]:
    """Writes (one or more "W" items of one invocation, or of a standalone call)."""
    yield from e.write(e.keys(thread_id), thread_id, inv, items, "put_writes")


def delete_flow(e: Engine, filed: runs.FiledRuns, thread_id: str) -> Flow[None]:
    """Remove the thread (the fence stays, past every token handed out)."""
    k = e.keys(thread_id)
    _token, lg_runs = yield from e.admin(k, ["delete"], "delete_thread")
    yield from runs.unindex(e, k, filed, thread_id, lg_runs, "delete_thread")


def check_strategy(strategy: Any) -> None:
    """A prune strategy: "keep_latest" or "delete" (the saver checks it before the first
    thread is pruned)."""
    if strategy not in ("keep_latest", "delete"):
        raise ValueError(f"unknown prune strategy {strategy!r}: use 'keep_latest' or 'delete'")


def prune_flow(e: Engine, filed: runs.FiledRuns, thread_id: str, strategy: str) -> Flow[None]:
    """keep_latest: the newest checkpoint of each namespace and the delta chain its
    DeltaChannels rebuild from (the channels its metadata counts since their last snapshot).
    A put between the read of the newest checkpoints and the prune makes the script refuse
    (nothing written): read again, up to PRUNE_READS times. ``strategy`` is checked by the
    caller (check_strategy), with every other argument, before the first thread."""
    k = e.keys(thread_id)
    version, now = 0, 0
    for _ in range(PRUNE_READS):  # "delete" is never refused
        version, heads = (yield from _heads_and_chains(e, k)) if strategy == "keep_latest" else (0, [])
        removed, rest = yield from e.admin(k, ["prune", strategy, *heads], "prune")
        if removed >= 0:
            yield from runs.unindex(e, k, filed, thread_id, rest, "prune")
            return
        now = int(rest)  # refused: the thread's version now
    err = ConflictError(k.run_id, expected=version, actual=now)
    err.args = (f"prune of LangGraph thread {thread_id!r} refused: new checkpoints arrived each of the "
                f"{PRUNE_READS} times it read the newest ones (a run is still writing the thread; version "
                f"{version}, now {now}). Nothing of it was pruned; prune again later",)
    raise err


def _heads_and_chains(e: Engine, k: ThreadKeys) -> Flow[tuple[int, list[Any]]]:
    """(the thread's version, the triples keep_latest takes: each namespace's newest
    checkpoint id and the DeltaChannels whose chain it rebuilds from)."""
    heads = yield from e.read(k, ["heads", 0], "prune")
    out: list[Any] = []
    for ns, cid, stored in zip(heads[1::3], heads[2::3], heads[3::3]):
        _shape, rec = decode_record(e, k.run_id, text(ns), text(cid), stored)
        counters = e.serde.loads_typed(tuple(rec["metadata"])).get("counters_since_delta_snapshot") or {}
        out += [ns, cid, items(str(ch) for ch in counters)]
    return int(heads[0]), out


#: the invocation id a copy claims its target under starts so (an invocation's is hex digits)
COPY_CLAIM = "copy-"


def _not_empty(target: str, version: int, left_by: str = "") -> ConflictError:
    err = ConflictError(thread_run_id(target), expected=0, actual=version)
    if left_by.startswith(COPY_CLAIM):
        why = ("holds an unfinished copy_thread (of another thread, or of this source before it changed) "
               f"(version {version}); delete it (delete_thread) and copy again")
    else:
        why = (f"already holds checkpoints or writes (version {version}); copy into a new thread, or "
               "delete this one first")
    err.args = (f"copy_thread refused: thread {target!r} {why}. Nothing was copied",)
    return err


def _copy_claim(source_run_id: str, source_version: Any) -> str:
    """The invocation id a copy of the source, in the state of that version, claims its target
    under: the same for a copy sent again, another once the source was written."""
    digest = hashlib.sha256(f"{source_run_id}\0{int(source_version)}".encode()).hexdigest()
    return COPY_CLAIM + digest[:32]


def copy_flow(e: Engine, source: str, target: str) -> Flow[None]:
    """Every checkpoint and write of ``source`` into ``target`` (frames sealed again for it);
    sent in calls of at most COPY_BATCH_BYTES, the first one claiming the target. The target
    is filed in the cross-thread index of every LangGraph run it now holds checkpoints of
    (delete_for_runs finds the copy too).

    The claim is made under an invocation id derived from the source and its version: a copy
    interrupted between its calls (the server gone) is completed by the same copy_thread sent
    again while neither thread was written since (every item is sent again: each lands as it
    did); a target left so by a copy of another source, or of this one before it changed, is
    refused, its message naming the unfinished copy."""
    ks, kt = e.keys(check_thread_id("source_thread_id", source)), e.keys(check_thread_id("target_thread_id", target))
    if ks.run_id == kt.run_id:
        raise ValueError(f"copy_thread copies a thread into another one, not into itself ({source!r})")
    # values are stored once per (namespace, channel, version): merged into a thread in use, a
    # copied checkpoint would read the target's value where both hold one under the same version
    target_version = int((yield from e.read(kt, ["heads", 0], "copy_thread"))[0])
    left_by = ""
    if target_version:
        def claimed_by() -> Flow[Any]:
            return (yield Cmd("HGET", kt.meta, "inv"))

        left_by = text((yield from e.backend.retrying(claimed_by, run_id=kt.run_id, what="copy_thread",
                                                      writes=False)) or b"")
        if not left_by.startswith(COPY_CLAIM):
            raise _not_empty(target, target_version)
    version, index, records, values, writes, run_members = yield from e.read(ks, ["dump", 0], "copy_thread")
    claim_as = _copy_claim(ks.run_id, version)
    if target_version and left_by != claim_as:
        raise _not_empty(target, target_version, left_by)
    stored_records = dict(pairs(records))
    stored_values = dict(pairs(values))
    lg_run_of = {}
    for m in run_members:
        rid, _, rest = m.partition(b"\x00")
        lg_run_of[rest] = text(rid)
    writes_of: dict[bytes, list[Any]] = {}
    for field, blob in pairs(writes):
        ns_b, _, rest = field.partition(b"\x00")
        writes_of.setdefault(ns_b + b"\x00" + rest.partition(b"\x00")[0], []).append((field, blob))
    for rid in sorted(set(lg_run_of.values())):  # the runs' indexes first, as a put does
        yield from runs.index_run(e, kt, rid, target)
    sent: set[bytes] = set()
    batch: list[Any] = []
    size = 0
    token = 0

    def flush() -> Flow[None]:
        nonlocal batch, size, token
        if batch:
            try:  # the first call claims the target only while it holds nothing: a write meanwhile refuses it
                written = yield from e.write(kt, target, None, batch, "copy_thread", token=token, new_thread=not token,
                                             claim_as=claim_as)
            except ConflictError as exc:
                raise _not_empty(target, exc.actual) if not token else exc from None
            token = written.token
        batch, size = [], 0

    for member in index:
        ns_b, _, cid_b = member.partition(b"\x00")
        ns, cid = text(ns_b), text(cid_b)
        shape, rec = decode_record(e, ks.run_id, ns, cid, stored_records[member])
        triples: list[Any] = []
        for ch, ver in pairs(shape[1:]):
            field = ns_b + b"\x00" + ch + b"\x00" + ver
            blob = b""
            if field not in sent and field in stored_values:
                payload = e.framer.open(ks.run_id, f"value of channel {text(ch)!r}", stored_values[field], size=4)
                blob = e.framer.seal(kt.run_id, payload)
                sent.add(field)
            triples += [ch, ver, blob]
            size += len(blob)
        frame = e.framer.seal(kt.run_id, rec)
        batch += ["P", ns, cid, shape[0], frame, lg_run_of.get(member, ""), len(triples) // 3, *triples]
        size += len(frame)
        quads: list[Any] = []
        for field, blob in writes_of.get(member, []):
            w = e.framer.open(ks.run_id, f"write {text(field)!r}", blob, size=6)
            quads += [w[0], w[3], w[1], e.framer.seal(kt.run_id, w)]
            size += len(quads[-1])
        if quads:
            batch += ["W", ns, cid, len(quads) // 4, *quads]
        if size >= COPY_BATCH_BYTES:
            yield from flush()
    yield from flush()
    for rid in sorted(set(lg_run_of.values())):  # again, as a put does: a delete_for_runs may have run since
        yield from runs.index_run(e, kt, rid, target)
