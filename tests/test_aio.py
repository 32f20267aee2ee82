"""The asyncio store: same flows and Lua files as the sync one, on real servers."""

from __future__ import annotations

import asyncio
import gc
import inspect
import warnings
import time

import pytest
import redis.asyncio as aioredis

from redis_ckpt import CheckpointStore, FencedError, LeaseHeldError, Lease
from redis_ckpt.core.keys import RunKeys
from redis_ckpt.aio import AsyncCheckpointStore, AsyncLease


def run(coro):
    return asyncio.run(coro)


@pytest.mark.server
def test_async_round_trip_and_fencing(durable_server, client, namespace):
    async def scenario():
        store = await AsyncCheckpointStore.from_url(durable_server.url, namespace=namespace)
        assert store.probe_report is not None and store.probe_report.ok
        zombie = await store.acquire("job", owner="zombie", ttl=0.2)
        assert await zombie.commit({"step": (1, 2)}) == 1
        await asyncio.sleep(0.35)
        async with await store.acquire("job", owner="fresh", ttl=10) as fresh:
            assert fresh.kind == "takeover" and fresh.token == 2
            with pytest.raises(LeaseHeldError):
                await store.acquire("job", owner="third", ttl=1)
            assert await fresh.commit({"step": (3,)}) == 2
            with pytest.raises(FencedError) as e:
                await zombie.commit({"step": ()})
            assert (e.value.token, e.value.fence) == (1, 2)
        ck = await store.load("job")
        assert ck.state == {"step": (3,)} and ck.generation == 2
        assert [g.generation for g in await store.generations("job")] == [2, 1]
        assert "fenced" in [e.kind for e in await store.events("job")]
        await store.close()

    run(scenario())


@pytest.mark.server
def test_async_and_sync_stores_read_each_others_commits(durable_server, client, namespace):
    sync = CheckpointStore(client, namespace=namespace)
    lease = sync.acquire("mixed", owner="s", ttl=10)
    lease.commit({"from": "sync"})

    async def scenario():
        store = await AsyncCheckpointStore.create(aioredis.Redis(host=durable_server.host, port=durable_server.port),
                                                  namespace=namespace)
        ck = await store.load("mixed")
        assert ck.state == {"from": "sync"}
        await store.commit("mixed", {"from": "async"}, token=lease.token, expected_generation=1)
        await store.close()

    run(scenario())
    assert sync.load("mixed").state == {"from": "async"}


@pytest.mark.server
def test_async_fallback_on_damaged_newest(durable_server, client, namespace):
    async def scenario():
        store = await AsyncCheckpointStore.from_url(durable_server.url, namespace=namespace)
        lease = await store.acquire("dmg", owner="a", ttl=10)
        await lease.commit(1)
        await lease.commit(2)
        client.setrange(RunKeys(namespace, "dmg").generation(2), 20, b"\x00\x01\x02")
        ck = await store.load("dmg")
        assert ck.generation == 1 and ck.skipped[0].reason == "checksum"
        await store.close()

    run(scenario())


def test_async_in_memory_store_for_users_tests():
    async def scenario():
        store = await AsyncCheckpointStore.in_memory(namespace="unit")
        async with await store.acquire("r", owner="me", ttl=5) as lease:
            await lease.commit({"x": 1})
        assert (await store.load("r")).state == {"x": 1}

    run(scenario())


def test_in_memory_stores_share_one_server_when_given_it():
    """Against a real server, two stores (two workers, or the sync and the asyncio store a
    LangGraph saver takes together) see the same data; in memory that needs one fakeredis
    server for both: in_memory(server=...). Without it each store has its own."""
    import fakeredis

    from redis_ckpt import LeaseHeldError

    server = fakeredis.FakeServer()
    first = CheckpointStore.in_memory(namespace="unit", server=server)
    second = CheckpointStore.in_memory(namespace="unit", server=server)
    lease = first.acquire("r", owner="a", ttl=30)
    lease.commit({"x": 1})
    assert second.load("r").state == {"x": 1}
    with pytest.raises(LeaseHeldError):
        second.acquire("r", owner="b")
    assert CheckpointStore.in_memory(namespace="unit").load("r") is None  # a server of its own

    async def scenario():
        store = await AsyncCheckpointStore.in_memory(namespace="unit", server=server)
        assert (await store.load("r")).state == {"x": 1}
        with pytest.raises(TypeError, match="fakeredis.FakeServer"):
            await AsyncCheckpointStore.in_memory(server="localhost")

    run(scenario())
    with pytest.raises(TypeError, match="fakeredis.FakeServer"):
        CheckpointStore.in_memory(server=object())


def test_sync_in_memory_store_for_users_tests():
    store = CheckpointStore.in_memory()
    assert store.probe_report is None  # in-memory: no probe, and its docstring says so
    assert "NOT durable" in CheckpointStore.in_memory.__doc__
    with store.acquire("r", owner="me", ttl=0.1) as lease:
        lease.commit({"x": 1})
    time.sleep(0.05)
    assert store.load("r").state == {"x": 1}


def _public(cls):
    return {n: m for n, m in inspect.getmembers(cls) if not n.startswith("_") and callable(m)}


@pytest.mark.parametrize(("sync_cls", "async_cls"), [(CheckpointStore, AsyncCheckpointStore), (Lease, AsyncLease)])
def test_async_surface_mirrors_the_sync_one(sync_cls, async_cls):
    sync_api, async_api = _public(sync_cls), _public(async_cls)
    only_sync = set(sync_api) - set(async_api)
    assert only_sync == set(), f"missing from {async_cls.__name__}: {only_sync}"
    for name, fn in sync_api.items():
        afn = async_api[name]
        if name in ("register_migration",) or afn is fn:  # shared (the lease's flows), not a twin
            continue
        if name not in ("from_url", "in_memory", "acquire"):  # acquire: awaitable and `async with`
            assert inspect.iscoroutinefunction(afn), f"{async_cls.__name__}.{name} is not async"
        sp = list(inspect.signature(fn).parameters)
        ap = list(inspect.signature(afn).parameters)
        assert sp == ap, f"{name}: {sp} != {ap}"


def test_async_with_store_acquire_releases_on_exit_and_await_still_works():
    async def scenario():
        store = await AsyncCheckpointStore.in_memory(namespace="unit")
        async with store.acquire("r", owner="me", ttl=5) as lease:
            assert isinstance(lease, AsyncLease) and lease.token == 1
            await lease.commit({"x": 1})
        assert lease.released and (await store.info("r")).lease_state == "released"
        lease = await store.acquire("r", owner="me", ttl=5)  # the plain await form
        assert lease.token == 2 and not lease.released
        async with await store.acquire("r", owner="me", ttl=5) as again:  # and the older spelling
            assert again.token == 3
        pending = store.acquire("r", owner="me", ttl=5)
        await pending
        with pytest.raises(RuntimeError, match="already awaited"):
            await pending
        with pytest.raises(ValueError):
            store.acquire("r", ttl=0)  # bad arguments fail at the call, as in the sync store
        with pytest.raises(LeaseHeldError):
            async with store.acquire("r", owner="other", ttl=5):
                pass

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(scenario())


def test_an_acquire_never_awaited_sends_nothing_and_warns_nothing():
    async def scenario():
        store = await AsyncCheckpointStore.in_memory(namespace="unit")
        store.acquire("r", owner="me", ttl=5)  # dropped
        gc.collect()
        assert (await store.info("r")).fence == 0

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(scenario())
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]


@pytest.mark.server
def test_async_with_acquire_on_a_real_server(durable_server, client, namespace):
    async def scenario():
        async with await AsyncCheckpointStore.from_url(durable_server.url, namespace=namespace) as store:
            async with store.acquire("job", owner="a", ttl=10) as lease:
                assert await lease.commit({"n": 1}) == 1
            assert (await store.load("job")).state == {"n": 1}

    run(scenario())


@pytest.mark.server
def test_an_explicit_probe_that_passes_is_the_startup_probe(durable_server, namespace):
    """A store constructed directly probes before its first operation; a probe() the user
    awaited first was not counted, and the first operation probed the server again."""
    def probes() -> int:  # COMMAND INFO WAITAOF: sent by the probe only
        stats = durable_server.client().info("commandstats")
        return int(stats.get("cmdstat_command|info", {}).get("calls", 0))

    async def scenario():
        store = AsyncCheckpointStore(aioredis.Redis(host=durable_server.host, port=durable_server.port),
                                     namespace=namespace)
        before = probes()
        report = await store.probe()
        assert report.ok and probes() == before + 1
        assert await store.load("nothing-yet") is None
        assert probes() == before + 1  # the first operation did not probe again
        assert store.probe_report is report
        await store.close()

    run(scenario())


@pytest.mark.server
def test_an_explicit_probe_that_refuses_still_guards_the_first_operation(make_server, namespace):
    from redis_ckpt import NonDurableServerError

    server = make_server("valkey", appendonly="no")

    async def scenario():
        store = AsyncCheckpointStore(aioredis.Redis(host=server.host, port=server.port), namespace=namespace)
        assert not (await store.probe()).ok  # does not raise
        with pytest.raises(NonDurableServerError):
            await store.load("anything")
        await store.close()

    run(scenario())
