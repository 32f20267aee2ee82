"""The asyncio store, on ``redis.asyncio``: the same flows and Lua files as the sync store.

Only the driver differs (:meth:`AsyncCheckpointStore.arun`); each method here is the awaitable
twin of the one in ``store.py`` (a test checks that the two surfaces match).
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator, Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar

from ._shell import DEFAULT_NAMESPACE, IN_MEMORY_LABEL, LeaseBase, StoreBase, ha_defaults, in_memory_client, \
    ttl_ms
from ._shell import socket_timeout as default_socket_timeout
from .core.ops import Flow
from .drivers.errors import reraise
from .drivers.asyncio import adrive
from .drivers.targets import async_target
from .models import Checkpoint, Event, GenerationInfo, PrunedRun, RunInfo, RunUsage
from .probe.report import ProbeReport
from .drivers.clients import client_from_url, close_sentinel_async
from .drivers.probe import probe_async
from .urls import redact_url

__all__ = ["AsyncCheckpointStore", "AsyncLease", "AsyncAcquire"]

T = TypeVar("T")


class AsyncLease(LeaseBase):
    """The asyncio twin of :class:`redis_ckpt.Lease`; ``async with`` releases on exit."""

    _store: AsyncCheckpointStore

    async def renew(self, ttl: float | timedelta | None = None) -> None:
        await self._store.run(self.renew_flow(ttl))

    async def release(self) -> bool:
        ok = await self._store.run(self.release_flow())
        self.released = True
        return ok

    async def commit(self, state: Any, metadata: Mapping[Any, Any] | None = None, *,
                     retention: float | timedelta | None = None) -> int:
        return await self._store.run(self.commit_flow(state, metadata, retention=retention))

    async def load(self, *, generation: int | None = None) -> Checkpoint | None:
        return await self._store.run(self.load_flow(generation))

    async def finish(self, *, keep_for: float | timedelta) -> datetime:
        return await self._store.run(self.finish_flow(keep_for))

    async def __aenter__(self) -> AsyncLease:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self.released:
            await self.release()


class AsyncAcquire:
    """What :meth:`AsyncCheckpointStore.acquire` returns: ``await`` it for the lease, or use it
    as ``async with store.acquire(...) as lease:`` to have the lease released on exit.

    The arguments are checked when ``acquire`` is called; nothing is sent (and no coroutine
    exists) until it is awaited or entered, so one that is dropped unused leaves no trace.
    """

    __slots__ = ("_store", "_run_id", "_owner", "_ms", "_retention", "_flow", "_lease")

    def __init__(self, store: AsyncCheckpointStore, run_id: str, owner: str | None, ttl: float | timedelta,
                 retention: float | timedelta | None = None) -> None:
        self._store = store
        self._run_id = run_id
        self._owner, self._ms, self._retention, flow = store._acquire(run_id, owner, ttl, retention)
        self._flow: Flow[Any] | None = flow
        self._lease: AsyncLease | None = None

    async def _acquire(self) -> AsyncLease:
        flow, self._flow = self._flow, None
        if flow is None:
            raise RuntimeError("this acquire() was already awaited or entered; call store.acquire() again")
        return AsyncLease(self._store, self._run_id, self._owner, await self._store.run(flow), self._ms,
                          self._retention)

    def __await__(self) -> Generator[Any, None, AsyncLease]:
        return self._acquire().__await__()

    async def __aenter__(self) -> AsyncLease:
        self._lease = await self._acquire()
        return self._lease

    async def __aexit__(self, *exc: object) -> None:
        lease, self._lease = self._lease, None
        if lease is not None and not lease.released:
            await lease.release()

    def __repr__(self) -> str:
        return f"<AsyncAcquire run={self._run_id!r} owner={self._owner!r}>"


class AsyncCheckpointStore(StoreBase):
    """The asyncio twin of :class:`redis_ckpt.CheckpointStore`.

    Create it with ``await AsyncCheckpointStore.create(client, ...)`` or ``await
    AsyncCheckpointStore.from_url(url, ...)``: both run the startup probe. Construction cannot
    await, so a store constructed directly (``AsyncCheckpointStore(client, namespace=...)``) runs
    it before its first operation: nothing is sent to a server the probe refuses.
    """

    _target_for = staticmethod(async_target)
    _sentinel: Any = None  # a Sentinel this store created (from_url) and closes

    def __init__(self, client: Any, *, namespace: str, **options: Any) -> None:
        super().__init__(client, namespace=namespace, **ha_defaults(client, options))
        #: the startup probe is still to run (and be passed) before anything else is sent
        self._unprobed = self.core.config.confirm
        self._probing = asyncio.Lock()  # concurrent first operations: one probe

    @classmethod
    async def create(cls, client: Any, *, namespace: str, **options: Any) -> AsyncCheckpointStore:
        """A store on ``client``: a ``redis.asyncio.Redis``, a ``redis.asyncio.cluster.RedisCluster``
        or a Sentinel-managed client (``redis.asyncio.sentinel.Sentinel.master_for(...)``);
        runs the startup probe. On Cluster or Sentinel the default ``retry`` is ``HA_RETRY``."""
        label = options.pop("_label", None)  # from_url: the URL, redacted, names the store from the start
        store = cls(client, namespace=namespace, **options)
        if label is not None:
            store.server = label
        await store._ready()
        return store

    @classmethod
    async def from_url(cls, url: str, *, namespace: str, socket_timeout: float | None = None,
                       **options: Any) -> AsyncCheckpointStore:
        """Same URL forms and ``socket_timeout`` as :meth:`redis_ckpt.CheckpointStore.from_url` (one
        server, ``redis+cluster://``, ``redis+sentinel://``, and their ``rediss+`` TLS forms)."""
        timeout = socket_timeout if socket_timeout is not None else default_socket_timeout(options)
        client, sentinel = client_from_url(url, socket_timeout=timeout, aio=True)
        try:
            store = await cls.create(client, namespace=namespace, _label=redact_url(url), **options)
        except BaseException:
            await client.aclose()
            if sentinel is not None:
                await close_sentinel_async(sentinel)
            raise
        store._sentinel = sentinel
        return store

    @classmethod
    async def from_sentinel(cls, sentinel: Any, service_name: str, *, namespace: str,
                            **options: Any) -> AsyncCheckpointStore:
        """A store on the primary a ``redis.asyncio.sentinel.Sentinel`` names for ``service_name``."""
        timeout = default_socket_timeout(options)
        client = sentinel.master_for(service_name, decode_responses=False, socket_timeout=timeout,
                                     socket_connect_timeout=5.0)
        try:
            return await cls.create(client, namespace=namespace, **options)
        except BaseException:
            await client.aclose()
            raise

    @classmethod
    async def in_memory(cls, *, namespace: str = DEFAULT_NAMESPACE, server: Any = None,
                        **options: Any) -> AsyncCheckpointStore:
        """In-memory on fakeredis, for your own unit tests. NOT durable: no probe, no WAITAOF, and no
        ``usage()`` (fakeredis has no ``MEMORY USAGE``: :class:`ServerError`). ``server``: a
        ``fakeredis.FakeServer`` shared with other in-memory stores, sync or asyncio (see
        :meth:`redis_ckpt.CheckpointStore.in_memory`); default: a server of its own.
        Needs ``pip install 'redis-ckpt[testing]'`` (else :class:`ExtraNotInstalledError`)."""
        client = in_memory_client("AsyncCheckpointStore.in_memory()", server, aio=True)
        store = cls(client, namespace=namespace, _confirm=False, **options)
        store.server = IN_MEMORY_LABEL
        return store

    async def run(self, flow: Flow[T]) -> T:
        """Drive ``flow`` (any flow of ``store.core``) on this store's client, by this store's
        deadline; what escapes it becomes a CheckpointError (StoreUnavailableError, ServerError).
        Also ``arun``: the name code holding a sync and an async store (the saver) calls."""
        if self._unprobed:
            await self._ready()
        try:
            return await adrive(flow, self._target, deadline_s=self.core.config.retry.deadline_s)
        except Exception as exc:
            reraise(exc, self.server)

    arun = run

    async def _ready(self) -> None:
        """Run the startup probe unless it passed already: NonDurableServerError (and nothing
        sent) while the server fails it, as the sync constructor refuses."""
        async with self._probing:
            if self._unprobed:
                self._accept(await self._probe())
                self._unprobed = False

    async def _probe(self) -> ProbeReport:
        try:  # one server, or every primary (and the replicas the policy counts on) on its own connection
            return await probe_async(self._client, **self._probe_args(), deadline_s=self.core.config.retry.deadline_s)
        except Exception as exc:
            reraise(exc, self.server)

    async def probe(self) -> ProbeReport:
        """Run the startup probe and return its report (does not raise). On a store that has
        not passed it yet (constructed directly), a report that passes is its startup probe:
        the first operation does not probe again; one that refuses leaves the probe to run
        again before the first operation (which then raises NonDurableServerError)."""
        report = await self._probe()
        if self._unprobed and report.ok:
            async with self._probing:
                if self._unprobed:
                    self._accept(report)
                    self._unprobed = False
        return report

    def acquire(self, run_id: str, *, owner: str | None = None, ttl: float | timedelta = 30.0,
                retention: float | timedelta | None = None) -> AsyncAcquire:
        """Take the run's lease and a new fencing token: ``lease = await store.acquire(...)``,
        or ``async with store.acquire(...) as lease:`` (released on exit)."""
        return AsyncAcquire(self, run_id, owner, ttl, retention)

    async def commit(self, run_id: str, state: Any, *, token: int, expected_generation: int,
                     metadata: Mapping[Any, Any] | None = None, owner: str | None = None,
                     retention: float | timedelta | None = None) -> int:
        return await self.run(self._commit(run_id, state, token, expected_generation, metadata, owner, retention))

    async def load(self, run_id: str, *, generation: int | None = None) -> Checkpoint | None:
        return await self.run(self.traced("load", run_id, self.core.load_flow(run_id, generation)))

    async def fork(self, run_id: str, new_run_id: str, *, generation: int | None = None,
                   by: str = "admin") -> int:
        return await self.run(self.core.fork_flow(run_id, new_run_id, generation=generation, by=by))

    async def generations(self, run_id: str) -> list[GenerationInfo]:
        return await self.run(self.core.generations_flow(run_id))

    async def usage(self, run_id: str) -> RunUsage:
        """The run's bytes on the server by kind (generations, staging, events, fence/lease/head)."""
        return await self.run(self.core.usage_flow(run_id))

    async def info(self, run_id: str) -> RunInfo:
        return await self.run(self.core.info_flow(run_id))

    async def events(self, run_id: str, *, count: int = 100, after: str | None = None) -> list[Event]:
        return await self.run(self.core.events_flow(run_id, count=count, after=after))

    async def runs(self, *, limit: int | None = None) -> list[str]:
        return await self.run(self.core.runs_flow(limit=limit))

    async def revoke(self, run_id: str, *, by: str = "admin") -> int:
        return await self.run(self.core.revoke_flow(run_id, by))

    async def delete(self, run_id: str, *, by: str = "admin") -> int:
        return await self.run(self.core.delete_flow(run_id, by))

    async def prune(self, *, idle: float | timedelta, dry_run: bool = False, by: str = "admin") -> list[PrunedRun]:
        """Remove the runs of this namespace nobody committed to or acquired for ``idle``
        (seconds or a timedelta): data, lease, events, staging; each fence is left as a
        tombstone. For runs written before a retention was set. A run with a live lease is
        left, and so is a run under its own retention (a store or run retention, or
        ``finish(keep_for=...)``): it expires by itself when its user asked. ``dry_run``: the runs it would remove, nothing removed. A damaged run is left
        and the others pruned; then :class:`DamagedRunsError` names it (``.pruned``: the rest)."""
        sweep = self.core.prune_sweep(idle_ms=ttl_ms(idle, "idle"), by=by, dry_run=dry_run)
        for run_id in await self.runs():  # each run by the deadline: a sweep of them all may take longer
            await self.run(sweep.run_flow(run_id))
        return sweep.result()

    async def export_frame(self, run_id: str, *, generation: int | None = None) -> bytes:
        """The stored frame of a generation (default: the newest that verifies), verified."""
        return await self.run(self.core.export_flow(run_id, generation))

    async def import_frame(self, frame: bytes, *, by: str = "admin") -> int:
        """Restore an exported frame under its own run and generation (verified first).

        :class:`ConflictError` if the run's head is at or past that generation; the run's
        fence never goes down (it is bumped, so current holders are fenced off).
        """
        return await self.run(self.core.import_flow(frame, by))

    async def close(self) -> None:
        await self._client.aclose()
        if self._sentinel is not None:
            await close_sentinel_async(self._sentinel)

    async def __aenter__(self) -> AsyncCheckpointStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
