"""What a run costs the server: ``store.usage(run)`` against MEMORY USAGE of every key the
run has (found by SCAN), on real Valkey and Redis servers."""

from __future__ import annotations

import pytest

from redis_ckpt import CheckpointStore, ServerError
from redis_ckpt.core.keys import RunKeys

pytestmark = pytest.mark.server


def scanned_bytes(client, namespace: str, run: str) -> tuple[int, int]:
    """(bytes, keys) of every key of ``run``, found by SCAN."""
    keys = list(client.scan_iter(match=f"{namespace}:{{{run}}}:*"))
    return sum(client.memory_usage(k, samples=0) or 0 for k in keys), len(keys)


def test_usage_counts_every_key_of_the_run_by_kind(client, namespace):
    store = CheckpointStore(client, namespace=namespace, keep=2, chunk_bytes=1024)
    with store.acquire("r", owner="w", ttl=30) as lease:
        lease.commit({"blob": b"x" * 5000})  # chunked
        lease.commit({"i": 2})
        lease.commit({"i": 3})
    k = RunKeys(namespace, "r")
    client.set(k.stage("dead", 0), b"y" * 3000, px=60_000)  # a dead writer's staged data
    client.hset(k.staging, "dead", "1:0:1:3000")
    u = store.usage("r")
    assert (u.total, u.keys) == scanned_bytes(client, namespace, "r")
    assert u.generations == sum(client.memory_usage(k.generation(g), samples=0) for g in (2, 3))
    assert u.staging >= 3000 and u.events > 0 and u.control > 0
    assert u.overhead == u.total - u.generations


def test_usage_of_an_unknown_run_is_zero(client, namespace):
    u = CheckpointStore(client, namespace=namespace).usage("nothing")
    assert (u.total, u.keys) == (0, 0)


def test_usage_where_memory_usage_is_denied_is_a_server_error(make_server, namespace):
    server = make_server("valkey", appendonly="yes", appendfsync="always")
    admin = server.client()
    store = CheckpointStore(admin, namespace=namespace)
    store.acquire("r", owner="w", ttl=30).commit({"i": 1})
    admin.execute_command("ACL", "SETUSER", "default", "-memory")
    with pytest.raises(ServerError) as e:
        store.usage("r")
    assert "no permissions" in str(e.value) and e.value.run_id == "r"


def test_check_reports_the_servers_memory(make_server):
    from click.testing import CliRunner

    from redis_ckpt.cli import cli

    server = make_server("valkey", appendonly="yes", appendfsync="always", maxmemory="100mb")
    out = CliRunner().invoke(cli, ["check", "--url", server.url, "--json"])
    assert out.exit_code == 0, out.output
    import json

    (memory,) = [f for n in json.loads(out.stdout)["nodes"] for f in n["findings"] if f["check"] == "memory"]
    assert memory["level"] == "ok" and "of maxmemory 100.0 MiB" in memory["message"]


def test_a_long_run_costs_at_most_8_kib_beyond_its_generations(client, namespace):
    """1,500 commits of a 1 KiB state: every key of the run, by MEMORY USAGE."""
    import os

    store = CheckpointStore(client, namespace=namespace)
    state = {"blob": os.urandom(1000)}
    with store.acquire("long", owner="w", ttl=60) as lease:
        for _ in range(1500):
            lease.commit(state)
    u = store.usage("long")
    assert (u.total, u.keys) == scanned_bytes(client, namespace, "long")
    assert u.overhead <= 8 * 1024, u
