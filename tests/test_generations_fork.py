"""Any kept generation (``load(run, generation=N)``) and forks (``fork(run, new)``), on real
Valkey and Redis servers: what a user resuming from a chosen checkpoint would check."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest

from redis_ckpt import (
    CheckpointStore,
    ConflictError,
    FencedError,
    FrameError,
    NotFoundError,
    OutOfRangeError,
)
from redis_ckpt.aio import AsyncCheckpointStore
from redis_ckpt.core.keys import RunKeys

pytestmark = pytest.mark.server


@pytest.fixture
def store(client, namespace) -> CheckpointStore:
    return CheckpointStore(client, namespace=namespace, keep=3)


def run_of(store: CheckpointStore, run: str, n: int, **state: object) -> None:
    with store.acquire(run, owner="w", ttl=30) as lease:
        for i in range(1, n + 1):
            lease.commit({"i": i, **state}, metadata={"step": i})


def snapshot(client, namespace: str) -> dict[bytes, object]:
    """Every key of the namespace with its value (what "changes nothing" is checked against)."""
    out: dict[bytes, object] = {}
    for key in client.scan_iter(match=f"{namespace}:*"):
        kind = client.type(key)
        out[key] = (client.hgetall(key) if kind == b"hash" else client.xrange(key) if kind == b"stream"
                    else client.get(key))
    return out


# --------------------------------------------------------------------------- load(generation=N)


def test_load_any_kept_generation_verified_and_migrated(client, namespace):
    v1 = CheckpointStore(client, namespace=namespace, keep=3)
    run_of(v1, "r", 4, when=datetime(2026, 1, 2, tzinfo=timezone.utc))
    v2 = CheckpointStore(client, namespace=namespace, keep=3, schema_version=2)
    v2.register_migration(1, lambda s: {**s, "v": 2})
    ck = v2.load("r", generation=3)
    assert (ck.generation, ck.head_generation) == (3, 4)
    assert ck.state == {"i": 3, "when": datetime(2026, 1, 2, tzinfo=timezone.utc), "v": 2}
    assert ck.metadata == {"step": 3} and ck.stored_schema_version == 1 and ck.schema_version == 2
    assert v1.load("r", generation=4).state["i"] == 4 and v1.load("r").generation == 4


def test_a_generation_not_kept_names_the_kept_ones(store, client, namespace):
    run_of(store, "r", 5)
    before = snapshot(client, namespace)
    with pytest.raises(NotFoundError) as e:
        store.load("r", generation=1)
    assert "kept: 5, 4, 3" in str(e.value) and e.value.run_id == "r"
    with pytest.raises(NotFoundError):
        store.load("r", generation=6)
    with pytest.raises(NotFoundError, match="no committed generation"):
        store.load("unknown", generation=1)
    assert snapshot(client, namespace) == before


@pytest.mark.parametrize("bad", [0, -1, True, 2**60, 1.0, "2"])
def test_a_generation_that_is_no_positive_int_is_refused_before_sending(store, bad):
    with pytest.raises(OutOfRangeError) as e:
        store.load("r", generation=bad)
    assert e.value.argument == "generation"


def test_a_damaged_generation_is_its_reason_never_a_fallback(store, client):
    run_of(store, "r", 3)
    k = RunKeys(store.namespace, "r")
    client.setrange(k.generation(2), 30, b"\xff\xff\xff\xff")
    with pytest.raises(FrameError) as e:
        store.load("r", generation=2)
    assert e.value.reason.value == "checksum" and e.value.generation == 2 and e.value.run_id == "r"
    assert store.load("r", generation=1).state["i"] == 1  # the others still load
    client.delete(k.generation(3))
    with pytest.raises(FrameError) as e:
        store.load("r", generation=3)
    assert e.value.reason.value == "missing"
    assert [x.kind for x in store.events("r")].count("fallback") == 0  # no fallback was reported


def test_a_chunked_generation_loads_by_number(client, namespace):
    store = CheckpointStore(client, namespace=namespace, keep=2, chunk_bytes=1024)
    with store.acquire("big", owner="w", ttl=30) as lease:
        lease.commit({"blob": b"a" * 50_000})
        lease.commit({"blob": b"b" * 50_000})
    assert store.load("big", generation=1).state == {"blob": b"a" * 50_000}


def test_async_load_of_a_generation_and_fork(durable_server, client, namespace):
    run_of(CheckpointStore(client, namespace=namespace, keep=3), "r", 3)

    async def main() -> None:
        store = await AsyncCheckpointStore.from_url(durable_server.url, namespace=namespace, keep=3)
        try:
            assert (await store.load("r", generation=2)).state == {"i": 2}
            with pytest.raises(NotFoundError):
                await store.load("r", generation=9)
            assert await store.fork("r", "r2", generation=2, by="me") == 1
            ck = await store.load("r2")
            assert ck.state == {"i": 2} and ck.metadata["forked_from"]["generation"] == 2
        finally:
            await store.close()

    asyncio.run(main())


# --------------------------------------------------------------------------- fork


def test_fork_starts_a_new_run_from_the_newest_generation(store):
    run_of(store, "src", 3, when=datetime(2026, 1, 2, tzinfo=timezone.utc))
    source = store.load("src")
    assert store.fork("src", "copy", by="ops") == 1
    ck = store.load("copy")
    assert ck.generation == 1 and ck.state == source.state
    assert type(ck.state["when"]) is datetime
    assert ck.metadata == {"step": 3, "forked_from": {"run": "src", "generation": 3, "checksum": source.checksum}}
    assert ck.owner == "ops"
    forked = [e for e in store.events("src") if e.kind == "forked"]
    assert [(e.fields["to"], e.fields["generation"], e.fields["by"]) for e in forked] == [("copy", "3", "ops")]
    assert any(e.fields.get("by") == "ops" for e in store.events("copy"))
    # the fork is a run of its own: acquire, commit, and the source is untouched
    with store.acquire("copy", owner="w2", ttl=30) as lease:
        assert lease.generation == 1 and lease.commit({"i": 100}) == 2
    assert store.load("src").state == source.state and store.load("src").generation == 3


def test_fork_of_an_older_generation(store):
    run_of(store, "src", 3)
    store.fork("src", "from-g2", generation=2)
    assert store.load("from-g2").state == {"i": 2}


def test_fork_is_refused_and_changes_nothing_when_the_target_has_a_head(store, client, namespace):
    run_of(store, "src", 2)
    run_of(store, "taken", 1)
    before = snapshot(client, namespace)
    with pytest.raises(ConflictError) as e:
        store.fork("src", "taken")
    assert e.value.run_id == "taken" and e.value.actual == 1 and "already has a head" in str(e.value)
    with pytest.raises(ConflictError):
        store.fork("src", "src")
    with pytest.raises(NotFoundError):
        store.fork("nothing-here", "fresh")
    with pytest.raises(NotFoundError, match="kept: 2, 1"):
        store.fork("src", "fresh", generation=5)
    with pytest.raises(OutOfRangeError):
        store.fork("src", "fresh", generation=0)
    assert snapshot(client, namespace) == before


def test_fork_of_a_damaged_generation_is_refused(store, client, namespace):
    run_of(store, "src", 2)
    client.setrange(RunKeys(namespace, "src").generation(2), 30, b"\xff\xff")
    with pytest.raises(FrameError):
        store.fork("src", "fresh", generation=2)
    assert store.load("fresh") is None
    store.fork("src", "fresh")  # the newest that verifies: generation 1
    assert store.load("fresh").metadata["forked_from"]["generation"] == 1


def test_fork_into_a_deleted_run_fences_its_old_holders(store):
    run_of(store, "src", 1)
    old = store.acquire("reused", owner="old", ttl=30)
    old.commit({"old": True})
    store.delete("reused")
    store.fork("src", "reused")
    with pytest.raises(FencedError):
        old.commit({"old": "again"})
    assert store.load("reused").state == {"i": 1}
    lease = store.acquire("reused", owner="new", ttl=30)
    assert lease.token > old.token and lease.generation == 1
