"""RedisCkptSaver: the LangGraph ``BaseCheckpointSaver``. Every method builds one flow (in
reads.py / writes.py / runs.py) and runs it on the store; the sync and async methods differ only in
how they run it."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.types import ERROR, INTERRUPT

from ...core.keys import validate_owner
from ...core.ops import Flow
from ...errors import InvalidOptionError
from . import reads, runs, writes
from .backend import Backend
from .engine import Engine
from .invocations import Invocation, Invocations
from .model import ThreadTTL, thread_run_id
from .outbox import Outbox

__all__ = ["RedisCkptSaver"]

T = TypeVar("T")


def _default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _thread(config: RunnableConfig) -> str:
    try:
        return str(config["configurable"]["thread_id"])
    except KeyError:
        raise ValueError("the config has no configurable.thread_id") from None


def _ids(name: str, ids: Sequence[Any]) -> list[str]:
    """A sequence of ids as str; a single str is refused (its characters are no ids)."""
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of ids, not a {type(ids).__name__}")
    return [str(i) for i in ids]


def _limit(limit: Any) -> int | None:
    """list's ``limit``: None or an int (a float or a str is refused before anything is read)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
        raise TypeError(f"limit must be an int or None, not a {type(limit).__name__}")
    return limit


#: channels of writes after which LangGraph ends the superstep without a checkpoint
_FINAL_CHANNELS = frozenset((ERROR, INTERRUPT))


def _ends_superstep(writes: Sequence[tuple[str, Any]]) -> bool:
    """Whether no put follows ``writes`` (an interrupt, an error): they need not wait for one."""
    return any(ch in _FINAL_CHANNELS for ch, _ in writes)


class RedisCkptSaver(BaseCheckpointSaver[str]):
    """A LangGraph checkpointer on a redis-ckpt store (see the package docstring).

    :param store: a :class:`~redis_ckpt.CheckpointStore` for the sync methods.
    :param async_store: an :class:`~redis_ckpt.aio.AsyncCheckpointStore` for the async methods
        (same namespace as ``store`` when both are given). With only a sync store the async
        methods run in a worker thread; with only an async one the sync methods refuse.
    :param owner: this saver's name in the threads' audit events (default ``host:pid:random``).
    :param thread_ttl: ``{"default_ttl": minutes, "refresh_on_read": bool}``: a thread's data
        expires that long after its last write (or read, with ``refresh_on_read``), and at
        most 1/16 of that later; None (default): threads never expire.
    :param serde: LangGraph serializer (default ``JsonPlusSerializer()``, no pickle).

    Errors a write may raise (all :class:`~redis_ckpt.CheckpointError`):
    :class:`~redis_ckpt.FencedError` (another invocation continued the thread since this one
    claimed it: nothing of this write, or any later one of this invocation, is stored),
    :class:`~redis_ckpt.ConflictError` (the thread changed since this invocation read it:
    nothing stored), :class:`~redis_ckpt.DurabilityError`, :class:`~redis_ckpt.StoreUnavailableError`.
    """

    def __init__(
        self,
        store: Any = None,
        *,
        async_store: Any = None,
        owner: str | None = None,
        thread_ttl: Mapping[str, Any] | None = None,
        serde: SerializerProtocol | None = None,
    ) -> None:
        super().__init__(serde=serde)
        if store is None and async_store is None:
            raise InvalidOptionError("RedisCkptSaver needs a CheckpointStore and/or an AsyncCheckpointStore",
                                     argument="store")
        if store is not None and async_store is not None and store.namespace != async_store.namespace:
            raise InvalidOptionError("store and async_store must use the same namespace", argument="async_store")
        self.store = store
        self.async_store = async_store
        self.owner = _default_owner() if owner is None else validate_owner(owner)  # "" is a bad owner
        self.thread_ttl = ThreadTTL.parse(thread_ttl)
        self._engine = Engine(Backend(store if store is not None else async_store), self.serde, self.owner,
                              self.thread_ttl)
        self._invocations = Invocations()
        self._outbox = Outbox()
        self._filed = runs.FiledRuns()  # (LangGraph run id, thread) filed in the runs' cross-thread indexes

    # -- running flows -------------------------------------------------------------------

    def _run(self, flow: Flow[T]) -> T:
        if self.store is None:
            flow.close()
            raise RuntimeError("this RedisCkptSaver has only an AsyncCheckpointStore: use the async graph "
                               "API (ainvoke/astream) or pass a CheckpointStore too")
        return self.store.run(flow)  # type: ignore[no-any-return]

    async def _arun(self, flow: Flow[T]) -> T:
        if self.async_store is None:
            return await asyncio.to_thread(self._run, flow)
        return await self.async_store.arun(flow)  # type: ignore[no-any-return]

    # -- the flows -----------------------------------------------------------------------

    def _get(self, config: RunnableConfig) -> Flow[CheckpointTuple | None]:
        thread_id = _thread(config)
        conf = config["configurable"]
        return reads.get_flow(self._engine, thread_id, conf.get("checkpoint_ns") or "", conf.get("checkpoint_id"),
                              self._invocations.of(config, thread_id))

    def _put(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
             new_versions: ChannelVersions) -> Flow[RunnableConfig]:
        thread_id = _thread(config)
        inv = self._invocations.of(config, thread_id)
        parts = writes.put_item(self._engine, self._engine.keys(thread_id).run_id, config, checkpoint, metadata,
                                dict(new_versions))
        company = self._outbox.take(inv)  # the invocation's writes waiting for this put go with it
        try:
            out = yield from writes.put_flow(self._engine, inv, self._filed, config, parts,
                                             company.items if company else [])
        except BaseException as exc:
            self._outbox.settle(company, exc)
            raise
        self._outbox.settle(company, None)
        return out

    def _put_writes(self, config: RunnableConfig, w: Sequence[tuple[str, Any]], task_id: str,
                    task_path: str) -> tuple[Invocation | None, Any]:
        """(the invocation, its "W" item, a function of items -> the flow that sends them)."""
        thread_id = _thread(config)
        inv = self._invocations.of(config, thread_id)
        item = writes.writes_item(self._engine, self._engine.keys(thread_id).run_id, config, w, task_id, task_path)
        return inv, item, lambda items: writes.writes_flow(self._engine, inv, thread_id, items)

    def _cursors(self, config: RunnableConfig | None, before: RunnableConfig | None,
                 filter: dict[str, Any] | None, limit: int | None) -> Flow[list[reads.ListCursor]]:
        limit = _limit(limit)
        threads = [_thread(config)] if config else (yield from reads.threads_flow(self._engine))
        return [reads.ListCursor.of(t, config, before, filter, limit) for t in threads]

    def _prune(self, thread_ids: Sequence[str], strategy: str) -> Flow[None]:
        """Every argument is checked before the first thread is pruned."""
        threads = _ids("thread_ids", thread_ids)
        writes.check_strategy(strategy)
        for thread_id in threads:
            thread_run_id(thread_id)  # refuses a bad thread id
        for thread_id in threads:
            yield from writes.prune_flow(self._engine, self._filed, thread_id, strategy)

    # -- BaseCheckpointSaver ---------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._run(self._get(config))

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self._arun(self._get(config))

    def list(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
             before: RunnableConfig | None = None, limit: int | None = None) -> Iterator[CheckpointTuple]:
        left = limit
        for cur in self._run(self._cursors(config, before, filter, limit)):
            cur.left = left
            while not cur.done and (left is None or left > 0):
                yield from self._run(reads.page_flow(self._engine, cur))
            left = cur.left

    async def alist(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
                    before: RunnableConfig | None = None, limit: int | None = None) -> AsyncIterator[CheckpointTuple]:
        left = limit
        for cur in await self._arun(self._cursors(config, before, filter, limit)):
            cur.left = left
            while not cur.done and (left is None or left > 0):
                for tup in await self._arun(reads.page_flow(self._engine, cur)):
                    yield tup
            left = cur.left

    def put(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
            new_versions: ChannelVersions) -> RunnableConfig:
        return self._run(self._put(config, checkpoint, metadata, new_versions))

    async def aput(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
                   new_versions: ChannelVersions) -> RunnableConfig:
        return await self._arun(self._put(config, checkpoint, metadata, new_versions))

    def put_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str,
                   task_path: str = "") -> None:
        inv, item, flow = self._put_writes(config, writes, task_id, task_path)
        if not writes:
            return
        if inv is None:
            self._run(flow(item))
        else:
            self._outbox.put_writes(inv, item, lambda items: self._run(flow(items)), final=_ends_superstep(writes))

    async def aput_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str,
                          task_path: str = "") -> None:
        if self.async_store is None:
            return await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)
        inv, item, flow = self._put_writes(config, writes, task_id, task_path)
        if not writes:
            return
        if inv is None:
            await self._arun(flow(item))
        else:
            await self._outbox.aput_writes(inv, item, lambda items: self._arun(flow(items)),
                                           final=_ends_superstep(writes))

    def delete_thread(self, thread_id: str) -> None:
        self._run(writes.delete_flow(self._engine, self._filed, str(thread_id)))

    async def adelete_thread(self, thread_id: str) -> None:
        await self._arun(writes.delete_flow(self._engine, self._filed, str(thread_id)))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Remove the checkpoints (and their writes) of LangGraph runs, in every thread."""
        self._run(runs.delete_flow(self._engine, self._filed, _ids("run_ids", run_ids)))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await self._arun(runs.delete_flow(self._engine, self._filed, _ids("run_ids", run_ids)))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._run(writes.copy_flow(self._engine, str(source_thread_id), str(target_thread_id)))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._arun(writes.copy_flow(self._engine, str(source_thread_id), str(target_thread_id)))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """``keep_latest``: the newest checkpoint of each namespace, with the delta chain its
        DeltaChannels are rebuilt from; ``delete``: every checkpoint. A put meanwhile is kept
        with its chain; :class:`~redis_ckpt.ConflictError` (that thread not pruned) when puts
        keep coming (writes.PRUNE_READS times)."""
        self._run(self._prune(thread_ids, strategy))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await self._arun(self._prune(thread_ids, strategy))

    def get_delta_channel_history(self, *, config: RunnableConfig,
                                  channels: Sequence[str]) -> Mapping[str, DeltaChannelHistory]:
        """The delta-channel history walk in one round trip (the server walks the parents)."""
        channels = _ids("channels", channels)
        if not channels:
            return {}
        return self._run(reads.history_flow(self._engine, config, channels))

    async def aget_delta_channel_history(self, *, config: RunnableConfig,
                                         channels: Sequence[str]) -> Mapping[str, DeltaChannelHistory]:
        channels = _ids("channels", channels)
        if not channels:
            return {}
        return await self._arun(reads.history_flow(self._engine, config, channels))

    def with_allowlist(self, extra_allowlist: Any) -> RedisCkptSaver:
        """A clone with a stricter msgpack allowlist (LangGraph calls this when compiling a
        graph); it shares this saver's invocations."""
        clone = super().with_allowlist(extra_allowlist)
        if clone is not self:
            assert isinstance(clone, RedisCkptSaver)
            clone._engine = Engine(self._engine.backend, clone.serde, self.owner, self.thread_ttl)
        return clone  # type: ignore[return-value]

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

    # -- nothing to release: kept for code written against earlier versions -----------------

    def close(self) -> None:
        """Nothing to release (a thread is never held between writes)."""

    async def aclose(self) -> None:
        """Nothing to release (a thread is never held between writes)."""

    def __enter__(self) -> RedisCkptSaver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> RedisCkptSaver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
