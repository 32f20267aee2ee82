"""What a commit waits for, and what it says when the server cannot confirm."""

from __future__ import annotations

import time

import pytest

from redis_ckpt import CheckpointStore, Durability, DurabilityError, RetryPolicy, StoreUnavailableError
from redis_ckpt.core.durability import Confirmation

pytestmark = pytest.mark.server


def test_policy_commands_and_reading():
    assert Durability().commands() == [("WAITAOF", 1, 0, 5000)]
    assert Durability.replicas_received(2, timeout_ms=100).commands() == [("WAITAOF", 1, 0, 100), ("WAIT", 2, 100)]
    assert Durability.replicas_fsynced(1).commands() == [("WAITAOF", 1, 1, 5000)]
    d = Durability.replicas_received(1)
    assert d.read([[1, 0], 1]) == Confirmation(1, 1) and d.satisfied(Confirmation(1, 1))
    assert not d.satisfied(Confirmation(1, 0)) and not Durability().satisfied(Confirmation(0, 0))
    with pytest.raises(ValueError, match="block forever"):
        Durability(timeout_ms=0)
    with pytest.raises(ValueError):
        Durability(replica_fsync=True)


def test_commit_waits_for_the_fsync_of_its_own_connection(make_server):
    server = make_server("valkey")
    store = CheckpointStore(server.client(), namespace="d")
    lease = store.acquire("r", owner="a", ttl=10)
    lease.commit({"x": 1})
    info = server.client().info("persistence")
    assert info["aof_enabled"] == 1 and info["aof_last_write_status"] == "ok"
    assert info["aof_pending_bio_fsync"] == 0


@pytest.mark.parametrize("engine", ["valkey", "redis"])
def test_aof_switched_off_at_run_time_fails_the_commit_loudly(make_server, engine):
    server = make_server(engine)
    store = CheckpointStore(server.client(), namespace="d")
    lease = store.acquire("r", owner="a", ttl=10)
    assert lease.commit(1) == 1
    server.client().config_set("appendonly", "no")
    with pytest.raises(DurabilityError) as e:
        lease.commit(2)
    err = e.value
    assert err.generation == 2 and err.local_asked == 1 and err.local_got == 0 and err.run_id == "r"
    assert "may or may not survive" in str(err)
    assert lease.generation == 2  # applied, so the lease follows the head
    server.client().config_set("appendonly", "yes")
    deadline = time.monotonic() + 10
    while server.client().info("persistence")["aof_rewrite_in_progress"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lease.commit(3) == 3


def wait_for_replica(primary, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        slave = primary.client().info("replication").get("slave0")
        if isinstance(slave, dict) and slave.get("state") == "online":
            return
        time.sleep(0.05)
    raise AssertionError("replica did not connect")


def test_a_replica_lost_after_start_is_a_durability_error_with_counts(make_server):
    primary = make_server("valkey")
    replica = make_server("valkey", replica_of=(primary.host, primary.port))
    wait_for_replica(primary)
    store = CheckpointStore(primary.client(), namespace="d",
                            durability=Durability.replicas_received(1, timeout_ms=1500))
    lease = store.acquire("r", owner="a", ttl=10)
    assert lease.commit(1) == 1
    replica.kill()
    with pytest.raises(DurabilityError) as e:
        lease.commit(2)
    assert (e.value.replicas_asked, e.value.replicas_got, e.value.local_got) == (1, 0, 1)
    assert e.value.generation == 2 and e.value.timeout_ms == 1500


def test_server_gone_mid_run_is_a_clear_error_and_nothing_is_half_applied(make_server):
    server = make_server("redis")
    store = CheckpointStore.from_url(server.url, namespace="d",
                                     retry=RetryPolicy(attempts=2, deadline_s=1.0))
    lease = store.acquire("r", owner="a", ttl=30)
    lease.commit({"n": 1})
    server.kill()
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError) as e:
        lease.commit({"n": 2})
    assert e.value.outcome_unknown and e.value.run_id == "r"
    assert time.monotonic() - started < 15
    server.restart()
    ck = store.load("r")
    assert ck.generation == 1 and ck.state == {"n": 1}
    assert lease.commit({"n": 2}) == 2  # the retry after the outage applies exactly once
    assert store.load("r").state == {"n": 2}


@pytest.mark.parametrize(("engine", "name", "value"), [
    ("valkey", "maxmemory-policy", "allkeys-lru"),
    ("redis", "no-appendfsync-on-rewrite", "yes"),
    ("valkey", "appendfsync", "everysec"),
])
def test_settings_that_drift_after_start_fail_the_next_commit(make_server, engine, name, value):
    server = make_server(engine)
    store = CheckpointStore(server.client(), namespace="d")
    lease = store.acquire("r", owner="a", ttl=10)
    assert lease.commit(1) == 1
    server.client().config_set(name, value)
    # the check rides in a commit at most every drift_check_s (issue 12: no command per
    # commit): the first commit sent once that passed is refused
    time.sleep(store.core.config.drift_check_s)
    with pytest.raises(DurabilityError) as e:
        lease.commit(2)
    assert name in e.value.server_error and "changed since the store started" in str(e.value)
    assert e.value.generation == 2
