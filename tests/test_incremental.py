"""Shared chunks (dedup=True): kept generations share content-addressed chunks; a commit
sends what changed; rotation and delete free what no kept generation lists (issue 16)."""

from __future__ import annotations

import os
import random
import time

import pytest

from redis_ckpt import CheckpointStore, CorruptCheckpointError
from redis_ckpt.core.dedup import MAGIC, read_manifest
from redis_ckpt.core.keys import RunKeys

pytestmark = pytest.mark.server


@pytest.fixture
def store_options() -> dict:
    return {"keep": 3, "dedup": True}


def history(n: int, seed: int = 5) -> dict:
    """A growing list of message-like dicts: an append changes only the end."""
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "zeta"]
    return {"thread": "t-1", "messages": [{"i": i, "role": ("user", "assistant")[i % 2],
                                           "content": " ".join(rng.choice(words) for _ in range(60))}
                                          for i in range(n)], "step": n}


def shared_keys(client, k: RunKeys) -> set[str]:
    return {key.decode() for key in client.scan_iter(f"{k.base}:x:*", count=1000)} - {k.refs}


def refs(client, k: RunKeys) -> dict[str, int]:
    return {a.decode(): int(n) for a, n in client.hgetall(k.refs).items()}


def manifests(client, k: RunKeys, store) -> dict[int, tuple[str, ...]]:
    out = {}
    for g in store.info(k.run_id).kept:
        m = read_manifest(client.get(k.generation(g)), run_id=k.run_id, generation=g)
        out[g] = m.addresses
    return out


def committed(store, client, run: str, *sizes: int):
    """(keys, lease, manifests) after committing histories of ``sizes`` messages to ``run``."""
    lease = store.acquire(run, owner="w", ttl=30)
    for n in sizes:
        lease.commit(history(n))
    k = RunKeys(store.namespace, run)
    return k, lease, manifests(client, k, store)


def expected_refs(ms: dict[int, tuple[str, ...]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for addresses in ms.values():
        for a in set(addresses):
            out[a] = out.get(a, 0) + 1
    return out


def test_generations_share_chunks_and_rotation_frees_the_rest(store, client, namespace):
    k = RunKeys(namespace, "grow")
    lease = store.acquire("grow", owner="w", ttl=30)
    states = [history(400 + 10 * i) for i in range(6)]
    for s in states:
        lease.commit(s)
    assert client.get(k.generation(6))[:4] == MAGIC
    ms = manifests(client, k, store)
    assert sorted(ms) == [4, 5, 6]
    # consecutive generations share most chunks
    assert len(set(ms[5]) & set(ms[6])) >= len(set(ms[6])) - 4
    assert refs(client, k) == expected_refs(ms)
    assert shared_keys(client, k) == {k.shared(a) for a in expected_refs(ms)}
    assert store.load("grow").state == states[-1]
    assert [g.ok for g in store.generations("grow")] == [True, True, True]
    assert not [key for key in client.scan_iter(f"{k.base}:stage:*")]


def test_a_commit_stages_only_the_chunks_the_run_does_not_hold(store, client, namespace):
    k = RunKeys(namespace, "sent")
    lease = store.acquire("sent", owner="w", ttl=30)
    lease.commit(history(600))
    before = set(refs(client, k))
    lease.commit(history(601))
    after = set(refs(client, k))
    staged = store.core.manifests[("sent", 2)] - before
    assert 0 < len(after - before) == len(staged) <= 4  # an append: a few new chunks
    # another process, which holds nothing yet, commits the next append: the script asks
    # for the chunks it lacks (none: they are all held) and for nothing else
    other = CheckpointStore(client, namespace=namespace, keep=3, dedup=True)
    g = other.commit("sent", history(602), token=lease.token, expected_generation=2)
    assert g == 3 and other.load("sent").state == history(602)
    assert refs(client, k) == expected_refs(manifests(client, k, store))


def test_a_store_that_thinks_the_run_holds_chunks_it_does_not_is_asked_for_them(store, client, namespace):
    k = RunKeys(namespace, "wrong")
    lease = store.acquire("wrong", owner="w", ttl=30)
    lease.commit(history(500))
    # the chunks it remembers are gone (deleted by hand: as if freed meanwhile)
    for a in refs(client, k):
        client.hdel(k.refs, a)
        client.delete(k.shared(a))
    assert lease.commit(history(501)) == 2
    assert store.load("wrong").state == history(501)
    assert refs(client, k) == expected_refs({2: manifests(client, k, store)[2]}) | \
        {a: n for a, n in refs(client, k).items() if a not in manifests(client, k, store)[2]}


def test_a_commit_reusing_a_chunk_whose_key_is_gone_stages_it_again(store, client, namespace):
    """The run's x:refs still counts a chunk whose key was deleted (by hand, a partial
    restore): the holder reused it without staging and the script acknowledged a generation
    no load could read. The script checks that each reused chunk's key exists (NEED_CHUNKS)."""
    k, lease, ms = committed(store, client, "gone", 500, 501)
    lost = sorted(set(ms[1]) & set(ms[2]))[0]  # a chunk an append leaves as it is
    client.delete(k.shared(lost))
    assert lease.commit(history(502)) == 3
    assert lost in manifests(client, k, store)[3] and client.exists(k.shared(lost))
    ck = store.load("gone")
    assert (ck.generation, ck.state, ck.skipped) == (3, history(502), ())
    assert refs(client, k) == expected_refs(manifests(client, k, store))


def test_a_plain_store_committing_over_shared_generations_frees_them(store, client, namespace):
    k = RunKeys(namespace, "mixed")
    lease = store.acquire("mixed", owner="w", ttl=30)
    lease.commit(history(500))
    lease.commit(history(510))
    plain = CheckpointStore(client, namespace=namespace, keep=3)
    for i in range(3):
        plain.commit("mixed", history(520 + i), token=lease.token, expected_generation=2 + i)
    assert store.info("mixed").kept == (3, 4, 5)
    assert refs(client, k) == {} and shared_keys(client, k) == set()
    assert plain.load("mixed").state == history(522)


def test_a_damaged_chunk_names_every_generation_that_lists_it(store, client, namespace):
    k, _, ms = committed(store, client, "dmg", 500, 501, 502)
    first = sorted(set(ms[1]) & set(ms[2]) & set(ms[3]))[0]  # a chunk every generation lists
    client.setrange(k.shared(first), 100, b"\x00\xff\x00")
    gens = store.generations("dmg")
    assert [(g.generation, g.ok, g.reason) for g in gens] == [(3, False, "checksum"), (2, False, "checksum"),
                                                               (1, False, "checksum")]
    assert all(first in g.detail for g in gens)
    with pytest.raises(CorruptCheckpointError) as info:
        store.load("dmg")
    assert set(info.value.reasons) == {1, 2, 3}


def test_load_falls_back_to_the_newest_generation_without_the_missing_chunk(store, client, namespace):
    k, _, ms = committed(store, client, "fb", 500, 520)
    only_new = sorted(set(ms[2]) - set(ms[1]))
    client.delete(k.shared(only_new[0]))
    ck = store.load("fb")
    assert ck.generation == 1 and ck.state == history(500)
    assert ck.skipped[0].generation == 2 and ck.skipped[0].reason == "missing" and only_new[0] in ck.skipped[0].detail


def test_delete_removes_every_shared_chunk_and_export_import_carry_a_whole_frame(store, client, namespace):
    k = RunKeys(namespace, "del")
    lease = store.acquire("del", owner="w", ttl=30)
    lease.commit(history(500))
    lease.commit(history(505))
    frame = store.export_frame("del")
    assert frame[:4] != MAGIC and len(frame) > 100_000
    store.delete("del")
    assert shared_keys(client, k) == set() and not client.exists(k.refs)
    assert store.import_frame(frame) == 2
    assert store.load("del").state == history(505)
    assert shared_keys(client, k) == set()  # an imported frame is self-contained


def test_verify_all_names_every_generation_using_a_damaged_chunk(store, client, namespace, durable_server):
    import json

    from click.testing import CliRunner

    from redis_ckpt.cli import cli

    k, _, ms = committed(store, client, "cli", 500, 501, 502)
    shared = sorted(set(ms[1]) & set(ms[2]) & set(ms[3]))[0]
    only_newest = sorted(set(ms[3]) - set(ms[1]) - set(ms[2]))[0]
    original = client.get(k.shared(shared))
    client.setrange(k.shared(shared), 10, b"\xff\xfe")

    def failures(*args: str) -> list[dict]:
        result = CliRunner().invoke(cli, ["verify", *args, "--json", "--url", durable_server.url,
                                          "--namespace", namespace])
        assert result.exit_code == 1 and "Traceback" not in result.output
        return json.loads(result.stdout)["failures"]

    named = failures("--all")
    assert sorted(f["generation"] for f in named) == [1, 2, 3]
    assert all(shared in f["detail"] and f["reason"] == "checksum" for f in named)
    client.set(k.shared(shared), original)
    client.delete(k.shared(only_newest))  # a chunk only the newest lists: only g3 is named
    named = failures("cli")
    assert [(f["generation"], f["reason"]) for f in named] == [(3, "missing")] and only_newest in named[0]["detail"]


def test_the_async_store_shares_chunks_too(client, namespace, durable_server):
    import asyncio

    from redis_ckpt.aio import AsyncCheckpointStore

    async def main() -> None:
        store = await AsyncCheckpointStore.from_url(durable_server.url, namespace=namespace, keep=2, dedup=True)
        try:
            lease = await store.acquire("aio", owner="w", ttl=30)
            for n in (400, 401, 402):
                await lease.commit(history(n))
            assert (await store.load("aio")).state == history(402)
        finally:
            await store.close()

    asyncio.run(main())
    k = RunKeys(namespace, "aio")
    ms = {g: read_manifest(client.get(k.generation(g)), run_id="aio", generation=g).addresses for g in (2, 3)}
    assert refs(client, k) == expected_refs(ms)


def test_a_commit_after_a_load_that_met_a_damaged_chunk_repairs_it(store, client, namespace):
    k, lease, ms = committed(store, client, "repair", 500, 501)
    shared = sorted(set(ms[1]) & set(ms[2]))[0]
    client.setrange(k.shared(shared), 5, b"\x00\x01\x02")
    with pytest.raises(CorruptCheckpointError):
        store.load("repair")
    lease.commit(history(502))  # stages every chunk again: the damaged one is overwritten
    assert store.load("repair").state == history(502)
    assert [g.ok for g in store.generations("repair")] == [True, True, True]


def test_prune_and_usage_count_and_remove_the_shared_chunks(store, client, namespace):
    k, lease, ms = committed(store, client, "idle", 500, 510)
    lease.release()
    usage = store.usage("idle")
    listed = sum(client.memory_usage(k.shared(a), samples=0) for a in expected_refs(ms))
    assert usage.generations >= listed > 100_000  # the chunks count as the run's generations
    (pruned,) = store.prune(idle=0.001)
    assert pruned.run_id == "idle" and pruned.pruned
    assert shared_keys(client, k) == set() and not client.exists(k.refs)


def before_script(flow, name: str, hook):
    """``flow``, with ``hook()`` run once just before the first pipe carrying script ``name``
    goes out (another writer landing between what the flow read and its script)."""
    reply, error = None, None
    while True:
        try:
            op = flow.send(reply) if error is None else flow.throw(error)
        except StopIteration as done:
            return done.value
        if hook is not None and any(getattr(o, "name", None) == name for o in getattr(op, "ops", ())):
            hook()
            hook = None
        try:
            reply, error = (yield op), None
        except Exception as exc:  # noqa: BLE001 - handed back to the flow, as the driver does
            reply, error = None, exc


def test_a_commit_between_prunes_read_and_its_script_leaves_no_shared_chunk_behind(store, client, namespace):
    """prune.lua took the x:refs addresses read before it: chunks a commit shared meanwhile
    were never deleted (keys with no run and no expiry). It answers NEED_SHARED, as delete does."""
    k, lease, _ = committed(store, client, "late", 500)
    lease.release()  # a commit is fenced by its token, not by the lease: it can still land

    def late_commit() -> None:
        lease.commit(history(900, seed=9))  # new content: new shared chunks
        time.sleep(0.01)  # idle for more than the prune's 1 ms when its script runs

    pruned = store.run(before_script(store.core.prune_run_flow("late", idle_ms=1, by="admin", dry_run=False),
                                     "prune", late_commit))
    assert pruned.pruned and pruned.generations == 2
    assert shared_keys(client, k) == set() and not client.exists(k.refs)
    assert {key.decode() for key in client.scan_iter(f"{k.base}:*")} == {k.fence}


def test_dedup_refuses_a_retention_and_a_run_under_one_gets_plain_commits(store, client, namespace):
    from datetime import timedelta

    with pytest.raises(ValueError, match="retention"):
        CheckpointStore(client, namespace=namespace, dedup=True, retention=timedelta(days=1))
    plain = CheckpointStore(client, namespace=namespace, keep=3)
    lease = plain.acquire("kept", owner="w", ttl=30)
    lease.commit(history(500))
    lease.finish(keep_for=timedelta(hours=1))  # the run is now under a retention (its head says so)
    lease = store.acquire("kept", owner="w", ttl=30)
    assert lease.commit(history(510)) == 2  # sent as a plain commit: shared chunks cannot expire
    k = RunKeys(namespace, "kept")
    assert client.get(k.generation(2))[:4] != MAGIC and shared_keys(client, k) == set()
    assert 0 < client.pttl(k.generation(2)) <= 3_600_000
    assert store.load("kept").state == history(510)


def test_shared_chunks_need_no_command_beyond_the_documented_acl_line(client, namespace, durable_server):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent / "chaos"))
    from scenario_security import acl_rules

    user = f"dedup-{namespace}"
    client.execute_command("ACL", "SETUSER", user, "reset", *acl_rules(namespace, "pw"))
    try:
        url = f"redis://{user}:pw@{durable_server.host}:{durable_server.port}/0"
        with CheckpointStore.from_url(url, namespace=namespace, keep=2, dedup=True) as store:
            lease = store.acquire("acl", owner="w", ttl=30)
            for n in (500, 510, 520, 530):  # shared chunks staged, counted, freed by rotation
                lease.commit(history(n))
            assert store.load("acl").state == history(530)
            assert [g.ok for g in store.generations("acl")] == [True, True]
            store.delete("acl")
        assert shared_keys(client, RunKeys(namespace, "acl")) == set()
    finally:
        client.execute_command("ACL", "DELUSER", user)


def test_shared_chunks_of_a_compressed_frame_round_trip(client, namespace):
    store = CheckpointStore(client, namespace=namespace, keep=2, dedup=True, compression="zstd")
    lease = store.acquire("z", owner="w", ttl=30)
    states = [{"blob": os.urandom(200_000) + bytes(100_000), "n": n} for n in range(3)]
    for s in states:
        lease.commit(s)
    k = RunKeys(namespace, "z")
    assert client.get(k.generation(3))[:4] == MAGIC
    assert store.load("z").state == states[-1]
    assert [g.ok for g in store.generations("z")] == [True, True]


@pytest.fixture
def one_chunk_per_pipeline(monkeypatch):
    """A load asks for its chunks one pipeline per chunk (as a generation far over
    READ_BATCH_BYTES is read), so that every chunk comes in a batch of its own."""
    from redis_ckpt.core import dedup

    monkeypatch.setattr(dedup, "READ_BATCH_BYTES", 1)


def test_a_load_in_many_pipelines_reads_the_state_and_names_a_bad_chunk(store, client, namespace,
                                                                       one_chunk_per_pipeline):
    k, _, ms = committed(store, client, "batched", 500, 520)
    sent = client.info("commandstats").get("cmdstat_get", {}).get("calls", 0)
    assert store.load("batched").state == history(520)
    assert client.info("commandstats")["cmdstat_get"]["calls"] - sent >= len(ms[2])  # each chunk once at least
    last = ms[2][-1]  # a chunk of the last pipeline
    assert last not in ms[1]
    client.setrange(k.shared(last), 10, b"\x00\xff")
    ck = store.load("batched")
    assert ck.generation == 1 and ck.state == history(500)
    assert ck.skipped[0].generation == 2 and ck.skipped[0].reason == "checksum" and last in ck.skipped[0].detail


def test_a_generation_rotated_away_between_its_pipelines_is_read_again_from_the_new_head(
        store, client, namespace, one_chunk_per_pipeline, monkeypatch):
    from redis_ckpt.core.flows import shared

    lease = store.acquire("moving", owner="w", ttl=30)
    lease.commit(history(500))
    real, done = shared.read_batches, []

    def commits_after_the_first(lengths, limit=None):
        for i, batch in enumerate(real(lengths, limit)):
            yield batch
            if i == 0 and not done:  # while the load is between its pipelines: keep=3 rotates generation 1 out
                done.append(True)
                for n in (600, 700, 800):
                    lease.commit(history(n))

    monkeypatch.setattr(shared, "read_batches", commits_after_the_first)
    ck = store.load("moving")
    assert done and ck.generation == 4 and ck.state == history(800) and not ck.skipped
