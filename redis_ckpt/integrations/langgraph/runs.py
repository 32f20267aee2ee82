"""The runs' cross-thread index: which threads hold checkpoints of a LangGraph run.

Every thread is a store run of its own (its keys in its own slot), so ``delete_for_runs``
cannot find a run's checkpoints by reading threads: it reads the run's index, the set
``<ns>:lgrun:{<run id>}`` of thread ids (``model.cross_key``), and the pending set
``<ns>:lgrundel:{<run id>}`` of the threads an unfinished ``delete_for_runs`` of the run
left. The index must never miss a thread that holds a checkpoint of the run; a thread filed
that no longer holds one costs ``delete_for_runs`` only a few calls that remove nothing.

How it stays so, with puts, deletes, prunes and copies running in other processes:

- A put files its thread before its write (``file_run``), so no checkpoint of the run lands
  in a thread out of the index; this process remembers the pairs it filed (``FiledRuns``), so
  the run's next puts there are one round trip. A put whose write found no checkpoint of the
  run in the thread (``saver_write``'s new run ids; or a resend, which cannot tell) files the
  thread again after the write (``refile_run``): a removal, maybe in another process, may have
  taken it out between the filing and the write. That late filing's failure is logged, not
  raised: the put is stored.
- ``delete_for_runs`` (``delete_flow``) moves each thread from the index to the pending set
  before it removes the run's checkpoints from it, and out of that set after; it never unlinks
  the index. A put of the run after the move files the thread again, which stays; a
  ``delete_for_runs`` stopped half way leaves the rest pending, and the next one reads both sets.
- ``delete_thread`` and ``prune`` take the thread out of the indexes of the runs it no longer
  holds a checkpoint of, then read which of those it holds one of by now (a put that came
  between their script and the removal) and file it again there (``unindex``).
- ``copy_thread`` files its target in the index of every run it copies, before its writes and
  again after them (writes.copy_flow).
- Under a thread TTL the index gets ``index_ms`` (PEXPIRE NX, then GT: only ever later),
  refreshed every ``slack_ms`` while the run writes, so it outlives the threads the run kept
  alive; a saver without a TTL makes the thread permanent, and the index with it (PERSIST).
  Left as documented: a thread other runs keep alive for longer than twice the TTL after this
  run's last write is no longer found.

A metadata ``run_id`` of "" is no run: nothing is filed, and ``delete_for_runs`` refuses it."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from ...core.ops import Cmd, Flow, Pipe
from ...core.replies import raise_failures
from ...errors import CheckpointError
from .engine import Engine, text
from .model import ThreadKeys, check_name, cross_key

__all__ = ["FiledRuns", "file_run", "refile_run", "index_run", "unindex", "delete_flow"]

log = logging.getLogger("redis_ckpt")


class FiledRuns:
    """The (LangGraph run id, thread) pairs this process filed in the runs' cross-thread
    indexes, and when each is due to be filed again (monotonic seconds; never without a
    TTL). A delete or prune that takes a thread out of a run's index forgets the pair; one in
    another process is seen by the put of the run that comes after it (saver_write.lua's new
    run ids), which files the thread again: a delete_for_runs takes a thread out of the index
    before it removes the run's checkpoints from it, so that filing comes after its own."""

    LIMIT = 100_000  #: pairs remembered at most (beyond: all forgotten, filed again once each)

    def __init__(self) -> None:
        self._due: dict[str, dict[str, float]] = {}  # run id -> thread -> when to file again
        self._size = 0

    def due(self, lg_run: str, thread_id: str, now: float) -> bool:
        return self._due.get(lg_run, {}).get(thread_id, now) <= now

    def filed(self, lg_run: str, thread_id: str, again_at: float) -> None:
        if self._size >= self.LIMIT:
            self._due.clear()
            self._size = 0
        threads = self._due.setdefault(lg_run, {})
        self._size += thread_id not in threads
        threads[thread_id] = again_at

    def forget(self, lg_run: str, thread_id: str | None = None) -> None:
        """The pair (lg_run, thread_id); every pair of ``lg_run`` when thread_id is None."""
        threads = self._due.get(lg_run)
        if threads is None:
            return
        if thread_id is None:
            self._size -= len(threads)
            threads.clear()
        elif threads.pop(thread_id, None) is not None:
            self._size -= 1
        if not threads:
            self._due.pop(lg_run, None)


def file_run(e: Engine, k: ThreadKeys, filed: FiledRuns, lg_run: str, thread_id: str, now: float) -> Flow[None]:
    """``index_run``, remembered in ``filed`` (under a TTL: until slack_ms from ``now``)."""
    yield from index_run(e, k, lg_run, thread_id)
    filed.filed(lg_run, thread_id, now + e.ttl.slack_ms / 1000 if e.ttl.ms else math.inf)


def refile_run(e: Engine, k: ThreadKeys, filed: FiledRuns, lg_run: str, thread_id: str, now: float) -> Flow[None]:
    """``file_run`` after a put that is stored: a failure is logged, not raised (the put is
    done), and the run's next put in the thread files it first."""
    filed.forget(lg_run, thread_id)
    try:
        yield from file_run(e, k, filed, lg_run, thread_id, now)
    except CheckpointError as exc:
        log.warning("LangGraph thread %r could not be filed again in the index of run %r (delete_for_runs "
                    "of the run misses it until the run's next put in it): %s", thread_id, lg_run, exc)


def index_run(e: Engine, k: ThreadKeys, lg_run: str, thread_id: str) -> Flow[None]:
    """File the thread in the run's cross-thread index. Under a TTL the index gets
    ``index_ms`` (NX: a new key; GT: only ever later): refreshed every ``slack_ms`` while the
    run writes, it outlives the threads the run kept alive (delete_for_runs finds them). A
    saver without a TTL makes the thread permanent, and the index with it."""
    key = cross_key(e.backend.namespace, lg_run)
    yield from e.confirmed([Cmd("SADD", key, thread_id), *_expiry(e, key)], key, k.run_id, "put")


def _expiry(e: Engine, key: str) -> list[Cmd]:
    """The expiry of a run's index (or pending set) after a thread went in (see index_run)."""
    if e.ttl.ms:
        return [Cmd("PEXPIRE", key, e.ttl.index_ms, "NX"), Cmd("PEXPIRE", key, e.ttl.index_ms, "GT")]
    return [Cmd("PERSIST", key)]


def unindex(e: Engine, k: ThreadKeys, filed: FiledRuns, thread_id: str, lg_runs: Sequence[Any],
            what: str) -> Flow[None]:
    """Take the thread out of the runs' indexes (it kept no checkpoint of them), then file it
    again in those it holds a checkpoint of by now: a put of the run since (which filed the
    thread before it was taken out here; a put after this read files it itself, writes.put_flow)."""
    rids = [text(r) for r in lg_runs]
    for rid in rids:
        filed.forget(rid, thread_id)
        key = cross_key(e.backend.namespace, rid)
        yield from e.confirmed([Cmd("SREM", key, thread_id)], key, k.run_id, what)
    if not rids:
        return
    runs = k.all[9]

    def held() -> Flow[list[Any]]:
        replies = yield Pipe([Cmd("ZRANGEBYLEX", runs, f"[{rid}\x00", f"({rid}\x01", "LIMIT", 0, 1) for rid in rids],
                             route=k.route)
        raise_failures(replies)
        return replies  # type: ignore[no-any-return]

    found = yield from e.backend.retrying(held, run_id=k.run_id, what=what, writes=False)
    for rid, members in zip(rids, found):
        if members:
            yield from index_run(e, k, rid, thread_id)


def _run_id(value: Any) -> str:
    rid = check_name("run id", str(value))
    if not rid:
        raise ValueError("run id must not be empty (a put whose metadata run_id is \"\" files its checkpoint "
                         "under no run)")
    return rid


def delete_flow(e: Engine, filed: FiledRuns, lg_runs: Sequence[str]) -> Flow[None]:
    """Remove the checkpoints of LangGraph runs in every thread (found through the
    cross-thread index of each run, and the threads an unfinished delete_for_runs of the run
    left pending). Each thread moves from the index to the pending set before the run's
    checkpoints leave it, and out of that set after: a put of the run in the thread after
    that files it in the index again (writes.put_flow), which stays; a delete_for_runs that stops
    half way leaves the rest pending for the next one. Every run id is checked before the
    first one is deleted."""
    for rid in [_run_id(r) for r in lg_runs]:
        key, pending = cross_key(e.backend.namespace, rid), cross_key(e.backend.namespace, rid, pending=True)

        def members(key: str = key, pending: str = pending) -> Flow[Any]:
            return (yield Cmd("SUNION", key, pending))

        threads = yield from e.backend.retrying(members, run_id=None, what="delete_for_runs", writes=False)
        for thread_id in sorted(map(text, threads or [])):
            k = e.keys(thread_id)
            yield from e.confirmed([Cmd("SMOVE", key, pending, thread_id), *_expiry(e, pending)], key, k.run_id,
                                   "delete_for_runs")
            _removed, dropped = yield from e.admin(k, ["runs", rid], "delete_for_runs")
            yield from unindex(e, k, filed, thread_id, [d for d in dropped if text(d) != rid], "delete_for_runs")
            yield from e.confirmed([Cmd("SREM", pending, thread_id)], key, k.run_id, "delete_for_runs")
        filed.forget(rid)
