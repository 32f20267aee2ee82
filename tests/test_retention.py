"""Retention on real Valkey and Redis servers, with short retentions: runs nobody touches are
removed by the server (data, lease, events, staging), their fence outlives them, and a token
is never handed out twice for a run id."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from redis_ckpt import CheckpointStore, ConflictError, FencedError, NotFoundError, OutOfRangeError
from redis_ckpt.core.keys import RunKeys
from redis_ckpt.testing.wait import wait_for

pytestmark = pytest.mark.server


def run_keys(client, namespace: str, run: str) -> set[str]:
    return {k.decode() for k in client.scan_iter(match=f"{namespace}:{{{run}}}:*")}


def wait_gone(client, namespace: str, run: str, but: set[str], timeout: float = 10.0) -> None:
    """Wait until the run's only keys are ``but`` (the server expires keys lazily and in a
    background cycle: a key past its expiry may linger until it is touched or sampled)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        left = run_keys(client, namespace, run)
        for key in left - but:
            client.exists(key)  # touching an expired key removes it
        if run_keys(client, namespace, run) <= but:
            return
        time.sleep(0.05)
    raise AssertionError(f"still there: {sorted(run_keys(client, namespace, run) - but)}")


def test_finish_lets_the_run_expire_and_the_fence_outlive_it(client, namespace):
    store = CheckpointStore(client, namespace=namespace, keep=2, chunk_bytes=1024)
    lease = store.acquire("r", owner="w", ttl=30)
    lease.commit({"blob": b"x" * 5000})  # chunked: its chunk keys expire too
    lease.commit({"i": 2})
    k = RunKeys(namespace, "r")
    before = time.time()
    expires = lease.finish(keep_for=0.4)
    assert lease.released and isinstance(expires, datetime)
    assert before + 0.3 < expires.timestamp() < time.time() + 0.5
    assert [e.kind for e in store.events("r")][-1] == "finish"
    assert store.load("r").state == {"i": 2}  # kept until then
    assert 0 < client.pttl(k.head) <= 400 and client.pttl(k.fence) > 3600_000
    wait_gone(client, namespace, "r", but={k.fence})
    assert store.load("r") is None
    assert store.info("r").fence == lease.token  # the fence stays, as a tombstone
    with pytest.raises(ConflictError):  # the old holder cannot write into it: its head is gone
        lease.commit({"zombie": 1})
    assert 0 < client.pttl(k.events) <= client.pttl(k.fence) + 100  # its audit event goes with the fence


def test_finish_by_a_fenced_holder_changes_nothing(client, namespace):
    store = CheckpointStore(client, namespace=namespace)
    old = store.acquire("r", owner="old", ttl=0.1)
    old.commit({"i": 1})
    time.sleep(0.15)
    store.acquire("r", owner="new", ttl=30)
    events = len(store.events("r"))
    with pytest.raises(FencedError) as e:
        old.finish(keep_for=timedelta(seconds=1))
    assert (e.value.token, e.value.fence) == (1, 2) and not old.released
    assert str(e.value).startswith("finish of run 'r' with token 1 rejected")  # not "commit"
    k = RunKeys(namespace, "r")
    assert [client.pttl(key) for key in (k.fence, k.head, k.events)] == [-1, -1, -1]
    assert len(store.events("r")) == events


@pytest.mark.parametrize("bad", [0, -1, float("inf"), timedelta(0), "1d", None])
def test_a_bad_keep_for_is_refused_before_sending(client, namespace, bad):
    store = CheckpointStore(client, namespace=namespace)
    lease = store.acquire("r", owner="w", ttl=30)
    with pytest.raises(OutOfRangeError):
        lease.finish(keep_for=bad)
    assert not lease.released and client.pttl(RunKeys(namespace, "r").fence) == -1


@pytest.mark.parametrize("bad", [0, -5, float("nan"), timedelta(seconds=-1), True])
def test_a_bad_retention_is_refused(client, namespace, bad):
    with pytest.raises(OutOfRangeError) as e:
        CheckpointStore(client, namespace=namespace, retention=bad)
    assert e.value.argument == "retention"


def test_the_expiry_time_is_the_servers(client, namespace):
    store = CheckpointStore(client, namespace=namespace)
    lease = store.acquire("r", owner="w", ttl=30)
    lease.commit(1)
    seconds, micros = client.time()
    expires = lease.finish(keep_for=3600)
    server_now = datetime.fromtimestamp(seconds + micros / 1e6, tz=timezone.utc)
    assert timedelta(seconds=3599) < expires - server_now < timedelta(seconds=3601)


def test_info_says_what_became_of_a_run(client, namespace):
    store = CheckpointStore(client, namespace=namespace)
    assert store.info("never").status == "none"
    lease = store.acquire("acq", owner="w", ttl=30)
    assert store.info("acq").status == "acquired"
    lease.commit(1)
    info = store.info("acq")
    assert info.status == "committed" and info.expires_ms_left is None and info.fence_ms_left is None
    assert info.last_event in ("acquire", "commit") and info.last_event_ms > 0
    store.delete("acq")
    assert store.info("acq").status == "deleted"
    done = store.acquire("done", owner="w", ttl=30)
    done.commit(1)
    done.finish(keep_for=0.3)
    info = store.info("done")
    assert info.status == "committed" and 0 < info.expires_ms_left <= 300 and info.fence_ms_left > 300
    wait_gone(client, namespace, "done", but={RunKeys(namespace, "done").fence})
    assert store.info("done").status == "expired"


def test_prune_removes_idle_runs_and_leaves_their_fence(client, namespace):
    store = CheckpointStore(client, namespace=namespace, chunk_bytes=1024)
    with store.acquire("old", owner="w", ttl=30) as lease:
        lease.commit({"blob": b"x" * 5000})
        lease.commit({"i": 2})
    store.acquire("held", owner="w", ttl=30).commit(1)  # a live lease: never pruned
    with store.acquire("acquired-only", owner="w", ttl=30):
        pass
    old_fence = store.info("old").fence
    time.sleep(0.3)
    with store.acquire("recent", owner="w", ttl=30) as lease:
        lease.commit(1)
    before = {r: run_keys(client, namespace, r) for r in ("old", "held", "recent", "acquired-only")}
    dry = store.prune(idle=0.25, dry_run=True)
    assert sorted((p.run_id, p.generations, p.pruned) for p in dry) == [("acquired-only", 0, False), ("old", 2, False)]
    assert all(p.idle_ms >= 250 for p in dry)
    assert {r: run_keys(client, namespace, r) for r in before} == before  # a dry run changes nothing
    pruned = store.prune(idle=timedelta(milliseconds=250), by="ops")
    assert sorted(p.run_id for p in pruned) == ["acquired-only", "old"] and all(p.pruned for p in pruned)
    k = RunKeys(namespace, "old")
    assert run_keys(client, namespace, "old") == {k.fence} and store.info("old").fence == old_fence + 1
    assert store.info("old").status == "deleted" and store.load("old") is None
    assert run_keys(client, namespace, "held") == before["held"]
    assert run_keys(client, namespace, "recent") == before["recent"]
    assert store.prune(idle=0.25) == []  # nothing left to remove: fences alone are skipped


def test_prune_leaves_a_run_under_its_own_retention_and_removes_one_without(client, namespace):
    """A run finished with keep_for (a retention longer than idle) expires by itself when its
    user asked: prune, and a dry run alike, leave it; a run released without one is pruned."""
    store = CheckpointStore(client, namespace=namespace)
    with store.acquire("kept", owner="w", ttl=30) as lease:
        lease.commit(1)
        lease.finish(keep_for=timedelta(days=30))
    with store.acquire("plain", owner="w", ttl=30) as lease:
        lease.commit(1)
    before = run_keys(client, namespace, "kept")
    time.sleep(0.3)
    assert [(p.run_id, p.pruned) for p in store.prune(idle=0.25, dry_run=True)] == [("plain", False)]
    assert [(p.run_id, p.pruned) for p in store.prune(idle=0.25)] == [("plain", True)]
    assert run_keys(client, namespace, "kept") == before and store.load("kept").state == 1
    assert store.info("plain").status == "deleted"


@pytest.mark.parametrize("bad", [0, -1, float("nan"), "7d"])
def test_a_bad_idle_is_refused(client, namespace, bad):
    with pytest.raises(OutOfRangeError):
        CheckpointStore(client, namespace=namespace).prune(idle=bad)


def commandstat(client, command: str) -> int:
    return int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def test_a_store_retention_removes_idle_runs_and_commits_keep_them(client, namespace):
    store = CheckpointStore(client, namespace=namespace, keep=2, retention=0.5, chunk_bytes=1024)
    k = RunKeys(namespace, "r")
    with store.acquire("r", owner="w", ttl=30) as lease:
        lease.commit({"blob": b"x" * 5000})
        assert 0 < client.pttl(k.head) <= 500 and 0 < client.pttl(k.chunk(1, 0)) <= 500
        assert client.pttl(k.fence) > 86_000_000 and lease.token > 1_600_000_000_000  # a time-based token
        for i in range(6):  # a commit every 0.15 s keeps the run (and every kept generation) alive
            time.sleep(0.15)
            lease.commit({"i": i})
            assert [client.exists(k.generation(g)) for g in (lease.generation - 1, lease.generation)] == [1, 1]
    assert 0 < client.pttl(k.lease) <= 500  # released: it goes with the run
    assert store.load("r").state == {"i": 5}
    wait_gone(client, namespace, "r", but={k.fence})
    assert store.load("r") is None and store.info("r").status == "expired"
    with pytest.raises(NotFoundError):
        store.load("r", generation=7)


def test_a_token_is_never_handed_out_twice_when_the_fence_expires_too(client, namespace):
    store = CheckpointStore(client, namespace=namespace, retention=0.2, fence_margin=0.2)
    k = RunKeys(namespace, "r")
    zombie = store.acquire("r", owner="zombie", ttl=0.2)
    zombie.commit({"i": 1})
    wait_gone(client, namespace, "r", but=set())  # everything, the fence included
    fresh = store.acquire("r", owner="fresh", ttl=0.2)
    assert fresh.token > zombie.token and fresh.generation == 0
    with pytest.raises(FencedError):
        zombie.commit({"zombie": True})
    assert fresh.commit({"fresh": True}) == 1
    # a store without a retention recreating the fence starts at 1: far below, never equal
    wait_gone(client, namespace, "r", but=set())
    plain = CheckpointStore(client, namespace=namespace).acquire("r", owner="plain", ttl=30)
    assert plain.token == 1
    with pytest.raises(FencedError):  # token above the fence: the fence lost increments
        zombie.commit({"zombie": True})
    assert client.pttl(k.fence) == -1


def test_a_per_run_retention_is_kept_by_every_writer(client, namespace):
    plain = CheckpointStore(client, namespace=namespace)
    k = RunKeys(namespace, "r")
    lease = plain.acquire("r", owner="w", ttl=30)
    lease.commit(1)
    assert client.pttl(k.head) == -1
    lease.commit(2, retention=timedelta(seconds=30))
    assert 29_000 < client.pttl(k.head) <= 30_000 and client.hget(k.head, "retention_ms") == b"30000"
    client.pexpire(k.head, 5000)
    lease.commit(3)  # no retention given: the run's own (the head's) applies
    assert client.pttl(k.head) > 29_000 and client.pttl(k.generation(2)) > 29_000
    lease.release()
    assert 29_000 < client.pttl(k.lease) <= 30_000  # a released lease goes with the run
    other = CheckpointStore(client, namespace=namespace).acquire("r", owner="x", ttl=30)  # a fresh process
    assert other.generation == 3 and client.pttl(k.events) > 29_000
    with pytest.raises(OutOfRangeError):
        plain.acquire("r2", owner="w", ttl=30, retention=0)
    with pytest.raises(OutOfRangeError):
        other.commit(4, retention=-1)
    assert plain.load("r").state == 3  # the refused calls changed nothing


def test_a_retention_given_at_acquire_is_kept_by_the_leases_commits(client, namespace):
    store = CheckpointStore(client, namespace=namespace)
    k = RunKeys(namespace, "r")
    lease = store.acquire("r", owner="w", ttl=30, retention=timedelta(seconds=30))
    lease.commit(1)
    lease.commit(2)
    assert client.hget(k.head, "retention_ms") == b"30000"  # recorded: every writer keeps it
    assert all(29_000 < client.pttl(key) <= 30_000 for key in (k.head, k.generation(1), k.generation(2)))
    lease.release()
    # a process without a retention learns the run's own at its acquire (NEED_KEYS): its
    # commits then send every kept generation's keys at once, one script each
    other = CheckpointStore(client, namespace=namespace).acquire("r", owner="x", ttl=30)
    client.pexpire(k.head, 5000)
    scripts = commandstat(client, "evalsha")
    for i in range(3):
        other.commit(3 + i)
    assert commandstat(client, "evalsha") - scripts == 3
    assert client.pttl(k.head) > 29_000 and client.pttl(k.generation(5)) > 29_000


def test_without_a_retention_nothing_expires_and_no_expiry_is_sent(client, namespace):
    store = CheckpointStore(client, namespace=namespace)
    before = {c: commandstat(client, c) for c in ("pexpire", "pexpireat", "pttl")}
    with store.acquire("r", owner="w", ttl=30) as lease:
        for i in range(5):
            lease.commit({"i": i})
    after = {c: commandstat(client, c) for c in ("pexpire", "pexpireat", "pttl")}
    # the acquire's lease ttl and the release's PTTL of the events are all there is
    assert after["pexpireat"] == before["pexpireat"]
    assert after["pexpire"] - before["pexpire"] == 1 and after["pttl"] - before["pttl"] == 1
    assert all(client.pttl(key) == -1 for key in run_keys(client, namespace, "r"))


def test_fork_and_import_under_a_retention(client, namespace):
    store = CheckpointStore(client, namespace=namespace, retention=60)
    with store.acquire("src", owner="w", ttl=30) as lease:
        lease.commit({"i": 1})
    store.fork("src", "copy")
    k = RunKeys(namespace, "copy")
    assert 0 < client.pttl(k.head) <= 60_000 and store.info("copy").fence > 1_600_000_000_000
    assert store.load("copy").state == {"i": 1}


def test_a_run_id_made_again_without_a_retention_after_its_data_expired_keeps_a_permanent_fence(client, namespace):
    """finish(keep_for=...) leaves the fence (and the audit events) to expire a margin after
    the data; a run made again under that id without a retention is permanent, and so must
    its fence be: it used to keep the old expiry (INCR keeps a key's TTL), so the live
    holder's commits failed once it expired ('the run's fence is 0') and tokens started over."""
    store = CheckpointStore(client, namespace=namespace, fence_margin=0.5)
    lease = store.acquire("q", owner="a", ttl=5)
    lease.commit({"v": 1})
    lease.finish(keep_for=0.2)
    wait_for(lambda: not client.exists(f"{namespace}:{{q}}:head"), "the finished run's data to expire", timeout=10)
    assert client.pttl(f"{namespace}:{{q}}:fence") > 0  # the old run's tombstone, expiring
    lease = store.acquire("q", owner="b", ttl=5)  # a new run under the same id, no retention
    lease.commit({"v": "new"})
    assert client.pttl(f"{namespace}:{{q}}:fence") == -1
    assert client.pttl(f"{namespace}:{{q}}:events") == -1
    time.sleep(0.8)  # past the old fence's expiry
    assert lease.commit({"v": 2}) == 2


def _slow_runs(monkeypatch, seconds: float) -> None:
    """Each run's prune takes ``seconds`` more (as a namespace of many thousands of runs adds
    up: ~0.5 ms a run on loopback, 15 s, the default deadline, by some 30,000 runs)."""
    from redis_ckpt.core.store_core import StoreCore

    one_run = StoreCore.prune_run_flow

    def slow(self, run_id, **kw):
        time.sleep(seconds)
        return (yield from one_run(self, run_id, **kw))

    monkeypatch.setattr(StoreCore, "prune_run_flow", slow)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_prune_of_a_namespace_longer_than_the_deadline_goes_through(durable_server, client, namespace,
                                                                    monkeypatch, kind):
    """The store's deadline bounds each run's prune, not the sweep of the whole namespace: a
    namespace that takes longer than the deadline to sweep is pruned whole, not cut off half
    way with "the server is unreachable" (and the runs already removed not reported)."""
    import asyncio

    from redis_ckpt.aio import AsyncCheckpointStore
    from redis_ckpt.core.retry import RetryPolicy

    runs = [f"r{i}" for i in range(5)]
    writer = CheckpointStore(client, namespace=namespace)
    for run in runs:
        with writer.acquire(run, owner="w", ttl=30) as lease:
            lease.commit({"run": run})
    time.sleep(0.01)
    _slow_runs(monkeypatch, 0.4)  # 2 s in all
    retry = RetryPolicy(deadline_s=1.5)
    if kind == "sync":
        pruned = CheckpointStore(client, namespace=namespace, retry=retry).prune(idle=0.005)
    else:
        async def prune():
            store = await AsyncCheckpointStore.from_url(durable_server.url, namespace=namespace, retry=retry)
            try:
                return await store.prune(idle=0.005)
            finally:
                await store.close()

        pruned = asyncio.run(prune())
    assert sorted(p.run_id for p in pruned) == runs and all(p.pruned for p in pruned)
    assert all(writer.info(run).status == "deleted" for run in runs)


def test_a_dry_run_prune_waits_for_no_fsync(client, namespace):
    """A dry run writes nothing, yet each run's check went out with a WAITAOF and waited for
    it (10,000 runs: 10,000 confirmations of nothing). It is a read now: same answer, no
    confirmation sent."""
    store = CheckpointStore(client, namespace=namespace)
    for run in ("a", "b", "c"):
        with store.acquire(run, owner="w", ttl=30) as lease:
            lease.commit({"run": run})
    time.sleep(0.3)
    client.config_resetstat()
    dry = store.prune(idle=0.25, dry_run=True)
    assert sorted((p.run_id, p.generations, p.pruned) for p in dry) == [("a", 1, False), ("b", 1, False),
                                                                         ("c", 1, False)]
    assert "cmdstat_waitaof" not in client.info("commandstats")
    assert sorted(p.run_id for p in store.prune(idle=0.25)) == ["a", "b", "c"]  # a real prune still confirms
    assert client.info("commandstats")["cmdstat_waitaof"]["calls"] >= 3
