"""The synchronous store, on ``redis.Redis``. A thin shell: every decision is in ``core``,
every operation one line through :meth:`CheckpointStore.run`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar

import redis

from ._shell import DEFAULT_NAMESPACE, IN_MEMORY_LABEL, LeaseBase, StoreBase, ha_defaults, in_memory_client, \
    ttl_ms
from ._shell import socket_timeout as default_socket_timeout
from .core.durability import Durability
from .core.keys import validate_namespace
from .core.ops import Flow
from .drivers.errors import reraise
from .drivers.sync import drive
from .drivers.targets import sync_target
from .models import Checkpoint, Event, GenerationInfo, PrunedRun, RunInfo, RunUsage
from .probe.report import ProbeReport
from .drivers.clients import client_from_url, client_label, close_sentinel_sync
from .drivers.probe import probe_sync
from .urls import redact_url

__all__ = ["CheckpointStore", "Lease", "check_server", "DEFAULT_NAMESPACE"]

T = TypeVar("T")


class Lease(LeaseBase):
    """A held lease on one run: its fencing token, and commits that use it.

    Use it as a context manager to release on exit. Commits are fenced by the token,
    not by the lease's liveness: after a takeover, this lease's commits are rejected with
    :class:`FencedError` even if its process never noticed.
    """

    _store: CheckpointStore

    def renew(self, ttl: float | timedelta | None = None) -> None:
        """Extend the lease (by its original ttl unless given); :class:`LeaseLostError` if it is gone."""
        self._store.run(self.renew_flow(ttl))

    def release(self) -> bool:
        """Let go of the lease. False when it was no longer held by this token."""
        ok = self._store.run(self.release_flow())
        self.released = True
        return ok

    def commit(self, state: Any, metadata: Mapping[Any, Any] | None = None, *,
               retention: float | timedelta | None = None) -> int:
        """Commit ``state`` as the next generation; returns its number once durable.
        ``retention``: keep the run that long after its last commit or acquire from now on
        (default: the store's, else the run's own)."""
        return self._store.run(self.commit_flow(state, metadata, retention=retention))

    def load(self, *, generation: int | None = None) -> Checkpoint | None:
        """The newest generation that verifies, or ``generation`` (see :meth:`CheckpointStore.load`)."""
        return self._store.run(self.load_flow(generation))

    def finish(self, *, keep_for: float | timedelta) -> datetime:
        """Mark the run done: release the lease and let the server remove the run (data,
        lease, events) ``keep_for`` (seconds or a timedelta) from now, unless someone acquires
        or commits to it before; returns when it expires (the server's clock). The fence
        outlives it (``fence_margin``). :class:`FencedError` (nothing changed) when a newer
        holder took the run."""
        return self._store.run(self.finish_flow(keep_for))

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.released:
            self.release()


class CheckpointStore(StoreBase):
    """Fenced, durable, checksummed checkpoints on a Redis or Valkey server.

    Creating a store runs the startup probe: a server that cannot keep a commit durable
    (AOF off, eviction on, a replica, no WAITAOF, ...) is refused with
    :class:`NonDurableServerError`, one line per problem with its remedy.
    """

    _target_for = staticmethod(sync_target)

    def __init__(self, client: redis.Redis | redis.RedisCluster, *, namespace: str, **options: Any) -> None:
        """A store on ``client``: a ``redis.Redis``, a ``redis.cluster.RedisCluster``, or a
        Sentinel-managed client (``Sentinel.master_for(...)``), created with
        ``decode_responses=False``. On Cluster or Sentinel the default ``retry`` is
        :data:`redis_ckpt.drivers.clients.HA_RETRY`, long enough to ride out a failover."""
        label = options.pop("_label", None)  # from_url: the URL, redacted, names the store from the start
        super().__init__(client, namespace=namespace, **ha_defaults(client, options))
        if label is not None:
            self.server = label
        self._sentinel: Any = None  # a Sentinel this store created (from_url) and closes
        if self.core.config.confirm:
            self._accept(self._probe())

    @classmethod
    def from_url(cls, url: str, *, namespace: str, socket_timeout: float | None = None,
                 **options: Any) -> CheckpointStore:
        """A store on a new client for ``url``.

        ``redis://``, ``rediss://``, ``unix://`` (one server);
        ``redis+cluster://host:port[,host:port...]`` / ``rediss+cluster://`` (Redis Cluster);
        ``redis+sentinel://host:port[,host:port...]/service_name[/db]`` / ``rediss+sentinel://``
        (Sentinel: the hosts are the Sentinels; the Sentinels' own credentials go in
        ``?sentinel_username=&sentinel_password=``). See :mod:`redis_ckpt.urls`.

        ``socket_timeout``: seconds to wait for any one answer (and for a connection);
        default: longer than any WAITAOF/WAIT the durability policy sends.
        """
        timeout = socket_timeout if socket_timeout is not None else default_socket_timeout(options)
        client, sentinel = client_from_url(url, socket_timeout=timeout)
        try:
            store = cls(client, namespace=namespace, _label=redact_url(url), **options)
        except BaseException:
            client.close()
            if sentinel is not None:
                close_sentinel_sync(sentinel)
            raise
        store._sentinel = sentinel
        return store

    @classmethod
    def from_sentinel(cls, sentinel: Any, service_name: str, *, namespace: str, **options: Any) -> CheckpointStore:
        """A store on the primary that ``sentinel`` (a ``redis.sentinel.Sentinel``) names for
        ``service_name``; it follows failovers. The Sentinel object stays the caller's."""
        timeout = default_socket_timeout(options)
        client = sentinel.master_for(service_name, decode_responses=False, socket_timeout=timeout,
                                     socket_connect_timeout=5.0)
        try:
            return cls(client, namespace=namespace, **options)
        except BaseException:
            client.close()
            raise

    @classmethod
    def in_memory(cls, *, namespace: str = DEFAULT_NAMESPACE, server: Any = None, **options: Any) -> CheckpointStore:
        """An in-memory store on fakeredis, for your own unit tests. NOT durable.

        It skips the startup probe and the WAITAOF confirmation (fakeredis has neither), and
        :meth:`usage` raises :class:`ServerError` (fakeredis has no ``MEMORY USAGE``):
        everything else (fencing, CAS, rotation, frames, types, migrations) behaves as on a
        real server. Each store has a server of its own, unless given ``server``, a
        ``fakeredis.FakeServer``: the stores given the same one share its data, as stores on
        one real server do (two workers; the sync and asyncio stores of one LangGraph saver).
        Needs ``pip install 'redis-ckpt[testing]'`` (else :class:`ExtraNotInstalledError`).
        """
        client = in_memory_client("CheckpointStore.in_memory()", server, aio=False)
        return cls(client, namespace=namespace, _confirm=False, _label=IN_MEMORY_LABEL, **options)

    def run(self, flow: Flow[T]) -> T:
        """Drive ``flow`` (any flow of ``store.core``) on this store's client, by this store's
        deadline; what escapes it becomes a CheckpointError (StoreUnavailableError, ServerError)."""
        try:
            return drive(flow, self._target, deadline_s=self.core.config.retry.deadline_s)
        except Exception as exc:
            reraise(exc, self.server)


    def _probe(self) -> ProbeReport:
        try:  # one server, or every primary (and the replicas the policy counts on) on its own connection
            return probe_sync(self._client, **self._probe_args(), deadline_s=self.core.config.retry.deadline_s)
        except Exception as exc:
            reraise(exc, self.server)

    def probe(self) -> ProbeReport:
        """Run the startup probe again and return its report (does not raise)."""
        return self._probe()

    def acquire(self, run_id: str, *, owner: str | None = None, ttl: float | timedelta = 30.0,
                retention: float | timedelta | None = None) -> Lease:
        """Take the run's lease and a new fencing token. :class:`LeaseHeldError` if another owner holds it.
        ``retention``: remove the run once nobody commits to it or acquires it that long
        (default: the store's ``retention``, else the run's own; none: never)."""
        owner, ms, kept_ms, flow = self._acquire(run_id, owner, ttl, retention)
        return Lease(self, run_id, owner, self.run(flow), ms, kept_ms)

    def commit(self, run_id: str, state: Any, *, token: int, expected_generation: int,
               metadata: Mapping[Any, Any] | None = None, owner: str | None = None,
               retention: float | timedelta | None = None) -> int:
        """Commit ``state`` as generation ``expected_generation + 1`` with fencing token ``token``."""
        return self.run(self._commit(run_id, state, token, expected_generation, metadata, owner, retention))

    def load(self, run_id: str, *, generation: int | None = None) -> Checkpoint | None:
        """The newest generation of ``run_id`` that verifies, or None if it was never committed.

        With ``generation``: that kept generation, verified and migrated, never another one:
        :class:`NotFoundError` (naming the kept ones) when the run does not keep it,
        :class:`FrameError` with the reason when it is damaged. ``Checkpoint.generation``
        says which generation was loaded.
        """
        return self.run(self.traced("load", run_id, self.core.load_flow(run_id, generation)))

    def fork(self, run_id: str, new_run_id: str, *, generation: int | None = None, by: str = "admin") -> int:
        """Start ``new_run_id`` from a kept generation of ``run_id`` (default: the newest that
        verifies); returns the new run's generation (1). Its metadata names the source
        (``forked_from``); both runs record the fork in their audit events. :class:`ConflictError`
        (nothing written) when ``new_run_id`` already has a head. Works across Cluster nodes."""
        return self.run(self.core.fork_flow(run_id, new_run_id, generation=generation, by=by))

    def generations(self, run_id: str) -> list[GenerationInfo]:
        """Every kept generation, newest first, each verified (no migration runs)."""
        return self.run(self.core.generations_flow(run_id))

    def usage(self, run_id: str) -> RunUsage:
        """The run's bytes on the server by kind (generations, staging, events, fence/lease/head)."""
        return self.run(self.core.usage_flow(run_id))

    def info(self, run_id: str) -> RunInfo:
        return self.run(self.core.info_flow(run_id))

    def events(self, run_id: str, *, count: int = 100, after: str | None = None) -> list[Event]:
        return self.run(self.core.events_flow(run_id, count=count, after=after))

    def runs(self, *, limit: int | None = None) -> list[str]:
        return self.run(self.core.runs_flow(limit=limit))

    def revoke(self, run_id: str, *, by: str = "admin") -> int:
        """Bump the fence so every current holder is fenced off; returns the new fence."""
        return self.run(self.core.revoke_flow(run_id, by))

    def delete(self, run_id: str, *, by: str = "admin") -> int:
        """Delete the run's generations and lease (the fence survives); returns how many generations went."""
        return self.run(self.core.delete_flow(run_id, by))

    def prune(self, *, idle: float | timedelta, dry_run: bool = False, by: str = "admin") -> list[PrunedRun]:
        """Remove the runs of this namespace nobody committed to or acquired for ``idle``
        (seconds or a timedelta): data, lease, events, staging; each fence is left as a
        tombstone. For runs written before a retention was set. A run with a live lease is
        left, and so is a run under its own retention (a store or run retention, or
        ``finish(keep_for=...)``): it expires by itself when its user asked. ``dry_run``: the runs it would remove, nothing removed. A damaged run is left
        and the others pruned; then :class:`DamagedRunsError` names it (``.pruned``: the rest)."""
        sweep = self.core.prune_sweep(idle_ms=ttl_ms(idle, "idle"), by=by, dry_run=dry_run)
        for run_id in self.runs():  # each run by the deadline: a sweep of them all may take longer
            self.run(sweep.run_flow(run_id))
        return sweep.result()

    def export_frame(self, run_id: str, *, generation: int | None = None) -> bytes:
        """The stored frame of a generation (default: the newest that verifies), verified."""
        return self.run(self.core.export_flow(run_id, generation))

    def import_frame(self, frame: bytes, *, by: str = "admin") -> int:
        """Restore an exported frame under its own run and generation (verified first).

        :class:`ConflictError` if the run's head is at or past that generation; the run's
        fence never goes down (it is bumped, so current holders are fenced off).
        """
        return self.run(self.core.import_flow(frame, by))

    def close(self) -> None:
        self._client.close()
        if self._sentinel is not None:
            close_sentinel_sync(self._sentinel)

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_server(
    target: str | redis.Redis | redis.RedisCluster,
    *,
    namespace: str = DEFAULT_NAMESPACE,
    durability: Durability | None = None,
    declared_config: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> ProbeReport:
    """Run the startup probe against a URL (any form :meth:`CheckpointStore.from_url` takes)
    or a client and return the report; never raises on refusal.

    ``timeout``: seconds; default: longer than the live write's confirmation wait. For a URL
    it bounds the wait for any one answer or a connection (the client's socket timeout); for
    a client passed in, which may have no socket timeout, it bounds the whole check. A server
    that does not answer (stopped, overloaded) ends the check with
    :class:`StoreUnavailableError`, never a hang.

    :class:`StoreUnavailableError` when the server cannot be reached.
    """
    namespace = validate_namespace(namespace)
    durability = durability or Durability()
    sentinel = None
    # a positive, finite number of seconds (OutOfRangeError before anything is sent)
    wait = ttl_ms(timeout, "timeout") / 1000 if timeout is not None else default_socket_timeout({"durability": durability})
    deadline_s: float | None = None
    if isinstance(target, str):
        client, sentinel = client_from_url(target, socket_timeout=wait)
        label = redact_url(target)
    else:  # the caller's client: its socket timeouts (if any) are its own, the check ends by `wait`
        client, label, deadline_s = target, client_label(target), wait
    try:
        return probe_sync(client, label=label, namespace=namespace, durability=durability,
                          declared=declared_config, deadline_s=deadline_s)
    except Exception as exc:
        reraise(exc, label)
    finally:
        if isinstance(target, str):
            client.close()
            if sentinel is not None:
                close_sentinel_sync(sentinel)
