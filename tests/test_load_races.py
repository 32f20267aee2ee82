"""Loading while the run moves, on real servers: keep=1 and a writer committing in a loop; a
concurrent load reads the head and the newest generation as one snapshot, and a moving head
is never reported as corruption."""

from __future__ import annotations

import asyncio
import threading

import pytest

from redis_ckpt import CheckpointStore
from redis_ckpt.aio import AsyncCheckpointStore

pytestmark = pytest.mark.server


# --------------------------------------------------------------------------- a moving head


def test_keep_1_loads_concurrent_with_commits_never_fail(client, namespace):
    writer_store = CheckpointStore(client, namespace=namespace, keep=1)
    reader_store = CheckpointStore(client, namespace=namespace, keep=1)
    lease = writer_store.acquire("hot", owner="w", ttl=60)
    lease.commit({"n": 1, "pad": "x" * 2000})
    stop = threading.Event()
    writer_errors: list[BaseException] = []

    def write() -> None:
        n = 1
        try:
            while not stop.is_set():
                n += 1
                lease.commit({"n": n, "pad": "x" * 2000})
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            writer_errors.append(exc)

    t = threading.Thread(target=write)
    t.start()
    errors: list[BaseException] = []
    seen: list[int] = []
    try:
        for _ in range(2000):
            try:
                ck = reader_store.load("hot")
            except Exception as exc:  # noqa: BLE001 - counted, then asserted empty
                errors.append(exc)
                continue
            assert ck is not None and ck.state["n"] == ck.generation and not ck.skipped
            seen.append(ck.generation)
    finally:
        stop.set()
        t.join()
    assert not writer_errors, writer_errors[:1]
    assert not errors, f"{len(errors)} of 2000 loads failed, first: {errors[0]!r}"
    assert seen == sorted(seen), "a load went back in time"
    assert seen[-1] > seen[0], "the writer never moved the head while loading"


def test_the_same_store_loading_and_committing_from_two_threads(client, namespace):
    """One store object shared by the writer and the reader (its cache of the last head moves
    under the reader's feet)."""
    store = CheckpointStore(client, namespace=namespace, keep=1)
    lease = store.acquire("hot", owner="w", ttl=60)
    lease.commit({"n": 1})
    stop = threading.Event()

    def write() -> None:
        n = 1
        while not stop.is_set():
            n += 1
            lease.commit({"n": n})

    t = threading.Thread(target=write)
    t.start()
    try:
        for _ in range(2000):
            ck = store.load("hot")
            assert ck is not None and ck.state == {"n": ck.generation}
    finally:
        stop.set()
        t.join()


def test_async_loads_concurrent_with_commits_never_fail(durable_server, namespace):
    async def scenario() -> None:
        writer = await AsyncCheckpointStore.from_url(durable_server.url, namespace=namespace, keep=1)
        reader = await AsyncCheckpointStore.from_url(durable_server.url, namespace=namespace, keep=1)
        lease = await writer.acquire("hot", owner="w", ttl=60)
        await lease.commit({"n": 1})
        stop = asyncio.Event()

        async def write() -> None:
            n = 1
            while not stop.is_set():
                n += 1
                await lease.commit({"n": n})

        task = asyncio.create_task(write())
        try:
            for _ in range(1000):
                ck = await reader.load("hot")
                assert ck is not None and ck.state == {"n": ck.generation}
                await asyncio.sleep(0)
        finally:
            stop.set()
            await task
        await writer.close()
        await reader.close()

    asyncio.run(scenario())
