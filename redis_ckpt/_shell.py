"""What the sync and the async store (and lease) share: the configuration, the client's
checks, and the flows an operation runs.

``store.py`` and ``aio.py`` are thin shells over this: each operation is one line that drives
a flow of ``store.core`` (:class:`~redis_ckpt.core.store_core.StoreCore`) through
``store.run`` / ``store.arun`` (the one driver of its I/O style, the one error seam).
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import socket
from collections.abc import Mapping
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from .core.config import MAX_TTL_MS, DriftWatch, StoreConfig
from .core.keys import validate_owner
from .core.ops import Flow
from .core.store_core import StoreCore
from .errors import DurabilityError, ExtraNotInstalledError, InvalidOptionError, OutOfRangeError
from .models import Checkpoint, Grant, ms_to_datetime
from .telemetry import telemetry_for
from .drivers.clients import HA_RETRY, client_label, connection_kwargs, is_cluster, is_sentinel
from .probe.report import ProbeReport
from .probe.settings import DRIFT_KEYS, drift_problems

log = logging.getLogger("redis_ckpt")
T = TypeVar("T")

__all__ = [
    "StoreBase", "LeaseBase", "ttl_ms", "default_owner", "import_fakeredis", "in_memory_client", "DEFAULT_NAMESPACE",
    "IN_MEMORY_LABEL",
]

#: the namespace every part of redis-ckpt uses unless told otherwise: in_memory(), check_server(),
#: the CLI (--namespace), the demo and the README's examples, so that `redis-ckpt runs` finds them
DEFAULT_NAMESPACE = "default"
#: what an in-memory store is called in messages and its repr
IN_MEMORY_LABEL = "in-memory (fakeredis, not durable)"


def default_owner() -> str:
    """``<host>:<pid>``: who this process is in a lease and the audit events."""
    return f"{socket.gethostname()}:{os.getpid()}"


def ttl_ms(ttl: float | timedelta, argument: str = "ttl", *, zero: bool = False) -> int:
    """A lease TTL (or another duration: ``argument`` names it) given in seconds (or a
    timedelta) as whole milliseconds, at least 1 (0 allowed with ``zero``).

    :class:`OutOfRangeError` (a ``ValueError``) for anything but a positive (``zero``: or 0),
    finite number of seconds up to ``MAX_TTL_MS`` / 1000 (2**50 ms, the bound below which the
    scripts keep numbers exact): nothing is sent, so the run stays untouched.
    """
    low = 0 if zero else 1
    if isinstance(ttl, timedelta):
        ms: object = ttl // timedelta(milliseconds=1) if ttl > timedelta(0) else 0  # exact, no float
        if ttl > timedelta(0) and ms == 0:
            ms = 1
        if ttl < timedelta(0):
            ms = -1
    elif isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        ms = ttl
    elif isinstance(ttl, float) and not math.isfinite(ttl):
        ms = ttl
    elif ttl < 0 or (ttl == 0 and not zero) or ttl * 1000 > MAX_TTL_MS:
        ms = ttl * 1000
    else:
        ms = 0 if ttl == 0 else max(1, round(ttl * 1000))
    if isinstance(ms, bool) or not isinstance(ms, int) or not low <= ms <= MAX_TTL_MS:
        positive = "non-negative" if zero else "positive"
        raise OutOfRangeError(
            f"{argument} must be a {positive}, finite number of seconds (or a timedelta) up to "
            f"{MAX_TTL_MS // 1000} s ({MAX_TTL_MS} ms), got {ttl!r}",
            argument=argument, value=ttl, minimum=0 if zero else 0.001, maximum=MAX_TTL_MS / 1000,
        )
    return ms


def retention_ms(retention: float | timedelta | None) -> int | None:
    """A per-run ``retention`` (seconds or a timedelta) in ms; None: the store's."""
    return None if retention is None else ttl_ms(retention, "retention")


def durations(options: dict[str, Any]) -> dict[str, Any]:
    """A store's ``retention`` / ``fence_margin`` (seconds or timedelta) as StoreConfig's ms."""
    retention = options.pop("retention", None)
    if retention is not None:
        options["retention_ms"] = ttl_ms(retention, "retention")
    margin = options.pop("fence_margin", None)
    if margin is not None:
        options["fence_margin_ms"] = ttl_ms(margin, "fence_margin", zero=True)
    return options


def import_fakeredis(feature: str) -> Any:
    """The fakeredis module, or :class:`ExtraNotInstalledError` naming the ``[testing]`` extra."""
    try:
        import fakeredis
    except ImportError as missing:
        raise ExtraNotInstalledError(feature, extra="testing", missing="fakeredis") from missing
    try:  # fakeredis without its [lua] extra imports, and answers every script "unknown command"
        importlib.import_module("lupa")
    except ImportError as missing:
        raise ExtraNotInstalledError(feature, extra="testing",
                                     missing="lupa (fakeredis's Lua scripting, its [lua] extra)") from missing
    return fakeredis


def in_memory_client(feature: str, server: Any, *, aio: bool) -> Any:
    """A fakeredis client for ``in_memory()``: on ``server`` (a ``fakeredis.FakeServer`` that
    other in-memory stores share), else on a server of its own."""
    fakeredis = import_fakeredis(feature)
    if server is not None and not isinstance(server, fakeredis.FakeServer):
        raise InvalidOptionError(f"server must be a fakeredis.FakeServer, not {type(server).__name__}",
                                 argument="server")
    cls = fakeredis.FakeAsyncRedis if aio else fakeredis.FakeRedis
    return cls() if server is None else cls(server=server)


def socket_timeout(options: Mapping[str, Any]) -> float:
    """The socket timeout for a client a store creates: longer than any WAITAOF/WAIT it sends.

    It is a ceiling per attempt only: the driver caps every attempt by the time left before
    the operation's deadline (RetryPolicy.deadline_s), so no operation outlives its deadline
    whatever this is (a client passed in by the caller, with no socket timeout, included).
    """
    durability = options.get("durability")
    return (durability.timeout_ms / 1000 if durability else 5.0) + 5.0


def ha_defaults(client: Any, options: dict[str, Any]) -> dict[str, Any]:
    """On Cluster or Sentinel the default retry rides out a failover (HA_RETRY)."""
    if is_cluster(client) or is_sentinel(client):
        options.setdefault("retry", HA_RETRY)
    return options


def check_client(client: Any) -> None:
    if connection_kwargs(client).get("decode_responses"):
        raise InvalidOptionError(
            "the client decodes responses to str; checkpoints are bytes: "
            "create it with decode_responses=False (from_url does this for you)", argument="client")
    if is_cluster(client) and (getattr(client, "read_from_replicas", False)
                               or getattr(client, "load_balancing_strategy", None) is not None):
        raise InvalidOptionError(
            "the RedisCluster reads from replicas, which lag: a load could miss an acknowledged "
            "commit; create it without read_from_replicas / load_balancing_strategy", argument="client")
    if is_sentinel(client) and not client.connection_pool.is_master:
        raise InvalidOptionError("the client talks to a Sentinel-managed replica (slave_for); use master_for",
                                 argument="client")


class StoreBase:
    """What CheckpointStore and AsyncCheckpointStore share: the client, ``core`` (the
    configuration and every flow) and the startup probe's report.

    ``options`` are :class:`~redis_ckpt.core.config.StoreConfig`'s (schema_version, keep,
    durability, compression, max_state_bytes, events_maxlen, retry, chunk_bytes).
    """

    def __init__(self, client: Any, *, namespace: str, declared_config: Mapping[str, str] | None = None,
                 owner: str | None = None, telemetry: Any = None, _confirm: bool = True, **options: Any) -> None:
        check_client(client)
        self._client = client
        self._target = self._target_for(client)  # how this store's driver reaches the client
        #: the configuration and every flow of this store (``core.config``: its options)
        self.core = StoreCore(StoreConfig(namespace=namespace, **durations(options), confirm=_confirm, watch=None))
        self.owner = default_owner() if owner is None else validate_owner(owner)  # "" is a bad owner
        self.declared_config = dict(declared_config) if declared_config else None
        self.server = client_label(client)
        self.probe_report: ProbeReport | None = None
        #: spans and metrics of acquire, commit and load (redis_ckpt.telemetry); None: off
        self.telemetry = telemetry_for(telemetry)

    # read-only views of the configuration
    namespace = property(lambda self: self.core.config.namespace)
    schema_version = property(lambda self: self.core.config.schema_version)
    keep = property(lambda self: self.core.config.keep)
    durability = property(lambda self: self.core.config.durability)
    client = property(lambda self: self._client)

    def __repr__(self) -> str:
        """``<CheckpointStore redis://:***@host:6379/0 namespace='default' durability=local-fsync keep=3>``:
        the server as messages name it (never a password)."""
        return (f"<{type(self).__name__} {self.server} namespace={self.namespace!r} "
                f"durability={self.durability.label} keep={self.keep}>")

    @staticmethod
    def _target_for(client: Any) -> Any:
        raise NotImplementedError  # the sync or asyncio shell's

    def register_migration(self, from_version: int, fn: Any = None) -> Any:
        """Register ``fn(state) -> state`` upgrading schema ``from_version`` to ``from_version + 1``.

        Loading a generation written with an older schema runs the chain up to this store's
        ``schema_version``; a gap in the chain, or a newer stored schema, raises
        :class:`SchemaVersionError`. Works as a decorator: ``@store.register_migration(1)``.
        """
        return self.core.register_migration(from_version, fn)

    def _probe_args(self) -> dict[str, Any]:
        """What the probe of this store's server is told (see :mod:`redis_ckpt.drivers.probe`)."""
        return {"label": self.server, "namespace": self.namespace, "durability": self.durability,
                "declared": self.declared_config}

    def _accept(self, report: ProbeReport) -> None:
        self.probe_report = report
        for w in report.warnings:
            log.warning("%s: %s", self.server, w)
        report.raise_if_refused()
        facts = report.facts
        if facts is not None and facts.config is not None and not facts.cluster_enabled:
            self.core.watch_config(DriftWatch(DRIFT_KEYS, partial(drift_problems, engine=report.engine)))

    def _acquire(self, run_id: str, owner: str | None, ttl: float | timedelta,
                 retention: float | timedelta | None = None) -> tuple[str, int, int | None, Flow[Grant]]:
        """(owner, ttl in ms, retention in ms or None, the flow) for an acquire."""
        owner, ms, kept_ms = self.owner if owner is None else owner, ttl_ms(ttl), retention_ms(retention)
        flow = self.core.acquire_flow(run_id, owner, ms, kept_ms)
        return owner, ms, kept_ms, self.traced("acquire", run_id, flow)

    def _commit(self, run_id: str, state: Any, token: int, expected_generation: int,
                metadata: Mapping[Any, Any] | None, owner: str | None,
                retention: float | timedelta | None) -> Flow[int]:
        return self.traced("commit", run_id, self.core.commit_flow(
            run_id, state, token=token, expected_generation=expected_generation,
            owner=self.owner if owner is None else owner,
            metadata=metadata, retention_ms=retention_ms(retention)))

    def traced(self, what: str, run_id: str, flow: Flow[T]) -> Flow[T]:
        """``flow`` as a span with its metrics when telemetry is on (else ``flow`` itself)."""
        if self.telemetry is None or not self.telemetry.listening():
            return flow
        return self.telemetry.observe(what, run_id, flow, namespace=self.namespace,  # type: ignore[no-any-return]
                                      durability=self.durability.label)


class LeaseBase:
    """State of one held lease and its flows; the sync/async shells drive them."""

    def __init__(self, store: StoreBase, run_id: str, owner: str, grant: Grant, ttl: int,
                 retention: int | None = None) -> None:
        self._store = store
        self.run_id = run_id
        self.owner = owner
        self.token = grant.token
        #: the head generation this lease expects its next commit to follow
        self.generation = grant.generation
        self.kind = grant.kind
        self.ttl_ms = ttl
        #: the run's retention (ms) this lease was acquired or last committed with: its commits
        #: keep it (None: the store's, else the run's own)
        self.retention_ms = retention
        self.released = False

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} run={self.run_id!r} owner={self.owner!r} token={self.token} "
                f"generation={self.generation}{' released' if self.released else ''}>")

    def renew_flow(self, ttl: float | timedelta | None = None) -> Flow[int]:
        ms = self.ttl_ms if ttl is None else ttl_ms(ttl)
        return self._store.core.renew_flow(self.run_id, self.owner, self.token, ms)

    def release_flow(self) -> Flow[bool]:
        return self._store.core.release_flow(self.run_id, self.owner, self.token)

    def commit_flow(self, state: Any, metadata: Mapping[Any, Any] | None = None, *,
                    retention: float | timedelta | None = None) -> Flow[int]:
        """Commit ``state`` after this lease's generation; the lease follows the head."""
        if retention is not None:
            self.retention_ms = retention_ms(retention)
        flow = self._store.core.commit_flow(self.run_id, state, token=self.token, expected_generation=self.generation,
                                            owner=self.owner, metadata=metadata, retention_ms=self.retention_ms)
        return self._store.traced("commit", self.run_id, self._follow(flow))

    def _follow(self, flow: Flow[int]) -> Flow[int]:
        try:
            generation = yield from flow
        except DurabilityError as unconfirmed:
            if unconfirmed.generation is not None:  # applied, only unconfirmed: the head moved
                self.generation = unconfirmed.generation
            raise
        self.generation = generation
        return generation

    def finish_flow(self, keep_for: float | timedelta) -> Flow[datetime]:
        """Release this lease and let the run expire ``keep_for`` from now (see Lease.finish)."""
        flow = self._store.core.finish_flow(self.run_id, token=self.token, owner=self.owner,
                                            keep_for_ms=ttl_ms(keep_for, "keep_for"))
        expires = yield from flow
        self.released = True
        return ms_to_datetime(expires)  # type: ignore[return-value]

    def load_flow(self, generation: int | None = None) -> Flow[Checkpoint | None]:
        return self._store.traced("load", self.run_id, self._store.core.load_flow(self.run_id, generation))
