"""Redis Cluster: every Pipe on the connection of the slot's owner, redirects followed,
every primary probed and scanned, fencing and acknowledged commits surviving a failover.

The clusters are :class:`redis_ckpt.testing.LocalCluster` on loopback (3 primaries + 3 replicas,
``cluster-node-timeout 1000``, ``appendonly yes`` / ``appendfsync always``): the ``cluster``
fixture of conftest, or one of its own for the failover test.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import AskError, ClusterDownError, MovedError, NoScriptError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError

from redis_ckpt import CheckpointStore, ConflictError, Durability, NonDurableServerError, RetryPolicy, check_server
from redis_ckpt.drivers.cluster import ClusterTarget, ClusterUnavailableError, probe_key_for
from redis_ckpt.drivers.cluster_plan import _scan_reply
from redis_ckpt.core.ops import Cmd, Pipe, Script
from redis_ckpt.testing import LocalCluster, LocalServer, wait_for
from redis_ckpt.drivers.scripts import SCRIPTS
from redis_ckpt.aio import AsyncCheckpointStore
from storm import storm_through_failovers

ENGINES = ["valkey", "redis"]


# --------------------------------------------------------------------------- helpers


def key_for(namespace: str, run: str) -> str:
    return f"{namespace}:{{{run}}}:fence"


def slot_of(namespace: str, run: str) -> int:
    return key_slot(key_for(namespace, run).encode())


def commandstats(server: LocalServer, command: str, field: str = "calls") -> int:
    stats = server.client().info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get(field, 0))


def migrate_slot(cluster: LocalCluster, slot: int, dst: LocalServer, *, finalize: bool = True) -> LocalServer:
    """Move ``slot`` (and its keys) to ``dst``; with ``finalize=False`` the slot stays
    MIGRATING/IMPORTING after its keys moved. Returns the source primary."""
    src = cluster.owner(slot)
    assert src is not dst
    sc, dc = src.client(), dst.client()
    dc.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", cluster.node_id(src))
    sc.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", cluster.node_id(dst))
    while True:
        keys = sc.execute_command("CLUSTER GETKEYSINSLOT", slot, 100)
        if not keys:
            break
        sc.execute_command("MIGRATE", "127.0.0.1", dst.port, "", 0, 5000, "KEYS", *keys)
    if finalize:
        finalize_slot(cluster, slot, src, dst)
    return src


def finalize_slot(cluster: LocalCluster, slot: int, src: LocalServer, dst: LocalServer) -> None:
    dst_id = cluster.node_id(dst)
    for s in (dst, src, *(p for p in cluster.servers if p.running and p not in (src, dst))):
        if s.client().info("replication")["role"] == "master":
            s.client().execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
    wait_for(lambda: cluster.owner(slot) is dst, f"slot {slot} to be served by {dst.port}")


# --------------------------------------------------------------------------- no server: the pipe plan


@dataclass
class FakeNode:
    name: str
    host: str
    port: int
    replies: list[Any] = field(default_factory=list)  # one list of replies per send, or an exception
    sent: list[list[tuple[Any, ...]]] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.redis_connection = self

    @property
    def connection_pool(self) -> FakeNode:
        return self

    def disconnect(self, inuse_connections: bool = True) -> None:
        pass

    def pipeline(self, transaction: bool = False) -> FakePipeline:
        return FakePipeline(self)

    def script_load(self, source: str) -> None:
        self.loaded.append(source)


class FakePipeline:
    def __init__(self, node: FakeNode) -> None:
        self.node, self.commands = node, []

    def execute_command(self, *args: Any) -> None:
        self.commands.append(args)

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        self.node.sent.append(self.commands)
        reply = self.node.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


class FakeNodesManager:
    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster, self.moved, self.refreshes, self.failed = cluster, [], 0, []

    def move_slot(self, e: MovedError) -> None:
        self.moved.append(e)
        self.cluster.owner = self.cluster.nodes[f"{e.host}:{e.port}"]

    def initialize(self) -> None:
        self.refreshes += 1

    def move_node_to_end_of_cached_nodes(self, name: str) -> None:
        self.failed.append(name)


class FakeCluster:
    def __init__(self) -> None:
        a, b = FakeNode("10.0.0.1:7001", "10.0.0.1", 7001), FakeNode("10.0.0.2:7002", "10.0.0.2", 7002)
        self.nodes = {a.name: a, b.name: b}
        self.a, self.b, self.owner = a, b, a
        self.nodes_manager = FakeNodesManager(self)

    def get_node_from_key(self, key: str) -> FakeNode:
        return self.owner

    def get_node(self, host: str, port: int) -> FakeNode | None:
        return self.nodes.get(f"{host}:{port}")

    def get_redis_connection(self, node: FakeNode) -> FakeNode:
        return node


COMMIT = Pipe([Script("commit", ["ns:{r}:fence", "ns:{r}:head"], [1]), Cmd("WAITAOF", 1, 0, 100)], route="ns:{r}:head")
OK = [[1, b"x"], [1, 0]]


def evalsha(scripts: Any = SCRIPTS) -> tuple[Any, ...]:
    """The commit script's EVALSHA as the driver hands it to redis-py (numbers as text)."""
    return ("EVALSHA", scripts.sha("commit"), b"2", "ns:{r}:fence", "ns:{r}:head", b"1")


WAITAOF = ("WAITAOF", b"1", b"0", b"100")


def test_pipe_goes_to_the_slot_owner_on_one_connection():
    fc = FakeCluster()
    fc.a.replies = [OK]
    assert ClusterTarget(fc, SCRIPTS).pipe(COMMIT) == OK
    assert fc.a.sent == [[evalsha(), WAITAOF]] and fc.b.sent == []


def test_moved_refreshes_the_slot_map_and_resends_to_the_new_owner():
    fc = FakeCluster()
    fc.a.replies = [[MovedError("1234 10.0.0.2:7002"), [1, 1]]]  # WAITAOF on the wrong node proves nothing
    fc.b.replies = [OK]
    assert ClusterTarget(fc, SCRIPTS).pipe(COMMIT) == OK
    assert [m.port for m in fc.nodes_manager.moved] == [7002] and len(fc.b.sent) == 1


def test_ask_sends_asking_before_every_op_to_the_target():
    fc = FakeCluster()
    fc.a.replies = [[AskError("1234 10.0.0.2:7002"), [1, 0]]]
    fc.b.replies = [[b"OK", [1, b"x"], b"OK", [1, 0]]]
    assert ClusterTarget(fc, SCRIPTS).pipe(COMMIT) == OK
    assert fc.b.sent == [[("ASKING",), evalsha(), ("ASKING",), WAITAOF]]
    assert fc.nodes_manager.moved == []  # ASK does not change the slot map


def test_tryagain_backs_off_then_gives_up_as_a_connection_error(monkeypatch):
    naps: list[float] = []
    monkeypatch.setattr("time.sleep", naps.append)
    fc = FakeCluster()
    fc.a.replies = [[TryAgainError("Multiple keys request during rehashing of slot"), [1, 0]]] * 2 + [OK]
    assert ClusterTarget(fc, SCRIPTS).pipe(COMMIT) == OK and len(naps) == 2
    fc.a.replies = [[TryAgainError("Multiple keys request during rehashing of slot"), [1, 0]]] * 50
    with pytest.raises(ClusterUnavailableError) as e:
        ClusterTarget(fc, SCRIPTS).pipe(COMMIT)
    assert isinstance(e.value, RedisConnectionError) and "TRYAGAIN" in str(e.value)


def test_clusterdown_backs_off_and_refreshes(monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    fc = FakeCluster()
    fc.a.replies = [[ClusterDownError("The cluster is down"), [1, 0]], OK]
    assert ClusterTarget(fc, SCRIPTS).pipe(COMMIT) == OK
    assert fc.nodes_manager.refreshes == 1


def test_noscript_loads_on_the_owner_and_resends():
    fc = FakeCluster()
    fc.a.replies = [[NoScriptError("No matching script"), [1, 0]], OK]
    assert ClusterTarget(fc, SCRIPTS).pipe(COMMIT) == OK
    assert fc.a.loaded == [SCRIPTS.source("commit")]


def test_a_broken_connection_is_thrown_and_the_next_send_refreshes_first():
    fc = FakeCluster()
    fc.a.replies = [RedisConnectionError("Connection refused"), OK]
    target = ClusterTarget(fc, SCRIPTS)
    with pytest.raises(RedisConnectionError):
        target.pipe(COMMIT)
    assert fc.nodes_manager.failed == [fc.a.name] and fc.nodes_manager.refreshes == 0
    assert target.pipe(COMMIT) == OK and fc.nodes_manager.refreshes == 1


def test_scan_cursor_walks_every_node():
    assert _scan_reply(0, b"17", [b"k"], 3) == [17, [b"k"]]
    assert _scan_reply(0, 0, [], 3) == [1 << 64, []]
    assert _scan_reply(1, 5, [], 3) == [(1 << 64) | 5, []]
    assert _scan_reply(2, 0, [b"z"], 3) == [0, [b"z"]]


def test_probe_key_lands_in_the_nodes_slots():
    slots = frozenset(range(10923, 16384))
    key = probe_key_for("ns", slots)
    assert key is not None and key.startswith("ns:probe:{") and key_slot(key.encode()) in slots
    assert probe_key_for("ns", frozenset()) is None


# --------------------------------------------------------------------------- on a cluster

@pytest.mark.server
def test_store_from_cluster_url_spreads_runs_and_scans_every_primary(cluster, namespace):
    with CheckpointStore.from_url(cluster.url(2), namespace=namespace) as store:
        assert store.server == cluster.url(2) and store.probe_report.ok
        runs = [f"job-{i}" for i in range(30)]
        for r in runs:
            with store.acquire(r, owner="w", ttl=10) as lease:
                assert lease.commit({"run": r}) == 1
        owners = {cluster.owner(slot_of(namespace, r)).port for r in runs}
        assert len(owners) == 3, "the runs did not spread over the three shards"
        assert store.runs() == sorted(runs)
        assert len(store.runs(limit=5)) == 5
        assert store.load("job-7").state == {"run": "job-7"}
        assert store.info("job-7").generation == 1


@pytest.mark.server
def test_cluster_clients_that_cannot_keep_the_promises_are_refused(cluster, namespace):
    port = cluster.servers[0].port
    with pytest.raises(ValueError, match="decode_responses=False"):
        CheckpointStore(RedisCluster(host="127.0.0.1", port=port, decode_responses=True), namespace=namespace)
    from redis.cluster import LoadBalancingStrategy

    replicas = RedisCluster(host="127.0.0.1", port=port, load_balancing_strategy=LoadBalancingStrategy.ROUND_ROBIN)
    with pytest.raises(ValueError, match="read_from_replicas"):
        CheckpointStore(replicas, namespace=namespace)


@pytest.mark.server
def test_commit_and_waitaof_run_on_the_primary_owning_the_slot(cluster, namespace):
    store = CheckpointStore(cluster.client(), namespace=namespace)
    lease = store.acquire("pinned", owner="w", ttl=10)
    owner = cluster.owner(slot_of(namespace, "pinned"))
    before = {s.port: (commandstats(s, "waitaof"), commandstats(s, "evalsha")) for s in cluster.servers}
    for i in range(5):
        lease.commit({"i": i})
    after = {s.port: (commandstats(s, "waitaof"), commandstats(s, "evalsha")) for s in cluster.servers}
    delta = {p: (after[p][0] - before[p][0], after[p][1] - before[p][1]) for p in before}
    assert delta.pop(owner.port) == (5, 5)
    assert all(d == (0, 0) for d in delta.values()), delta
    store.close()


@pytest.mark.server
def test_probe_reports_every_primary_by_address(cluster, namespace):
    rc = cluster.client()
    store = CheckpointStore(rc, namespace=namespace)
    report = store.probe_report
    assert report.ok and report.server.startswith("redis+cluster://") and report.engine == cluster.engine
    primaries = {f"127.0.0.1:{s.port}" for s in cluster.servers if s.client().info("replication")["role"] == "master"}
    live = [f for f in report.findings if f.check == "live-waitaof"]
    assert {f.message.split(": ", 1)[0] for f in live} == primaries
    assert {f.message.split(": ", 1)[0] for f in report.findings if f.check == "cluster-state"} == primaries
    assert any(f.check == "cluster-topology" and f.level == "ok" for f in report.findings)
    assert check_server(cluster.url(1), namespace=namespace).ok
    store.close()


@pytest.mark.server
def test_one_misconfigured_primary_refuses_the_cluster_naming_it(cluster, namespace):
    bad = cluster.owner(0)
    bad.client().config_set("appendfsync", "no")
    try:
        with pytest.raises(NonDurableServerError) as e:
            CheckpointStore.from_url(cluster.url(), namespace=namespace)
        problems = [str(p) for p in e.value.problems]
        assert problems and all(p.startswith(f"127.0.0.1:{bad.port}: ") for p in problems), problems
        assert f"127.0.0.1:{bad.port}: appendfsync is 'no'" in str(e.value)
    finally:
        bad.client().config_set("appendfsync", "always")


@pytest.mark.server
def _listed(primary: LocalServer, replica: LocalServer) -> bool:
    """Whether CLUSTER SLOTS lists ``replica`` beside ``primary`` (Redis leaves a replica out
    until it has synced data; Valkey lists it at once)."""
    slots = primary.client().execute_command("CLUSTER", "SLOTS")
    return any(int(n[1]) == replica.port for s in slots if int(s[2][1]) == primary.port for n in s[3:])


def test_replicas_are_checked_when_the_policy_counts_on_them(cluster, namespace):
    primary = cluster.owner(6000)
    replica = cluster.replica_of(primary)
    # on a cluster just formed Redis lists no replica in the slot map yet (the probe then warns
    # that it checked none: test_probe_rules); a write to the primary gets it listed
    key = next(f"{{w{i}}}" for i in range(100_000) if key_slot(f"{{w{i}}}".encode()) == 6000)
    primary.client().set(key, b"x")
    wait_for(lambda: _listed(primary, replica), "the replica listed in CLUSTER SLOTS")
    replica.client().config_set("maxmemory-policy", "allkeys-lru")
    try:
        with CheckpointStore.from_url(cluster.url(), namespace=namespace) as store:  # local policy: not probed
            assert store.probe_report.ok
        with pytest.raises(NonDurableServerError) as e:
            CheckpointStore.from_url(cluster.url(), namespace=namespace,
                                     durability=Durability.replicas_received(1))
        text = str(e.value)
        assert f"127.0.0.1:{replica.port} (replica of 127.0.0.1:{primary.port}): maxmemory-policy is 'allkeys-lru'" in text
    finally:
        replica.client().config_set("maxmemory-policy", "noeviction")
        primary.client().delete(key)


@pytest.mark.server
def test_moved_after_resharding_resends_to_the_new_owner(cluster, namespace):
    store = CheckpointStore(cluster.client(), namespace=namespace)
    lease = store.acquire("moving", owner="w", ttl=30)
    assert lease.commit({"n": 1}) == 1
    slot = slot_of(namespace, "moving")
    dst = next(s for s in cluster.primaries() if s is not cluster.owner(slot))
    migrate_slot(cluster, slot, dst)  # the store's slot map is now stale: its first send gets MOVED
    before = commandstats(dst, "waitaof")
    assert lease.commit({"n": 2}) == 2
    assert commandstats(dst, "waitaof") > before  # (twice when dst answered NOSCRIPT first)
    assert store.load("moving").state == {"n": 2}
    assert dst.client().exists(key_for(namespace, "moving")) == 1
    store.close()


@pytest.mark.server
def test_ask_and_tryagain_while_a_slot_migrates(cluster, namespace):
    store = CheckpointStore(cluster.client(), namespace=namespace)
    lease = store.acquire("migrating", owner="w", ttl=30)
    assert lease.commit({"n": 1}) == 1
    slot = slot_of(namespace, "migrating")
    dst = next(s for s in cluster.primaries() if s is not cluster.owner(slot))
    src = migrate_slot(cluster, slot, dst, finalize=False)
    try:
        # every key of the run is on dst while src still owns the slot: src answers ASK
        asking = commandstats(dst, "asking")
        info = store.info("migrating")  # one Pipe of eight reads: ASKING before each on dst
        assert info.generation == 1 and info.lease_owner == "w"
        assert commandstats(dst, "asking") == asking + 8
        assert store.load("migrating").state == {"n": 1}
        rejected = commandstats(src, "evalsha", "rejected_calls") + commandstats(dst, "evalsha", "rejected_calls")
        # a commit touches a key neither node has (the next generation): TRYAGAIN until the
        # migration completes, then MOVED, then it lands on dst
        done: list[Any] = []
        t = threading.Thread(target=lambda: done.append(lease.commit({"n": 2})))
        t.start()
        time.sleep(0.3)
        assert not done
        now = commandstats(src, "evalsha", "rejected_calls") + commandstats(dst, "evalsha", "rejected_calls")
        assert now >= rejected + 2, "the commit was not held off by TRYAGAIN"
    finally:
        finalize_slot(cluster, slot, src, dst)
    t.join(timeout=30)
    assert done == [2] and store.load("migrating").state == {"n": 2}
    assert dst.client().exists(f"{namespace}:{{migrating}}:g:2") == 1
    store.close()


@pytest.mark.server
def test_async_store_on_a_cluster(cluster, namespace):
    async def scenario() -> None:
        store = await AsyncCheckpointStore.from_url(cluster.url(2), namespace=namespace)
        assert store.probe_report.ok and store.server == cluster.url(2)
        live = [f for f in store.probe_report.findings if f.check == "live-waitaof"]
        assert len(live) == 3
        owner = cluster.owner(slot_of(namespace, "a-0"))
        before = commandstats(owner, "waitaof")
        for i in range(6):
            lease = await store.acquire(f"a-{i}", owner="w", ttl=10)
            assert await lease.commit({"i": i}) == 1
            await lease.release()
        assert commandstats(owner, "waitaof") >= before + 2  # acquire + commit of a-0 there
        assert await store.runs() == [f"a-{i}" for i in range(6)]
        assert (await store.load("a-3")).state == {"i": 3}
        # resharding under the async store: MOVED handled by the async driver
        slot = slot_of(namespace, "a-1")
        dst = next(s for s in cluster.primaries() if s is not cluster.owner(slot))
        migrate_slot(cluster, slot, dst)
        lease = await store.acquire("a-1", owner="w", ttl=10)
        assert await lease.commit({"i": 11}) == 2
        assert (await store.load("a-1")).state == {"i": 11}
        await store.close()

    asyncio.run(scenario())


@pytest.mark.server
def test_an_async_commit_whose_connection_breaks_is_sent_again(cluster, namespace):
    """redis-py's async cluster node keeps a connection error of a pipeline's read as that
    command's result: the driver raises it (a lost connection), never hands it to the flow as
    a reply (the commit raised TypeError reading it as its generation)."""
    async def scenario() -> None:
        store = await AsyncCheckpointStore.from_url(cluster.url(2), namespace=namespace)
        lease = await store.acquire("cut", owner="w", ttl=30)
        assert await lease.commit({"n": 1}) == 1
        owner = cluster.owner(slot_of(namespace, "cut")).client()
        owner.client_pause(10_000, all=False)  # writes (the commit's script) wait
        try:
            commit = asyncio.ensure_future(lease.commit({"n": 2}))
            await asyncio.sleep(0.3)
            assert not commit.done()
            owner.client_kill_filter(_type="normal", skipme=True)  # the commit's connection breaks
        finally:
            owner.client_unpause()
        assert await commit == 2  # it never ran (the server held it), so the resend applies it
        assert (await store.load("cut")).state == {"n": 2}
        await store.close()
        owner.close()

    asyncio.run(scenario())


# --------------------------------------------------------------------------- failover


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_fencing_and_acknowledged_commits_survive_failover(engine, namespace, make_server):
    cl = LocalCluster(engine, make_server).start()
    try:
        store = CheckpointStore(cl.client(), namespace=namespace,
                                durability=Durability.replicas_fsynced(1, timeout_ms=3000))
        runs = [f"storm-{i}" for i in range(6)]

        def choose() -> tuple[LocalServer, LocalServer, list[str]]:
            # the shard of storm-0: its primary in round 0, the promoted replica in round 1
            victim = cl.owner(slot_of(namespace, runs[0]))
            return victim, cl.replica_of(victim), [r for r in runs if cl.owner(slot_of(namespace, r)) is victim]

        def heal(victim: LocalServer, heir: LocalServer) -> None:
            victim.restart()  # comes back as a replica of its heir, so commits can be confirmed again
            cl.wait_healthy()

        storm_through_failovers(store, runs, choose=choose, heal=heal,
                                promoted=lambda heir: heir.client().info("replication")["role"] == "master")
        store.close()
    finally:
        cl.cleanup()


@pytest.mark.server
@pytest.mark.parametrize("aio", [False, True], ids=["sync", "async"])
def test_runs_after_a_failover_scans_the_promoted_primary(namespace, make_server, aio):
    """SCAN walks the primaries of the client's slot map: a primary that no longer answers
    has its connections dropped and the map read again before the next attempt (as a Pipe's
    send does), so runs() finds the promoted replica instead of retrying the dead node until
    its deadline."""
    cl = LocalCluster("valkey", make_server).start()
    try:
        with CheckpointStore(cl.client(), namespace=namespace) as store:
            with store.acquire("r", owner="w", ttl=10) as lease:
                lease.commit(1)
        victim = cl.owner(slot_of(namespace, "r"))
        heir = cl.replica_of(victim)
        assert victim.client().wait(1, 5000) == 1  # the replica has the run

        def failover() -> None:
            victim.kill()
            wait_for(lambda: heir.client().info("replication")["role"] == "master", "the replica promoted",
                     timeout=30)

        retry = RetryPolicy(deadline_s=10.0)
        if aio:
            async def scenario() -> list[str]:
                store = await AsyncCheckpointStore.from_url(cl.url(6), namespace=namespace, retry=retry)
                assert await store.runs() == ["r"]
                failover()
                try:
                    return await store.runs()
                finally:
                    await store.close()

            assert asyncio.run(scenario()) == ["r"]
        else:
            store = CheckpointStore(cl.client(), namespace=namespace, retry=retry)
            assert store.runs() == ["r"]
            failover()
            assert store.runs() == ["r"]
            store.close()
    finally:
        cl.cleanup()


@pytest.mark.server
def test_the_cli_checks_every_primary_and_lists_runs_across_shards(cluster, namespace):
    import json

    from click.testing import CliRunner

    from redis_ckpt.cli import cli

    with CheckpointStore.from_url(cluster.url(2), namespace=namespace) as store:
        for i in range(12):
            with store.acquire(f"cli-{i}", owner="w", ttl=10) as lease:
                lease.commit(i)
    runner = CliRunner()
    check = runner.invoke(cli, ["check", "--url", cluster.url(1), "--json"])
    assert check.exit_code == 0, check.output
    report = json.loads(check.stdout)
    primaries = {f"127.0.0.1:{s.port}" for s in cluster.servers if s.client().info("replication")["role"] == "master"}
    assert sorted(n["server"] for n in report["nodes"]) == sorted(primaries)  # one node per primary
    assert all(n["verdict"] == "durable" and n["findings"] for n in report["nodes"])
    assert report["verdict"] == "durable" and {f["check"] for f in report["topology"]} >= {"cluster-topology"}
    runs = runner.invoke(cli, ["runs", "--url", cluster.url(1), "--namespace", namespace, "--json"])
    assert runs.exit_code == 0, runs.output
    assert sorted(r["run"] for r in json.loads(runs.stdout)["runs"]) == sorted(f"cli-{i}" for i in range(12))


@pytest.mark.server
def test_fork_and_load_of_a_generation_across_nodes(cluster, namespace):
    """The source and the fork on different primaries: a read on one slot, a write on the
    other (a cross-slot command would fail with CROSSSLOT)."""
    with CheckpointStore.from_url(cluster.url(2), namespace=namespace) as store:
        with store.acquire("src", owner="w", ttl=10) as lease:
            for i in range(3):
                lease.commit({"i": i}, metadata={"n": i})
        src_node = cluster.owner(slot_of(namespace, "src"))
        target = next(f"fork-{i}" for i in range(100) if cluster.owner(slot_of(namespace, f"fork-{i}")) is not src_node)
        assert store.load("src", generation=2).state == {"i": 1}
        assert store.fork("src", target, generation=2, by="ops") == 1
        ck = store.load(target)
        assert ck.state == {"i": 1} and ck.metadata["forked_from"]["run"] == "src"
        assert [e.fields["to"] for e in store.events("src") if e.kind == "forked"] == [target]
        with pytest.raises(ConflictError):
            store.fork("src", target)


#: what redis-py sends on its own when it connects or follows the cluster (not our commands)
_REDIS_PY_OWN = {b"HELLO", b"AUTH", b"SELECT", b"CLIENT", b"READONLY", b"PING", b"ASKING", b"CLUSTER", b"COMMAND"}


@pytest.mark.server
def test_no_command_of_ours_reaches_redis_pys_packer_with_a_number(cluster, namespace, monkeypatch):
    # redis-py before 8.2 hands ints to hiredis's C packer, which crashes the interpreter when
    # a signal handler raises (Ctrl-C) while it converts one: the drivers send every number
    # as its text, on the cluster paths (sync and asyncio), where redis-py packs the command
    import redis.connection

    seen: list[tuple[Any, ...]] = []
    for serializer in (redis.connection.HiredisRespSerializer, redis.connection.PythonRespSerializer):
        original = serializer.pack

        def spy(self, *args, _original=original):
            seen.append(args)
            return _original(self, *args)

        monkeypatch.setattr(serializer, "pack", spy)

    def ours() -> list[tuple[Any, ...]]:
        return [a for a in seen if (a[0].encode() if isinstance(a[0], str) else a[0]).split()[0].upper()
                not in _REDIS_PY_OWN]

    with CheckpointStore.from_url(cluster.url(2), namespace=namespace) as store:
        lease = store.acquire("numbers", owner="w", ttl=10)
        lease.commit({"n": 1})
        assert store.load("numbers").state == {"n": 1}
        assert store.info("numbers").generation == 1 and store.runs() == ["numbers"]
        lease.release()

    async def scenario() -> None:
        store = await AsyncCheckpointStore.from_url(cluster.url(2), namespace=namespace)
        lease = await store.acquire("numbers", owner="w", ttl=10)
        assert await lease.commit({"n": 2}) == 2
        assert (await store.load("numbers")).state == {"n": 2}
        assert await store.runs() == ["numbers"]
        await lease.release()
        await store.close()

    asyncio.run(scenario())
    assert ours(), "nothing of ours went through redis-py's packer: the spy sees nothing"
    with_numbers = [a for a in ours() if any(type(x) in (int, float) for x in a)]
    assert not with_numbers, with_numbers[:5]
