"""Edge cases of the core found in review: each test failed before its fix."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import redis.asyncio as aredis
from test_cli import invoke  # one way to run the CLI in the tests: never a traceback
from test_deadlines import stopped

from redis_ckpt import CheckpointStore, CorruptCheckpointError, DamagedRunsError, NonDurableServerError, \
    RetryPolicy, StoreUnavailableError
from redis_ckpt.steps import StepRunner
from redis_ckpt.steps.state import StepPlanError
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


# --------------------------------------------------------------------------- release / renew whose reply is lost


def _frozen_for(server, seconds: float) -> threading.Timer:
    """SIGSTOP ``server`` (it accepts connections and never answers) for ``seconds``: the
    timer that SIGCONTs it then (as test_deadlines.stopped, without the caller's block)."""
    os.kill(server.pid, signal.SIGSTOP)
    timer = threading.Timer(seconds, os.kill, (server.pid, signal.SIGCONT))
    timer.start()
    return timer


@pytest.mark.parametrize("op", ["release", "renew"])
def test_release_and_renew_that_time_out_say_their_outcome_is_unknown(make_server, op):
    server = make_server("valkey", appendonly="yes", appendfsync="always")
    store = CheckpointStore.from_url(server.url, namespace="n", retry=RetryPolicy(deadline_s=1.0))
    warm = store.acquire("w", owner="a", ttl=30)  # the scripts are cached on the server
    warm.renew()
    warm.release()
    lease = store.acquire("r", owner="a", ttl=30)
    with stopped(server), pytest.raises(StoreUnavailableError) as failed:
        lease.renew(ttl=60) if op == "renew" else lease.release()
    time.sleep(0.3)
    info = store.info("r")
    applied = info.lease_state == "released" if op == "release" else info.lease_ms_left > 31_000
    assert applied  # the "failed" write did happen once the server answered again ...
    assert failed.value.outcome_unknown  # ... so the error must not say it was not written
    store.close()


def test_release_resent_after_its_reply_was_lost_reports_true(make_server):
    server = make_server("valkey", appendonly="yes", appendfsync="always")
    store = CheckpointStore.from_url(server.url, namespace="n", socket_timeout=0.5,
                                     retry=RetryPolicy(deadline_s=10.0))
    store.acquire("w", owner="a", ttl=30).release()  # release.lua cached on the server
    lease = store.acquire("r", owner="a", ttl=30)
    timer = _frozen_for(server, 1.0)
    try:
        released = lease.release()  # times out at 0.5 s, applies at 1.0 s, and is resent
    finally:
        timer.join()
    assert store.info("r").lease_state == "released"
    assert released is True
    assert lease.release() is False  # a second call: no longer held by this token (unchanged)
    store.close()


def test_release_of_a_lease_someone_else_holds_is_false(store):
    old = store.acquire("r", owner="a", ttl=0.05)
    time.sleep(0.1)
    store.acquire("r", owner="b", ttl=30)
    assert old.release() is False
    assert store.info("r").lease_owner == "b" and store.info("r").lease_state == "held"


# --------------------------------------------------------------------------- a damaged head, fence or lease


def _committed(store, run_id: str = "r") -> None:
    lease = store.acquire(run_id, owner="a", ttl=30)
    lease.commit({"n": 1})
    lease.release()


READS = {
    "load": lambda s: s.load("r"),
    "load generation": lambda s: s.load("r", generation=1),
    "info": lambda s: s.info("r"),
    "generations": lambda s: s.generations("r"),
    "export": lambda s: s.export_frame("r"),
    "fork": lambda s: s.fork("r", "copy"),
    "usage": lambda s: s.usage("r"),
}


@pytest.mark.parametrize("field,value", [("generation", "abc"), ("generation", "-1"), ("kept", "x,y"),
                                         ("kept", "1:z")])
@pytest.mark.parametrize("op", sorted(READS))
def test_a_damaged_head_is_a_corrupt_checkpoint_error_naming_run_and_field(store, client, namespace, field,
                                                                           value, op):
    _committed(store)
    client.hset(f"{namespace}:{{r}}:head", field, value)
    before = {k: client.type(k) for k in client.keys(f"{namespace}:*")}
    with pytest.raises(CorruptCheckpointError) as e:
        READS[op](store)
    assert e.value.run_id == "r" and field in str(e.value) and repr(value) in str(e.value)
    assert {k: client.type(k) for k in client.keys(f"{namespace}:*")} == before  # nothing removed or made


def test_delete_of_a_damaged_head(store, client, namespace):
    _committed(store)
    head = f"{namespace}:{{r}}:head"
    client.hset(head, "kept", "x,y")
    with pytest.raises(CorruptCheckpointError) as e:  # which generations to delete: unknown
        store.delete("r")
    assert "kept" in str(e.value) and client.exists(head, f"{namespace}:{{r}}:g:1") == 2  # nothing deleted
    client.hset(head, mapping={"kept": "1", "generation": "abc"})
    assert store.delete("r") == 1  # a head damaged elsewhere can still be deleted: the remedy
    assert client.exists(head, f"{namespace}:{{r}}:g:1") == 0


def test_finish_on_a_run_whose_fence_is_damaged_is_typed_and_writes_nothing(store, client, namespace):
    """retain.lua compared a fence it could not read as a number: a Lua error, so finish()
    raised an untyped ServerError saying its outcome was unknown. It is CorruptCheckpointError,
    nothing written (no expiry set, the lease still held)."""
    lease = store.acquire("r", owner="a", ttl=30)
    lease.commit({"n": 1})
    client.set(f"{namespace}:{{r}}:fence", "abc")
    before = {k: (client.dump(k), client.pttl(k) > 0) for k in client.scan_iter(match=f"{namespace}:{{r}}:*")}
    with pytest.raises(CorruptCheckpointError) as e:
        lease.finish(keep_for=60)
    assert e.value.run_id == "r" and "fence" in str(e.value) and "'abc'" in str(e.value)
    assert {k: (client.dump(k), client.pttl(k) > 0) for k in client.scan_iter(match=f"{namespace}:{{r}}:*")} == before


@pytest.mark.parametrize("op", ["delete", "revoke"])
def test_delete_or_revoke_of_a_run_whose_fence_is_damaged_writes_nothing(store, client, durable_server, namespace,
                                                                         op):
    """delete.lua deleted the run's generations and head, then failed at INCR of a fence that
    is not a number (an untyped server error, the data gone); revoke failed the same way,
    untyped. Both refuse up front, typed, nothing written; once the fence is set by hand to an
    integer above the run's tokens (the remedy the error names), the run can be deleted."""
    _committed(store)
    client.set(f"{namespace}:{{r}}:fence", "abc")
    before = {k: client.dump(k) for k in sorted(client.scan_iter(match=f"{namespace}:{{r}}:*"))}
    with pytest.raises(CorruptCheckpointError) as e:
        getattr(store, op)("r")
    assert e.value.run_id == "r" and "fence" in str(e.value) and "'abc'" in str(e.value)
    assert "set it by hand" in str(e.value)
    assert {k: client.dump(k) for k in sorted(client.scan_iter(match=f"{namespace}:{{r}}:*"))} == before
    out = invoke([op, "r", "--yes"], url=durable_server.url, namespace=namespace)
    assert out.exit_code == 1 and "fence" in out.stderr and "a bug" not in out.stderr, out.output
    assert {k: client.dump(k) for k in sorted(client.scan_iter(match=f"{namespace}:{{r}}:*"))} == before
    client.set(f"{namespace}:{{r}}:fence", "5")
    assert store.delete("r") == 1 and store.info("r").fence == 6


@pytest.mark.parametrize("key,field,value", [("fence", None, "abc"), ("lease", "token", "x1")])
def test_a_damaged_fence_or_lease_token_is_a_corrupt_checkpoint_error(store, client, namespace, key, field, value):
    _committed(store)
    name = f"{namespace}:{{r}}:{key}"
    client.hset(name, field, value) if field else client.set(name, value)
    with pytest.raises(CorruptCheckpointError) as e:
        store.info("r")
    assert e.value.run_id == "r" and key in str(e.value) and repr(value) in str(e.value)


@pytest.mark.parametrize("field,value", [("generation", "abc"), ("kept", "x,y"), ("retention_ms", "soon")])
def test_acquire_on_a_damaged_head_writes_nothing(store, client, namespace, field, value):
    _committed(store)
    client.hset(f"{namespace}:{{r}}:head", field, value)
    fence, lease = client.get(f"{namespace}:{{r}}:fence"), client.hgetall(f"{namespace}:{{r}}:lease")
    events = client.xlen(f"{namespace}:{{r}}:events")
    with pytest.raises(CorruptCheckpointError) as e:
        store.acquire("r", owner="b", ttl=30)
    assert e.value.run_id == "r" and field in str(e.value)
    assert client.get(f"{namespace}:{{r}}:fence") == fence  # no token handed out
    assert client.hgetall(f"{namespace}:{{r}}:lease") == lease  # no lease installed
    assert client.xlen(f"{namespace}:{{r}}:events") == events


def test_acquire_on_a_damaged_fence_writes_nothing(store, client, namespace):
    _committed(store)
    client.set(f"{namespace}:{{r}}:fence", "abc")
    lease = client.hgetall(f"{namespace}:{{r}}:lease")
    with pytest.raises(CorruptCheckpointError) as e:
        store.acquire("r", owner="b", ttl=30)
    assert e.value.run_id == "r" and "fence" in str(e.value)
    assert client.get(f"{namespace}:{{r}}:fence") == b"abc"
    assert client.hgetall(f"{namespace}:{{r}}:lease") == lease


@pytest.mark.parametrize("field,value", [("generation", "abc"), ("kept", "x,y"), ("kept", "1,2:x")])
def test_a_commit_onto_a_damaged_head_writes_nothing(store, client, namespace, field, value):
    """A holder whose run's head was damaged after it acquired: its commit is refused, typed,
    and changes nothing (a Lua error partway through would leave what ran before it)."""
    lease = store.acquire("r", owner="a", ttl=30)
    lease.commit({"n": 1})
    head = f"{namespace}:{{r}}:head"
    client.hset(head, field, value)
    before = client.hgetall(head), client.get(f"{namespace}:{{r}}:fence"), client.xlen(f"{namespace}:{{r}}:events")
    with pytest.raises(CorruptCheckpointError) as e:
        lease.commit({"n": 2})
    assert e.value.run_id == "r" and field in str(e.value)
    assert (client.hgetall(head), client.get(f"{namespace}:{{r}}:fence"),
            client.xlen(f"{namespace}:{{r}}:events")) == before


@pytest.mark.parametrize("op", ["commit", "fork"])
def test_a_write_refused_as_damaged_leaves_no_staged_data(client, namespace, op):
    """commit.lua answered DAMAGED (a fence or head it cannot read) without removing the
    caller's staged keys, unlike every other refusal: a large commit or a fork/import into a
    damaged run left its bytes staged until their TTL, and each retry staged them again."""
    store = CheckpointStore(client, namespace=namespace, chunk_bytes=1024)
    lease = store.acquire("r", owner="a", ttl=30)
    lease.commit({"n": 1})
    with store.acquire("src", owner="a", ttl=30) as src:
        src.commit({"pad": b"s" * 5000})
    target = "r" if op == "commit" else "t"  # a fork goes to a run with no head
    client.set(f"{namespace}:{{{target}}}:fence", "abc")
    with pytest.raises(CorruptCheckpointError):
        lease.commit({"pad": b"x" * 5000}) if op == "commit" else store.fork("src", "t")
    assert sorted(client.scan_iter(match=f"{namespace}:{{{target}}}:stage:*")) == []
    assert client.hlen(f"{namespace}:{{{target}}}:staging") == 0


@pytest.mark.parametrize("op", ["delete", "prune"])
def test_a_run_whose_shared_chunk_counts_name_a_bad_address_can_still_be_removed(client, namespace, op):
    """delete.lua and prune.lua matched the shared chunks passed to them by the last 32
    characters of their keys: a field of x:refs that is not a 32-hex address (changed by hand,
    a partial restore) never matched, every send answered NEED_SHARED, and the run could be
    neither deleted nor pruned (an untyped ServerError). They match the whole address now."""
    store = CheckpointStore(client, namespace=namespace, dedup=True)
    with store.acquire("r", owner="a", ttl=30) as lease:
        lease.commit({"m": [f"message {i} " * 8 for i in range(3000)]})
    client.hset(f"{namespace}:{{r}}:x:refs", "zz", "1")
    client.set(f"{namespace}:{{r}}:x:zz", b"stray")
    time.sleep(0.01)
    if op == "delete":
        assert store.delete("r") == 1
    else:
        assert [p.run_id for p in store.prune(idle=0.001)] == ["r"]
    assert sorted(k.decode() for k in client.scan_iter(match=f"{namespace}:{{r}}:*")) == \
        sorted(f"{namespace}:{{r}}:{name}" for name in ("fence", "events")[: 2 if op == "delete" else 1])


@pytest.mark.parametrize("dry_run", [True, False])
def test_cli_prune_names_a_damaged_run_and_prunes_the_others(store, client, durable_server, namespace, dry_run):
    _committed(store, "bad")
    _committed(store, "good")
    client.hset(f"{namespace}:{{bad}}:head", "kept", "x,y")
    time.sleep(0.01)
    out = invoke(["prune", "--idle", "1ms", "--yes", *(["--dry-run"] if dry_run else [])], url=durable_server.url,
                 namespace=namespace)
    assert out.exit_code == 1, out.output
    assert "'bad'" in out.stderr and "kept" in out.stderr and "a bug" not in out.stderr
    assert "good" in out.stdout and "1 run(s)" in out.stdout
    assert client.exists(f"{namespace}:{{good}}:head") == int(dry_run)  # the healthy run is pruned
    assert client.exists(f"{namespace}:{{bad}}:head") == 1  # the damaged one is left as it is


@pytest.mark.parametrize("dry_run", [True, False])
def test_library_prune_goes_past_a_damaged_run_and_names_it(store, client, namespace, dry_run):
    """store.prune() used to stop at the first damaged run (runs are visited in order): the
    runs after it were never pruned. It prunes every other run, then raises naming the damaged."""
    for run in ("a", "bad", "z"):
        _committed(store, run)
    client.hset(f"{namespace}:{{bad}}:head", "kept", "x,y")
    time.sleep(0.01)
    with pytest.raises(DamagedRunsError) as e:
        store.prune(idle=0.001, dry_run=dry_run)
    assert isinstance(e.value, CorruptCheckpointError) and list(e.value.damaged) == ["bad"]
    assert "'bad'" in str(e.value) and "kept" in str(e.value)
    assert sorted(p.run_id for p in e.value.pruned) == ["a", "z"]
    assert all(p.pruned is not dry_run for p in e.value.pruned)
    for run in ("a", "z"):  # the healthy runs on both sides of it are pruned
        assert client.exists(f"{namespace}:{{{run}}}:head") == int(dry_run)
    assert client.exists(f"{namespace}:{{bad}}:head") == 1  # the damaged one is left as it is


@pytest.mark.parametrize("key,field,value", [("lease", "renewed_ms", "soon"), ("lease", "released_ms", "-1"),
                                              ("lease", "acquired_ms", "1e3"), ("fence", None, "abc")])
def test_prune_answers_damaged_for_a_lease_time_or_fence_it_cannot_read(store, client, namespace, key, field, value):
    """prune.lua read a lease time it could not parse as 0 (idle since 1970: pruned) and a
    fence it could not INCR only after deleting the run's data (a script error, half done).
    It answers DAMAGED first: the run is left as it is and named."""
    _committed(store, "bad")
    target = f"{namespace}:{{bad}}:{key}"
    client.hset(target, field, value) if field else client.set(target, value)
    before = {k: client.dump(k) for k in sorted(client.scan_iter(match=f"{namespace}:{{bad}}:*"))}
    time.sleep(0.01)
    with pytest.raises(DamagedRunsError) as e:
        store.prune(idle=0.001)
    assert list(e.value.damaged) == ["bad"] and (field or key) in str(e.value) and repr(value) in str(e.value)
    assert {k: client.dump(k) for k in sorted(client.scan_iter(match=f"{namespace}:{{bad}}:*"))} == before


# --------------------------------------------------------------------------- StepRunner: resumed inputs


def _interrupted(store, run_id: str, inputs) -> StepRunner:
    """A runner of steps a, b whose first run() failed in b; returns a fresh runner to resume it."""
    def make(fail: bool) -> StepRunner:
        runner = StepRunner(store, run_id, owner="a", ttl=5)
        runner.add("a", lambda ctx: 1)

        def b(ctx):
            if fail:
                raise RuntimeError("first attempt fails")
            return 2
        runner.add("b", b)
        return runner

    with pytest.raises(RuntimeError):
        make(True).run(inputs)
    return make(False)


@pytest.mark.parametrize("started,resumed", [
    ({"x": float("nan")}, {"x": float("nan")}),
    ({"tags": {f"t{i}" for i in range(50)}}, {"tags": set(sorted(f"t{i}" for i in range(50)))}),
    ({"a": 1, "b": [2.5, None]}, {"b": [2.5, None], "a": 1}),
    ({"when": Decimal("NaN")}, {"when": Decimal("NaN")}),
])
def test_step_runner_resumes_with_the_same_inputs(store, started, resumed):
    assert _interrupted(store, "job", started).run(resumed) == {"a": 1, "b": 2}


@pytest.mark.parametrize("started,resumed", [
    ({"n": 1}, {"n": True}),
    ({"n": 1}, {"n": 1.0}),
    ({"x": 0.0}, {"x": -0.0}),
    ({"d": Decimal("1.0")}, {"d": Decimal("1.00")}),
    ({"p": (1, 2)}, {"p": [1, 2]}),
    ({"k": {1: "a"}}, {"k": {True: "a"}}),
    ({"s": frozenset({1})}, {"s": {1}}),
    ({"t": datetime(2026, 1, 1, 12, tzinfo=timezone.utc)},
     {"t": datetime(2026, 1, 1, 13, tzinfo=timezone(timedelta(hours=1)))}),
])
def test_step_runner_refuses_inputs_of_other_types_or_values(store, started, resumed):
    runner = _interrupted(store, "job", started)
    generation = store.info("job").generation
    with pytest.raises(StepPlanError):
        runner.run(resumed)  # not the inputs the run started with (exact types)
    assert store.info("job").generation == generation  # nothing committed


def test_an_async_store_constructed_directly_on_a_cluster_client_rides_out_a_failover():
    """On Cluster or Sentinel the default retry is HA_RETRY: the sync constructor and create()
    gave it, a directly constructed async store did not (nothing is sent: the client is not
    connected)."""
    import redis.asyncio.cluster

    from redis_ckpt._shell import HA_RETRY

    client = redis.asyncio.cluster.RedisCluster(host="127.0.0.1", port=1)
    assert AsyncCheckpointStore(client, namespace="n").core.config.retry == HA_RETRY
