"""The core store on real Valkey and Redis servers: fencing, CAS, rotation, loading."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import datetime, timezone
from decimal import Decimal

import pytest
import redis

from redis_ckpt import (
    CheckpointStore,
    ConflictError,
    CorruptCheckpointError,
    FencedError,
    InvalidRunIdError,
    LeaseHeldError,
    LeaseLostError,
    SchemaVersionError,
    UnsupportedTypeError,
)
from redis_ckpt.core.frame import read_header
from redis_ckpt.core.keys import RunKeys
from redis_ckpt.drivers.scripts import SCRIPTS
from redis_ckpt.store import Lease

pytestmark = pytest.mark.server


def keys(store: CheckpointStore, run: str) -> RunKeys:
    return RunKeys(store.namespace, run)


def test_acquire_commit_load_round_trip(store):
    state = {"step": 3, "when": datetime(2026, 5, 25, tzinfo=timezone.utc), "cost": Decimal("1.10"), "seen": {1, 2}}
    with store.acquire("job-1", owner="worker-a", ttl=10) as lease:
        assert lease.token == 1 and lease.generation == 0 and lease.kind == "acquire"
        assert lease.commit(state, metadata={"note": "first"}) == 1
        assert lease.commit({**state, "step": 4}) == 2
    ck = store.load("job-1")
    assert ck.generation == 2 and ck.head_generation == 2 and ck.token == 1
    assert ck.state == {**state, "step": 4}
    assert type(ck.state["when"]) is datetime and type(ck.state["cost"]) is Decimal and type(ck.state["seen"]) is set
    assert ck.owner == "worker-a" and ck.skipped == () and not ck.fell_back
    assert store.generations("job-1")[1].metadata == {"note": "first"}


def test_load_is_none_only_for_a_run_never_committed(store):
    assert store.load("never") is None
    store.acquire("acquired-only", owner="a", ttl=5)
    assert store.load("acquired-only") is None


def test_live_lease_of_another_owner_is_refused(store):
    store.acquire("r", owner="alice", ttl=10)
    with pytest.raises(LeaseHeldError) as e:
        store.acquire("r", owner="bob", ttl=10)
    assert e.value.owner == "alice" and 0 < e.value.ms_left <= 10_000 and e.value.run_id == "r"


def test_zombie_worker_is_fenced_after_takeover(store):
    zombie = store.acquire("job", owner="zombie", ttl=0.2)
    assert zombie.commit({"step": 1}) == 1
    time.sleep(0.35)  # the zombie stalls past its lease (GC pause, SIGSTOP, network partition)
    fresh = store.acquire("job", owner="fresh", ttl=10)
    assert fresh.kind == "takeover" and fresh.token == zombie.token + 1 and fresh.generation == 1
    assert fresh.commit({"step": 2}) == 2
    with pytest.raises(FencedError) as e:
        zombie.commit({"step": 99})
    assert (e.value.token, e.value.fence, e.value.run_id) == (1, 2, "job")
    ck = store.load("job")
    assert ck.state == {"step": 2} and ck.owner == "fresh"
    fenced = [ev for ev in store.events("job") if ev.kind == "fenced"]
    assert len(fenced) == 1
    assert fenced[0].fields["owner"] == "zombie" and fenced[0].get_int("token") == 1 and fenced[0].get_int("fence") == 2
    with pytest.raises(LeaseLostError) as lost:
        zombie.renew()
    assert lost.value.holder == "fresh" and lost.value.holder_token == 2 and lost.value.fence == 2


def test_a_token_above_the_fence_says_the_server_lost_fence_increments_not_a_takeover(store):
    """A token the server never handed out as far as it knows (token > fence: a restore or a
    failover lost the fence's increments) is refused, and the message says so instead of
    blaming the run's own holder (whose acquire event carries the fence's value)."""
    lease = store.acquire("behind", owner="worker-a", ttl=10)
    assert lease.commit({"step": 1}) == 1 and lease.token == 1
    with pytest.raises(FencedError) as e:
        store.commit("behind", {"step": 2}, token=999999, expected_generation=1)
    assert (e.value.token, e.value.fence, e.value.cause, e.value.by) == (999999, 1, "fence_behind", None)
    message = str(e.value)
    assert "above the fence" in message and "lost" in message
    assert "worker-a" not in message and "acquired" not in message and "takeover" not in message
    assert store.load("behind").state == {"step": 1}


def test_two_writers_with_the_same_expected_generation_exactly_one_wins(store):
    lease = store.acquire("race", owner="w", ttl=30)
    for round_ in range(15):
        expected = round_
        barrier = threading.Barrier(2)
        outcomes: list[object] = []

        def write(i: int) -> None:
            barrier.wait()
            try:
                outcomes.append(store.commit("race", {"writer": i, "round": round_}, token=lease.token,
                                             expected_generation=expected))
            except ConflictError as exc:
                outcomes.append(exc)

        threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wins = [o for o in outcomes if isinstance(o, int)]
        losses = [o for o in outcomes if isinstance(o, ConflictError)]
        assert wins == [expected + 1] and len(losses) == 1
        assert (losses[0].expected, losses[0].actual) == (expected, expected + 1)
    assert store.load("race").generation == 15


def test_rotation_keeps_the_newest_n_generations(store, client):
    lease = store.acquire("rot", owner="w", ttl=30)
    for i in range(6):
        lease.commit({"i": i})
    gens = store.generations("rot")
    assert [g.generation for g in gens] == [6, 5, 4] and all(g.ok for g in gens)
    k = keys(store, "rot")
    assert [client.exists(k.generation(n)) for n in range(1, 7)] == [0, 0, 0, 1, 1, 1]


def test_a_smaller_keep_drops_every_surplus_generation(client, namespace):
    wide = CheckpointStore(client, namespace=namespace, keep=5)
    lease = wide.acquire("shrink", owner="w", ttl=30)
    for i in range(5):
        lease.commit(i)
    narrow = CheckpointStore(client, namespace=namespace, keep=2)
    assert narrow.commit("shrink", 5, token=lease.token, expected_generation=5) == 6
    assert [g.generation for g in narrow.generations("shrink")] == [6, 5]
    k = keys(narrow, "shrink")
    assert sum(client.exists(k.generation(n)) for n in range(1, 7)) == 2


def test_a_retried_commit_with_the_same_commit_id_applies_once(store):
    from redis_ckpt.drivers.sync import drive
    from redis_ckpt.drivers.targets import sync_target

    lease = store.acquire("idem", owner="w", ttl=30)
    flow = lambda: store.core.commit_flow("idem", {"x": 1}, token=lease.token, expected_generation=0,
                                           owner="w", commit_id="c-1")
    assert drive(flow(), sync_target(store.client, SCRIPTS)) == 1
    assert drive(flow(), sync_target(store.client, SCRIPTS)) == 1  # the resend after a lost reply
    kinds = [e.kind for e in store.events("idem")]
    assert kinds.count("commit") == 1 and kinds.count("commit_retry") == 1
    assert store.load("idem").generation == 1


@pytest.mark.parametrize("op", ["export", "fork"])
def test_export_or_fork_past_a_damaged_newest_generation_says_so_as_load_does(store, client, caplog, op):
    """Both take the newest generation that verifies, as documented; they used to move past a
    damaged one without a word, where a load logs an ERROR and records a fallback event."""
    lease = store.acquire("dmg", owner="w", ttl=30)
    for i in range(3):
        lease.commit({"i": i})
    k = keys(store, "dmg")
    client.setrange(k.generation(3), 30, b"\xff\xff\xff\xff")
    with caplog.at_level(logging.ERROR, logger="redis_ckpt"):
        if op == "export":
            assert read_header(store.export_frame("dmg")).generation == 2
        else:
            store.fork("dmg", "dmg-copy", by="ops")
            assert store.load("dmg-copy").state == {"i": 1}
    assert any(op in r.message and "generation 2" in r.message and r.levelno == logging.ERROR
               for r in caplog.records)
    fallback = [e for e in store.events("dmg") if e.kind == "fallback"]
    assert fallback and fallback[-1].get_int("loaded") == 2 and "g3: checksum" in fallback[-1].fields["skipped"]
    assert fallback[-1].fields["op"] == op


def test_damaged_newest_generation_loads_the_previous_one_loudly(store, client, caplog):
    lease = store.acquire("dmg", owner="w", ttl=30)
    for i in range(3):
        lease.commit({"i": i})
    k = keys(store, "dmg")
    client.setrange(k.generation(3), 30, b"\xff\xff\xff\xff")  # bytes overwritten in place
    with caplog.at_level(logging.ERROR, logger="redis_ckpt"):
        ck = store.load("dmg")
    assert ck.generation == 2 and ck.state == {"i": 1} and ck.head_generation == 3
    assert [(s.generation, s.reason) for s in ck.skipped] == [(3, "checksum")]
    assert any("generation 2" in r.message and r.levelno == logging.ERROR for r in caplog.records)
    fallback = [e for e in store.events("dmg") if e.kind == "fallback"]
    assert fallback and fallback[-1].get_int("loaded") == 2 and "g3: checksum" in fallback[-1].fields["skipped"]

    blob = client.get(k.generation(2))
    client.set(k.generation(2), blob[: len(blob) // 2])  # truncated (half-written)
    ck = store.load("dmg")
    assert ck.generation == 1 and [(s.generation, s.reason) for s in ck.skipped] == [(3, "checksum"), (2, "truncated")]


@pytest.mark.parametrize("engine", ["valkey", "redis"])
def test_a_full_server_still_loads_past_a_damaged_generation(make_server, engine, caplog):
    """A server at maxmemory (noeviction, as the probe requires) refuses writes but serves
    reads: the fallback's audit event is refused (OOM), the load still returns the newest
    good generation (the refusal logged), not a ServerError."""
    server = make_server(engine)
    client = server.client()
    store = CheckpointStore(server.client(), namespace="full")
    lease = store.acquire("dmg", owner="w", ttl=30)
    for i in range(3):
        lease.commit({"i": i})
    client.setrange(keys(store, "dmg").generation(3), 30, b"\xff\xff\xff\xff")
    reader = CheckpointStore(server.client(), namespace="full")  # knows nothing of the run yet
    client.config_set("maxmemory", 1)  # every write refused: OOM
    try:
        with caplog.at_level(logging.WARNING, logger="redis_ckpt"):
            ck = reader.load("dmg")
    finally:
        client.config_set("maxmemory", 0)
    assert ck is not None and ck.generation == 2 and ck.state == {"i": 1}
    assert [(s.generation, s.reason) for s in ck.skipped] == [(3, "checksum")]
    assert any("fallback" in r.message and "audit event" in r.message for r in caplog.records)
    store.close()
    reader.close()
    client.close()


def test_every_generation_damaged_is_an_error_naming_each(store, client):
    lease = store.acquire("bad", owner="w", ttl=30)
    for i in range(3):
        lease.commit({"i": i})
    k = keys(store, "bad")
    client.set(k.generation(3), b"garbage")
    client.delete(k.generation(2))
    g1 = client.get(k.generation(1))
    client.set(k.generation(1), g1 + b"x")
    with pytest.raises(CorruptCheckpointError) as e:
        store.load("bad")
    assert set(e.value.reasons) == {1, 2, 3}
    assert e.value.reasons[3].startswith("bad-magic") and e.value.reasons[2].startswith("missing")
    assert e.value.reasons[1].startswith("trailing-bytes")


def test_a_frame_copied_from_another_generation_is_detected(store, client):
    lease = store.acquire("swap", owner="w", ttl=30)
    for i in range(3):
        lease.commit({"i": i})
    k = keys(store, "swap")
    client.set(k.generation(3), client.get(k.generation(2)))
    ck = store.load("swap")
    assert ck.generation == 2 and ck.skipped[0].reason == "wrong-generation"


def test_schema_migrations_run_in_order_and_gaps_or_newer_schemas_refuse(client, namespace):
    v1 = CheckpointStore(client, namespace=namespace, schema_version=1)
    lease = v1.acquire("mig", owner="w", ttl=30)
    lease.commit({"step_5_artifact": "x"})
    v3 = CheckpointStore(client, namespace=namespace, schema_version=3)
    with pytest.raises(SchemaVersionError) as gap:
        v3.load("mig")
    assert (gap.value.found, gap.value.supported) == (1, 3)
    v3.register_migration(1, lambda s: {"artifacts": {"step_5": s["step_5_artifact"]}})

    @v3.register_migration(2)
    def nest(s):
        return {"artifacts": {k: {"value": v} for k, v in s["artifacts"].items()}}

    ck = v3.load("mig")
    assert ck.state == {"artifacts": {"step_5": {"value": "x"}}}
    assert (ck.schema_version, ck.stored_schema_version) == (3, 1)
    v3.commit("mig", ck.state, token=lease.token, expected_generation=1)
    with pytest.raises(SchemaVersionError) as newer:
        v1.load("mig")
    assert (newer.value.found, newer.value.supported) == (3, 1)


def test_unknown_type_fails_at_commit_naming_the_field_and_writes_nothing(store):
    lease = store.acquire("types", owner="w", ttl=30)
    lease.commit({"ok": 1})

    class Custom:
        pass

    with pytest.raises(UnsupportedTypeError) as e:
        lease.commit({"steps": [1, {"when": Custom()}]})
    assert "steps" in e.value.path and "Custom" in str(e.value) and e.value.run_id == "types"
    assert store.load("types").state == {"ok": 1} and lease.generation == 1


def test_revoke_fences_every_holder(store):
    lease = store.acquire("rv", owner="w", ttl=30)
    lease.commit(1)
    assert store.revoke("rv", by="ops") == lease.token + 1
    with pytest.raises(FencedError):
        lease.commit(2)
    nxt = store.acquire("rv", owner="other", ttl=30)
    assert nxt.token == lease.token + 2 and nxt.commit(2) == 2
    revokes = [e for e in store.events("rv") if e.kind == "revoke"]
    assert revokes[0].fields["previous_owner"] == "w" and revokes[0].fields["by"] == "ops"


def test_delete_removes_data_but_the_fence_survives(store, client):
    lease = store.acquire("del", owner="w", ttl=30)
    for i in range(3):
        lease.commit(i)
    assert store.delete("del") == 3
    assert store.load("del") is None
    k = keys(store, "del")
    assert not client.exists(k.head, k.lease, *(k.generation(n) for n in (1, 2, 3)))
    with pytest.raises(FencedError):
        lease.commit(99)
    again = store.acquire("del", owner="w2", ttl=30)
    assert again.token > lease.token and again.generation == 0


def test_release_lets_the_next_owner_in_without_a_takeover(store):
    first = store.acquire("rel", owner="a", ttl=30)
    assert first.release() is True
    second = store.acquire("rel", owner="b", ttl=30)
    assert second.kind == "acquire" and second.token == first.token + 1
    assert first.release() is False  # no longer the holder: nothing changes
    with pytest.raises(LeaseHeldError):
        store.acquire("rel", owner="c", ttl=30)


def test_renew_keeps_the_lease_alive(store):
    lease = store.acquire("ren", owner="a", ttl=1.0)
    for _ in range(4):
        time.sleep(0.4)  # past the original TTL after three rounds; a loaded machine has 0.6 s of slack
        lease.renew()
    with pytest.raises(LeaseHeldError):
        store.acquire("ren", owner="b", ttl=1)


def test_scripts_are_reloaded_after_script_flush(store, client):
    lease = store.acquire("flush", owner="a", ttl=30)
    lease.commit(1)
    client.script_flush()
    assert lease.commit(2) == 2
    assert client.script_exists(SCRIPTS.sha("commit")) == [True]


@pytest.mark.parametrize("bad", ["", "a{b", "a}b", "a b", "tab\there", "x" * 201, "nl\n", "\x00", "\ud800", b"\xff\xfe", 42])
def test_bad_run_ids_are_refused_before_any_write(store, client, namespace, bad):
    before = set(client.scan_iter(f"{namespace}:*"))
    with pytest.raises(InvalidRunIdError):
        store.acquire(bad, owner="a", ttl=1)
    with pytest.raises(InvalidRunIdError):
        store.commit(bad, {}, token=1, expected_generation=0)
    with pytest.raises(InvalidRunIdError):
        store.load(bad)
    assert set(client.scan_iter(f"{namespace}:*")) == before


def test_an_empty_owner_is_refused_not_replaced_by_the_default(store, client, namespace):
    """owner=None means "the store's owner"; an explicit "" is a bad owner like any other, so
    a worker whose owner name came out empty learns it instead of acting as the default owner."""
    from redis_ckpt.aio import AsyncCheckpointStore
    from redis_ckpt.steps import StepRunner

    lease = store.acquire("empty-owner", ttl=5)
    lease.commit({"n": 1})
    before = {k: client.dump(k) for k in client.scan_iter(f"{namespace}:*")}
    with pytest.raises(InvalidRunIdError, match="owner"):
        store.acquire("empty-owner", owner="", ttl=5)
    with pytest.raises(InvalidRunIdError, match="owner"):
        store.commit("empty-owner", {"n": 2}, token=lease.token, expected_generation=1, owner="")
    with pytest.raises(InvalidRunIdError, match="owner"):
        StepRunner(store, "empty-owner", owner="")
    with pytest.raises(InvalidRunIdError, match="owner"):
        CheckpointStore(client, namespace=namespace, owner="")
    assert {k: client.dump(k) for k in client.scan_iter(f"{namespace}:*")} == before

    async def scenario():
        astore = await AsyncCheckpointStore.in_memory(namespace="unit")
        with pytest.raises(InvalidRunIdError, match="owner"):
            await astore.acquire("r", owner="", ttl=5)
        with pytest.raises(InvalidRunIdError, match="owner"):
            await astore.commit("r", {}, token=1, expected_generation=0, owner="")
        async with await astore.acquire("r", owner=None, ttl=5) as held:
            assert held.owner == astore.owner  # None still means the default
    asyncio.run(scenario())


def test_a_decoding_client_is_refused(durable_server, namespace):
    decoding = redis.Redis(host=durable_server.host, port=durable_server.port, decode_responses=True)
    with pytest.raises(ValueError, match="decode_responses"):
        CheckpointStore(decoding, namespace=namespace)


def test_keys_of_a_run_share_one_hash_slot(store, client):
    lease = store.acquire("slot", owner="a", ttl=30)
    lease.commit(1)
    from redis.crc import key_slot

    found = [k for k in client.scan_iter(f"{store.namespace}:*") if b":probe:" not in k]
    assert len(found) >= 4 and len({key_slot(k) for k in found}) == 1


def test_lease_is_a_context_manager_that_releases(store):
    with store.acquire("ctx", owner="a", ttl=30) as lease:
        assert isinstance(lease, Lease)
    assert store.info("ctx").lease_state == "released"
    store.acquire("ctx", owner="b", ttl=30)


def test_export_then_import_restores_a_deleted_run_and_never_lowers_the_fence(store):
    lease = store.acquire("exp", owner="w", ttl=30)
    for i in range(3):
        lease.commit({"i": i})
    frame = store.export_frame("exp")
    older = store.export_frame("exp", generation=2)
    fence_before = store.info("exp").fence
    store.delete("exp")
    assert store.import_frame(frame) == 3
    info = store.info("exp")
    assert info.fence > fence_before and info.lease_owner is None
    ck = store.load("exp")
    assert ck.state == {"i": 2} and ck.generation == 3
    from redis_ckpt import ConflictError as Conflict

    with pytest.raises(Conflict):
        store.import_frame(older)  # the head is already past generation 2
    with pytest.raises(FencedError):
        lease.commit({"i": 3})
    from redis_ckpt import FrameError, NotFoundError

    with pytest.raises(FrameError):
        store.import_frame(frame[:-1])
    with pytest.raises(NotFoundError):
        store.export_frame("exp", generation=1)
    with pytest.raises(NotFoundError):
        store.export_frame("nothing-here")
