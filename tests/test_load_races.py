"""Loading while the run moves, and loading a run whose head is gone, on real servers.

* keep=1 and a writer committing in a loop: a concurrent load reads the head and the newest
  generation as one snapshot; a moving head is never reported as corruption.
* a head that is missing while generations exist is corruption, never "no checkpoint",
  whatever the audit stream still holds (an operator's DEL of the head, then hundreds of idle
  acquire/release events); a run removed with ``delete`` loads as None.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from redis_ckpt import CheckpointStore, CorruptCheckpointError
from redis_ckpt.core.keys import RunKeys
from redis_ckpt.aio import AsyncCheckpointStore

pytestmark = pytest.mark.server


def idle_events(store: CheckpointStore, run: str, pairs: int) -> None:
    """``pairs`` acquire/release pairs: audit events that carry no commit."""
    for _ in range(pairs):
        store.acquire(run, owner="idler", ttl=5).release()


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


# --------------------------------------------------------------------------- a missing head


def test_a_deleted_head_is_corruption_after_300_idle_events(client, namespace):
    store = CheckpointStore(client, namespace=namespace, keep=3)
    with store.acquire("r", owner="a", ttl=10) as lease:
        for n in range(1, 4):
            lease.commit({"n": n})
    k = RunKeys(namespace, "r")
    client.delete(k.head)  # an operator's mistake, or a partial restore
    idle_events(store, "r", 300)
    assert client.exists(k.generation(1), k.generation(2), k.generation(3)) == 3
    with pytest.raises(CorruptCheckpointError) as e:
        store.load("r")
    assert "head" in str(e.value) and e.value.run_id == "r"


def test_a_deleted_head_is_corruption_when_the_audit_stream_is_gone_too(client, namespace):
    store = CheckpointStore(client, namespace=namespace, keep=2)
    with store.acquire("r", owner="a", ttl=10) as lease:
        lease.commit({"n": 1})
        lease.commit({"n": 2})
    k = RunKeys(namespace, "r")
    client.delete(k.head, k.events)
    with pytest.raises(CorruptCheckpointError):
        store.load("r")
    idle_events(store, "r", 3)  # a fresh-looking audit stream, no commit in it
    with pytest.raises(CorruptCheckpointError):
        store.load("r")


def test_a_trimmed_audit_stream_does_not_hide_generations(client, namespace):
    store = CheckpointStore(client, namespace=namespace, keep=2, events_maxlen=100)
    with store.acquire("r", owner="a", ttl=10) as lease:
        lease.commit({"n": 1})
    k = RunKeys(namespace, "r")
    client.delete(k.head)
    idle_events(store, "r", 300)  # the stream is capped at ~100: the commit event is gone
    assert b"commit" not in [f[b"kind"] for _, f in client.xrange(k.events)]
    with pytest.raises(CorruptCheckpointError):
        store.load("r")


def test_chunked_generations_without_a_head_are_found(client, namespace):
    store = CheckpointStore(client, namespace=namespace, keep=1, chunk_bytes=1024, events_maxlen=100)
    with store.acquire("r", owner="a", ttl=10) as lease:
        lease.commit({"pad": b"y" * 5000})
    k = RunKeys(namespace, "r")
    client.delete(k.head, k.generation(1), k.events)  # only the chunks are left
    assert client.exists(k.chunk(1, 0))
    with pytest.raises(CorruptCheckpointError):
        store.load("r")


def test_a_run_deleted_with_delete_loads_as_none_whatever_follows(client, namespace):
    store = CheckpointStore(client, namespace=namespace, keep=3, events_maxlen=100)
    with store.acquire("r", owner="a", ttl=10) as lease:
        lease.commit({"n": 1})
        lease.commit({"n": 2})
    assert store.delete("r") == 2
    assert store.load("r") is None
    idle_events(store, "r", 300)  # the delete event is trimmed away as well
    assert store.load("r") is None


def test_runs_never_committed_load_as_none(client, namespace):
    store = CheckpointStore(client, namespace=namespace, events_maxlen=100)
    assert store.load("never-seen") is None
    store.acquire("acquired-once", owner="a", ttl=5)
    assert store.load("acquired-once") is None
    idle_events(store, "idle", 300)  # a long history without a commit
    assert store.load("idle") is None
    store.revoke("revoked")
    assert store.load("revoked") is None


def test_the_search_for_headless_generations_escapes_glob_characters(client, namespace):
    """Run ``ab`` has generations but no head; runs whose ids read as patterns matching it
    (``a*``, ``a?``, ``a[b]``, ``a\\b``) were never committed and must load as None."""
    store = CheckpointStore(client, namespace=namespace, keep=1, events_maxlen=100)
    with store.acquire("ab", owner="a", ttl=10) as lease:
        lease.commit(1)
    client.delete(RunKeys(namespace, "ab").head)
    for run in ("a*", "a?", "a[b]", "a\\b"):
        idle_events(store, run, 150)  # trimmed: the stream cannot tell, the keys must
        assert store.load(run) is None, run
    with pytest.raises(CorruptCheckpointError):
        store.load("ab")


def test_verify_and_generations_report_a_missing_head_as_damage(client, durable_server, namespace):
    """store.generations() answered [] for a run whose head was lost while its generations are
    there, so `redis-ckpt verify` (a health check) printed "no generations" and exited 0 on a
    run whose load raises CorruptCheckpointError. Both now say it is damaged (exit 1)."""
    from test_cli import invoke

    store = CheckpointStore(client, namespace=namespace, keep=2)
    with store.acquire("r", owner="a", ttl=10) as lease:
        lease.commit({"n": 1})
        lease.commit({"n": 2})
    store.acquire("idle", owner="a", ttl=10).release()  # acquired, never committed: nothing to report
    client.delete(RunKeys(namespace, "r").head)
    with pytest.raises(CorruptCheckpointError) as e:
        store.generations("r")
    assert e.value.run_id == "r" and "head is missing" in str(e.value)
    assert store.generations("idle") == []
    for args in (["verify", "r"], ["verify", "--all"]):
        out = invoke(args, url=durable_server.url, namespace=namespace)
        assert out.exit_code == 1 and "'r'" in out.stderr and "a bug" not in out.stderr, out.output
    assert invoke(["verify", "idle"], url=durable_server.url, namespace=namespace).exit_code == 0


def test_export_and_fork_report_a_missing_head_as_damage(client, durable_server, namespace):
    """export_frame (and fork, which reads the source through it) read only the head: for a
    run whose head was lost while its generations are there they raised NotFoundError "has
    no committed generation", so `redis-ckpt export RUN` - an operator's backup - said the run
    was empty where load raises CorruptCheckpointError. Both now say it is damaged; a run
    only acquired is still "no committed generation"."""
    from redis_ckpt import NotFoundError
    from test_cli import invoke

    store = CheckpointStore(client, namespace=namespace, keep=2)
    with store.acquire("r", owner="a", ttl=10) as lease:
        lease.commit({"n": 1})
        lease.commit({"n": 2})
    store.acquire("idle", owner="a", ttl=10).release()
    client.delete(RunKeys(namespace, "r").head)
    for op in (lambda: store.export_frame("r"), lambda: store.fork("r", "copy", by="ops")):
        with pytest.raises(CorruptCheckpointError) as e:
            op()
        assert e.value.run_id == "r" and "head is missing" in str(e.value)
    assert store.info("copy").fence == 0  # the fork wrote nothing
    with pytest.raises(NotFoundError):
        store.export_frame("idle")
    out = invoke(["export", "r", "-o", "-"], url=durable_server.url, namespace=namespace)
    assert out.exit_code == 1 and "head is missing" in out.stderr, out.output


@pytest.mark.parametrize("op", ["delete", "prune"])
@pytest.mark.parametrize("chunk_bytes", [None, 1024])
def test_delete_of_a_run_whose_head_is_missing_removes_its_generations(client, namespace, chunk_bytes, op):
    """delete read which generations to remove from the head only: for a run whose head was
    lost it removed nothing but the lease and answered 0, leaving every g:* key (and chunk)
    without an expiry; once the delete event was trimmed from the audit stream, load found them
    again and the run was corrupt once more. delete now finds them (the same SCAN as load) and
    removes them; so does prune."""
    options = {"chunk_bytes": chunk_bytes} if chunk_bytes else {}
    store = CheckpointStore(client, namespace=namespace, keep=2, events_maxlen=100, **options)
    with store.acquire("r", owner="a", ttl=10) as lease:
        lease.commit({"pad": b"y" * 5000, "n": 1})
        lease.commit({"pad": b"z" * 5000, "n": 2})
    k = RunKeys(namespace, "r")
    client.delete(k.head)
    if op == "delete":
        assert store.delete("r") == 2
    else:  # prune removed the lease and events and left the generations: load found them again
        time.sleep(0.01)
        assert [(p.run_id, p.generations) for p in store.prune(idle=0.001)] == [("r", 2)]
    assert sorted(client.scan_iter(match=f"{namespace}:{{r}}:g:*")) == []
    assert store.load("r") is None
    idle_events(store, "r", 300)  # the delete event is trimmed away
    assert store.load("r") is None


def test_a_run_whose_head_was_lost_is_listed_as_damaged_not_acquired(client, durable_server, namespace):
    """info/runs/namespaces showed a run whose head was lost (its generations still there) as
    "acquired", GEN 0: a run never committed, where load raises CorruptCheckpointError. Its
    status is "damaged" now (info still answers: delete reads it first); a run only acquired,
    or deleted, keeps its status."""
    from test_cli import as_json, invoke

    store = CheckpointStore(client, namespace=namespace, keep=2)
    with store.acquire("r", owner="a", ttl=10) as lease:
        lease.commit({"n": 1})
    store.acquire("idle", owner="a", ttl=10).release()
    with store.acquire("gone", owner="a", ttl=10) as lease:
        lease.commit({"n": 1})
    store.delete("gone", by="ops")
    client.delete(RunKeys(namespace, "r").head)
    assert store.info("r").status == "damaged" and store.info("r").head_lost
    assert (store.info("idle").status, store.info("gone").status) == ("acquired", "deleted")
    assert not store.info("idle").head_lost
    listed = invoke(["runs", "--json"], url=durable_server.url, namespace=namespace)
    assert {r["run"]: r["status"] for r in as_json(listed)["runs"]}["r"] == "damaged", listed.output
    assert store.delete("r", by="ops") == 1  # still deletable, generations included
    assert store.info("r").status == "deleted"
