"""Edge cases of the core found in review: each test failed before its fix."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aredis

from redis_ckpt import NonDurableServerError
from redis_ckpt.aio import AsyncCheckpointStore

pytestmark = pytest.mark.server


# --------------------------------------------------------------------------- the async store's probe


def test_async_store_constructed_directly_refuses_a_non_durable_server(make_server):
    server = make_server("valkey", appendonly="yes", appendfsync="always", maxmemory_policy="allkeys-lru")

    async def main() -> None:
        c = aredis.Redis.from_url(server.url)
        try:
            store = AsyncCheckpointStore(c, namespace="n")
            with pytest.raises(NonDurableServerError):
                await store.acquire("r", owner="a", ttl=30)
            with pytest.raises(NonDurableServerError):  # and again: never silently accepted later
                await store.load("r")
            assert await c.keys("n:*") == []  # nothing was written
        finally:
            await c.aclose()

    asyncio.run(main())


def test_async_store_constructed_directly_probes_before_its_first_operation(durable_server, namespace):
    async def main() -> None:
        c = aredis.Redis(host=durable_server.host, port=durable_server.port)
        try:
            store = AsyncCheckpointStore(c, namespace=namespace)
            assert store.probe_report is None
            # concurrent first operations: one probe, both proceed
            a, b = await asyncio.gather(store.load("none"), store.info("none"))
            assert a is None and b.generation == 0
            assert store.probe_report is not None and store.probe_report.ok
            lease = await store.acquire("r", owner="a", ttl=30)
            assert await lease.commit({"n": 1}) == 1
            assert (await store.load("r")).state == {"n": 1}
            await c.delete(*await c.keys(f"{namespace}:*"))
        finally:
            await c.aclose()

    asyncio.run(main())
