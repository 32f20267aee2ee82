"""A LangGraph checkpointer on redis-ckpt: threads hand over between workers at once,
every write is one fenced, durable round trip, every value is checksummed.

    from redis_ckpt import CheckpointStore
    from redis_ckpt.langgraph import RedisCkptSaver

    store = CheckpointStore.from_url("redis://localhost:6379/0", namespace="default")
    graph = builder.compile(checkpointer=RedisCkptSaver(store))
    graph.invoke(inputs, {"configurable": {"thread_id": "conversation-7"}})

``pip install 'redis-ckpt[langgraph]'``. Give it a :class:`~redis_ckpt.CheckpointStore`
(sync graphs), an :class:`~redis_ckpt.aio.AsyncCheckpointStore` (``ainvoke``/``astream``), or
both (``RedisCkptSaver(store, async_store=astore)``).

Many workers, one thread
------------------------
Fencing is per LangGraph *invocation* (one ``invoke``/``stream`` call, subgraphs included),
and nothing is held between writes, so nothing needs releasing:

* **Handover is immediate.** An invocation's first write claims the thread and is given a
  new fencing token, provided the thread is still at the version the invocation read when it
  started. A worker continuing a thread whose previous invocation ended (finished,
  interrupted, raised, or its process died) starts at once, on any worker.
* **The newest invocation wins; nothing forks.** Two invocations on one thread: whichever
  writes first with a current view claims it. The other one fails at its first write with
  :class:`~redis_ckpt.ConflictError` when its view is stale (nothing of it is stored), or,
  if it had claimed the thread before and another invocation has continued it since, with
  :class:`~redis_ckpt.FencedError` at its next write; from then on every write of that
  invocation is refused (fencing per invocation, not per write), so a worker paused by a GC
  or SIGSTOP never writes after a takeover. A claim and its version check are one Lua
  script: a newcomer that read stale state fails, it never branches the history.
* **A completed invocation is never reported as failed**: a write is refused only before it
  is stored, and an invocation's writes end when it returns.

Calls outside an invocation (``graph.get_state``/``update_state``, direct calls of the saver)
are standalone: a standalone write claims the thread unconditionally (the caller chose the
parent explicitly), so it fences a running invocation like any newer one.

Every write is one round trip
-----------------------------
``put`` and ``put_writes`` are one Lua script each, pipelined with the ``WAITAOF`` that
confirms it (the store's :class:`~redis_ckpt.Durability` policy) on the same connection;
``get_tuple`` is one script, a page of ``list`` one, ``get_delta_channel_history`` one (the
server walks the parent chain). A put sends only the channels in ``new_versions``; the
others refer to values stored earlier. (The first checkpoint of a LangGraph ``run_id`` in a
thread also files the thread in that run's cross-thread index: one more round trip before
the write, once; under a TTL, again every 1/16 of it; and one after the write, whenever the
write found no checkpoint of the run in the thread (its first, or the first after a delete,
prune or ``delete_for_runs``, in any process, which may have taken the thread out of the index
since it was filed: ``delete_for_runs`` takes a thread out before it removes the run's
checkpoints from it, so a filing after the write stays). ``copy_thread`` files the copy in the
index of every run it holds checkpoints of, before and after; it copies into a new (or
deleted) thread only: onto one that holds checkpoints or writes it raises ``ConflictError``
and copies nothing. A large thread is copied in several calls: a copy interrupted between
them (the server gone) leaves part of the source in the target, and the same ``copy_thread``
sent again completes it while neither thread was written since; a target an unfinished copy
of another source, or of this one before it changed, left is refused (``ConflictError``
naming the unfinished copy): delete it and copy again.)

Retention
---------
``RedisCkptSaver(store, thread_ttl={"default_ttl": 60 * 24, "refresh_on_read": True})``: a
thread's keys expire ``default_ttl`` minutes after its last write (or read), and at most
1/16 of that later. All of the thread's keys share one expiry, set in the write's own
script, so data and indexes expire together and never in the middle of a write. The expiry
moves only once it has fallen 1/16 of the TTL behind: most writes then set none but on the
keys they create, and most reads with ``refresh_on_read`` write nothing (a read that writes
waits for an fsync, as a write does). The fence expires with them; tokens still never
repeat: a claim hands out ``max(fence + 1, server time in ms * 100)``, above every token
issued before the expiry. The cross-thread index of a LangGraph run (where ``delete_for_runs``
looks) is filed again every 1/16 of the TTL while the run writes, each time to expire twice
the TTL (and its 1/16) later: it outlives every thread the run's writes kept alive. A thread
that other runs' writes, or reads, keep alive longer than that after a run's last write is no
longer found by ``delete_for_runs`` of that run. A saver without a TTL makes a thread it
writes permanent, and the index of the run it writes for too.

Data model
----------
A thread is store run ``lg.<thread_id, percent-encoded>`` (``lg#<sha256>`` when too long);
its keys (``<ns>:{<run>}:fence``, ``:events``, ``:lg:meta``, ``:lg:ix``, ``:lg:cp``, ``:lg:v``,
``:lg:wi``, ``:lg:w``, ``:lg:ns``, ``:lg:runs``) are described in ``lua/saver_write.lua``.
Values are stored once per (namespace, channel, version); every value, record and write is a
checksummed frame bound to the thread, so damage raises :class:`~redis_ckpt.FrameError`.
The cross-thread index of a LangGraph run is ``<ns>:lgrun:{<run id>}`` (and
``<ns>:lgrundel:{<run id>}`` while a ``delete_for_runs`` of it runs): every key is under
``<ns>:*``. An ACL user for the saver needs the store's commands and sorted-set, set and a
few hash commands more: the exact line is in docs/RELIABILITY.md (Security).

Capabilities (``langgraph-checkpoint-conformance``): all base ones and the extended
``delete_for_runs``, ``copy_thread`` and ``prune`` (``keep_latest`` keeps the delta chain of a
``DeltaChannel``).
"""

from .model import thread_run_id
from .saver import RedisCkptSaver

__all__ = ["RedisCkptSaver", "thread_run_id"]
