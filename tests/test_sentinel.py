"""Sentinel: a store follows the primary Sentinel names, probes the replicas its policy counts
on, and keeps every acknowledged commit and every fencing token through a ``kill -9``
failover.

Topology on loopback (:class:`redis_ckpt.testing.LocalSentinelSet`, the ``sentinels`` fixture of
conftest): a primary, one replica and three Sentinels, ``down-after-milliseconds 1000``, quorum 2.
"""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio.sentinel as aiosentinel
from redis.sentinel import Sentinel

from redis_ckpt import CheckpointStore, Durability, NonDurableServerError, check_server
from redis_ckpt.aio import AsyncCheckpointStore
from redis_ckpt.testing import HOST, LocalSentinelSet, LocalServer
from redis_ckpt.testing.sentinel import SERVICE
from storm import storm_through_failovers

ENGINES = ["valkey", "redis"]


# --------------------------------------------------------------------------- on Sentinel


@pytest.mark.server
def test_store_from_sentinel_url_and_object(sentinels, namespace):
    primary = sentinels.primary()
    with CheckpointStore.from_url(sentinels.url(), namespace=namespace) as store:
        assert store.probe_report.ok and store.server == sentinels.url()
        assert any(f.check == "sentinel" and f"{HOST}:{primary.port}" in f.message for f in store.probe_report.findings)
        assert all(f.message.startswith(f"{HOST}:{primary.port}: ")
                   for f in store.probe_report.findings if f.check == "live-waitaof")
        with store.acquire("s-job", owner="w", ttl=10) as lease:
            assert lease.commit({"n": 1}) == 1
        assert store.load("s-job").state == {"n": 1}
        assert store.runs() == ["s-job"]
    sentinel = Sentinel(sentinels.addresses, socket_timeout=5)
    store = CheckpointStore.from_sentinel(sentinel, SERVICE, namespace=namespace)
    assert store.server.startswith("redis+sentinel://") and store.server.endswith(f"/{SERVICE}/0")
    assert store.load("s-job").state == {"n": 1}
    store.close()
    for s in sentinel.sentinels:  # the Sentinel object stays the caller's to close
        s.close()
    assert check_server(sentinels.url(), namespace=namespace).ok


@pytest.mark.server
def test_replica_settings_are_probed_when_the_policy_counts_on_them(sentinels, namespace):
    replica = next(s for s in sentinels.servers if s is not sentinels.primary())
    replica.client().config_set("appendfsync", "no")
    try:
        with CheckpointStore.from_url(sentinels.url(), namespace=namespace) as store:
            assert store.probe_report.ok  # the local policy does not count on the replica
        with pytest.raises(NonDurableServerError) as e:
            CheckpointStore.from_url(sentinels.url(), namespace=namespace, durability=Durability.replicas_received(1))
        assert f"{HOST}:{replica.port} (replica of {HOST}:{sentinels.primary().port}): appendfsync is 'no'" in str(e.value)
    finally:
        replica.client().config_set("appendfsync", "always")


@pytest.mark.server
def test_async_store_on_sentinel(sentinels, namespace):
    async def scenario() -> None:
        store = await AsyncCheckpointStore.from_url(sentinels.url(), namespace=namespace,
                                                    durability=Durability.replicas_received(1))
        assert store.probe_report.ok
        assert any("(replica of" in f.message for f in store.probe_report.findings)
        lease = await store.acquire("a-job", owner="w", ttl=10)
        assert await lease.commit({"n": 2}) == 1
        await lease.release()
        await store.close()
        sentinel = aiosentinel.Sentinel(sentinels.addresses, socket_timeout=5)
        store = await AsyncCheckpointStore.from_sentinel(sentinel, SERVICE, namespace=namespace)
        assert (await store.load("a-job")).state == {"n": 2}
        await store.close()
        for s in sentinel.sentinels:
            await s.aclose()

    asyncio.run(scenario())


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_fencing_and_acknowledged_commits_survive_sentinel_failover(engine, namespace, make_server):
    st = LocalSentinelSet(engine, make_server).start()
    try:
        store = CheckpointStore.from_url(st.url(), namespace=namespace,
                                         durability=Durability.replicas_fsynced(1, timeout_ms=3000))
        runs = [f"storm-{i}" for i in range(4)]

        def choose() -> tuple[LocalServer, LocalServer, list[str]]:
            victim = st.primary()
            return victim, next(s for s in st.servers if s is not victim), runs

        def heal(victim: LocalServer, heir: LocalServer) -> None:
            victim.restart()
            # Sentinel turns the old primary into a replica once it sees it again (its INFO
            # period can be 10 s); doing it right away is what Sentinel would do, sooner
            victim.client().replicaof(HOST, heir.port)
            st.wait_healthy()

        storm_through_failovers(store, runs, choose=choose, heal=heal, promoted=lambda heir: st.primary() is heir)
        store.close()
    finally:
        st.cleanup()
