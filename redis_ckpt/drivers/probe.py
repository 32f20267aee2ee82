"""The one entry point of the startup probe: :func:`probe_sync` / :func:`probe_async` probe
whatever a client talks to — one server, every primary of a Redis Cluster, the primary a
Sentinel names (and the replicas the policy counts on). Stores, :func:`redis_ckpt.check_server`
and the CLI all probe through here.

The plan of :mod:`redis_ckpt.probe.topology` runs on the one trampoline (``drive`` /
``adrive``) like any flow: its requests (:class:`~redis_ckpt.probe.topology.NodeProbe`) are
carried out by a plan target that drives each node's probe flow, again through ``drive`` /
``adrive``, on that node's own connection. An unreachable node comes back into the plan as
:class:`~redis_ckpt.core.ops.ConnectionLost`. What differs per I/O style is only how the
nodes are found and how a node's client is made.

The deadline covers finding the nodes too (the slot map read from the startup nodes in turn,
the primary and replicas asked of the Sentinels in turn): sync, their clients answer within
the time left (:mod:`.discovery`); asyncio, under ``asyncio.timeout``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from ..core.durability import Durability
from ..probe.report import ProbeReport
from ..probe.topology import NodeProbe, NodeSpec, Topology, cluster_notes, probe_plan, sentinel_notes
from ..urls import hostport
from .asyncio import AsyncPlanTarget, adrive, within
from .clients import is_cluster, is_sentinel, replica_client
from .deadlines import connecting
from .discovery import bound_discovery
from .errors import failure
from .sync import PlanTarget, drive
from .targets import async_target, sync_target

__all__ = ["probe_sync", "probe_async"]

#: the handle of the node a Sentinel names the primary: the Sentinel-managed client itself
_PRIMARY = object()


class _Nodes(PlanTarget):
    """Carries out a probe plan's requests; what stops a node reaches the plan as a neutral
    failure (``ConnectionLost`` for an unreachable node)."""

    failure = staticmethod(failure)


class _AsyncNodes(AsyncPlanTarget):
    failure = staticmethod(failure)


def _cluster_topology(nodes_manager: Any, namespace: str) -> Topology:
    from .cluster_plan import probe_key_for, shards_of

    shards = shards_of(nodes_manager)
    specs = [NodeSpec(s.primary, s.primary.name, probe_key_for(namespace, s.slots),
                      tuple(NodeSpec(r, r.name) for r in s.replicas))
             for s in shards]
    notes = cluster_notes(len(shards), sum(len(s.slots) for s in shards), sum(len(s.replicas) for s in shards))
    return Topology(specs, notes)


def _sentinel_topology(service: str, primary: tuple[str, int], replicas: list[tuple[str, int]]) -> Topology:
    names = [hostport(*r) for r in replicas]
    spec = NodeSpec(_PRIMARY, hostport(*primary), None, tuple(NodeSpec(r, n) for r, n in zip(replicas, names)))
    return Topology([spec], sentinel_notes(service, hostport(*primary), names))


# --------------------------------------------------------------------------- sync


def probe_sync(client: Any, *, label: str, namespace: str, durability: Durability,
               declared: Mapping[str, str] | None = None, deadline_s: float | None = None) -> ProbeReport:
    """The startup probe of whatever ``client`` (sync) talks to; it ends by ``deadline_s`` from
    now, finding the nodes included (on Cluster/Sentinel a node without an answer by then is a
    finding; one server, or no slot map or primary found: the connection error is raised)."""
    until = None if deadline_s is None else time.monotonic() + deadline_s
    topology: Topology | None = None
    if is_cluster(client) or is_sentinel(client):
        bound_discovery(client)
        with connecting(until):
            if is_cluster(client):
                client.nodes_manager.initialize()  # probe the topology as it is now
                topology = _cluster_topology(client.nodes_manager, namespace)
            else:
                pool = client.connection_pool
                topology = _sentinel_topology(pool.service_name, pool.get_master_address(),
                                              pool.sentinel_manager.discover_slaves(pool.service_name))

    @contextlib.contextmanager
    def node_client(handle: Any) -> Iterator[Any]:
        if handle is None or handle is _PRIMARY:
            yield client
        elif is_cluster(client):
            yield client.get_redis_connection(handle)
        else:  # a replica a Sentinel names
            replica, pool = replica_client(client.connection_pool, handle)
            try:
                yield replica
            finally:
                pool.disconnect()

    def probe_node(req: NodeProbe, until: float | None) -> ProbeReport:
        with node_client(req.handle) as c:
            return drive(req.flow, sync_target(c), until=until)

    plan = probe_plan(label, topology, namespace=namespace, durability=durability, declared=declared)
    return drive(plan, _Nodes(probe_node), until=until)


# --------------------------------------------------------------------------- asyncio


async def probe_async(client: Any, *, label: str, namespace: str, durability: Durability,
                      declared: Mapping[str, str] | None = None, deadline_s: float | None = None) -> ProbeReport:
    """:func:`probe_sync` for a ``redis.asyncio`` client."""
    until = None if deadline_s is None else time.monotonic() + deadline_s
    topology: Topology | None = None
    if is_cluster(client):
        async with within(until):
            await client.initialize()
            await client.nodes_manager.initialize()
        topology = _cluster_topology(client.nodes_manager, namespace)
    elif is_sentinel(client):
        pool = client.connection_pool
        async with within(until):
            topology = _sentinel_topology(pool.service_name, await pool.get_master_address(),
                                          await pool.sentinel_manager.discover_slaves(pool.service_name))

    @contextlib.asynccontextmanager
    async def node_client(handle: Any) -> AsyncIterator[Any]:
        if handle is None or handle is _PRIMARY:
            yield client
        elif is_cluster(client):
            from .cluster import AsyncNodeClient

            yield AsyncNodeClient(handle)
        else:
            replica, pool = replica_client(client.connection_pool, handle, aio=True)
            try:
                yield replica
            finally:
                await pool.disconnect()

    async def probe_node(req: NodeProbe, until: float | None) -> ProbeReport:
        async with node_client(req.handle) as c:
            return await adrive(req.flow, async_target(c), until=until)

    plan = probe_plan(label, topology, namespace=namespace, durability=durability, declared=declared)
    return await adrive(plan, _AsyncNodes(probe_node), until=until)
