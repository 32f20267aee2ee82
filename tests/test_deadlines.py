"""Every operation ends by its deadline (RetryPolicy.deadline_s, from the operation's start),
and a server restart within the deadline is ridden out, on real servers.

* a stopped server (SIGSTOP) answers nothing: a commit, a load, the probe at construction all
  end with StoreUnavailableError by the deadline (a bound, not a benchmark: deadline 2 s, the
  assertion allows 1.5 s of slack for a loaded machine);
* a server killed (kill -9) and restarted within the deadline: the commit succeeds, exactly once;
* a server still replaying its AOF answers LOADING: also a retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from redis_ckpt import CheckpointStore, RetryPolicy, StoreUnavailableError, check_server
from redis_ckpt.testing import LocalServer, free_port, wait_for
from redis_ckpt.aio import AsyncCheckpointStore

pytestmark = pytest.mark.server

DEADLINE_S = 2.0
SLACK_S = 1.5  # a loaded CI machine; the bug this guards against overran by 10-30 s
SHORT = RetryPolicy(deadline_s=DEADLINE_S)


@contextlib.contextmanager
def stopped(server: LocalServer) -> Iterator[None]:
    """The server process frozen (SIGSTOP): its port accepts connections, nothing answers."""
    assert server.pid is not None
    os.kill(server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.pid, signal.SIGCONT)


class Timed:
    def __enter__(self) -> Timed:
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.monotonic() - self.started


def restart_later(server: LocalServer, delay: float) -> threading.Thread:
    def go() -> None:
        time.sleep(delay)
        server.restart(timeout=30)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


# --------------------------------------------------------------------------- a stopped server


@pytest.mark.parametrize("via", ["url", "client-without-timeouts"])
def test_commit_and_load_against_a_stopped_server_end_by_the_deadline(make_server, via):
    server = make_server("valkey")
    if via == "url":  # socket timeout 10 s: three of them made a commit block 30 s
        store = CheckpointStore.from_url(server.url, namespace="d", retry=SHORT)
    else:  # no socket timeout at all: only the store's deadline can end an operation
        store = CheckpointStore(server.client(socket_timeout=None, socket_connect_timeout=None),
                                namespace="d", retry=SHORT)
    lease = store.acquire("r", owner="a", ttl=60)
    assert lease.commit({"n": 1}) == 1
    with stopped(server):
        with Timed() as t, pytest.raises(StoreUnavailableError) as e:
            lease.commit({"n": 2})
        assert t.elapsed < DEADLINE_S + SLACK_S, f"commit ended after {t.elapsed:.1f} s"
        assert e.value.outcome_unknown and e.value.run_id == "r"
        # the next operation starts on a connection that must be made again: also bounded
        with Timed() as t, pytest.raises(StoreUnavailableError) as e:
            store.load("r")
        assert t.elapsed < DEADLINE_S + SLACK_S, f"load ended after {t.elapsed:.1f} s"
        assert not e.value.outcome_unknown
    # once the server runs again the store works; the commit whose outcome was unknown applied
    # at most once (it may have: the server had it in its socket buffer)
    ck = store.load("r")
    assert ck is not None and ck.generation in (1, 2) and ck.state == {"n": ck.generation}
    store.close()


def test_every_kind_of_operation_ends_by_the_deadline(make_server):
    server = make_server("redis")
    store = CheckpointStore(server.client(socket_timeout=None), namespace="d", retry=SHORT)
    lease = store.acquire("r", owner="a", ttl=60)
    lease.commit(1)
    with stopped(server):
        for name, op in [
            ("acquire", lambda: store.acquire("other", owner="b", ttl=5)),
            ("renew", lambda: lease.renew()),
            ("release", lambda: lease.release()),
            ("info", lambda: store.info("r")),
            ("generations", lambda: store.generations("r")),
            ("events", lambda: store.events("r")),
            ("runs", lambda: store.runs()),
            ("revoke", lambda: store.revoke("r")),
            ("delete", lambda: store.delete("gone")),
            ("export", lambda: store.export_frame("r")),
        ]:
            with Timed() as t, pytest.raises(StoreUnavailableError):
                op()
            assert t.elapsed < DEADLINE_S + SLACK_S, f"{name} ended after {t.elapsed:.1f} s"


def test_the_probe_at_construction_ends_by_the_deadline(make_server):
    server = make_server("valkey")
    with stopped(server):
        with Timed() as t, pytest.raises(StoreUnavailableError):
            CheckpointStore.from_url(server.url, namespace="d", retry=SHORT)
        assert t.elapsed < DEADLINE_S + SLACK_S, f"construction ended after {t.elapsed:.1f} s"


def test_check_server_on_a_client_without_timeouts_ends_by_its_timeout(make_server):
    # the client has no socket timeout: only check_server's own deadline can end the check
    server = make_server("valkey")
    client = server.client(socket_timeout=None, socket_connect_timeout=None)
    outcome: list[BaseException | None] = []

    def check() -> None:
        try:
            check_server(client, namespace="d", timeout=DEADLINE_S)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    with stopped(server):
        worker = threading.Thread(target=check, daemon=True)
        with Timed() as t:
            worker.start()
            worker.join(DEADLINE_S + SLACK_S)
        finished = not worker.is_alive()
    worker.join(30)  # the server answers again: a check without a deadline ends now
    assert finished, "check_server still waiting on a stopped server"
    assert isinstance(outcome[0], StoreUnavailableError), outcome
    assert t.elapsed < DEADLINE_S + SLACK_S, f"check_server ended after {t.elapsed:.1f} s"


@pytest.mark.parametrize("bad", [-1, 0, float("nan"), float("inf"), "5", True])
def test_check_server_refuses_a_timeout_that_cannot_bound_it(bad: Any) -> None:
    # before anything is sent: nothing listens on port 1, which would be StoreUnavailableError
    from redis_ckpt import OutOfRangeError

    for target in ("redis://127.0.0.1:1/0", redis.Redis(host="127.0.0.1", port=1)):
        with pytest.raises(OutOfRangeError, match="timeout"):
            check_server(target, timeout=bad)


def test_async_commit_and_load_against_a_stopped_server_end_by_the_deadline(make_server):
    server = make_server("valkey")

    async def scenario() -> None:
        store = await AsyncCheckpointStore.from_url(server.url, namespace="d", retry=SHORT)
        lease = await store.acquire("r", owner="a", ttl=60)
        assert await lease.commit({"n": 1}) == 1
        with stopped(server):
            with Timed() as t, pytest.raises(StoreUnavailableError) as e:
                await lease.commit({"n": 2})
            assert t.elapsed < DEADLINE_S + SLACK_S, f"commit ended after {t.elapsed:.1f} s"
            assert e.value.outcome_unknown
            with Timed() as t, pytest.raises(StoreUnavailableError):
                await store.load("r")
            assert t.elapsed < DEADLINE_S + SLACK_S, f"load ended after {t.elapsed:.1f} s"
            with Timed() as t, pytest.raises(StoreUnavailableError):
                await AsyncCheckpointStore.from_url(server.url, namespace="d", retry=SHORT)
            assert t.elapsed < DEADLINE_S + SLACK_S, f"construction ended after {t.elapsed:.1f} s"
        ck = await store.load("r")
        assert ck is not None and ck.state == {"n": ck.generation}
        await store.close()

    asyncio.run(scenario())


# --------------------------------------------------------------------------- a restart within the deadline


@pytest.mark.parametrize("engine", ["valkey", "redis"])
def test_a_commit_rides_out_a_kill_and_restart_within_its_deadline(make_server, engine):
    server = make_server(engine)
    store = CheckpointStore.from_url(server.url, namespace="d", retry=RetryPolicy(deadline_s=10.0))
    lease = store.acquire("r", owner="a", ttl=60)
    assert lease.commit({"n": 1}) == 1
    server.kill()
    restarting = restart_later(server, 3.0)
    assert lease.commit({"n": 2}) == 2  # connection refused for 3 s, then the restarted server
    restarting.join()
    ck = store.load("r")
    assert (ck.generation, ck.state) == (2, {"n": 2})
    head = store.info("r").head  # applied exactly once: two generations, two distinct commit ids
    assert head["kept"] == "1,2" and len(set(head["kept_ids"].split(","))) == 2
    store.close()


def test_an_async_commit_rides_out_a_kill_and_restart_within_its_deadline(make_server):
    server = make_server("valkey")

    async def scenario() -> None:
        store = await AsyncCheckpointStore.from_url(server.url, namespace="d", retry=RetryPolicy(deadline_s=10.0))
        lease = await store.acquire("r", owner="a", ttl=60)
        assert await lease.commit({"n": 1}) == 1
        server.kill()
        restarting = restart_later(server, 3.0)
        assert await lease.commit({"n": 2}) == 2
        await asyncio.to_thread(restarting.join)
        ck = await store.load("r")
        assert (ck.generation, ck.state) == (2, {"n": 2})
        await store.close()

    asyncio.run(scenario())


def _fill_and_rewrite(server: LocalServer, keys: int) -> None:
    """Enough keys that loading them (key-load-delay µs each) takes seconds; rewritten into the
    AOF's RDB base, the part a restart loads key by key."""
    c = server.client()
    pipe = c.pipeline(transaction=False)
    for i in range(keys):
        pipe.set(f"filler:{i}", b"x")
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    c.bgrewriteaof()
    deadline = time.monotonic() + 30
    while int(c.info("persistence").get("aof_rewrite_in_progress", 0)) or \
            int(c.info("persistence").get("aof_rewrite_scheduled", 0)):
        assert time.monotonic() < deadline, "the AOF rewrite did not finish"
        time.sleep(0.05)
    c.close()


@pytest.mark.parametrize("engine", ["valkey", "redis"])
def test_a_server_answering_loading_is_retried_until_it_has_loaded(make_server, engine):
    # µs per key: 20k keys load in ~2-4 s; answering clients (LOADING) every KiB of the load
    server = make_server(engine, key_load_delay=100, loading_process_events_interval_bytes=1024)
    _fill_and_rewrite(server, 20_000)
    store = CheckpointStore.from_url(server.url, namespace="d", retry=RetryPolicy(deadline_s=20.0))
    lease = store.acquire("r", owner="a", ttl=60)
    assert lease.commit({"n": 1}) == 1
    server.kill()
    restarting = restart_later(server, 0.0)
    probe = redis.Redis(host=server.host, port=server.port, socket_timeout=1, retry=Retry(NoBackoff(), 0))
    saw_loading = False
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not saw_loading:
        try:
            probe.get("filler:0")
            break  # loaded already: the scenario did not happen, say so below
        except redis.BusyLoadingError:
            saw_loading = True
        except (redis.ConnectionError, redis.TimeoutError):
            time.sleep(0.01)
    probe.close()
    assert saw_loading, "the restarted server never answered LOADING: raise the key count or the delay"
    assert lease.commit({"n": 2}) == 2  # sent while the server answers LOADING
    restarting.join()
    assert store.load("r").state == {"n": 2}
    store.close()


#: a script that keeps the server busy for ARGV[1] ms (past busy-reply-threshold, the server
#: answers every other client BUSY until it ends)
SPIN = """local t = redis.call('TIME')
local start = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
while true do
  t = redis.call('TIME')
  if tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000 - start > tonumber(ARGV[1]) then return 1 end
end"""


@pytest.mark.parametrize("engine", ["valkey", "redis"])
@pytest.mark.parametrize("refusal", ["BUSY", "NOREPLICAS"])
def test_a_server_that_cannot_serve_yet_is_retried_until_it_can(make_server, engine, refusal):
    """BUSY (another client's script past busy-reply-threshold) and NOREPLICAS (fewer good
    replicas than min-replicas-to-write) say the command did not run and the server cannot
    run it yet: like LOADING, a retry within the deadline, not a ServerError at once."""
    server = make_server(engine)
    admin, busy_client = server.client(), server.client()
    store = CheckpointStore(server.client(), namespace="d", retry=RetryPolicy(deadline_s=30.0))
    lease = store.acquire("r", owner="a", ttl=60)
    assert lease.commit({"n": 1}) == 1
    if refusal == "BUSY":
        admin.config_set("busy-reply-threshold", 50)
        blocker = threading.Thread(target=busy_client.eval, args=(SPIN, 0, 1500))
        blocker.start()
        seen = 0  # BUSY answers to the pings below (the server counts them too)

        def busy() -> bool:
            nonlocal seen
            try:
                admin.ping()
            except redis.ResponseError:
                seen += 1
                return True
            return False

        wait_for(busy, "the server answering BUSY", timeout=10)
    else:
        admin.config_set("min-replicas-to-write", 1)  # no replica: every write is refused
        seen = 0
        blocker = threading.Thread(target=lambda: (time.sleep(1.0), admin.config_set("min-replicas-to-write", 0)))
        blocker.start()
    assert lease.commit({"n": 2}) == 2  # sent while the server refuses it
    blocker.join()
    assert store.load("r").state == {"n": 2}
    assert admin.info("errorstats")[f"errorstat_{refusal}"]["count"] > seen  # the commit met it
    store.close()
    admin.close()
    busy_client.close()


def _demoted(server: LocalServer) -> redis.Redis:
    """``server`` made a replica of a primary that is not there: it keeps its data and answers
    every write READONLY, as a primary a managed service demoted (moving its DNS name to the
    new primary) does to the clients still connected to it. Returns the admin client."""
    admin = server.client()
    admin.replicaof("127.0.0.1", free_port())
    wait_for(lambda: admin.info("replication")["role"] == "slave", "the server a replica")
    return admin


def _connections(admin: redis.Redis) -> int:
    return int(admin.info("stats")["total_connections_received"])


@pytest.mark.parametrize("engine", ["valkey", "redis"])
def test_a_primary_demoted_under_a_plain_client_is_retried_on_new_connections_until_it_serves(make_server, engine):
    """A primary demoted to a replica answers READONLY: the write was not run. A plain client
    (no Sentinel to ask) answered ServerError at once; a managed service's failover moves the
    DNS name, so the commit is retried within the deadline, each time on a new connection
    (the pool's, which point at the demoted node, are dropped and the name resolved again)."""
    server = make_server(engine)
    store = CheckpointStore.from_url(server.url, namespace="d", retry=RetryPolicy(deadline_s=30.0))
    lease = store.acquire("r", owner="a", ttl=60)
    assert lease.commit({"n": 1}) == 1
    admin = _demoted(server)
    connected = _connections(admin)
    promoter = threading.Thread(target=lambda: (time.sleep(1.0), admin.replicaof("NO", "ONE")))
    promoter.start()
    assert lease.commit({"n": 2}) == 2  # sent while the server refuses every write
    promoter.join()
    assert admin.info("errorstats")["errorstat_READONLY"]["count"] >= 1  # the commit met it
    assert _connections(admin) > connected  # and connected again
    assert store.load("r").state == {"n": 2}
    store.close()
    admin.close()


def test_an_async_commit_to_a_demoted_primary_is_retried_on_new_connections_until_it_serves(make_server):
    server = make_server("valkey")
    admin = server.client()

    async def scenario() -> None:
        store = await AsyncCheckpointStore.from_url(server.url, namespace="d", retry=RetryPolicy(deadline_s=30.0))
        lease = await store.acquire("r", owner="a", ttl=60)
        assert await lease.commit({"n": 1}) == 1
        _demoted(server).close()
        connected = _connections(admin)
        promoter = threading.Thread(target=lambda: (time.sleep(1.0), admin.replicaof("NO", "ONE")))
        promoter.start()
        assert await lease.commit({"n": 2}) == 2
        await asyncio.to_thread(promoter.join)
        assert admin.info("errorstats")["errorstat_READONLY"]["count"] >= 1
        assert _connections(admin) > connected
        assert (await store.load("r")).state == {"n": 2}
        await store.close()

    asyncio.run(scenario())
    admin.close()


@pytest.mark.parametrize("via", ["sync", "async"])
def test_a_primary_that_stays_demoted_is_unavailable_at_the_deadline(make_server, via):
    server = make_server("valkey")
    if via == "sync":
        store = CheckpointStore.from_url(server.url, namespace="d", retry=SHORT)
        lease = store.acquire("r", owner="a", ttl=60)
        assert lease.commit({"n": 1}) == 1
        admin = _demoted(server)
        with pytest.raises(StoreUnavailableError, match="READONLY") as got:
            lease.commit({"n": 2})
        store.close()
    else:
        async def scenario() -> pytest.ExceptionInfo[StoreUnavailableError]:
            store = await AsyncCheckpointStore.from_url(server.url, namespace="d", retry=SHORT)
            lease = await store.acquire("r", owner="a", ttl=60)
            assert await lease.commit({"n": 1}) == 1
            _demoted(server).close()
            with pytest.raises(StoreUnavailableError, match="READONLY") as got:
                await lease.commit({"n": 2})
            await store.close()
            return got

        got = asyncio.run(scenario())
        admin = server.client()
    assert got.value.outcome_unknown
    assert admin.info("errorstats")["errorstat_READONLY"]["count"] > 1  # sent again, refused again
    admin.close()


@pytest.mark.parametrize("via", ["sync", "async"])
def test_a_single_connection_client_follows_the_name_to_the_promoted_replica(make_server, via):
    """A managed service's failover moves the server's name to the promoted replica (here: a
    proxy whose new connections go there) while the demoted primary answers READONLY. On a
    client made with single_connection_client=True the driver dropped only its pool's idle
    connections, never the client's own one: the sync store sent every retry to the demoted
    node (StoreUnavailableError at the deadline), the asyncio one loaded its scripts there
    while its pipes went to the promoted one (ServerError NOSCRIPT). The commit now lands on
    the promoted replica, within the deadline."""
    import redis.asyncio
    from tcp_proxy import CutProxy

    old = make_server("valkey")
    new = make_server("valkey", replica_of=("127.0.0.1", old.port))
    promoted = new.client()
    wait_for(lambda: promoted.info("replication").get("master_link_status") == "up", "the replica in sync")

    def fail_over() -> None:
        wait_for(lambda: promoted.exists("d:{r}:head"), "the first commit replicated")
        promoted.replicaof("NO", "ONE")
        _demoted(old).close()
        proxy.upstream = ("127.0.0.1", new.port)  # the name now resolves to the promoted node

    policy = RetryPolicy(deadline_s=10.0)
    with CutProxy(old.port) as proxy:
        if via == "sync":
            client = redis.Redis(host="127.0.0.1", port=proxy.port, single_connection_client=True)
            store = CheckpointStore(client, namespace="d", retry=policy)
            lease = store.acquire("r", owner="a", ttl=60)
            assert lease.commit({"n": 1}) == 1
            fail_over()
            assert lease.commit({"n": 2}) == 2
            store.close()
            client.close()
        else:
            async def scenario() -> None:
                client = redis.asyncio.Redis(host="127.0.0.1", port=proxy.port, single_connection_client=True)
                store = await AsyncCheckpointStore.create(client, namespace="d", retry=policy)
                lease = await store.acquire("r", owner="a", ttl=60)
                assert await lease.commit({"n": 1}) == 1
                await asyncio.to_thread(fail_over)
                assert await lease.commit({"n": 2}) == 2
                await store.close()
                await client.aclose()

            asyncio.run(scenario())
    assert CheckpointStore(promoted, namespace="d").load("r").state == {"n": 2}
    promoted.close()


# --------------------------------------------------------------------------- the policy


@pytest.mark.parametrize("bad", [
    {"deadline_s": 0}, {"deadline_s": -1}, {"deadline_s": float("inf")}, {"deadline_s": float("nan")},
    {"attempts": 0}, {"initial_backoff_s": -0.1}, {"max_backoff_s": float("nan")},
])
def test_a_retry_policy_that_cannot_end_is_refused(bad: dict[str, Any]):
    with pytest.raises(ValueError):
        RetryPolicy(**bad)


def _stale(server: LocalServer) -> redis.Redis:
    """``server`` (run with ``replica-serve-stale-data no``) made a replica of a primary that is
    not there: its link is down, so it answers MASTERDOWN to reads and scripts alike, as a
    demoted primary does until it has synced with the new one."""
    admin = _demoted(server)
    wait_for(lambda: _masterdown(admin), "the replica refusing with MASTERDOWN")
    return admin


def _masterdown(admin: redis.Redis) -> bool:
    try:
        admin.get("k")
    except redis.ResponseError as exc:
        return "MASTER is down" in str(exc)
    return False


@pytest.mark.parametrize("engine", ["valkey", "redis"])
def test_a_demoted_primary_that_answers_masterdown_is_retried_until_it_serves(make_server, engine):
    """With replica-serve-stale-data no a demoted primary answers MASTERDOWN, not READONLY,
    until its link to the new primary is up: nothing was run, as for READONLY. The store
    answered ServerError ("MasterDownError") at once; now the commit and the load are retried
    within the deadline like READONLY, and land once the server serves."""
    server = make_server(engine, replica_serve_stale_data="no")
    store = CheckpointStore.from_url(server.url, namespace="d", retry=RetryPolicy(deadline_s=30.0))
    lease = store.acquire("r", owner="a", ttl=60)
    assert lease.commit({"n": 1}) == 1
    admin = _stale(server)
    promoter = threading.Thread(target=lambda: (time.sleep(1.0), admin.replicaof("NO", "ONE")))
    promoter.start()
    assert lease.commit({"n": 2}) == 2  # sent while the server refuses everything
    promoter.join()
    assert admin.info("errorstats")["errorstat_MASTERDOWN"]["count"] >= 1  # the commit met it
    _stale(server)
    promoter = threading.Thread(target=lambda: (time.sleep(1.0), admin.replicaof("NO", "ONE")))
    promoter.start()
    assert store.load("r").state == {"n": 2}
    promoter.join()
    store.close()
    admin.close()


def test_a_demoted_primary_that_stays_stale_is_unavailable_at_the_deadline_naming_masterdown(make_server):
    server = make_server("valkey", replica_serve_stale_data="no")
    store = CheckpointStore.from_url(server.url, namespace="d", retry=SHORT)
    lease = store.acquire("r", owner="a", ttl=60)
    assert lease.commit({"n": 1}) == 1
    admin = _stale(server)
    with pytest.raises(StoreUnavailableError, match="MASTERDOWN") as got:
        lease.commit({"n": 2})
    assert got.value.outcome_unknown
    with pytest.raises(StoreUnavailableError, match="MASTERDOWN") as got:
        store.load("r")
    assert not got.value.outcome_unknown
    admin.replicaof("NO", "ONE")
    assert store.load("r").state == {"n": 1}  # nothing was written
    store.close()
    admin.close()
