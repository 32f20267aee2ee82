"""Finding the servers ends by the operation's deadline too: the primary a Sentinel names, the
slot map of a Redis Cluster.

redis-py asks each Sentinel (each startup node) in turn, each with the client's own socket
timeout: with every one of them frozen (SIGSTOP: the port accepts, nothing answers) that is
their number times the socket timeout. Here every such case, sync and asyncio, must end with
StoreUnavailableError by the deadline (2 s) plus the slack a loaded machine needs (1.5 s);
the socket timeout (3 s) is longer than the deadline, as in a real set-up (default 10 s), so
each frozen server alone could overrun it. The processes are always resumed (finally).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from redis.cluster import ClusterNode, RedisCluster

from redis_ckpt import CheckpointStore, RetryPolicy, StoreUnavailableError
from redis_ckpt.aio import AsyncCheckpointStore
from redis_ckpt.testing import HOST, LocalCluster, LocalSentinelSet, LocalServer
from test_cluster import slot_of

pytestmark = pytest.mark.server

DEADLINE_S = 2.0
SLACK_S = 1.5
SHORT = RetryPolicy(deadline_s=DEADLINE_S)
SOCKET_TIMEOUT_S = 3.0


@contextlib.contextmanager
def frozen(*pids: int) -> Iterator[None]:
    """The processes stopped (SIGSTOP), resumed afterwards whatever happens."""
    stopped = []
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        yield
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)


class Within:
    """Asserts that the block ends by the deadline (plus slack)."""

    def __enter__(self) -> Within:
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        elapsed = time.monotonic() - self.started
        assert elapsed < DEADLINE_S + SLACK_S, f"took {elapsed:.1f} s, deadline {DEADLINE_S} s"


def sentinel_pids(sentinels: LocalSentinelSet) -> list[int]:
    return [s._res.proc.pid for s in sentinels.sentinels]


def drop_clients(server: LocalServer) -> None:
    """Close every connection of a redis-py client to ``server`` (a network blip, a proxy
    restart): the next operation connects again, asking the Sentinels where the primary is.
    The Sentinels' own links (client name ``sentinel-...``) stay."""
    admin = server.client()
    me = admin.client_id()
    for c in admin.client_list(_type="normal"):
        if int(c["id"]) != me and not c.get("name", "").startswith("sentinel-"):
            admin.client_kill_filter(_id=c["id"])


# --------------------------------------------------------------------------- Sentinel


def test_sentinel_operations_end_by_their_deadline_when_every_sentinel_is_frozen(sentinels, namespace):
    store = CheckpointStore.from_url(sentinels.url(), namespace=namespace, socket_timeout=SOCKET_TIMEOUT_S,
                                     retry=SHORT)
    try:
        lease = store.acquire("job", owner="a", ttl=60)
        assert lease.commit({"n": 1}) == 1
        primary = sentinels.primary()
        with frozen(*sentinel_pids(sentinels)):
            drop_clients(primary)
            with Within(), pytest.raises(StoreUnavailableError) as commit:
                lease.commit({"n": 2})
            with Within(), pytest.raises(StoreUnavailableError):
                store.load("job")
            with Within(), pytest.raises(StoreUnavailableError) as acquire:
                store.acquire("other", owner="a", ttl=60)
        assert commit.value.outcome_unknown and acquire.value.outcome_unknown
        assert store.load("job").generation == 1  # the primary was never asked
    finally:
        store.close()


def test_one_frozen_sentinel_asked_first_leaves_time_for_the_next(sentinels, namespace):
    """The first Sentinel asked is frozen, the others answer at once: the commit lands, by the
    deadline. A frozen server asked first took all the attempt had left, so the next one was
    never asked in time and the commit failed (a Cluster's startup nodes are asked in random
    order: a frozen primary among them failed a third of the probes of a 3-primary cluster)."""
    store = CheckpointStore.from_url(sentinels.url(), namespace=namespace, socket_timeout=SOCKET_TIMEOUT_S,
                                     retry=SHORT)
    try:
        lease = store.acquire("job", owner="a", ttl=60)
        assert lease.commit({"n": 1}) == 1
        primary = sentinels.primary()
        with frozen(sentinel_pids(sentinels)[0]):
            drop_clients(primary)
            with Within():
                assert lease.commit({"n": 2}) == 2
        assert store.load("job").state == {"n": 2}
    finally:
        store.close()


def test_async_sentinel_operations_end_by_their_deadline_when_every_sentinel_is_frozen(sentinels, namespace):
    async def scenario() -> None:
        store = await AsyncCheckpointStore.from_url(sentinels.url(), namespace=namespace,
                                                    socket_timeout=SOCKET_TIMEOUT_S, retry=SHORT)
        try:
            lease = await store.acquire("job", owner="a", ttl=60)
            assert await lease.commit({"n": 1}) == 1
            primary = sentinels.primary()
            with frozen(*sentinel_pids(sentinels)):
                drop_clients(primary)
                with Within(), pytest.raises(StoreUnavailableError) as commit:
                    await lease.commit({"n": 2})
                with Within(), pytest.raises(StoreUnavailableError):
                    await store.load("job")
                with Within(), pytest.raises(StoreUnavailableError) as acquire:
                    await store.acquire("other", owner="a", ttl=60)
            assert commit.value.outcome_unknown and acquire.value.outcome_unknown
            assert (await store.load("job")).generation == 1
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_store_is_refused_by_its_deadline_when_every_sentinel_is_frozen(sentinels, namespace):
    async def open_async() -> Any:
        return await AsyncCheckpointStore.from_url(sentinels.url(), namespace=namespace,
                                                   socket_timeout=SOCKET_TIMEOUT_S, retry=SHORT)

    with frozen(*sentinel_pids(sentinels)):
        with Within(), pytest.raises(StoreUnavailableError):
            CheckpointStore.from_url(sentinels.url(), namespace=namespace, socket_timeout=SOCKET_TIMEOUT_S,
                                     retry=SHORT)
        with Within(), pytest.raises(StoreUnavailableError):
            asyncio.run(open_async())


# --------------------------------------------------------------------------- Redis Cluster


def seeds(cluster: LocalCluster) -> list[LocalServer]:
    """The replicas: the only startup nodes of the clients below (``dynamic_startup_nodes``
    off), so every slot-map refresh asks them and nothing else."""
    primaries = {s.port for s in cluster.primaries()}
    return [s for s in cluster.servers if s.port not in primaries]


def sync_cluster(cluster: LocalCluster, socket_timeout: float) -> RedisCluster:
    return RedisCluster(startup_nodes=[ClusterNode(HOST, s.port) for s in seeds(cluster)],
                        dynamic_startup_nodes=False, socket_timeout=socket_timeout, decode_responses=False)


def async_cluster(cluster: LocalCluster, socket_timeout: float) -> Any:
    from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

    return AsyncRedisCluster(startup_nodes=[AsyncClusterNode(HOST, s.port) for s in seeds(cluster)],
                             dynamic_startup_nodes=False, socket_timeout=socket_timeout, decode_responses=False)


# the primary's socket timeout ends the first attempt early enough for a refresh to start
# within the deadline; the refresh then asks three frozen replicas in turn
REFRESH_SOCKET_TIMEOUT_S = 1.5


def test_a_slot_map_refresh_ends_by_the_deadline_when_every_startup_node_is_frozen(cluster, namespace):
    store = CheckpointStore(sync_cluster(cluster, REFRESH_SOCKET_TIMEOUT_S), namespace=namespace, retry=SHORT)
    try:
        lease = store.acquire("job", owner="a", ttl=60)
        assert lease.commit({"n": 1}) == 1
        owner = cluster.owner(slot_of(namespace, "job"))  # its replica is frozen too: no failover
        with frozen(owner.pid, *(s.pid for s in seeds(cluster))):
            with Within(), pytest.raises(StoreUnavailableError) as commit:
                lease.commit({"n": 2})  # the owner times out, the slot map is read again
            with Within(), pytest.raises(StoreUnavailableError):
                store.load("job")
        assert commit.value.outcome_unknown  # sent to the owner, which runs it once resumed
    finally:
        store.close()
        cluster.wait_healthy(60)


def test_async_slot_map_refresh_ends_by_the_deadline_when_every_startup_node_is_frozen(cluster, namespace):
    async def scenario() -> None:
        store = await AsyncCheckpointStore.create(async_cluster(cluster, REFRESH_SOCKET_TIMEOUT_S),
                                                  namespace=namespace, retry=SHORT)
        try:
            lease = await store.acquire("job", owner="a", ttl=60)
            assert await lease.commit({"n": 1}) == 1
            owner = cluster.owner(slot_of(namespace, "job"))
            with frozen(owner.pid, *(s.pid for s in seeds(cluster))):
                with Within(), pytest.raises(StoreUnavailableError) as commit:
                    await lease.commit({"n": 2})
                with Within(), pytest.raises(StoreUnavailableError):
                    await store.load("job")
            assert commit.value.outcome_unknown
        finally:
            await store.close()

    try:
        asyncio.run(scenario())
    finally:
        cluster.wait_healthy(60)


def test_a_store_is_refused_by_its_deadline_when_every_startup_node_is_frozen(cluster, namespace):
    """The probe reads the slot map again (the topology as it is now) from the startup nodes."""
    sync_client = sync_cluster(cluster, SOCKET_TIMEOUT_S)  # made while they answer
    async_client = async_cluster(cluster, SOCKET_TIMEOUT_S)  # reads the slot map when first used

    async def open_async() -> Any:
        try:
            return await AsyncCheckpointStore.create(async_client, namespace=namespace, retry=SHORT)
        finally:
            await async_client.aclose()

    try:
        with frozen(*(s.pid for s in seeds(cluster))):
            with Within(), pytest.raises(StoreUnavailableError):
                CheckpointStore(sync_client, namespace=namespace, retry=SHORT)
            with Within(), pytest.raises(StoreUnavailableError):
                asyncio.run(open_async())
    finally:
        sync_client.close()
        cluster.wait_healthy(60)
