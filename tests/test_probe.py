"""The startup probe driven on clients: the flow with scripted replies, then real servers that
must be refused (or not). The rules alone, fed with hand-made facts: ``test_probe_rules.py``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.exceptions import ResponseError

from redis_ckpt.core.durability import Durability
from redis_ckpt.errors import NonDurableServerError
from redis_ckpt.drivers.asyncio import adrive
from redis_ckpt.drivers.sync import drive
from redis_ckpt.drivers.targets import async_target, sync_target
from redis_ckpt.testing import LocalServer, wait_for
from redis_ckpt.probe import CONFIG_KEYS, Finding, ProbeReport, facts_from_info
from redis_ckpt.probe.flow import REPLICA_ACK_MS, probe_flow
from redis_ckpt.urls import redact_url
from test_probe_rules import GOOD_CONFIG, LOCAL, by_check, level_of


# --------------------------------------------------------------------------- helpers


def refusal(report: ProbeReport, check: str) -> Finding:
    found = [f for f in report.refused if f.check == check]
    assert found, f"expected a refusal by {check!r}:\n{report}"
    return found[0]


def probe(
    server: LocalServer | redis.Redis,
    durability: Durability = LOCAL,
    declared: Mapping[str, str] | None = None,
    namespace: str = "tprobe",
) -> ProbeReport:
    client = server.client() if isinstance(server, LocalServer) else server
    label = redact_url(server.url) if isinstance(server, LocalServer) else "client"
    try:
        return drive(
            probe_flow(server=label, namespace=namespace, durability=durability, declared=declared),
            sync_target(client, None),
        )
    finally:
        if isinstance(server, LocalServer):
            client.close()


@contextlib.contextmanager
def configured(server: LocalServer, **settings: str) -> Iterator[None]:
    """CONFIG SET for the block's duration, then restore the previous values."""
    c = server.client(decode_responses=True)
    names = [k.replace("_", "-") for k in settings]
    before = {k: c.config_get(k)[k] for k in names}
    try:
        for k, v in zip(names, settings.values()):
            c.config_set(k, v)
        yield
    finally:
        for k, v in before.items():
            c.config_set(k, v)
        c.close()


# --------------------------------------------------------------------------- the flow, without a server


class ScriptedClient:
    """A fake client answering from a table; a value that is an exception is raised."""

    def __init__(self, replies: dict[tuple[Any, ...], Any]) -> None:
        self.replies = replies
        self.sent: list[tuple[Any, ...]] = []

    def execute_command(self, *args: Any) -> Any:
        self.sent.append(args)
        reply = self.replies[args[0] if args[0] in self.replies else args]
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def pipeline(self, transaction: bool = True) -> Any:
        outer = self

        class P:
            def __init__(self) -> None:
                self.ops: list[tuple[Any, ...]] = []

            def execute_command(self, *args: Any) -> None:
                self.ops.append(args)

            def execute(self, raise_on_error: bool = True) -> list[Any]:
                outer.sent.extend(self.ops)
                return [outer.replies.get(op[0]) for op in self.ops]

        return P()


INFO_OK = {"redis_version": "8.2.3", "role": "master", "loading": 0, "aof_enabled": 1,
           "aof_last_write_status": "ok", "maxmemory_policy": "noeviction", "evicted_keys": 0,
           "connected_slaves": 0, "cluster_enabled": 0}


class TestFlowWithoutServer:
    def test_config_denied_is_recorded_and_the_flow_goes_on(self) -> None:
        c = ScriptedClient({
            "INFO": INFO_OK,
            "CONFIG GET": ResponseError("unknown command 'CONFIG', with args beginning with: 'GET'"),
            "COMMAND INFO": [[b"waitaof", 4]],
            "SET": True,
            "WAITAOF": [1, 0],
        })
        report = drive(probe_flow(server="s", namespace="ns", durability=LOCAL), sync_target(c, None))
        assert report.facts is not None and report.facts.config is None
        assert report.facts.config_error == "unknown command 'CONFIG'"
        assert level_of(report.findings, "appendfsync") == "unverifiable"
        assert level_of(report.findings, "live-waitaof") == "ok"
        assert ("SET", "ns:probe:{probe}") == c.sent[-2][:2]
        assert c.sent[-1] == ("WAITAOF", b"1", b"0", b"5000")  # numbers as text: see resp.numbers_as_text

    def test_pre_redis7_config_get_one_key_at_a_time(self) -> None:
        replies: dict[Any, Any] = {
            "INFO": {**INFO_OK, "redis_version": "6.2.14"},
            ("CONFIG GET", *CONFIG_KEYS): ResponseError("ERR Unknown subcommand or wrong number of arguments for 'get'"),
            "COMMAND INFO": [None],
        }
        for k in CONFIG_KEYS:
            replies[("CONFIG GET", k)] = {k: GOOD_CONFIG[k]}
        c = ScriptedClient(replies)
        report = drive(probe_flow(server="s", namespace="ns", durability=LOCAL), sync_target(c, None))
        assert report.facts is not None and report.facts.config == GOOD_CONFIG
        assert level_of(report.findings, "waitaof") == "refuse"
        assert not any(op[0] == "SET" for op in c.sent)  # no live write without WAITAOF

    def test_refused_server_gets_no_live_write(self) -> None:
        c = ScriptedClient({"INFO": INFO_OK, "CONFIG GET": {**GOOD_CONFIG, "appendfsync": "no"},
                            "COMMAND INFO": [[b"waitaof"]]})
        report = drive(probe_flow(server="s", namespace="ns", durability=LOCAL), sync_target(c, None))
        assert level_of(report.findings, "appendfsync") == "refuse"
        assert report.facts is not None and "appendfsync" in (report.facts.live_skipped or "")
        assert not any(op[0] == "SET" for op in c.sent)

    def test_probe_key_override(self) -> None:
        c = ScriptedClient({"INFO": INFO_OK, "CONFIG GET": GOOD_CONFIG, "COMMAND INFO": [[b"waitaof"]],
                            "SET": True, "WAITAOF": [1, 0]})
        drive(probe_flow(server="s", namespace="ns", durability=LOCAL, probe_key="ns:probe:{x}"), sync_target(c, None))
        assert c.sent[-2][1] == "ns:probe:{x}"


# --------------------------------------------------------------------------- real servers

ENGINES = ["valkey", "redis"]


@pytest.fixture(scope="module", params=ENGINES, ids=ENGINES)
def scratch(request: pytest.FixtureRequest, make_module_server: Any) -> LocalServer:
    """A durable server per engine whose config tests change with CONFIG SET (and restore)."""
    return make_module_server(request.param)


@pytest.mark.server
class TestRealServers:
    def test_healthy_server_is_accepted(self, client: redis.Redis, namespace: str, durable_server: LocalServer) -> None:
        report = probe(client, namespace=namespace)
        assert report.ok, str(report)
        assert report.engine == durable_server.engine
        assert report.version == durable_server.version
        assert level_of(report.findings, "live-waitaof") == "ok"
        assert client.pttl(f"{namespace}:probe:{{probe}}") > 0  # the probe's key lives in the namespace
        if durable_server.engine == "redis":
            assert [f.check for f in report.warnings] == ["aof-load-truncated"]
        else:
            assert report.warnings == []

    @pytest.mark.parametrize("decode", [False, True], ids=["bytes", "str"])
    @pytest.mark.parametrize("protocol", [2, 3])
    def test_both_resp_protocols(self, durable_server: LocalServer, namespace: str, protocol: int,
                                 decode: bool) -> None:
        c = durable_server.client(protocol=protocol, decode_responses=decode)
        try:
            report = probe(c, namespace=namespace)
        finally:
            c.close()
        assert report.ok, str(report)
        assert report.facts is not None and report.facts.config is not None
        assert set(report.facts.config) == set(CONFIG_KEYS)
        assert report.facts.has_waitaof is True and report.facts.live_local == 1

    @pytest.mark.parametrize("protocol", [2, 3])
    def test_redis_7_0_both_protocols(self, make_module_server: Any, protocol: int) -> None:
        server = make_module_server("redis7")
        c = server.client(protocol=protocol)
        try:
            report = probe(c)
        finally:
            c.close()
        assert refusal(report, "waitaof").level == "refuse"
        assert report.facts is not None and report.facts.has_waitaof is False

    def test_async_driver_runs_the_same_flow(self, client: redis.Redis, namespace: str,
                                             durable_server: LocalServer) -> None:
        async def go() -> ProbeReport:
            ac = redis.asyncio.Redis(host=durable_server.host, port=durable_server.port)
            try:
                return await adrive(probe_flow(server="async", namespace=namespace, durability=LOCAL), async_target(ac, None))
            finally:
                await ac.aclose()

        report = asyncio.run(go())
        assert report.ok, str(report)
        assert report.engine == durable_server.engine

    def test_redis_7_0_has_no_waitaof(self, make_server: Any) -> None:
        server = make_server("redis7")
        report = probe(server)
        f = refusal(report, "waitaof")
        assert f.level == "refuse" and "WAITAOF" in f.message and "7.2" in f.remedy
        assert report.version.startswith("7.0")
        assert report.facts is not None and not report.facts.live_ran

    def test_aof_load_truncated_warned_on_redis(self, scratch: LocalServer) -> None:
        report = probe(scratch)
        if scratch.engine == "redis":
            w = [f for f in report.warnings if f.check == "aof-load-truncated"]
            assert w and "aof-load-truncated no" in w[0].remedy
            with configured(scratch, aof_load_truncated="no"):
                assert probe(scratch).warnings == []
        else:
            assert report.warnings == []
        assert report.ok

    def test_appendfsync_everysec(self, scratch: LocalServer) -> None:
        with configured(scratch, appendfsync="everysec"):
            report = probe(scratch)
        found = by_check(report.findings, "appendfsync")[0]
        assert "appendfsync always" in found.remedy
        if scratch.engine == "valkey":
            assert found.level == "refuse" and not report.ok
        else:
            assert found.level == "warn" and report.ok, str(report)
            assert level_of(report.findings, "live-waitaof") == "ok"

    def test_appendfsync_no(self, scratch: LocalServer) -> None:
        with configured(scratch, appendfsync="no"):
            t0 = time.monotonic()
            report = probe(scratch)
            took = time.monotonic() - t0
        f = refusal(report, "appendfsync")
        assert "appendfsync always" in f.remedy
        assert took < 2.0  # the hopeless live WAITAOF is skipped, not waited out

    def test_no_appendfsync_on_rewrite(self, scratch: LocalServer) -> None:
        with configured(scratch, no_appendfsync_on_rewrite="yes"):
            report = probe(scratch)
        assert "no-appendfsync-on-rewrite no" in refusal(report, "no-appendfsync-on-rewrite").remedy

    @pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-lru"])
    def test_eviction_policy(self, scratch: LocalServer, policy: str) -> None:
        with configured(scratch, maxmemory_policy=policy):
            report = probe(scratch)
        f = refusal(report, "maxmemory-policy")
        assert policy in f.message and "maxmemory-policy noeviction" in f.remedy

    def test_replicas_needed_but_none_attached(self, scratch: LocalServer) -> None:
        report = probe(scratch, Durability.replicas_received(1))
        f = refusal(report, "replicas")
        assert "0 online" in f.message and "appendonly yes" in f.remedy

    @pytest.mark.parametrize("engine", ENGINES)
    def test_appendonly_no(self, make_server: Any, engine: str) -> None:
        report = probe(make_server(engine, appendonly="no"))
        assert "appendonly yes" in refusal(report, "appendonly").remedy

    @pytest.mark.parametrize("engine", ENGINES)
    def test_config_renamed(self, make_server: Any, engine: str) -> None:
        server = make_server(engine, rename_command='CONFIG ""')
        report = probe(server)
        assert not report.ok
        for check in ("appendfsync", "no-appendfsync-on-rewrite"):
            f = refusal(report, check)
            assert f.level == "unverifiable" and "CONFIG" in f.message and "declare" in f.remedy
        with pytest.raises(NonDurableServerError) as info:
            report.raise_if_refused()
        assert {p.check for p in info.value.problems} >= {"appendfsync", "no-appendfsync-on-rewrite"}

        declared = {"appendfsync": "always", "no-appendfsync-on-rewrite": "no", "aof-load-truncated": "no"}
        accepted = probe(server, declared=declared)
        assert accepted.ok, str(accepted)
        assert any(f.check == "config" and "declared, not read" in f.message for f in accepted.warnings)
        assert level_of(accepted.findings, "live-waitaof") == "ok"

        refused = probe(server, declared={**declared, "appendfsync": "no"})
        assert refusal(refused, "appendfsync").level == "refuse"

    @pytest.mark.parametrize("engine", ENGINES)
    def test_cluster_without_slots_then_with_all(self, make_server: Any, engine: str) -> None:
        server = make_server(engine, cluster_enabled="yes")
        report = probe(server)
        assert refusal(report, "cluster-state").level == "refuse"
        assert "0 of 16384" in refusal(report, "cluster-slots").message
        c = server.client(decode_responses=True)
        try:
            c.execute_command("CLUSTER ADDSLOTSRANGE", 0, 16383)
            wait_for(lambda: c.cluster("INFO")["cluster_state"] == "ok", "cluster_state:ok", timeout=15)
        finally:
            c.close()
        report = probe(server, namespace="tcluster")
        assert report.ok, str(report)
        assert level_of(report.findings, "cluster-slots") == "ok"

    def test_password_never_reaches_the_error(self, make_server: Any) -> None:
        server = make_server("valkey", password="s3cret-pw", appendfsync="no")
        assert "s3cret-pw" in server.url
        report = probe(server)
        with pytest.raises(NonDurableServerError) as info:
            report.raise_if_refused()
        assert "s3cret-pw" not in str(info.value) and "***" in str(info.value)
        assert "s3cret-pw" not in str(report)


def replication_up(primary: LocalServer, replica: LocalServer) -> None:
    """Wait until the replica is linked and the primary sees it online."""
    pc, rc = primary.client(decode_responses=True), replica.client(decode_responses=True)
    try:
        wait_for(lambda: rc.info("replication").get("master_link_status") == "up", "master_link_status:up", timeout=15)
        wait_for(
            lambda: facts_from_info(pc.info("replication"))["replicas_online"] >= 1
            and rc.info("persistence").get("loading") == 0,
            "replica online", timeout=15,
        )
        if str(replica.settings().get("appendonly")) == "yes":
            # an AOF replica that just did a full sync rewrites its AOF; wait until that is done
            wait_for(lambda: rc.info("persistence").get("aof_rewrite_in_progress") == 0
                     and rc.info("persistence").get("aof_rewrite_scheduled") == 0, "replica AOF rewrite", timeout=15)
    finally:
        pc.close()
        rc.close()


@pytest.fixture(scope="module", params=ENGINES, ids=ENGINES)
def replicated(request: pytest.FixtureRequest, make_module_server: Any) -> tuple[LocalServer, LocalServer]:
    """A primary with one AOF replica (appendfsync always), per engine."""
    primary = make_module_server(request.param)
    replica = make_module_server(request.param, replica_of=(primary.host, primary.port))
    replication_up(primary, replica)
    return primary, replica


@pytest.mark.server
class TestReplication:
    def test_replica_is_refused(self, replicated: tuple[LocalServer, LocalServer]) -> None:
        primary, replica = replicated
        report = probe(replica)
        f = refusal(report, "role")
        assert "replica" in f.message or "slave" in f.message
        assert "primary" in f.remedy and str(primary.port) in f.remedy
        assert report.facts is not None and not report.facts.live_ran

    def test_primary_with_aof_replica_is_accepted(self, replicated: tuple[LocalServer, LocalServer]) -> None:
        primary, _ = replicated
        # ~1 s: the live WAITAOF 1 1 waits for the replica's once-a-second fsync ack, even
        # though the policy's own timeout is shorter
        report = probe(primary, Durability.replicas_received(1, timeout_ms=200))
        assert report.ok, str(report)
        assert level_of(report.findings, "replicas") == "ok"
        assert report.facts is not None and report.facts.live_replicas == 1
        assert report.facts.live_replicas_asked == 1
        assert any(f.check == "min-replicas-to-write" for f in report.warnings)

    def test_policy_needs_more_replicas_than_attached(self, replicated: tuple[LocalServer, LocalServer]) -> None:
        primary, _ = replicated
        f = refusal(probe(primary, Durability.replicas_received(2)), "replicas")
        assert "needs 2" in f.message and "1 online" in f.message

    @pytest.mark.parametrize("engine", ENGINES)
    def test_replica_without_aof_does_not_count(self, make_server: Any, engine: str) -> None:
        primary = make_server(engine, min_replicas_to_write="1")
        replica = make_server(engine, replica_of=(primary.host, primary.port), appendonly="no")
        replication_up(primary, replica)
        report = probe(primary, Durability.replicas_received(1, timeout_ms=200))
        f = refusal(report, "replicas")
        assert "0 of 1" in f.message and "appendonly yes" in f.remedy
        assert report.facts is not None and report.facts.live_timeout_ms == REPLICA_ACK_MS
