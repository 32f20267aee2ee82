"""Which target drives which client: a Redis Cluster client gets a Cluster target (its pipes
routed to the slot's owner), any other client (``redis.Redis``, a Sentinel-managed client, a
test double) a node target. A target holds no state of one operation: a store keeps its own."""

from __future__ import annotations

from typing import Any

from redis.cluster import RedisCluster

from ..core.ops import ScriptSource
from .asyncio import AsyncNodeTarget
from .cluster import AsyncClusterTarget, ClusterTarget
from .scripts import SCRIPTS
from .sync import NodeTarget

__all__ = ["sync_target", "async_target"]


def sync_target(client: Any, scripts: ScriptSource = SCRIPTS) -> NodeTarget | ClusterTarget:
    """The target of a synchronous redis-py client (see ``sync.drive``)."""
    if isinstance(client, RedisCluster):
        return ClusterTarget(client, scripts)
    return NodeTarget(client, scripts)


def async_target(client: Any, scripts: ScriptSource = SCRIPTS) -> AsyncNodeTarget | AsyncClusterTarget:
    """The target of a ``redis.asyncio`` client (see ``asyncio.adrive``)."""
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

    if isinstance(client, AsyncRedisCluster):
        return AsyncClusterTarget(client, scripts)
    return AsyncNodeTarget(client, scripts)
