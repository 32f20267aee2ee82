"""One server, Redis Cluster or Sentinel: what differs per topology, kept out of the shells.

* building a client from a URL (:func:`sync_client_from_url`, :func:`async_client_from_url`);
* the label a client is named by in messages (:func:`topology_label`, never a password);
* the startup probe of a cluster or a Sentinel-managed primary (:func:`probe_sync`,
  :func:`probe_async`), written once as a plan (:func:`topology_probe_plan`) that yields one
  per-node ``probe_flow`` at a time; the drivers run each flow on that node's own connection.

URLs (a password in any of them is shown as ``***``)::

    redis://[[user]:password@]host[:port][/db][?option=value...]     one server
    rediss://...                                                     one server, TLS
    unix://[[user]:password@]/path/to/socket[?db=N]                  one server, Unix socket
    redis+cluster://[[user]:password@]host[:port][,host[:port]...][?option=value...]
    rediss+cluster://...                                             Redis Cluster (TLS)
    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service_name[/db][?option=value...]
    rediss+sentinel://...                                            Sentinel (TLS)

Cluster: any reachable nodes seed the slot map (default port 6379); the database is always 0.
Sentinel: the hosts are the Sentinels (default port 26379); ``user``/``password`` and the
options are the data nodes'; the Sentinels' own credentials are the options
``sentinel_username`` / ``sentinel_password``. ``rediss+sentinel`` uses TLS to both.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import redis
from redis.cluster import RedisCluster
from redis.connection import parse_url
from redis.sentinel import SentinelConnectionPool

from .core.retry import RetryPolicy
from .core.durability import Durability
from .core.ops import Flow, ScriptSource
from .drivers.errors import UNREACHABLE as RETRYABLE
from .drivers.errors import unavailable_message
from .drivers.asyncio import adrive
from .drivers.sync import drive
from .drivers.targets import async_target, sync_target
from .probe.rules import Finding, ProbeReport, _err, probe_flow, redact_url

__all__ = [
    "HA_RETRY",
    "CLUSTER_SCHEMES",
    "SENTINEL_SCHEMES",
    "ClusterURL",
    "SentinelURL",
    "parse_cluster_url",
    "parse_sentinel_url",
    "url_topology",
    "validate_url",
    "redact",
    "unavailable_message",
    "sync_client_from_url",
    "async_client_from_url",
    "is_cluster",
    "is_sentinel",
    "topology_label",
    "connection_kwargs",
    "probe_sync",
    "probe_async",
    "topology_probe_plan",
]

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_DEFAULT_PORT = 6379
SENTINEL_DEFAULT_PORT = 26379
CONNECT_TIMEOUT_S = 5.0

#: The retry policy a store on Cluster or Sentinel gets unless given one: it keeps resending
#: (every 2 s at most) for up to 60 s, long enough to ride out a failover with the servers'
#: default timeouts (cluster-node-timeout 15 s; Sentinel down-after-milliseconds 30 s, then
#: the election). Pass ``retry=`` to match your own timeouts.
HA_RETRY = RetryPolicy(attempts=40, deadline_s=60.0, initial_backoff_s=0.1, max_backoff_s=2.0)

#: checks of a replica's own probe that still matter once it is promoted
REPLICA_CHECKS = frozenset({
    "loading", "aof-write-status", "waitaof", "appendonly", "appendfsync", "no-appendfsync-on-rewrite",
    "maxmemory-policy", "aof-load-truncated", "evicted-keys", "config",
})


# --------------------------------------------------------------------------- URLs

#: query options of the URL forms above that carry a secret, beyond those redact_url knows
def redact(url: str) -> str:
    """:func:`redact_url` (it masks ``sentinel_password`` too): any URL form above."""
    return redact_url(url)


def url_topology(url: str) -> str:
    """``"cluster"``, ``"sentinel"`` or ``"single"`` for a URL (by scheme only)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in CLUSTER_SCHEMES:
        return "cluster"
    if scheme in SENTINEL_SCHEMES:
        return "sentinel"
    return "single"


def _split_hosts(netloc: str, default_port: int, url_kind: str) -> tuple[str, list[tuple[str, int]]]:
    userinfo, at, hostlist = netloc.rpartition("@")
    hosts: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        item = item.strip()
        if not item:
            raise ValueError(f"a {url_kind} URL needs host[:port] entries separated by commas")
        if item.startswith("["):  # [IPv6]:port
            host, _, rest = item[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else ""
        else:
            host, _, port = item.partition(":")
        if not host:
            raise ValueError(f"a {url_kind} URL has an empty host in {item!r}")
        try:
            hosts.append((unquote(host), int(port) if port else default_port))
        except ValueError:
            raise ValueError(f"a {url_kind} URL has a bad port in {item!r}") from None
    return (userinfo if at else ""), hosts


def _node_kwargs(base_scheme: str, userinfo: str, host: tuple[str, int], path: str, query: str) -> dict[str, Any]:
    """redis-py's own parse of ``<base_scheme>://userinfo@host/path?query``, minus host/port."""
    h = f"[{host[0]}]" if ":" in host[0] else host[0]
    auth = f"{userinfo}@" if userinfo else ""
    kw = parse_url(f"{base_scheme}://{auth}{h}:{host[1]}{path}{'?' + query if query else ''}")
    kw.pop("host", None)
    kw.pop("port", None)
    cls = kw.pop("connection_class", None)
    if cls is not None and "SSL" in cls.__name__:
        kw["ssl"] = True
    return kw


@dataclass(frozen=True)
class ClusterURL:
    nodes: list[tuple[str, int]]
    kwargs: dict[str, Any]  # for RedisCluster(...): username, password, ssl, options


@dataclass(frozen=True)
class SentinelURL:
    sentinels: list[tuple[str, int]]
    service_name: str
    kwargs: dict[str, Any]  # for master_for(...): db, username, password, ssl, options
    sentinel_kwargs: dict[str, Any]  # for the Sentinel connections


def parse_cluster_url(url: str) -> ClusterURL:
    """``redis+cluster://[[user]:password@]host[:port][,host[:port]...][?options]``."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in CLUSTER_SCHEMES:
        raise ValueError(f"not a cluster URL (expected {' or '.join(s + '://' for s in CLUSTER_SCHEMES)})")
    userinfo, hosts = _split_hosts(parts.netloc, CLUSTER_DEFAULT_PORT, "cluster")
    if parts.path not in ("", "/", "/0"):
        raise ValueError("a Redis Cluster has only database 0: drop the path from the cluster URL")
    kw = _node_kwargs(scheme.split("+", 1)[0], userinfo, hosts[0], "", parts.query)
    if kw.pop("db", 0) not in (0, "0"):
        raise ValueError("a Redis Cluster has only database 0")
    return ClusterURL(hosts, kw)


def parse_sentinel_url(url: str) -> SentinelURL:
    """``redis+sentinel://[[user]:password@]host[:port][,...]/service_name[/db][?options]``."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SENTINEL_SCHEMES:
        raise ValueError(f"not a Sentinel URL (expected {' or '.join(s + '://' for s in SENTINEL_SCHEMES)})")
    userinfo, hosts = _split_hosts(parts.netloc, SENTINEL_DEFAULT_PORT, "Sentinel")
    segments = [s for s in parts.path.split("/") if s]
    if not segments or len(segments) > 2:
        raise ValueError("a Sentinel URL names the service: redis+sentinel://host:port[,host:port]/service_name[/db]")
    service = unquote(segments[0])
    db = segments[1] if len(segments) == 2 else "0"
    if not db.isdigit():
        raise ValueError(f"the database in a Sentinel URL must be a number, got {db!r}")
    sentinel_kwargs: dict[str, Any] = {}
    rest = []
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        if k in ("sentinel_username", "sentinel_password"):
            sentinel_kwargs[k.split("_", 1)[1]] = v
        else:
            rest.append((k, v))
    base = scheme.split("+", 1)[0]
    kw = _node_kwargs(base, userinfo, hosts[0], f"/{db}", urlencode(rest))
    if kw.get("ssl"):
        sentinel_kwargs["ssl"] = True
    return SentinelURL(hosts, service, kw, sentinel_kwargs)


def _check_single_url(url: str) -> None:
    """redis-py's own parse, plus what it lets through: ``redis://host/foo`` (and ``/1/2``)
    silently meant database 0 (or 12); a database is a number or nothing."""
    parse_url(url)
    parts = urlsplit(url)
    if parts.scheme.lower() in ("redis", "rediss") and parts.path not in ("", "/"):
        if not re.fullmatch(r"/[0-9]+", parts.path):
            raise ValueError(f"the database in the URL must be a number (redis://host:port/0), "
                             f"got {unquote(parts.path[1:])!r}")


def validate_url(url: str) -> None:
    """Raise ``ValueError`` for a URL none of the forms above accepts (nothing is connected)."""
    kind = url_topology(url)
    if kind == "cluster":
        parse_cluster_url(url)
    elif kind == "sentinel":
        parse_sentinel_url(url)
    else:
        _check_single_url(url)


def _common(socket_timeout: float | None) -> dict[str, Any]:
    # a connect never waits longer than an answer would (a CLI's short --timeout bounds both)
    connect = CONNECT_TIMEOUT_S if socket_timeout is None else min(CONNECT_TIMEOUT_S, socket_timeout)
    return {"decode_responses": False, "socket_timeout": socket_timeout, "socket_connect_timeout": connect}


def sync_client_from_url(url: str, *, socket_timeout: float | None) -> tuple[Any, Any]:
    """``(client, sentinel or None)`` for any URL form above; options in the URL win."""
    kind = url_topology(url)
    common = _common(socket_timeout)
    if kind == "cluster":
        from redis.cluster import ClusterNode

        c = parse_cluster_url(url)
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in c.nodes], **{**common, **c.kwargs}), None
    if kind == "sentinel":
        from redis.sentinel import Sentinel

        s = parse_sentinel_url(url)
        sentinel = Sentinel(s.sentinels, sentinel_kwargs={**common, **s.sentinel_kwargs})
        return sentinel.master_for(s.service_name, **{**common, **s.kwargs}), sentinel
    _check_single_url(url)
    return redis.Redis.from_url(url, **common), None


def async_client_from_url(url: str, *, socket_timeout: float | None) -> tuple[Any, Any]:
    """The ``redis.asyncio`` twin of :func:`sync_client_from_url`."""
    import redis.asyncio as aioredis

    kind = url_topology(url)
    common = _common(socket_timeout)
    if kind == "cluster":
        from redis.asyncio.cluster import ClusterNode
        from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

        c = parse_cluster_url(url)
        return AsyncRedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in c.nodes], **{**common, **c.kwargs}), None
    if kind == "sentinel":
        from redis.asyncio.sentinel import Sentinel

        s = parse_sentinel_url(url)
        sentinel = Sentinel(s.sentinels, sentinel_kwargs={**common, **s.sentinel_kwargs})
        return sentinel.master_for(s.service_name, **{**common, **s.kwargs}), sentinel
    _check_single_url(url)
    return aioredis.Redis.from_url(url, **common), None


# --------------------------------------------------------------------------- clients


def _async_cluster_class() -> Any:
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

    return AsyncRedisCluster


def _async_sentinel_pool_class() -> Any:
    from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelConnectionPool

    return AsyncSentinelConnectionPool


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster) or isinstance(client, _async_cluster_class())


def is_sentinel(client: Any) -> bool:
    pool = getattr(client, "connection_pool", None)
    return isinstance(pool, SentinelConnectionPool) or isinstance(pool, _async_sentinel_pool_class())


def connection_kwargs(client: Any) -> Mapping[str, Any]:
    """The keyword arguments the client's connections are made with."""
    if is_cluster(client):
        return client.get_connection_kwargs() or {}
    return getattr(getattr(client, "connection_pool", None), "connection_kwargs", None) or {}


def _tls(kw: Mapping[str, Any], connection_class: Any = None) -> bool:
    cls = connection_class or kw.get("connection_class")
    return bool(kw.get("ssl")) or (cls is not None and "SSL" in getattr(cls, "__name__", ""))


def _hostport(host: str, port: Any) -> str:
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def topology_label(client: Any) -> str | None:
    """``redis+cluster://h:p,...`` or ``redis+sentinel://h:p,.../service/db``; None for one server."""
    if is_cluster(client):
        names = list(client.nodes_manager.startup_nodes)
        scheme = "rediss+cluster" if _tls(connection_kwargs(client)) else "redis+cluster"
        return f"{scheme}://{','.join(names)}"
    if is_sentinel(client):
        pool = client.connection_pool
        sentinels = []
        for s in pool.sentinel_manager.sentinels:
            kw = s.connection_pool.connection_kwargs
            sentinels.append(_hostport(kw.get("host", "?"), kw.get("port", SENTINEL_DEFAULT_PORT)))
        scheme = "rediss+sentinel" if _tls(pool.connection_kwargs, pool.connection_class) else "redis+sentinel"
        return f"{scheme}://{','.join(sentinels)}/{pool.service_name}/{pool.connection_kwargs.get('db', 0)}"
    return None


def close_sentinel_sync(sentinel: Any) -> None:
    for s in sentinel.sentinels:
        s.close()


async def close_sentinel_async(sentinel: Any) -> None:
    for s in sentinel.sentinels:
        await s.aclose()


# --------------------------------------------------------------------------- the probe plan


@dataclass(frozen=True)
class NodeSpec:
    """One node to probe: ``handle`` is the driver's (a ClusterNode, an address...)."""

    handle: Any
    name: str
    probe_key: str | None = None
    replicas: tuple[NodeSpec, ...] = ()


@dataclass(frozen=True)
class NodeProbe:
    """Run ``flow`` (a ``probe_flow``) on the connection of ``handle``; send back its report,
    or the connection error that stopped it."""

    handle: Any
    flow: Flow[ProbeReport]


def _at(where: str, f: Finding, level: str | None = None) -> Finding:
    return Finding(f.check, level or f.level, f"{where}: {f.message}", f.remedy)  # type: ignore[arg-type]


def _replica_findings(where: str, report: ProbeReport) -> list[Finding]:
    out: list[Finding] = []
    facts = report.facts
    role = facts.role if facts is not None else None
    if role in ("master", "primary"):
        out.append(Finding("replica-role", "warn", f"{where}: reports role {role} (a failover in progress?)",
                           "run the check again once the topology has settled"))
    elif role:
        out.append(Finding("replica-role", "ok", f"{where}: {role} of {facts.primary or '?'}"))  # type: ignore[union-attr]
    for f in report.findings:
        if f.check not in REPLICA_CHECKS:
            continue
        # a replica still loading (full sync) is not yet counted online by its primary, whose
        # replica check decides; everything else it would carry into a promotion refuses
        out.append(_at(where, f, "warn" if f.check == "loading" and f.level == "refuse" else None))
    return out


def topology_probe_plan(
    label: str,
    primaries: Sequence[NodeSpec],
    notes: Sequence[Finding],
    *,
    namespace: str,
    durability: Durability,
    declared: Mapping[str, str] | None,
) -> Generator[NodeProbe, Any, ProbeReport]:
    """Probe every primary (its own probe key, the policy's replica count) and, when the
    policy counts on replicas, every replica's own settings; one report, each finding
    prefixed with its node's address."""
    findings = list(notes)
    reports: list[ProbeReport] = []
    replica_policy = Durability(timeout_ms=durability.timeout_ms)
    for p in primaries:
        got = yield NodeProbe(p.handle, probe_flow(server=p.name, namespace=namespace, durability=durability,
                                                   declared=declared, probe_key=p.probe_key))
        if isinstance(got, BaseException):
            findings.append(Finding("reachable", "refuse", f"{p.name}: cannot reach this primary: {_err(got)}",
                                    "bring the node back (or let it fail over) and make sure this client reaches it"))
            continue
        reports.append(got)
        findings.extend(_at(p.name, f) for f in got.findings)
        if not durability.replicas:
            continue
        for r in p.replicas:
            where = f"{r.name} (replica of {p.name})"
            got_r = yield NodeProbe(r.handle, probe_flow(server=r.name, namespace=namespace,
                                                         durability=replica_policy, declared=declared))
            if isinstance(got_r, BaseException):
                findings.append(Finding("replica", "warn", f"{where}: cannot reach it: {_err(got_r)}",
                                        "check the replica; the primary's replica count decides"))
                continue
            findings.extend(_replica_findings(where, got_r))
    engines = sorted({r.engine for r in reports}) or ["unknown"]
    versions = sorted({r.version for r in reports if r.version})
    return ProbeReport(
        server=label,
        engine=engines[0] if len(engines) == 1 else "mixed(" + ",".join(engines) + ")",
        version=",".join(versions),
        findings=findings,
        facts=reports[0].facts if len(primaries) == 1 and reports else None,
    )


def _cluster_specs(nodes_manager: Any, namespace: str) -> tuple[list[NodeSpec], list[Finding]]:
    from .drivers.cluster import CLUSTER_SLOTS, probe_key_for, shards_of

    shards = shards_of(nodes_manager)
    covered = sum(len(s.slots) for s in shards)
    replicas = sum(len(s.replicas) for s in shards)
    if not shards:
        notes = [Finding("cluster-topology", "refuse", "the cluster's slot map has no primary",
                         "assign the slots (redis-cli --cluster create / fix)")]
    elif covered < CLUSTER_SLOTS:
        notes = [Finding("cluster-topology", "refuse",
                         f"the slot map covers {covered} of {CLUSTER_SLOTS} slots: runs in the others cannot be stored",
                         "assign every slot (redis-cli --cluster fix, or CLUSTER ADDSLOTSRANGE)")]
    else:
        notes = [Finding("cluster-topology", "ok",
                         f"{len(shards)} primaries own all {CLUSTER_SLOTS} slots; {replicas} replica(s)")]
    specs = [
        NodeSpec(s.primary, s.primary.name, probe_key_for(namespace, s.slots),
                 tuple(NodeSpec(r, r.name) for r in s.replicas))
        for s in shards
    ]
    return specs, notes


def _sentinel_notes(service: str, master: tuple[str, int], replicas: Sequence[tuple[str, int]]) -> list[Finding]:
    return [Finding("sentinel", "ok",
                    f"Sentinel names {_hostport(*master)} the primary of {service!r}, with "
                    f"{len(replicas)} replica(s): {', '.join(_hostport(*r) for r in replicas) or '-'}")]


def _replica_pool_kwargs(pool: Any) -> tuple[bool, dict[str, Any]]:
    kw = {k: v for k, v in pool.connection_kwargs.items() if k not in ("connection_pool", "host", "port")}
    return _tls(kw, pool.connection_class), kw


def probe_sync(client: Any, *, label: str, namespace: str, durability: Durability,
               declared: Mapping[str, str] | None, scripts: ScriptSource,
               deadline_s: float | None = None) -> ProbeReport:
    """The startup probe of a RedisCluster or a Sentinel-managed client (sync); every node's
    probe ends by ``deadline_s`` from now (a node without an answer by then is a finding)."""
    until = time.monotonic() + deadline_s if deadline_s is not None else None
    master = object()
    if is_cluster(client):
        client.nodes_manager.initialize()  # probe the topology as it is now
        specs, notes = _cluster_specs(client.nodes_manager, namespace)

        @contextlib.contextmanager
        def node_client(handle: Any) -> Iterator[Any]:
            yield client.get_redis_connection(handle)
    else:
        pool = client.connection_pool
        addr = pool.get_master_address()
        found = pool.sentinel_manager.discover_slaves(pool.service_name)
        specs = [NodeSpec(master, _hostport(*addr), None, tuple(NodeSpec(r, _hostport(*r)) for r in found))]
        notes = _sentinel_notes(pool.service_name, addr, found)
        tls, kw = _replica_pool_kwargs(pool)

        @contextlib.contextmanager
        def node_client(handle: Any) -> Iterator[Any]:
            if handle is master:
                yield client
                return
            cls = redis.SSLConnection if tls else redis.Connection
            rpool = redis.ConnectionPool(connection_class=cls, host=handle[0], port=handle[1], **kw)
            try:
                yield redis.Redis(connection_pool=rpool)
            finally:
                rpool.disconnect()

    plan = topology_probe_plan(label, specs, notes, namespace=namespace, durability=durability, declared=declared)
    reply: Any = None
    while True:
        try:
            req = plan.send(reply)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        try:
            with node_client(req.handle) as c:
                reply = drive(req.flow, sync_target(c, scripts), until=until)
        except RETRYABLE as exc:  # the node is unreachable: a finding, not the end of the probe
            reply = exc


async def probe_async(client: Any, *, label: str, namespace: str, durability: Durability,
                      declared: Mapping[str, str] | None, scripts: ScriptSource,
                      deadline_s: float | None = None) -> ProbeReport:
    """The asyncio twin of :func:`probe_sync`."""
    until = time.monotonic() + deadline_s if deadline_s is not None else None
    import redis.asyncio as aioredis

    from .drivers.cluster import AsyncNodeClient

    master = object()
    if is_cluster(client):
        await client.initialize()
        await client.nodes_manager.initialize()
        specs, notes = _cluster_specs(client.nodes_manager, namespace)

        @contextlib.asynccontextmanager
        async def node_client(handle: Any) -> AsyncIterator[Any]:
            yield AsyncNodeClient(handle)
    else:
        pool = client.connection_pool
        addr = await pool.get_master_address()
        found = await pool.sentinel_manager.discover_slaves(pool.service_name)
        specs = [NodeSpec(master, _hostport(*addr), None, tuple(NodeSpec(r, _hostport(*r)) for r in found))]
        notes = _sentinel_notes(pool.service_name, addr, found)
        tls, kw = _replica_pool_kwargs(pool)

        @contextlib.asynccontextmanager
        async def node_client(handle: Any) -> AsyncIterator[Any]:
            if handle is master:
                yield client
                return
            cls = aioredis.SSLConnection if tls else aioredis.Connection
            rpool = aioredis.ConnectionPool(connection_class=cls, host=handle[0], port=handle[1], **kw)
            try:
                yield aioredis.Redis(connection_pool=rpool)
            finally:
                await rpool.disconnect()

    plan = topology_probe_plan(label, specs, notes, namespace=namespace, durability=durability, declared=declared)
    reply: Any = None
    while True:
        try:
            req = plan.send(reply)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        try:
            async with node_client(req.handle) as c:
                reply = await adrive(req.flow, async_target(c, scripts), until=until)
        except RETRYABLE as exc:  # the node is unreachable: a finding, not the end of the probe
            reply = exc
