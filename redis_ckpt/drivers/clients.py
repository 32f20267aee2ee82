"""redis-py clients for the URL forms of :mod:`redis_ckpt.urls`, and what is asked of a client
whatever its topology (one server, Redis Cluster, Sentinel).

* building a client from a URL (:func:`client_from_url`; ``aio=True`` for ``redis.asyncio``:
  one function, the classes differ);
* the label a client is named by in messages (:func:`client_label`, never a password);
* the topology of a client (:func:`is_cluster`, :func:`is_sentinel`), its connection options,
  the client of one replica a Sentinel names (:func:`replica_client`), closing a Sentinel.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.sentinel import SentinelConnectionPool

from ..core.retry import RetryPolicy
from ..urls import (
    SENTINEL_DEFAULT_PORT,
    check_single_url,
    hostport,
    parse_cluster_url,
    parse_sentinel_url,
    redact_url,
    url_topology,
)
from .errors import reraise

__all__ = [
    "HA_RETRY",
    "CONNECT_TIMEOUT_S",
    "client_from_url",
    "client_label",
    "topology_label",
    "is_cluster",
    "is_sentinel",
    "connection_kwargs",
    "replica_client",
    "close_sentinel_sync",
    "close_sentinel_async",
]

CONNECT_TIMEOUT_S = 5.0

#: The retry policy a store on Cluster or Sentinel gets unless given one: it keeps resending
#: (every 2 s at most) for up to 60 s, long enough to ride out a failover with the servers'
#: default timeouts (cluster-node-timeout 15 s; Sentinel down-after-milliseconds 30 s, then
#: the election). Pass ``retry=`` to match your own timeouts.
HA_RETRY = RetryPolicy(attempts=40, deadline_s=60.0, initial_backoff_s=0.1, max_backoff_s=2.0)


def _redis_py(aio: bool) -> types.SimpleNamespace:
    """The redis-py classes of one I/O style: the sync ones, or their ``redis.asyncio`` twins."""
    if not aio:
        from redis.cluster import ClusterNode
        from redis.sentinel import Sentinel

        return types.SimpleNamespace(Redis=redis.Redis, RedisCluster=RedisCluster, ClusterNode=ClusterNode,
                                     Sentinel=Sentinel, ConnectionPool=redis.ConnectionPool,
                                     Connection=redis.Connection, SSLConnection=redis.SSLConnection)
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
    from redis.asyncio.sentinel import Sentinel as AsyncSentinel

    return types.SimpleNamespace(Redis=aioredis.Redis, RedisCluster=AsyncRedisCluster, ClusterNode=AsyncClusterNode,
                                 Sentinel=AsyncSentinel, ConnectionPool=aioredis.ConnectionPool,
                                 Connection=aioredis.Connection, SSLConnection=aioredis.SSLConnection)


# --------------------------------------------------------------------------- building


def _common(socket_timeout: float | None) -> dict[str, Any]:
    # a connect never waits longer than an answer would (a CLI's short --timeout bounds both)
    connect = CONNECT_TIMEOUT_S if socket_timeout is None else min(CONNECT_TIMEOUT_S, socket_timeout)
    return {"decode_responses": False, "socket_timeout": socket_timeout, "socket_connect_timeout": connect}


def client_from_url(url: str, *, socket_timeout: float | None, aio: bool = False) -> tuple[Any, Any]:
    """``(client, sentinel or None)`` for any URL form of :mod:`redis_ckpt.urls`; options in
    the URL win. ``aio``: a ``redis.asyncio`` client (and Sentinel)."""
    py = _redis_py(aio)
    kind = url_topology(url)
    common = _common(socket_timeout)
    if kind == "cluster":
        c = parse_cluster_url(url)
        try:  # the sync client reads the slot map here: StoreUnavailableError when no node answers
            return py.RedisCluster(startup_nodes=[py.ClusterNode(h, p) for h, p in c.nodes],
                                   **{**common, **c.kwargs}), None
        except Exception as exc:
            reraise(exc, redact_url(url))
    if kind == "sentinel":
        s = parse_sentinel_url(url)
        sentinel = py.Sentinel(s.sentinels, sentinel_kwargs={**common, **s.sentinel_kwargs})
        return sentinel.master_for(s.service_name, **{**common, **s.kwargs}), sentinel
    check_single_url(url)
    return py.Redis.from_url(url, **common), None


def replica_client(pool: Any, address: tuple[str, int], *, aio: bool = False) -> tuple[Any, Any]:
    """``(client, its pool)`` on the replica at ``address``, made like the connections of
    ``pool`` (a Sentinel's pool: same credentials, TLS, timeouts); disconnect the pool after."""
    py = _redis_py(aio)
    kw = {k: v for k, v in pool.connection_kwargs.items() if k not in ("connection_pool", "host", "port")}
    cls = py.SSLConnection if _tls(kw, pool.connection_class) else py.Connection
    rpool = py.ConnectionPool(connection_class=cls, host=address[0], port=address[1], **kw)
    return py.Redis(connection_pool=rpool), rpool


def close_sentinel_sync(sentinel: Any) -> None:
    for s in sentinel.sentinels:
        s.close()


async def close_sentinel_async(sentinel: Any) -> None:
    for s in sentinel.sentinels:
        await s.aclose()


# --------------------------------------------------------------------------- asking


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
            sentinels.append(hostport(kw.get("host", "?"), kw.get("port", SENTINEL_DEFAULT_PORT)))
        scheme = "rediss+sentinel" if _tls(pool.connection_kwargs, pool.connection_class) else "redis+sentinel"
        return f"{scheme}://{','.join(sentinels)}/{pool.service_name}/{pool.connection_kwargs.get('db', 0)}"
    return None


def client_label(client: Any) -> str:
    """host:port/db of a redis-py client, for messages (never a password).

    Redis Cluster: ``redis+cluster://host:port,...`` (its startup nodes); a Sentinel-managed
    client: ``redis+sentinel://sentinel:port,.../service/db``.
    """
    label = topology_label(client)
    if label is not None:
        return label
    kw = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None) or {}
    if "host" in kw:
        return f"redis://{kw['host']}:{kw.get('port', 6379)}/{kw.get('db', 0)}"
    if "path" in kw:
        return f"unix://{kw['path']}"
    return type(client).__name__

